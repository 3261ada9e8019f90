"""Every setting of dssm_tf as frozen dataclasses, and every choice list, defined once.

The command layer (`dssm_tf.cli.flags`) builds these from flags, once; library code takes them
as arguments and never reads flags. Field names are the flag names, so an error about field
``batch_size`` is reported as ``--batch_size`` (`errors.ConfigError`), and a field's metadata
holds its flag's help text, choice list and bounds: the flags are made from the fields, so each
default is written once, here (`_flag`). ``dataclasses.asdict`` of a `RunConfig` is what
``metadata.json`` and ``config.json`` record (TF Model Garden stores its params next to the
model the same way).

No TensorFlow here: the commands build and check configs before TensorFlow starts.

Usage::

    run = RunConfig(data=DataConfig(dataset="movielens-100k"),
                    loss=LossConfig(loss="inbatch", temperature=0.05),
                    sampler=SamplerConfig(negative_sampler="inbatch", num_negatives=0))
    run.validate()                      # ConfigError naming the field at fault
    dataclasses.asdict(run)             # {"data": {...}, "split": {...}, ...}
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from typing import Any, Callable

from dssm_tf.errors import ConfigError

# --- choice lists ------------------------------------------------------------------------------
MOVIELENS_1M = "movielens-1m"
TABULAR = "tabular"
MOVIELENS = ("movielens-100k", MOVIELENS_1M, "movielens-10m", "movielens-20m",
             "movielens-25m", "movielens-32m")
DATASETS = MOVIELENS + (TABULAR,)
TIME_SPLIT, LEAVE_LAST_ONE_OUT = "time_split", "leave_last_one_out"
PROTOCOLS = (TIME_SPLIT, LEAVE_LAST_ONE_OUT)
MISSING_KEYS = ("error", "drop")
ORDER = "order"   # --time_column=COLUMN:order: integers that only order the interactions
LOSSES = ("bce", "triplet", "softmax", "inbatch")
SAMPLERS = ("uniform", "frequency", "inbatch", "all")  # all: every item (sequences)
SIMILARITIES = ("cosine", "dot")
TRIPLET_DISTANCES = ("euclidean", "cosine")
OPTIMIZERS = ("adam", "lazy_adam", "adagrad", "sgd")
ACTIVATIONS = ("relu", "leaky_relu", "gelu", "elu", "selu", "swish", "tanh", "linear")
INITIALIZERS = ("uniform", "glorot_uniform", "truncated_normal", "he_normal")
EARLY_STOPPING_METRICS = ("loss", "recall")
ENCODERS = ("mean", "attention")
EXAMPLES = ("interactions", "sequences")
CROPS = ("random", "latest")
VALIDATIONS = ("random", "temporal", "last", "none")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
SCHEDULES = ("constant", "cosine")
INDEX_KINDS = ("flat", "ivf", "hnsw")
# When a timed user tower is told the request comes (`Split.request_times`): unknown (none), at
# the last history item's time (last), at the held-out interaction's own time (next).
REQUEST_TIMES = ("none", "last", "next")
NO_REQUEST_TIME = -1  # the request time fed for "unknown": a negative time means none


def _choice(field: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(field, f"expected one of {', '.join(map(str, choices))}, "
                                 f"got {value!r}")


def _at_least(field: str, value, low, what: str = "") -> None:
    if value < low:
        raise ConfigError(field, f"expected at least {low}{what}, got {value}")


def _flag(default: Any, text: str, *, choices: tuple | None = None, lower: float | None = None,
          upper: float | None = None, parse: Callable[[str], Any] | None = None) -> Any:
    """A field that is also the command-line flag of its name, with its help `text`.

    `dssm_tf.cli.flags` defines the flag from the field (its type, its default) and this
    metadata: `choices` (an enum), `lower`/`upper` (bounds of a number), `parse` (the flag is a
    string that `parse` turns into the field's value). So each default is written once: here.
    """
    metadata = {"help": text, "choices": choices, "lower": lower, "upper": upper,
                "parse": parse}
    return dataclasses.field(default=default,
                             metadata={key: value for key, value in metadata.items()
                                       if value is not None})


def parse_time(text: str | int) -> int:
    """Unix seconds from an integer, digits, or an ISO date/time (UTC unless it says otherwise).

    >>> parse_time("2003-01-01")
    1041379200
    >>> parse_time("1041379200")
    1041379200
    """
    if isinstance(text, int):
        return text
    value = str(text).strip()
    if re.fullmatch(r"[+-]?\d+", value):
        return int(value)
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expected Unix seconds or a date YYYY-MM-DD[THH:MM:SS], "
                         f"got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return int(moment.timestamp())


# --- data --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the interactions come from (`dssm_tf.data.sources.load_dataset`).

    MovieLens releases need only `dataset` (and `data_dir`, else the cache folder, downloaded
    when missing). `tabular` reads `interactions` (.csv/.tsv with a header row, or .parquet)
    with the named columns; `users`/`items` are optional feature tables keyed by the same
    columns. A feature column is ``name`` (categorical), ``name:multi`` (``|``-separated
    values, mean-pooled) or ``name:numeric`` (a float, standardised). `time_column` is
    ``name`` (real times: Unix seconds or ISO dates), ``name:order`` (integers that only
    order the interactions) or empty (the file's row order); `time_source` parses it and
    `real_times` says which.
    """

    dataset: str = _flag(MOVIELENS_1M, "Data set: a MovieLens release (downloaded from GroupLens "
                         "when missing) or `tabular` (your own --interactions file).",
                         choices=DATASETS)
    # data_dir's flag is defined in dssm_tf.cli.flags: its help names the loader's environment
    # variables (dssm_tf.data.sources.movielens).
    data_dir: str | None = None
    download_url: str | None = _flag(None, "MovieLens: where the release's zip is fetched from "
                                     "(default: GroupLens).")
    interactions: str | None = _flag(None, "tabular: the interactions, a .csv/.tsv file with a "
                                     "header row or a .parquet file.")
    users: str | None = _flag(None, "tabular: optional user feature table keyed by --user_column.")
    items: str | None = _flag(None, "tabular: optional item feature table keyed by --item_column.")
    user_column: str = _flag("user_id", "tabular: column of the user keys.")
    item_column: str = _flag("item_id", "tabular: column of the item keys.")
    time_column: str = _flag("timestamp", "tabular: column of the times (Unix seconds or ISO "
                             "dates); COLUMN:order for integers that only order the interactions "
                             "(e.g. 0,1,2... per user), or empty for the file's row order. An "
                             "order only rules out --protocol=time_split and --history_time.")
    rating_column: str | None = _flag(None, "tabular: optional column of ratings/weights (needed "
                                      "by --min_rating).")
    user_feature_columns: tuple[str, ...] = _flag((), "tabular: user features, each COLUMN, "
                                                  "COLUMN:multi ('|'-separated values) or "
                                                  "COLUMN:numeric.")
    item_feature_columns: tuple[str, ...] = _flag((), "tabular: item features, as "
                                                  "--user_feature_columns.")
    title_column: str | None = _flag(None, "tabular: item column `recommend` shows as the title.")
    encoding: str = _flag("utf-8", "tabular: text encoding of .csv/.tsv files.")
    min_rating: float | None = _flag(None, "Keep only interactions rated at least this much "
                                     "(default: every interaction is a positive, as the seed did).")
    missing_keys: str = _flag("error", "Interactions whose user or item is not in its feature "
                              "table: an error, or dropped (with a count).", choices=MISSING_KEYS)

    def validate(self) -> None:
        _choice("dataset", self.dataset, DATASETS)
        _choice("missing_keys", self.missing_keys, MISSING_KEYS)
        tabular_only = ("interactions", "users", "items", "rating_column", "title_column")
        if self.dataset == TABULAR:
            if not self.interactions:
                raise ConfigError("interactions", "required with --dataset=tabular (a .csv, "
                                                  ".tsv or .parquet file of interactions)")
            self.time_source  # noqa: B018  (ConfigError for a bad --time_column)
        else:
            for field in tabular_only + ("user_feature_columns", "item_feature_columns"):
                if getattr(self, field):
                    raise ConfigError(field, f"only read with --dataset=tabular "
                                             f"(--dataset={self.dataset} has a fixed layout)")

    @property
    def time_source(self) -> tuple[str | None, bool]:
        """`time_column` as (column, real times): ``"time"`` -> ("time", True), Unix seconds
        or ISO dates; ``"step:order"`` -> ("step", False), integers that only order the
        interactions; ``""`` -> (None, False), the file's row order. ConfigError for any other
        ``:kind``."""
        spec = (self.time_column or "").strip()
        if not spec:
            return None, False
        column, colon, kind = spec.partition(":")
        if not column or (colon and kind != ORDER):
            raise ConfigError("time_column", f"expected COLUMN (Unix seconds or ISO dates), "
                                             f"COLUMN:{ORDER} (integers that only order the "
                                             f"interactions) or nothing (the file's order), "
                                             f"got {self.time_column!r}")
        return column, not colon

    @property
    def real_times(self) -> bool:
        """Whether the interactions' timestamps are real times (Unix seconds), as MovieLens'
        and a tabular time column's are; ``COLUMN:order`` and an empty `time_column` give an
        order only (sorting and leave-last-one-out work, time cutoffs and gaps do not)."""
        return self.dataset != TABULAR or self.time_source[1]


# --- split -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """The evaluation protocol. `cutoff` (Unix seconds) applies to `time_split`; None means the
    data set's default (2003-01-01 for movielens-1m, the seed's; otherwise the time that leaves
    the last 10% of interactions as test interactions)."""

    protocol: str = _flag(TIME_SPLIT, "Evaluation protocol.", choices=PROTOCOLS)
    cutoff: int | None = _flag(None, "time_split: interactions at or after this time are test "
                               "interactions; Unix seconds or YYYY-MM-DD[THH:MM:SS] (UTC). "
                               "Default: 2003-01-01 for movielens-1m, else the time that leaves "
                               "the last 10% of the interactions for testing.", parse=parse_time)

    def validate(self) -> None:
        _choice("protocol", self.protocol, PROTOCOLS)


# --- model and training ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Negatives drawn on the fly (`dssm_tf.data.negatives`)."""

    negative_sampler: str = _flag("uniform", "uniform: over training items; frequency: the seed's "
                                  "count^power mix; inbatch: the other positives of the batch "
                                  "(plus --num_negatives shared ones); all: every training item "
                                  "(the exact softmax; --examples=sequences).", choices=SAMPLERS)
    num_negatives: int = _flag(3, "Sampled negatives per positive (shared by the batch for "
                               "--loss=inbatch).", lower=0)
    frequent_share: float = _flag(0.3, "frequency sampler: share of negatives drawn from frequent "
                                  "items.", lower=0.0, upper=1.0)
    frequent_min_count: int = _flag(5, "frequency sampler: training interactions that make an item "
                                    "frequent.", lower=1)
    frequency_power: float = _flag(0.75, "frequency sampler: weight = count**power.")

    def validate(self) -> None:
        _choice("negative_sampler", self.negative_sampler, SAMPLERS)
        _at_least("num_negatives", self.num_negatives, 0)
        _at_least("frequent_min_count", self.frequent_min_count, 1)
        if not 0.0 <= self.frequent_share <= 1.0:
            raise ConfigError("frequent_share", f"expected 0..1, got {self.frequent_share}")


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """Architecture shared by both towers (`dssm_tf.models.towers`)."""

    embedding_dim: int = _flag(64, "Key embedding size.", lower=1)
    hidden_units: tuple[int, ...] = _flag((128, 64), "MLP layer sizes of both towers; the last is "
                                          "the output size. Empty: the concatenated embeddings are "
                                          "the output.")
    activation: str = _flag("relu", "Hidden-layer activation.", choices=ACTIVATIONS)
    output_activation: str = _flag("linear", "Last MLP layer activation.", choices=ACTIVATIONS)
    dropout: float = _flag(0.0, "Dropout after hidden layers.", lower=0.0, upper=0.95)
    similarity: str = _flag("cosine", "cosine: towers L2-normalise their output.",
                            choices=SIMILARITIES)
    embedding_l2: float = _flag(0.0, "L2 regularisation of the embedding tables.", lower=0.0)
    initializer: str = _flag("uniform", "Embedding initializer.", choices=INITIALIZERS)
    feature_dim: int = _flag(16, "Embedding size of categorical and multi-valued features.",
                             lower=1)
    # The export's signature takes the schema's features either way; these say if a tower uses them.
    user_features: bool = _flag(False, "Add the data set's user features (movielens: gender, age, "
                                "occupation) to the user tower.")
    item_features: bool = _flag(False, "Add the data set's item features (movielens: genres) to "
                                "the item tower.")
    history_length: int = _flag(0, "Encode the user's last L items (0 = no history; with "
                                "--examples=sequences, 0 = derived from the data's sequence "
                                "lengths).", lower=0)
    user_encoder: str = _flag("mean", "How the history is encoded: the mean of its item "
                              "embeddings, or SASRec-style causal self-attention.",
                              choices=ENCODERS)
    user_key_embedding: bool = _flag(True, "An embedding per user key in the user tower (off: it "
                                     "knows a user by features and history only).")
    share_item_embeddings: bool = _flag(False, "The history's items use the item tower's key "
                                        "embeddings (one table, trained both as input and as "
                                        "candidate).")
    attention_blocks: int = _flag(2, "attention: self-attention blocks.", lower=1)
    attention_heads: int = _flag(1, "attention: heads per block.", lower=1)
    attention_feed_forward: int = _flag(1, "attention: width of each block's feed-forward layer, "
                                        "in multiples of --embedding_dim (SASRec: 1, most "
                                        "transformers: 4).", lower=1)
    attention_gating: bool = _flag(False, "attention: scale each block's attention and "
                                   "feed-forward output by a learned sigmoid gate of the block's "
                                   "input before adding it (LiGR, as in eSASRec).")
    encoder_dropout: float = _flag(0.2, "attention: dropout of the encoder.", lower=0.0, upper=0.95)
    # The history's gaps: `dssm_tf.models.time_gaps`.
    history_time: bool = _flag(False, "Add to each history item an embedding of its gap since the "
                               "item before it (log-bucketed seconds; the history's own times "
                               "only): the user tower then also takes history_timestamps and "
                               "request_time (Unix seconds; request_time is read by --request_gap "
                               "only).")
    attention_time_bias: bool = _flag(False, "attention (with --history_time): add to each "
                                      "attention score a learned bias per head and bucket of the "
                                      "time from the key's item to the query's (HSTU's relative "
                                      "time bias, anchored at the query's own item).")
    request_gap: bool = _flag(False, "With --history_time: add to the user's embedding an "
                              "embedding of the gap from the last history item to request_time (in "
                              "training, the next item's time: HSTU's target-timestamp setting; "
                              "evaluate it with --request_time=next, and at serving pass the time "
                              "of the call).")

    @property
    def output_dim(self) -> int:
        return self.hidden_units[-1] if self.hidden_units else self.embedding_dim

    def validate(self, history_derived: bool = False) -> None:
        """`history_derived`: a history_length of 0 is still to be derived from the data
        (sequences, `dssm_tf.data.sequence_settings`), so the settings that need a history
        are not refused for it."""
        _at_least("embedding_dim", self.embedding_dim, 1)
        _at_least("feature_dim", self.feature_dim, 1)
        _at_least("history_length", self.history_length, 0)
        if any(units < 1 for units in self.hidden_units):
            raise ConfigError("hidden_units", f"expected positive sizes, got "
                                              f"{list(self.hidden_units)}")
        _choice("activation", self.activation, ACTIVATIONS)
        _choice("output_activation", self.output_activation, ACTIVATIONS)
        _choice("similarity", self.similarity, SIMILARITIES)
        _choice("initializer", self.initializer, INITIALIZERS)
        _choice("user_encoder", self.user_encoder, ENCODERS)
        _at_least("attention_blocks", self.attention_blocks, 1)
        _at_least("attention_heads", self.attention_heads, 1)
        _at_least("attention_feed_forward", self.attention_feed_forward, 1)
        for field in ("dropout", "encoder_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ConfigError(field, f"expected 0 <= {field} < 1, got "
                                         f"{getattr(self, field)}")
        no_history = self.history_length < 1 and not history_derived
        if self.share_item_embeddings and no_history:
            raise ConfigError("share_item_embeddings", "needs --history_length >= 1")
        if self.history_time and no_history:
            raise ConfigError("history_time", "times a history: it needs --history_length >= 1")
        if self.attention_time_bias and not (self.history_time
                                             and self.user_encoder == "attention"):
            raise ConfigError("attention_time_bias", "biases the attention encoder by the "
                                                     "history's times: it needs "
                                                     "--user_encoder=attention --history_time")
        if self.request_gap and not self.history_time:
            raise ConfigError("request_gap", "measures from the history's last time: it needs "
                                             "--history_time")
        if self.user_encoder != "mean" and no_history:
            raise ConfigError("user_encoder", f"{self.user_encoder} encodes a history: it "
                                              f"needs --history_length >= 1")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """The loss scheme (`dssm_tf.models.losses`) and its parameters."""

    loss: str = _flag("bce", "Loss scheme.", choices=LOSSES)
    temperature: float = _flag(1.0, "bce/inbatch: logits = score / temperature.", lower=1e-6)
    margin: float = _flag(0.5, "triplet: margin.", lower=0.0)
    triplet_distance: str = _flag("euclidean", "triplet: d = ||u - v|| or d = 1 - cos(u, v).",
                                  choices=TRIPLET_DISTANCES)
    gamma: float = _flag(20.0, "softmax: logits = gamma * score.", lower=1e-6)
    sampling_correction: bool = _flag(False, "bce/softmax: add -log(q(i)/q_uniform) to each logit, "
                                      "so a frequency sampler does not teach the towers to demote "
                                      "popular items.")
    logq_weight: float = _flag(1.0, "inbatch: weight of the logQ correction (1 = full, 0 = none).",
                               lower=0.0)
    exclude_user_items: bool = _flag(False, "sequences: no other target of a user's window is a "
                                     "negative of its positions (the items seen before, which "
                                     "evaluation leaves out of the ranking anyway, and those still "
                                     "to come).")

    @property
    def shares_negatives(self) -> bool:
        """In-batch softmax draws its extra negatives once per batch, not per row."""
        return self.loss == "inbatch"

    def validate(self) -> None:
        _choice("loss", self.loss, LOSSES)
        _choice("triplet_distance", self.triplet_distance, TRIPLET_DISTANCES)
        for field in ("temperature", "gamma"):
            if getattr(self, field) <= 0:
                raise ConfigError(field, f"expected a positive number, got "
                                         f"{getattr(self, field)}")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """The optimisation loop (`dssm_tf.training.trainer`)."""

    epochs: int = _flag(20, "Maximum epochs (sequences: 0 = derived from the data's size, see "
                        "dssm_tf.data.sequence_settings).", lower=0)
    batch_size: int = _flag(512, "Training batch size (sequences: users a batch; 0 = about 2,048 "
                            "target positions a batch, derived from the data).", lower=0)
    learning_rate: float = _flag(0.005, "Optimizer learning rate.", lower=0.0)
    learning_rate_schedule: str = _flag("constant", "constant, or cosine: a linear warm-up over "
                                        "the first epoch, then a cosine decay to 10% of "
                                        "--learning_rate at --epochs.", choices=SCHEDULES)
    optimizer: str = _flag("adam", "Optimizer: lazy_adam = Adam updating only the embedding rows a "
                           "batch touched (faster; see dssm_tf.training.optimizers).",
                           choices=OPTIMIZERS)
    seed: int = _flag(0, "Seed for shuffling, negatives, validation split, init.")
    mixed_precision: bool = _flag(False, "Compute in float16 (mixed_float16 policy).")
    steps_per_execution: int = _flag(64, "Batches per tf.function call: fewer Python round trips "
                                     "per step (3x faster at batch 128 on 2 CPU cores); the "
                                     "updates are the same as with 1.", lower=1)
    patience: int = _flag(3, "Early-stopping patience in epochs.", lower=0)
    early_stopping_metric: str = _flag("loss", "Monitor val_loss (min) or val_recall@50 (max).",
                                       choices=EARLY_STOPPING_METRICS)
    validation: str = _flag("random", "The training interactions held out for early stopping: a "
                            "random --validation_share of them; the last --validation_share of the "
                            "training period (temporal: sees a time split's shift); each user's "
                            "last one (last: as leave_last_one_out tests); or none (every "
                            "interaction trains, all --epochs run, the last weights are kept: the "
                            "refit once validation has chosen the settings).", choices=VALIDATIONS)
    validation_share: float = _flag(0.1, "Share of training interactions held out for early "
                                    "stopping (random, temporal).", lower=0.0, upper=0.9)
    validation_rows: int = _flag(20000, "At most this many held-out interactions are scored for "
                                 "val_recall.", lower=1)
    history_gap: int = _flag(0, "Training: a row's history ends 0..G rows before it (uniform), to "
                             "learn to predict further ahead than the next item.", lower=0)
    examples: str = _flag("interactions", "Training examples: one per interaction (history = the "
                          "items before it), or one per user window (sequences: every position "
                          "trains at once; needs a history and --loss=inbatch).", choices=EXAMPLES)
    sequence_crop: str = _flag("random", "sequences: a user with more than history_length + 1 "
                               "items gets a random window each epoch, or always the latest.",
                               choices=CROPS)
    shuffle_ties: bool = _flag(True, "sequences: each training window puts a user's items that "
                               "share a timestamp in a new random order (their source order is "
                               "close to arbitrary: MovieLens logs bursts of ratings in one "
                               "second, and a model must not learn the file's order). Interaction "
                               "examples ignore it.")
    distribution: str = _flag("none", "tf.distribute: none; mirrored (this machine's devices); "
                              "multi_worker (one process per machine, configured by $TF_CONFIG; "
                              "the same command on every worker).", choices=DISTRIBUTIONS)
    train_files: str | None = _flag(None, "train: read the training examples from these TFRecord "
                                    "shards of `python -m dssm_tf.prepare` (a glob) instead of "
                                    "from memory; each worker reads its own files.")
    verbose: bool = _flag(True, "Show the Keras progress bar.")

    def validate(self) -> None:
        # sequences: an epochs or batch_size of 0 is derived from the data
        # (`dssm_tf.data.sequence_settings`).
        low = 0 if self.examples == "sequences" else 1
        for field in ("epochs", "batch_size"):
            _at_least(field, getattr(self, field), low)
        for field in ("steps_per_execution", "validation_rows"):
            _at_least(field, getattr(self, field), 1)
        _at_least("patience", self.patience, 0)
        _at_least("history_gap", self.history_gap, 0)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("learning_rate_schedule", self.learning_rate_schedule, SCHEDULES)
        _choice("early_stopping_metric", self.early_stopping_metric, EARLY_STOPPING_METRICS)
        _choice("validation", self.validation, VALIDATIONS)
        _choice("examples", self.examples, EXAMPLES)
        _choice("sequence_crop", self.sequence_crop, CROPS)
        _choice("distribution", self.distribution, DISTRIBUTIONS)
        if not 0.0 <= self.validation_share <= 0.9:
            raise ConfigError("validation_share", f"expected 0..0.9, got "
                                                  f"{self.validation_share}")


