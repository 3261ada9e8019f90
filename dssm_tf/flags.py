"""Every command-line flag of dssm_tf, defined once. Commands import this module.

All commands share one flag namespace, so one `--flagfile` works with `train`, `evaluate`,
`itemcf`, `benchmark` and `recommend`.
"""

from __future__ import annotations

from absl import flags

from dssm_tf import data, protocols

# Data and protocol.
flags.DEFINE_string("data_dir", None, "Folder holding ratings.dat, users.dat, movies.dat. "
                    f"Default: ${data.DATA_DIR_ENV} or ~/.cache/dssm_tf/ml-1m (downloaded).")
flags.DEFINE_string("download_url", data.DOWNLOAD_URL, "Where the default data is fetched from.")
flags.DEFINE_enum("protocol", protocols.TIME_SPLIT, list(protocols.PROTOCOLS),
                  "Evaluation protocol.")
flags.DEFINE_integer("cutoff", protocols.DEFAULT_CUTOFF,
                     "time_split: ratings at or after this Unix time are test ratings.")

# Evaluation.
flags.DEFINE_integer("k", 50, "Length of the recommendation lists.", lower_bound=1)
flags.DEFINE_boolean("exclude_seen", True,
                     "Remove a user's training movies from their candidates (false = seed's).")
flags.DEFINE_string("output", None, "Write the metrics JSON here.")

# itemCF baseline.
flags.DEFINE_integer("neighbors", 50, "itemCF: neighbours each history movie contributes.",
                     lower_bound=1)

FLAGS = flags.FLAGS


def load_split() -> tuple[data.MovieLens, protocols.Split]:
    """The data set and split that `--data_dir`, `--protocol` and `--cutoff` select."""
    ml = data.load_movielens(data.resolve_data_dir(FLAGS.data_dir, FLAGS.download_url))
    return ml, protocols.make_split(ml, FLAGS.protocol, FLAGS.cutoff)
