"""Every command-line flag of dssm_tf, defined once, and the configs built from them.

All commands share one flag namespace, so one `--flagfile` works with `train`, `evaluate`,
`itemcf`, `benchmark`, `recommend`, `prepare` and `synthetic`. Flags are read here and nowhere
else: each command turns them into `dssm_tf.config` dataclasses (`run_config`, `data_config`,
`index_config`) once and hands those to the library. Flag names are the config field names, and
a config field's flag is made from the field (its type and default; its help text, choices and
bounds in its metadata), so each default is written once, in `dssm_tf.config`. The flags that
are no config field (the commands' own) are defined below by hand.

Usage::

    run = run_config()                  # RunConfig of the parsed flags, validated
    dataset = load_data(run.data)       # the data set, before TensorFlow starts
"""

from __future__ import annotations

import dataclasses
import logging
import os

from absl import flags

from dssm_tf import config
from dssm_tf.config import (DataConfig, IndexConfig, LossConfig, RunConfig, SamplerConfig,
                            SplitConfig, TowerConfig, TrainingConfig)
from dssm_tf.data import synthetic
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.sources import load_dataset
from dssm_tf.data.sources import movielens
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.serving import contract

log = logging.getLogger("dssm_tf")

# --- the config fields' flags (dssm_tf.config: each field's type, default, help, bounds) ------
_DEFINE = {"str": flags.DEFINE_string, "int": flags.DEFINE_integer,
           "float": flags.DEFINE_float, "bool": flags.DEFINE_boolean,
           "tuple[str, ...]": flags.DEFINE_list, "tuple[int, ...]": flags.DEFINE_list}
CONFIG_CLASSES = (DataConfig, SplitConfig, SamplerConfig, TowerConfig, LossConfig, TrainingConfig,
                  IndexConfig)


def _define(field: dataclasses.Field) -> None:
    """The flag of a config field whose metadata has a help text (`config._flag`)."""
    meta, default = field.metadata, field.default
    if "choices" in meta:
        flags.DEFINE_enum(field.name, default, list(meta["choices"]), meta["help"])
        return
    # Field types are strings here (config.py has `from __future__ import annotations`).
    kind = "str" if "parse" in meta else field.type.removesuffix(" | None")
    if kind not in _DEFINE:
        raise TypeError(f"{field.name}: no flag type for a field of type {field.type}")
    if kind.startswith("tuple"):
        default = [str(value) for value in default]   # a list flag holds strings
    bounds = {f"{key}_bound": meta[key] for key in ("lower", "upper") if key in meta}
    _DEFINE[kind](field.name, default, meta["help"], **bounds)


for _config in CONFIG_CLASSES:
    for _field in dataclasses.fields(_config):
        if "help" in _field.metadata:
            _define(_field)

# --- flags defined by hand --------------------------------------------------------------------
# data_dir is DataConfig's, but its help names the environment variables the loader reads.
flags.DEFINE_string("data_dir", None, "MovieLens: folder holding the release's files. Default: "
                    f"${movielens.DATA_DIR_ENV} (movielens-1m) or the cache folder "
                    f"${movielens.CACHE_ENV}/<release> (~/.cache/dssm_tf/<release>), "
                    "downloaded into when empty.")
# --- split and evaluation ----------------------------------------------------------------------
flags.DEFINE_integer("k", 50, "Length of the recommendation lists.", lower_bound=1)
flags.DEFINE_boolean("exclude_seen", True,
                     "Remove a user's training items from their candidates (false = seed's).")
flags.DEFINE_enum("request_time", "none", list(config.REQUEST_TIMES), "Timed user towers "
                  "(--history_time): when evaluate, recommend, benchmark, speed and train's "
                  "report say the request comes. none: unknown (request_time -1), the figure "
                  "the project competes on: no input depends on the held-out interaction; "
                  "last: asks at the last history item's time; next: HSTU's setting, the "
                  "held-out interaction's own time (metrics labelled as such). At serving a "
                  "client passes the time of its call.")
flags.DEFINE_integer("tie_shuffles", 3, "Exports with a history: evaluation reports the mean "
                     "over this many passes, each with one user's same-timestamp training "
                     "interactions in another seeded order (seeds 0..N-1; their file order is "
                     "close to arbitrary); 0 = the source order, one pass. recommend uses "
                     "seed 0's order when this is above 0.", lower_bound=0)
