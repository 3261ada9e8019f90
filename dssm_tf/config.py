"""Every setting of dssm_tf as frozen dataclasses, and every choice list, defined once.

The command layer (`dssm_tf.cli.flags`) builds these from flags, once; library code takes them
as arguments and never reads flags. Field names are the flag names, so an error about field
``batch_size`` is reported as ``--batch_size`` (`errors.ConfigError`). ``dataclasses.asdict`` of
a `RunConfig` is what ``metadata.json`` and ``config.json`` record (TF Model Garden stores its
params next to the model the same way).

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

    dataset: str = MOVIELENS_1M
    data_dir: str | None = None
    download_url: str | None = None       # default: the release's GroupLens address
    interactions: str | None = None
    users: str | None = None
    items: str | None = None
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str = "timestamp"
    rating_column: str | None = None
    user_feature_columns: tuple[str, ...] = ()
    item_feature_columns: tuple[str, ...] = ()
    title_column: str | None = None
    encoding: str = "utf-8"
    min_rating: float | None = None       # None: every interaction is a positive (the seed's)
    missing_keys: str = "error"           # interactions whose key a feature table lacks

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

    protocol: str = TIME_SPLIT
    cutoff: int | None = None

    def validate(self) -> None:
        _choice("protocol", self.protocol, PROTOCOLS)


# --- model and training ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Negatives drawn on the fly (`dssm_tf.data.negatives`)."""

    negative_sampler: str = "uniform"
    num_negatives: int = 3
    frequent_share: float = 0.3
    frequent_min_count: int = 5
    frequency_power: float = 0.75

    def validate(self) -> None:
        _choice("negative_sampler", self.negative_sampler, SAMPLERS)
        _at_least("num_negatives", self.num_negatives, 0)
        _at_least("frequent_min_count", self.frequent_min_count, 1)
        if not 0.0 <= self.frequent_share <= 1.0:
            raise ConfigError("frequent_share", f"expected 0..1, got {self.frequent_share}")


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """Architecture shared by both towers (`dssm_tf.models.towers`)."""

    embedding_dim: int = 64
    hidden_units: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    output_activation: str = "linear"
    dropout: float = 0.0
    similarity: str = "cosine"
    embedding_l2: float = 0.0
    initializer: str = "uniform"
    feature_dim: int = 16
    user_features: bool = False   # use the schema's user features (the signature has them anyway)
    item_features: bool = False
    history_length: int = 0
    user_encoder: str = "mean"    # how the history is encoded (`dssm_tf.models.encoders`)
    user_key_embedding: bool = True   # an embedding per user key (off: features + history only)
    share_item_embeddings: bool = False  # history items use the item tower's key embeddings
    attention_blocks: int = 2
    attention_heads: int = 1
    attention_feed_forward: int = 1  # attention: the feed-forward layer's width / embedding_dim
    attention_gating: bool = False   # attention: LiGR's sigmoid gates on the residual branches
    encoder_dropout: float = 0.2
    # The history's items carry their gap since the item before (`dssm_tf.models.time_gaps`);
    # the user tower then takes their times (and the request's, used by request_gap only).
    history_time: bool = False
    attention_time_bias: bool = False  # attention: a bias per bucket of time between items
    request_gap: bool = False  # + the gap from the last item to the request (HSTU's target time)

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

    loss: str = "bce"
    temperature: float = 1.0          # bce / inbatch: logits = score / temperature
    margin: float = 0.5               # triplet
    triplet_distance: str = "euclidean"
    gamma: float = 20.0               # softmax: logits = gamma * score
    sampling_correction: bool = False  # bce / softmax: -log(q(i)/q_uniform) offsets
    logq_weight: float = 1.0          # inbatch
    exclude_user_items: bool = False  # sequences: a window's targets are not its negatives

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

    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 0.005
    learning_rate_schedule: str = "constant"  # cosine: a warm-up epoch, then down to 10%
    optimizer: str = "adam"
    seed: int = 0
    mixed_precision: bool = False
    steps_per_execution: int = 64
    patience: int = 3
    early_stopping_metric: str = "loss"
    validation: str = "random"       # which training interactions validate (see VALIDATIONS)
    validation_share: float = 0.1
    validation_rows: int = 20000
    history_gap: int = 0
    examples: str = "interactions"   # sequences: every position of a user's sequence at once
    sequence_crop: str = "random"    # sequences: a random window per epoch, or the latest
    shuffle_ties: bool = True        # sequences: a user's same-timestamp items in random order
    distribution: str = "none"       # tf.distribute strategy (`dssm_tf.training.distribute`)
    train_files: str | None = None   # TFRecord shards of `prepare` (glob), read instead of rows
    verbose: bool = True

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

    index: str = "flat"
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int = 64
    ef_construction: int = 80

    def validate(self) -> None:
        _choice("index", self.index, INDEX_KINDS)
