#!/bin/sh
# `make run`: train CONFIG into MODEL_DIR on MovieLens-1M, as `python -m dssm_tf.train` does.
#
# One case falls back: the default MovieLens-1M (no --dataset, no --data_dir given) is not on
# this machine and cannot be downloaded. Then one line says so, and the same job runs on a
# synthetic ML-1M-sized data set (`python -m dssm_tf.synthetic`, in <cache>/synthetic-1m), into
# MODEL_DIR-synthetic, with a banner under the results saying the figures are synthetic and
# where the real files go. The decision is taken before training, by a probe that looks for
# (or downloads) the files: anything else -- bad flags, an explicit --data_dir or --dataset,
# broken data files, a failing training run -- is left to `train`, which reports it.
#
# Usage: scripts/make_run.sh PYTHON CONFIG MODEL_DIR SYNTHETIC_FLAGS [ARGS...]
#        (SYNTHETIC_FLAGS: the synthetic data set's size, e.g. --preset=movielens-1m-size)
set -u
PY=$1 CONFIG=$2 MODEL_DIR=$3 SYNTHETIC=$4
shift 4

# The probe: exit 3 when the default MovieLens-1M is not available, printing the synthetic
# folder, the folder the real files belong in and why (one line each); exit 0 otherwise.
probe=$("$PY" - "--flagfile=$CONFIG" "$@" <<'PROBE'
import os
import sys

from absl import flags

from dssm_tf.cli import flags as cli
from dssm_tf.data.sources import movielens
from dssm_tf.errors import InputError

try:
    cli.FLAGS(["make run", *sys.argv[1:]])
except flags.Error:
    sys.exit(0)                          # bad flags: train says which
if cli.FLAGS["dataset"].present or cli.FLAGS["data_dir"].present:
    sys.exit(0)                          # the user chose the data: never substituted
release = movielens.RELEASES["movielens-1m"]
try:
    movielens.resolve_data_dir(release, None, cli.FLAGS.download_url)
except InputError as error:
    cache = os.path.dirname(movielens.default_data_dir(movielens.RELEASES["movielens-25m"]))
    print(os.path.join(cache, "synthetic-1m"), movielens.default_data_dir(release), error,
          sep="\n")
    sys.exit(3)
PROBE
)
if [ $? -ne 3 ]; then
    exec "$PY" -m dssm_tf.train "--flagfile=$CONFIG" "--model_dir=$MODEL_DIR" "$@"
fi

data=$(printf '%s\n' "$probe" | sed -n 1p)
target=$(printf '%s\n' "$probe" | sed -n 2p)
reason=$(printf '%s\n' "$probe" | sed -n 3p)
instead="running the same job on a synthetic ML-1M-sized data set ($data) instead"
echo "make run: MovieLens-1M is not available: $reason. Now $instead." >&2
# shellcheck disable=SC2086  # SYNTHETIC holds several flags
"$PY" -m dssm_tf.synthetic "--out=$data" $SYNTHETIC --seed=0 || exit $?
"$PY" -m dssm_tf.train "--flagfile=$CONFIG" "--model_dir=$MODEL_DIR-synthetic" "$@" \
    --dataset=movielens-25m "--data_dir=$data" || exit $?
cat <<BANNER

================================ SYNTHETIC DATA ================================
The figures above were measured on a generated data set, not on MovieLens-1M:
  $data (see its README.txt)
They show that the pipeline works and finds the planted structure, nothing about real
users. For real figures, put ratings.dat, users.dat and movies.dat from
https://files.grouplens.org/datasets/movielens/ml-1m.zip into
  $target
(or set DSSM_TF_DATA_DIR, or pass ARGS=--data_dir=DIR) and run make run again.
================================================================================
BANNER