flags.DEFINE_string("output", None, "Write the metrics JSON here.")
flags.DEFINE_integer("neighbors", 50, "itemCF: neighbours each history item contributes.",
                     lower_bound=1)

# --- training (python -m dssm_tf.train) --------------------------------------------------------
flags.DEFINE_string("model_dir", "runs/model", "Checkpoints, TensorBoard logs, export/, "
                    "metrics.json, config.json.")
flags.DEFINE_integer("keep_versions", 3, "train: export versions kept under <model_dir>/export "
                     "(the oldest are removed).", lower_bound=1)
flags.DEFINE_boolean("overwrite", False, "Start afresh even if --model_dir holds a killed run "
                     "(which is resumed otherwise, when its settings match).")
flags.DEFINE_boolean("baselines", True, "train: also evaluate popularity and itemCF on the same "
                     "split for the summary table.")

# --- export-side evaluation and retrieval (evaluate, recommend) --------------------------------
flags.DEFINE_string("export_dir", None,
                    "evaluate/recommend: an export (<model_dir>/export): its latest complete "
                    "version is read, or --version.")
flags.DEFINE_integer("version", None, "evaluate/recommend: the export version to read "
                     "(default: the latest).", lower_bound=0)
flags.DEFINE_string("user_id", None, "recommend: the user key to recommend for (e.g. a "
                    "MovieLens UserID).")
flags.DEFINE_integer("embed_batch_size", 4096,
                     "evaluate/recommend: rows per call of a tower's serving signature.",
                     lower_bound=1)

# --- benchmark and speed (python -m dssm_tf.benchmark / dssm_tf.speed) -------------------------
flags.DEFINE_string("out", "bench", "benchmark: output folder for results.md, results.json, "
                    "recall_at_k.png and runs/<config>/<protocol>/seed<S>/.")
flags.DEFINE_integer("seeds", 3, "benchmark: training runs per config and protocol "
                     "(seeds 0..N-1).", lower_bound=1)
flags.DEFINE_list("configs", None, "benchmark: config names X of <configs_dir>/X.flags "
                  "(default: every *.flags file there).")
flags.DEFINE_string("configs_dir", None, "benchmark: folder of the config flagfiles "
                    "(default: configs/ next to the dssm_tf package).")
flags.DEFINE_list("protocols", list(config.PROTOCOLS), "benchmark: protocols to run.")
flags.DEFINE_integer("max_k", 200, "benchmark: recall@K curves for K = 1..max_k.",
                     lower_bound=1)
flags.DEFINE_boolean("reuse", False, "benchmark: reuse a run whose metrics.json exists and "
                     "whose command and config are unchanged (resume a long benchmark).")
flags.DEFINE_integer("jobs", 1, "benchmark: training subprocesses run at once (>1 distorts "
                     "the time and memory figures).", lower_bound=1)
flags.DEFINE_integer("speed_batches", 200, "speed: input-pipeline batches timed.",
                     lower_bound=1)
flags.DEFINE_integer("speed_steps", 100, "speed: training steps timed.", lower_bound=1)

# --- synthetic and prepare (python -m dssm_tf.synthetic / dssm_tf.prepare) ----------------------
# synthetic also reads --users, --items and --interactions (as counts; `tabular` reads them as
# file names), --out, --seed and --verbose; prepare reads --out and the run's flags.
flags.DEFINE_enum("preset", None, list(synthetic.PRESETS), "synthetic: the shape of a real "
                  "release: movielens-25m (162,541 users, 59,047 movies, 25,000,095 ratings) "
                  "or movielens-1m-size (6,040 users, 3,706 movies, 1,000,209 ratings).")
flags.DEFINE_integer("clusters", None, "synthetic: item clusters (default: items / (2 x mean "
                     "interactions per user), 2..50).", lower_bound=1)
flags.DEFINE_integer("shards", 16, "prepare: TFRecord files the training examples are spread "
                     "over (each worker of a cluster reads its own: at least one per worker).",
                     lower_bound=1)


