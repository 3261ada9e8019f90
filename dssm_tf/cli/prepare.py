"""Write a run's training examples once, as sharded TFRecord files, for `train --train_files`.

    python -m dssm_tf.prepare --out=DIR [--flagfile=configs/X.flags] [--dataset ...]
                              [--data_dir=DIR] [--protocol=time_split|leave_last_one_out]
                              [--cutoff=...] [--history_length=L] [--history_gap=G]
                              [--validation=...] [--validation_share=S] [--seed=0]
                              [--shards=16] [--verbose=false]

Streams the *fit* rows of the split (the training interactions the run's validation settings
keep for fitting; the validation rows stay in memory for early stopping) once, in a random order
seeded by `--seed`, into `--shards` files ``DIR/part-NNNNN-of-MMMMM.tfrecord`` of
`tf.train.Example`s (user key and features, history, item key and index, time) and
``DIR/manifest.json`` (the data checksums, the split, the validation settings, the history
length, the features written and the rows of each file). Train on them with the same flags
plus ``--train_files='DIR/*.tfrecord'``; `train` checks the manifest against its own settings
and exits 2 naming what differs. The layout and the reader are described in
`dssm_tf.data.records`.

`DIR` must be new, empty, or a folder this command wrote (replaced). It is written under a
temporary name beside it and renamed when complete, so a killed run leaves nothing there.
Prints one line saying what was written, how long it took and the peak memory.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shlex
import sys

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.data import splits
from dssm_tf.data.outputs import PREPARED
from dssm_tf.errors import ConfigError

FLAGS = cli.FLAGS  # --out, --shards, and the data, split, training and tower flags it shares


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["out"].present:
        raise ConfigError("out", "required: the folder to write the training examples into")
    run = cli.run_config()
    if run.training.examples != "interactions":
        raise ConfigError("examples", "prepare writes one example per interaction: "
                                      "--examples=interactions")
    out = os.path.abspath(FLAGS.out)
    PREPARED.check(out)   # as records.write_records will, before the data is read
    dataset = cli.load_data(run.data)
    split = splits.make_split(dataset, run.split)
    # What the files hold: absolute data paths, the cutoff the split took.
    run = dataclasses.replace(run, data=dataset.config, split=splits.resolve(dataset, run.split))
    app.start_tensorflow()
    from dssm_tf.data import records  # noqa: PLC0415  (TensorFlow, once started quietly)

    command = " ".join(["python -m dssm_tf.prepare", *map(shlex.quote, sys.argv[1:])])
    summary = records.write_records(out, dataset, split, run, shards=FLAGS.shards,
                                    command=command)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    window = records.history_window(run.tower, run.training)
    print(f"wrote {summary.folder}: {summary.rows:,} training examples in {summary.shards} "
          f"files ({summary.bytes / 2**20:,.1f} MiB), "
          f"{f'histories of {window} items' if window else 'no histories'}; "
          f"{summary.validation_rows:,} validation rows stay in memory "
          f"({summary.seconds:.1f} s, peak memory {peak_mb:,.0f} MiB); train with the same "
          f"flags and --train_files='{os.path.join(summary.folder, '*' + records.SUFFIX)}'")


if __name__ == "__main__":
    app.run(main)
