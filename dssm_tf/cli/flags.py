"""Every command-line flag of dssm_tf, defined once, and the configs built from them.

All commands share one flag namespace, so one `--flagfile` works with `train`, `evaluate`,
`itemcf`, `benchmark` and `recommend`. Flags are read here and nowhere else: each command turns
them into `dssm_tf.config` dataclasses (`run_config`, `data_config`, `index_config`) once and
hands those to the library. Flag names are the config field names.

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
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.sources import load_dataset
from dssm_tf.data.sources import movielens
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.serving import contract

log = logging.getLogger("dssm_tf")

# --- data -------------------------------------------------------------------------------------
flags.DEFINE_enum("dataset", config.MOVIELENS_1M, list(config.DATASETS),
                  "Data set: a MovieLens release (downloaded from GroupLens when missing) or "
                  "`tabular` (your own --interactions file).")
flags.DEFINE_string("data_dir", None, "MovieLens: folder holding the release's files. Default: "
                    f"${movielens.DATA_DIR_ENV} (movielens-1m) or the cache folder "
                    f"${movielens.CACHE_ENV}/<release> (~/.cache/dssm_tf/<release>), "
                    "downloaded into when empty.")
flags.DEFINE_string("download_url", None, "MovieLens: where the release's zip is fetched from "
                    "(default: GroupLens).")
flags.DEFINE_string("interactions", None, "tabular: the interactions, a .csv/.tsv file with a "
                    "header row or a .parquet file.")
flags.DEFINE_string("users", None, "tabular: optional user feature table keyed by "
                    "--user_column.")
flags.DEFINE_string("items", None, "tabular: optional item feature table keyed by "
                    "--item_column.")
flags.DEFINE_string("user_column", "user_id", "tabular: column of the user keys.")
flags.DEFINE_string("item_column", "item_id", "tabular: column of the item keys.")
flags.DEFINE_string("time_column", "timestamp", "tabular: column of the times (Unix seconds "
                    "or ISO dates); COLUMN:order for integers that only order the interactions "
                    "(e.g. 0,1,2... per user), or empty for the file's row order. An order only "
                    "rules out --protocol=time_split and --history_time.")
flags.DEFINE_string("rating_column", None, "tabular: optional column of ratings/weights "
                    "(needed by --min_rating).")
flags.DEFINE_list("user_feature_columns", [], "tabular: user features, each COLUMN, "
                  "COLUMN:multi ('|'-separated values) or COLUMN:numeric.")
flags.DEFINE_list("item_feature_columns", [], "tabular: item features, as "
                  "--user_feature_columns.")
flags.DEFINE_string("title_column", None, "tabular: item column `recommend` shows as the title.")
flags.DEFINE_string("encoding", "utf-8", "tabular: text encoding of .csv/.tsv files.")
flags.DEFINE_float("min_rating", None, "Keep only interactions rated at least this much "
                   "(default: every interaction is a positive, as the seed did).")
flags.DEFINE_enum("missing_keys", "error", list(config.MISSING_KEYS), "Interactions whose user "
                  "or item is not in its feature table: an error, or dropped (with a count).")

# --- split and evaluation ----------------------------------------------------------------------
flags.DEFINE_enum("protocol", config.TIME_SPLIT, list(config.PROTOCOLS), "Evaluation protocol.")
flags.DEFINE_string("cutoff", None, "time_split: interactions at or after this time are test "
                    "interactions; Unix seconds or YYYY-MM-DD[THH:MM:SS] (UTC). Default: "
                    "2003-01-01 for movielens-1m, else the time that leaves the last 10% of "
                    "the interactions for testing.")
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
flags.DEFINE_enum("loss", "bce", list(config.LOSSES), "Loss scheme.")
flags.DEFINE_enum("negative_sampler", "uniform", list(config.SAMPLERS),
                  "uniform: over training items; frequency: the seed's count^power mix; "
                  "inbatch: the other positives of the batch (plus --num_negatives shared ones); "
                  "all: every training item (the exact softmax; --examples=sequences).")
flags.DEFINE_integer("num_negatives", 3, "Sampled negatives per positive (shared by the batch "
                     "for --loss=inbatch).", lower_bound=0)
flags.DEFINE_float("frequent_share", 0.3, "frequency sampler: share of negatives drawn from "
                   "frequent items.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("frequent_min_count", 5, "frequency sampler: training interactions that "
                     "make an item frequent.", lower_bound=1)
flags.DEFINE_float("frequency_power", 0.75, "frequency sampler: weight = count**power.")
flags.DEFINE_enum("validation", "random", list(config.VALIDATIONS), "The training interactions "
                  "held out for early stopping: a random --validation_share of them; the last "
                  "--validation_share of the training period (temporal: sees a time split's "
                  "shift); each user's last one (last: as leave_last_one_out tests); or none "
                  "(every interaction trains, all --epochs run, the last weights are kept: the "
                  "refit once validation has chosen the settings).")
flags.DEFINE_float("validation_share", 0.1, "Share of training interactions held out for early "
                   "stopping (random, temporal).", lower_bound=0.0, upper_bound=0.9)
flags.DEFINE_enum("examples", "interactions", list(config.EXAMPLES), "Training examples: one "
                  "per interaction (history = the items before it), or one per user window "
                  "(sequences: every position trains at once; needs a history and "
                  "--loss=inbatch).")
flags.DEFINE_enum("sequence_crop", "random", list(config.CROPS), "sequences: a user with more "
                  "than history_length + 1 items gets a random window each epoch, or always "
                  "the latest.")
flags.DEFINE_boolean("shuffle_ties", True, "sequences: each training window puts a user's "
                     "items that share a timestamp in a new random order (their source order "
                     "is close to arbitrary: MovieLens logs bursts of ratings in one second, "
                     "and a model must not learn the file's order). Interaction examples "
                     "ignore it.")
flags.DEFINE_integer("validation_rows", 20000, "At most this many held-out interactions are "
                     "scored for val_recall.", lower_bound=1)
flags.DEFINE_enum("early_stopping_metric", "loss", list(config.EARLY_STOPPING_METRICS),
                  "Monitor val_loss (min) or val_recall@50 (max).")
flags.DEFINE_integer("patience", 3, "Early-stopping patience in epochs.", lower_bound=0)
flags.DEFINE_integer("epochs", 20, "Maximum epochs (sequences: 0 = derived from the data's "
                     "size, see dssm_tf.data.sequence_settings).", lower_bound=0)
flags.DEFINE_integer("batch_size", 512, "Training batch size (sequences: users a batch; 0 = "
                     "about 2,048 target positions a batch, derived from the data).",
                     lower_bound=0)
flags.DEFINE_float("learning_rate", 0.005, "Optimizer learning rate.", lower_bound=0.0)
flags.DEFINE_enum("learning_rate_schedule", "constant", list(config.SCHEDULES), "constant, or "
                  "cosine: a linear warm-up over the first epoch, then a cosine decay to 10% "
                  "of --learning_rate at --epochs.")
flags.DEFINE_enum("optimizer", "adam", list(config.OPTIMIZERS), "Optimizer: lazy_adam = Adam updating only the embedding rows a batch touched (faster; see dssm_tf.training.optimizers).")
flags.DEFINE_integer("seed", 0, "Seed for shuffling, negatives, validation split, init.")
flags.DEFINE_boolean("mixed_precision", False, "Compute in float16 (mixed_float16 policy).")
flags.DEFINE_integer("steps_per_execution", 64, "Batches per tf.function call: fewer Python "
                     "round trips per step (3x faster at batch 128 on 2 CPU cores); the updates "
                     "are the same as with 1.", lower_bound=1)
flags.DEFINE_enum("distribution", "none", list(config.DISTRIBUTIONS), "tf.distribute: none; "
                  "mirrored (this machine's devices); multi_worker (one process per machine, "
                  "configured by $TF_CONFIG; the same command on every worker).")
flags.DEFINE_string("train_files", None, "train: read the training examples from these "
                    "TFRecord shards of `python -m dssm_tf.prepare` (a glob) instead of from "
                    "memory; each worker reads its own files.")
flags.DEFINE_boolean("verbose", True, "Show the Keras progress bar.")
flags.DEFINE_boolean("baselines", True, "train: also evaluate popularity and itemCF on the same "
                     "split for the summary table.")
flags.DEFINE_integer("history_gap", 0, "Training: a row's history ends 0..G rows before it "
                     "(uniform), to learn to predict further ahead than the next item.",
                     lower_bound=0)

# --- towers ------------------------------------------------------------------------------------
flags.DEFINE_integer("embedding_dim", 64, "Key embedding size.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["128", "64"], "MLP layer sizes of both towers; the last is "
                  "the output size. Empty: the concatenated embeddings are the output.")
flags.DEFINE_enum("activation", "relu", list(config.ACTIVATIONS), "Hidden-layer activation.")
flags.DEFINE_enum("output_activation", "linear", list(config.ACTIVATIONS),
                  "Last MLP layer activation.")
flags.DEFINE_float("dropout", 0.0, "Dropout after hidden layers.", lower_bound=0.0,
                   upper_bound=0.95)
flags.DEFINE_enum("similarity", "cosine", list(config.SIMILARITIES),
                  "cosine: towers L2-normalise their output.")
flags.DEFINE_float("embedding_l2", 0.0, "L2 regularisation of the embedding tables.",
                   lower_bound=0.0)
flags.DEFINE_enum("initializer", "uniform", list(config.INITIALIZERS), "Embedding initializer.")
flags.DEFINE_integer("feature_dim", 16, "Embedding size of categorical and multi-valued "
                     "features.", lower_bound=1)
flags.DEFINE_boolean("user_features", False, "Add the data set's user features (movielens: "
                     "gender, age, occupation) to the user tower.")
flags.DEFINE_boolean("item_features", False, "Add the data set's item features (movielens: "
                     "genres) to the item tower.")
flags.DEFINE_integer("history_length", 0, "Encode the user's last L items (0 = no history; "
                     "with --examples=sequences, 0 = derived from the data's sequence "
                     "lengths).", lower_bound=0)
flags.DEFINE_enum("user_encoder", "mean", list(config.ENCODERS), "How the history is encoded: "
                  "the mean of its item embeddings, or SASRec-style causal self-attention.")
flags.DEFINE_boolean("user_key_embedding", True, "An embedding per user key in the user "
                     "tower (off: it knows a user by features and history only).")
flags.DEFINE_boolean("share_item_embeddings", False, "The history's items use the item tower's "
                     "key embeddings (one table, trained both as input and as candidate).")
flags.DEFINE_integer("attention_blocks", 2, "attention: self-attention blocks.", lower_bound=1)
flags.DEFINE_integer("attention_heads", 1, "attention: heads per block.", lower_bound=1)
flags.DEFINE_integer("attention_feed_forward", 1, "attention: width of each block's feed-forward "
                     "layer, in multiples of --embedding_dim (SASRec: 1, most transformers: 4).",
                     lower_bound=1)
flags.DEFINE_boolean("attention_gating", False, "attention: scale each block's attention and "
                     "feed-forward output by a learned sigmoid gate of the block's input before "
                     "adding it (LiGR, as in eSASRec).")
flags.DEFINE_boolean("history_time", False, "Add to each history item an embedding of its "
                     "gap since the item before it (log-bucketed seconds; the history's own "
                     "times only): the user tower then also takes history_timestamps and "
                     "request_time (Unix seconds; request_time is read by --request_gap only).")
flags.DEFINE_boolean("attention_time_bias", False, "attention (with --history_time): add to "
                     "each attention score a learned bias per head and bucket of the time from "
                     "the key's item to the query's (HSTU's relative time bias, anchored at "
                     "the query's own item).")
flags.DEFINE_boolean("request_gap", False, "With --history_time: add to the user's embedding "
                     "an embedding of the gap from the last history item to request_time (in "
                     "training, the next item's time: HSTU's target-timestamp setting; "
                     "evaluate it with --request_time=next, and at serving pass the time of "
                     "the call).")
flags.DEFINE_float("encoder_dropout", 0.2, "attention: dropout of the encoder.",
                   lower_bound=0.0, upper_bound=0.95)

# --- loss parameters ---------------------------------------------------------------------------
flags.DEFINE_float("temperature", 1.0, "bce/inbatch: logits = score / temperature.",
                   lower_bound=1e-6)
flags.DEFINE_float("margin", 0.5, "triplet: margin.", lower_bound=0.0)
flags.DEFINE_enum("triplet_distance", "euclidean", list(config.TRIPLET_DISTANCES),
                  "triplet: d = ||u - v|| or d = 1 - cos(u, v).")
flags.DEFINE_float("gamma", 20.0, "softmax: logits = gamma * score.", lower_bound=1e-6)
flags.DEFINE_boolean("sampling_correction", False, "bce/softmax: add -log(q(i)/q_uniform) to "
                     "each logit, so a frequency sampler does not teach the towers to demote "
                     "popular items.")
flags.DEFINE_float("logq_weight", 1.0, "inbatch: weight of the logQ correction (1 = full, "
                   "0 = none).", lower_bound=0.0)
flags.DEFINE_boolean("exclude_user_items", False, "sequences: no other target of a user's "
                     "window is a negative of its positions (the items seen before, which "
                     "evaluation leaves out of the ranking anyway, and those still to come).")

# --- export-side evaluation and retrieval (evaluate, recommend) --------------------------------
flags.DEFINE_string("export_dir", None,
                    "evaluate/recommend: an export (<model_dir>/export): its latest complete "
                    "version is read, or --version.")
flags.DEFINE_integer("version", None, "evaluate/recommend: the export version to read "
                     "(default: the latest).", lower_bound=0)
flags.DEFINE_enum("index", "flat", list(config.INDEX_KINDS),
                  "faiss index for top-K retrieval (inner product): flat = exact.")
flags.DEFINE_integer("nlist", None, "ivf: number of inverted lists (default ~sqrt(#items)).",
                     lower_bound=1)
flags.DEFINE_integer("nprobe", None, "ivf: lists probed per query (default nlist/4).",
                     lower_bound=1)
flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node (M).", lower_bound=2)
flags.DEFINE_integer("ef_search", 64, "hnsw: efSearch (raised to the search depth if lower).",
                     lower_bound=1)
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


def _positive_ints(values: list[str]) -> bool:
    return all(v.strip().isdigit() and int(v) > 0 for v in values)


flags.register_validator("hidden_units", _positive_ints,
                         "--hidden_units: expected comma-separated positive integers, e.g. 128,64")

FLAGS = flags.FLAGS


def _fields(cls, **overrides):
    """A config dataclass whose fields take the values of the flags of the same names."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in overrides:
            values[field.name] = overrides[field.name]
        elif field.name in FLAGS:
            value = FLAGS[field.name].value
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def cutoff() -> int | None:
    """--cutoff in Unix seconds (None when not given)."""
    if FLAGS.cutoff is None:
        return None
    try:
        return config.parse_time(FLAGS.cutoff)
    except ValueError as error:
        raise ConfigError("cutoff", str(error)) from None


def data_config() -> DataConfig:
    config_ = _fields(DataConfig)
    config_.validate()
    return config_


def data_flags_given() -> bool:
    """Whether the command line (or a flagfile) says where the data is."""
    return any(FLAGS[f.name].present for f in dataclasses.fields(DataConfig))


def split_config() -> SplitConfig:
    return SplitConfig(protocol=FLAGS.protocol, cutoff=cutoff())


def run_config() -> RunConfig:
    """The training run the flags describe, validated (ConfigError naming the flag)."""
    run = RunConfig(
        data=data_config(), split=split_config(), sampler=_fields(SamplerConfig),
        tower=_fields(TowerConfig, hidden_units=tuple(int(u) for u in FLAGS.hidden_units)),
        loss=_fields(LossConfig), training=_fields(TrainingConfig))
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