def _positive_ints(values: list[str]) -> bool:
    return all(v.strip().isdigit() and int(v) > 0 for v in values)


flags.register_validator("hidden_units", _positive_ints,
                         "--hidden_units: expected comma-separated positive integers, e.g. 128,64")

FLAGS = flags.FLAGS


def _value(field: dataclasses.Field):
    """The value of a config field's flag, as the field holds it (lists as tuples; a `parse`
    flag parsed, ConfigError naming the flag when it cannot be)."""
    value = FLAGS[field.name].value
    parse = field.metadata.get("parse")
    if parse is not None and value is not None:
        try:
            return parse(value)
        except ValueError as error:
            raise ConfigError(field.name, str(error)) from None
    if isinstance(value, list):
        return tuple(int(v) for v in value) if field.type == "tuple[int, ...]" else tuple(value)
    return value


def _fields(cls):
    """A config dataclass whose fields take the values of the flags of the same names (a field
    without a flag keeps its default)."""
    return cls(**{field.name: _value(field) for field in dataclasses.fields(cls)
                  if field.name in FLAGS})


def cutoff() -> int | None:
    """--cutoff in Unix seconds (None when not given)."""
    return _value(next(f for f in dataclasses.fields(SplitConfig) if f.name == "cutoff"))


def data_config() -> DataConfig:
    config_ = _fields(DataConfig)
    config_.validate()
    return config_


def data_flags_given() -> bool:
    """Whether the command line (or a flagfile) says where the data is."""
    return any(FLAGS[f.name].present for f in dataclasses.fields(DataConfig))


def split_config() -> SplitConfig:
    return _fields(SplitConfig)


def run_config() -> RunConfig:
    """The training run the flags describe, validated (ConfigError naming the flag)."""
    run = RunConfig(
        data=data_config(), split=split_config(), sampler=_fields(SamplerConfig),
        tower=_fields(TowerConfig), loss=_fields(LossConfig), training=_fields(TrainingConfig))
    run.validate()
    return run


def index_config() -> IndexConfig:
    index = _fields(IndexConfig)
    index.validate()
    return index


def load_data(data: DataConfig | None = None) -> Dataset:
    """The data set of `data` (default: the data flags), parsed and validated, before
    TensorFlow starts."""
    return load_dataset(data or data_config())


def protocol_override() -> tuple[str | None, int | None]:
    """--protocol/--cutoff when given on the command line (or a flagfile), else None."""
    return (FLAGS.protocol if FLAGS["protocol"].present else None,
            cutoff() if FLAGS["cutoff"].present else None)


def data_flags(data: DataConfig) -> list[str]:
    """Command-line flags that select `data` (for training subprocesses of `benchmark`)."""
    args = []
    for field in dataclasses.fields(DataConfig):
        value = getattr(data, field.name)
        if value == field.default or value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        args.append(f"--{field.name}={value}")
    return args


def data_dir_exists(data: DataConfig) -> bool:
    """Whether the files a recorded data config names are still there."""
    if data.dataset == config.TABULAR:
        return all(os.path.isfile(p) for p in (data.interactions, data.users, data.items) if p)
    return bool(data.data_dir) and os.path.isdir(data.data_dir)


def data_for_export(metadata: dict) -> Dataset:
    """The data an export was trained on: the data flags when given; else the source its
    metadata.json records, when its files are still there; else (with a warning) the release's
    default folder. A dssm_tf 0.1 export records none: the data flags' default, movielens-1m."""
    recorded = contract.recorded_data_config(metadata)
    if data_flags_given() or recorded is None:
        return load_data()
    if not data_dir_exists(recorded):
        where = recorded.interactions if recorded.dataset == config.TABULAR else recorded.data_dir
        if recorded.dataset == config.TABULAR:
            raise InputError(f"{where}: file not found (the export was trained on it); pass "
                             f"--dataset=tabular --interactions=FILE and the other data flags "
                             f"to say where the data is now")
        log.warning("the data the export was trained on (%s in %s) is gone; reading %s from "
                    "its default folder (--data_dir says where it is)", recorded.dataset, where,
                    recorded.dataset)
        recorded = dataclasses.replace(recorded, data_dir=None)
    return load_data(recorded)