# Fields that change nothing a resumed run would compute (kept out of its fingerprint):
# `epochs` may be raised to train a killed run further; the others change speed or output only.
NOT_FINGERPRINTED = {"training": ("epochs", "verbose", "steps_per_execution", "train_files")}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run depends on."""

    data: DataConfig = DataConfig()
    split: SplitConfig = SplitConfig()
    sampler: SamplerConfig = SamplerConfig()
    tower: TowerConfig = TowerConfig()
    loss: LossConfig = LossConfig()
    training: TrainingConfig = TrainingConfig()

    def validate(self) -> None:
        """Each part's checks, then the ones across parts."""
        for part in (self.data, self.split, self.sampler, self.loss, self.training):
            part.validate()
        self.tower.validate(history_derived=self.training.examples == "sequences")
        if not self.data.real_times:  # an order only: no time to cut at or to measure gaps in
            given = (f"--time_column={self.data.time_column.strip()} gives an order only"
                     if (self.data.time_column or "").strip()
                     else "an empty --time_column gives the file's order only")
            if self.tower.history_time:
                raise ConfigError("history_time", f"needs real timestamps: {given}")
            if self.split.protocol == TIME_SPLIT:
                raise ConfigError("protocol", f"time_split cuts at a time and needs real "
                                              f"timestamps: {given} (use "
                                              f"--protocol={LEAVE_LAST_ONE_OUT})")
        if self.loss.loss != "inbatch" and self.sampler.negative_sampler == "inbatch":
            raise ConfigError("negative_sampler", "inbatch needs --loss=inbatch")
        if self.loss.loss != "inbatch" and self.sampler.num_negatives < 1:
            raise ConfigError("num_negatives", f"--loss={self.loss.loss} needs at least 1")
        if self.training.early_stopping_metric == "recall":
            if self.training.validation == "none":
                raise ConfigError("early_stopping_metric", "recall needs validation rows: "
                                                           "--validation=none holds none out")
            if self.training.validation_share <= 0 and self.training.validation != "last":
                raise ConfigError("early_stopping_metric", "recall needs --validation_share > 0")
        if self.loss.exclude_user_items and self.training.examples != "sequences":
            raise ConfigError("exclude_user_items", "needs --examples=sequences (a window's "
                                                    "items are its user's)")
        if self.training.train_files and self.tower.history_time:
            raise ConfigError("train_files", "prepared files hold no times: --history_time "
                                             "trains from the data set itself")
        if self.training.train_files and self.training.examples == "sequences":
            raise ConfigError("train_files", "prepared files hold interactions: they train "
                                             "--examples=interactions")
        if self.sampler.negative_sampler == "all" and self.training.examples != "sequences":
            raise ConfigError("negative_sampler", "all (every item a candidate: a full "
                                                  "softmax) trains --examples=sequences")
        if self.training.examples == "sequences":
            if self.loss.loss != "inbatch":
                raise ConfigError("examples", "sequences train with --loss=inbatch (a softmax "
                                              "over the batch's items and shared negatives)")
            if (self.sampler.negative_sampler not in ("inbatch", "all")
                    and self.sampler.num_negatives < 1):
                raise ConfigError("num_negatives", f"sequences with --negative_sampler="
                                                   f"{self.sampler.negative_sampler} score "
                                                   f"against sampled negatives: at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def flat(self) -> dict:
        """Every field by its (flag) name, for metrics.json's flat keys."""
        return {key: value for part in self.to_dict().values() for key, value in part.items()}


def from_dict(cls, values: dict):
    """A config dataclass from `asdict` output (unknown keys ignored, lists back to tuples)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            continue
        if isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class IndexConfig:
    """The faiss index `evaluate` and `recommend` search (`dssm_tf.retrieval.index`)."""

    index: str = _flag("flat", "faiss index for top-K retrieval (inner product): flat = exact.",
                       choices=INDEX_KINDS)
    nlist: int | None = _flag(None, "ivf: number of inverted lists (default ~sqrt(#items)).",
                              lower=1)
    nprobe: int | None = _flag(None, "ivf: lists probed per query (default nlist/4).", lower=1)
    hnsw_m: int = _flag(32, "hnsw: links per node (M).", lower=2)
    ef_search: int = _flag(64, "hnsw: efSearch (raised to the search depth if lower).", lower=1)
    ef_construction: int = 80   # no flag: evaluate and recommend always build HNSW with 80

    def validate(self) -> None:
        _choice("index", self.index, INDEX_KINDS)
