"""tf.data input pipeline: training interactions as raw tower inputs, negatives drawn on the fly.

Each element of the training stream is one batch of interactions, shuffled (seeded) and turned
into raw features by one vectorised `map`, following the schema: the user key, the user
features the towers use, the history, and the item key and features of the positive and of the
negatives. Negatives come from a `dssm_tf.data.negatives` sampler inside that map, seeded by
``(seed, step)``.

The user's history for an interaction is the `history_length` training items of that user
*before* it (YouTube-DNN style), so the model is trained the way it is used at serving time.

A batch is a dict::

    {"user": {user_key, *user features, "history"}, "positive": {item_key, *item features},
     "positive_item": [B] item indices,
     "negatives": {item_key, ...} of [B, N] (or [N] shared), "negative_items": the indices,
     "negative_mask": [B, N] bool, False where a negative is the row's positive}

Usage::

    pipeline = InputPipeline(dataset, split, sampler_config, tower_config, training_config,
                             shared_negatives=False)
    model.fit(pipeline.training(), steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=pipeline.validation())
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from dssm_tf.config import SamplerConfig, TowerConfig, TrainingConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.negatives import Sampler, make_sampler
from dssm_tf.data.schema import HISTORY, HISTORY_TIMESTAMPS, REQUEST_TIME, as_dtype
from dssm_tf.data.splits import Split
from dssm_tf.errors import ConfigError


def _columns(frame, key: str, key_dtype: str, features) -> dict[str, tf.Tensor]:
    """Per row of a user (item) table: the key and the given features, as constants."""
    columns = {key: tf.constant(as_dtype(frame[key], key_dtype))}
    columns.update({f.name: tf.constant(as_dtype(frame[f.name], f.dtype)) for f in features})
    return columns


class FeatureTables:
    """Constant tensors that turn interaction rows into raw tower inputs.

    Only the features the towers read are gathered (`user_features`, `item_features`): the
    gathers of unused string columns would cost pipeline time for nothing. With
    `history_time`, a history comes with its items' times and the request's: the time of the
    row right after the history (the interaction the example predicts, or under a time-split
    style validation the first one after the user's history stops).
    """

    def __init__(self, dataset: Dataset, split: Split, history_length: int,
                 history_gap: int = 0, user_features: bool = True, item_features: bool = True,
                 history_time: bool = False):
        schema = dataset.schema
        self.schema = schema
        self.history_length = history_length
        self.history_gap = history_gap  # history of row p ends at p - g, g uniform in [0, gap]
        self.user_columns = _columns(dataset.users, schema.user_key, schema.user_key_dtype,
                                     schema.user_features if user_features else ())
        self.item_columns = _columns(dataset.items, schema.item_key, schema.item_key_dtype,
                                     schema.item_features if item_features else ())
        self.train_user = tf.constant(split.train.user.to_numpy(np.int64))  # per training row
        self.train_item = tf.constant(split.train.item.to_numpy(np.int64))
        self.train_time = (tf.constant(split.train.timestamp.to_numpy(np.int64))
                           if history_time else None)
        self.user_start = tf.constant(split.user_offsets[:-1].astype(np.int64))  # per user
        self.padding = tf.constant(schema.history_padding,
                                   self.item_columns[schema.item_key].dtype)

    def user_features(self, users: tf.Tensor, history_end: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw user inputs; history = keys of the training items in rows [start(user), end)
        (and with `history_time` their times, and the time of row `end` as the request's)."""
        length = self.history_length
        positions = history_end[:, None] - length + tf.range(length, dtype=tf.int64)[None, :]
        valid = positions >= tf.gather(self.user_start, users)[:, None]
        safe = tf.maximum(positions, 0)
        keys = tf.gather(self.item_columns[self.schema.item_key], tf.gather(self.train_item, safe))
        features = {name: tf.gather(values, users) for name, values in self.user_columns.items()}
        features[HISTORY] = tf.where(valid, keys, self.padding)
        if self.train_time is not None:
            stamps = tf.gather(self.train_time, safe)
            features[HISTORY_TIMESTAMPS] = tf.where(valid, stamps, tf.zeros_like(stamps))
            last_row = tf.size(self.train_time, tf.int64) - 1
            features[REQUEST_TIME] = tf.gather(self.train_time,
                                               tf.minimum(history_end, last_row))
        return features

    def item_features(self, items: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw item inputs of item indices `items` (any shape)."""
        return {name: tf.gather(values, items) for name, values in self.item_columns.items()}

    def interaction_features(self, rows: tf.Tensor, seed: tf.Tensor | None = None,
                             history_end: tf.Tensor | None = None) -> dict:
        """Features of training rows: the user (history = rows before it, or before
        `history_end` when given) and the positive.

        With `history_gap` > 0 and a `seed`, each history stops a random 0..gap rows earlier,
        so the model also learns to predict items further ahead than the next one.
        """
        users = tf.gather(self.train_user, rows)
        history_end = rows if history_end is None else history_end
        if self.history_gap and seed is not None:
            gap = tf.random.stateless_uniform(tf.shape(rows), seed, 0, self.history_gap + 1,
                                              dtype=tf.int64)
            history_end = tf.maximum(rows - gap, tf.gather(self.user_start, users))
        items = tf.gather(self.train_item, rows)
        return {"user": self.user_features(users, history_end),
                "positive": self.item_features(items), "positive_item": items}


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which replicas of a synchronous `tf.distribute` run an input pipeline feeds: `count`
    replicas from `first`, of `replicas` in all. The default is the whole of a one-replica run.
    """

    replicas: int = 1
    first: int = 0
    count: int = 1

    @classmethod
    def of(cls, context) -> "Shard":
        """The shard of a `tf.distribute.InputContext` (None: no distribution)."""
        if context is None:
            return cls()
        per_pipeline = context.num_replicas_in_sync // context.num_input_pipelines
        return cls(context.num_replicas_in_sync, context.input_pipeline_id * per_pipeline,
                   per_pipeline)

    def locate(self, epoch, steps, element):
        """(global step, replica, key) of this shard's `element`-th per-replica batch of
        `epoch` (of `steps` global steps): the shard's replicas take turns within a step, and
        `key` numbers (step, replica) uniquely over the run — the seed of its negatives; with
        one replica it is the step."""
        step, replica = element // self.count, self.first + element % self.count
        return step, replica, (epoch * steps + step) * self.replicas + replica


def steps_per_epoch(rows: int, batch_size: int, replicas: int = 1) -> int:
    """Global steps an epoch: every row once (the last batch short) on one replica; only whole
    global batches on several, which all-gather equal shares."""
    return math.ceil(rows / batch_size) if replicas == 1 else rows // batch_size


def check_even_shares(batch_size: int, replicas: int) -> None:
    """ConfigError("batch_size") unless the global batch splits evenly over the replicas."""
    if replicas > 1 and batch_size % replicas:
        raise ConfigError("batch_size", f"{batch_size} does not split evenly over "
                                        f"{replicas} replicas")


def training_steps(rows: int, batch_size: int, replicas: int = 1) -> int:
    """`steps_per_epoch` of a training stream, which must have at least one step."""
    steps = steps_per_epoch(rows, batch_size, replicas)
    if steps == 0:
        raise ConfigError("batch_size", f"{batch_size} is more than the {rows} training "
                                        f"rows: no whole global batch to share")
    return steps


def with_negatives(features: dict, tables: "FeatureTables", sampler: Sampler,
                   num_negatives: int, shared: bool, step_seed: tf.Tensor) -> dict:
    """`features` of a batch plus `num_negatives` negatives a row (or, `shared`, for the whole
    batch) drawn with `step_seed`, their item inputs and the mask of accidental positives."""
    if not num_negatives:
        return features
    items = features["positive_item"]
    batch = tf.size(items, tf.int64)
    shape = tf.stack([num_negatives] if shared else [batch, num_negatives])
    negatives = sampler.sample(shape, step_seed)
    features["negatives"] = tables.item_features(negatives)
    features["negative_items"] = negatives
    # A negative that happens to be the positive must not count against it.
    features["negative_mask"] = tf.not_equal(negatives[None, :] if shared else negatives,
                                             items[:, None])
    return features


def _chunks(order_of_epoch, rows: int, batch_size: int, shard: Shard, first_epoch,
            epochs: int | None = None) -> tf.data.Dataset:
    """(key, rows) elements: for each global step, this shard's replicas' shares of the global
    batch, in replica order (what `distribute_datasets_from_function` hands out), keyed by
    `Shard.locate`.
    `order_of_epoch(e)` gives epoch e's order of the rows."""
    steps = steps_per_epoch(rows, batch_size, shard.replicas)
    share = batch_size // shard.replicas

    def epoch_chunks(epoch: tf.Tensor) -> tf.data.Dataset:
        order = order_of_epoch(epoch)

        def chunk(index):
            step, replica, key = shard.locate(epoch, steps, index)
            start = step * batch_size + replica * share
            return key, order[start:start + share]

        return tf.data.Dataset.range(steps * shard.count).map(chunk)

    epochs_ds = tf.data.Dataset.counter(first_epoch)
    if epochs is not None:
        epochs_ds = epochs_ds.take(epochs)
    return epochs_ds.flat_map(epoch_chunks)


def _shuffled_batches(rows: np.ndarray, batch_size: int, seed: int, start_step: int,
                      shard: Shard = Shard()) -> tf.data.Dataset:
    """Endless (key, batch rows) of `rows`: epoch e is one stateless permutation keyed by
    (seed, e), cut into `steps_per_epoch` global batches (on one replica the last may be
    short), so a batch never spans two epochs. One op per epoch and a slice per batch: ~30x the
    rate of a per-element `Dataset.shuffle` buffer, which was the pipeline's bottleneck. Starts
    at global step `start_step`; every replica's share of a step is a disjoint slice of the
    same permutation, whatever machine computes it."""
    if len(rows) == 0:
        raise ValueError("no rows to train on")
    table = tf.constant(rows)
    steps = training_steps(len(rows), batch_size, shard.replicas)
    first_epoch, offset = divmod(start_step, steps)
    return _chunks(
        lambda epoch: tf.random.experimental.stateless_shuffle(
            table, tf.stack([tf.constant(seed, tf.int64), epoch])),
        len(rows), batch_size, shard, first_epoch).skip(offset * shard.count)


def _batches(tables: FeatureTables, rows: np.ndarray, sampler: Sampler, num_negatives: int,
             batch_size: int, seed: int, shuffle: bool, shared: bool, start_step: int = 0,
             shard: Shard = Shard(), history_ends: np.ndarray | None = None) -> tf.data.Dataset:
    rows = np.asarray(rows, np.int64)
    ends = None if history_ends is None else tf.constant(np.asarray(history_ends, np.int64))
    check_even_shares(batch_size, shard.replicas)
    if shuffle:
        keyed_rows = _shuffled_batches(rows, batch_size, seed, start_step, shard)
    elif shard.replicas == 1:
        batches = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size).skip(start_step)
        keyed_rows = tf.data.Dataset.zip((tf.data.Dataset.counter(start_step), batches))
    else:
        table = tf.constant(rows)
        keyed_rows = _chunks(lambda epoch: table, len(rows), batch_size, shard, 0, epochs=1)

    def to_features(step, batch_rows):
        step_seed = tf.stack([tf.cast(seed, tf.int64), step])
        features = tables.interaction_features(
            batch_rows, tf.random.experimental.stateless_fold_in(step_seed, 1),
            history_end=None if ends is None else tf.gather(ends, batch_rows))
        return with_negatives(features, tables, sampler, num_negatives, shared, step_seed)

    return keyed_rows.map(to_features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)


def training_dataset(tables: FeatureTables, rows: np.ndarray, sampler: Sampler,
                     num_negatives: int, batch_size: int, seed: int,
                     shared_negatives: bool = False, start_step: int = 0,
                     shard: Shard = Shard()) -> tf.data.Dataset:
    """Endless, reshuffled-every-epoch batches (use `steps_per_epoch`); under `tf.distribute`,
    this `shard`'s shares of them.

    With `shared_negatives`, one draw of `num_negatives` items serves the whole batch
    (mixed negative sampling): `negatives` is `[num_negatives]`, `negative_mask` stays
    `[batch, num_negatives]`. `start_step` skips the first batches of the stream: a run
    resumed after `start_step` steps sees the same batches and negatives as an uninterrupted one.
    """
    return _batches(tables, rows, sampler, num_negatives, batch_size, seed, shuffle=True,
                    shared=shared_negatives, start_step=start_step, shard=shard)


def validation_dataset(tables: FeatureTables, rows: np.ndarray, sampler: Sampler,
                       num_negatives: int, batch_size: int, seed: int,
                       shared_negatives: bool = False, shard: Shard = Shard(),
                       history_ends: np.ndarray | None = None) -> tf.data.Dataset:
    """One pass over `rows` in order; the same negatives at every evaluation. `history_ends`
    (per training row, see `validation_history_ends`) says where each history stops."""
    return _batches(tables, rows, sampler, num_negatives, batch_size, seed + 1, shuffle=False,
                    shared=shared_negatives, shard=shard, history_ends=history_ends)


def split_validation(num_rows: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (fit rows, validation rows) of the *training* interactions."""
    order = np.random.default_rng(seed).permutation(num_rows)
    n_val = int(round(num_rows * share))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def validation_split(split: Split, training: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of `split.train` as `training.validation` says:

    - ``random``: a seeded random `validation_share` of the interactions (blind to time);
    - ``temporal``: those in the last `validation_share` of the training period, by time — the
      shift a time split tests (a year ahead) is seen by the validation too;
    - ``last``: each user's last training interaction (users with at least two) — what
      leave-last-one-out tests, one step earlier;
    - ``none``: every interaction trains (the refit, once validation has chosen the settings:
      every epoch runs and the last weights are kept).
    """
    num_rows = len(split.train)
    if training.validation == "none":
        return np.arange(num_rows), np.arange(0)
    if training.validation == "random":
        return split_validation(num_rows, training.validation_share, training.seed)
    if training.validation == "temporal":
        stamps = split.train.timestamp.to_numpy()
        if training.validation_share <= 0 or num_rows == 0:
            is_val = np.zeros(num_rows, bool)
        else:
            ordered = np.sort(stamps)
            cutoff = ordered[min(num_rows - 1,
                                 int(math.floor(num_rows * (1 - training.validation_share))))]
            is_val = stamps >= cutoff
    else:
        ends = split.user_offsets[1:]
        counts = np.diff(split.user_offsets)
        is_val = np.zeros(num_rows, bool)
        is_val[ends[counts >= 2] - 1] = True
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def validation_history_ends(split: Split, val_rows: np.ndarray,
                            validation: str) -> np.ndarray | None:
    """Per training row, where the history of a validation row stops; None = just before it.

    Under ``temporal`` validation a user's histories stop at their first validation row: the
    user is seen as of the validation cutoff, the way a time split's test sees users as of
    its cutoff. Histories that ran up to each validation item would reward predicting the next
    item — which a history tower does well and a year-ahead test does not ask.
    """
    if validation != "temporal" or not len(val_rows):
        return None
    users = split.train.user.to_numpy()[val_rows]
    first = np.full(split.num_users, len(split.train), np.int64)
    np.minimum.at(first, users, val_rows)
    ends = np.arange(len(split.train), dtype=np.int64)
    ends[val_rows] = first[users]
    return ends


class InputPipeline:
    """Everything that feeds training, built once from the split and the configs: the
    fit/validation rows, the feature tables, the negative sampler and both streams."""

    def __init__(self, dataset: Dataset, split: Split, sampler: SamplerConfig,
                 tower: TowerConfig, training: TrainingConfig, shared_negatives: bool = False,
                 replicas: int = 1):
        self.fit_rows, self.val_rows = validation_split(split, training)
        self.val_history_ends = validation_history_ends(split, self.val_rows,
                                                        training.validation)
        self.replicas = replicas
        self.tables = FeatureTables(dataset, split, tower.history_length, training.history_gap,
                                    user_features=tower.user_features,
                                    item_features=tower.item_features,
                                    history_time=tower.history_time)
        self.sampler = make_sampler(sampler, split.item_counts)
        self.num_negatives = sampler.num_negatives
        self.batch_size = training.batch_size
        self.seed = training.seed
        self.shared_negatives = shared_negatives

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.fit_rows), self.batch_size, self.replicas)

    def _stream(self, rows: np.ndarray, validation: bool, start_step: int = 0,
                context=None):
        make = validation_dataset if validation else training_dataset
        extra = ({"history_ends": self.val_history_ends} if validation
                 else {"start_step": start_step})
        return make(self.tables, rows, self.sampler, self.num_negatives, self.batch_size,
                    self.seed, shared_negatives=self.shared_negatives,
                    shard=Shard.of(context), **extra)

    def training(self, start_step: int = 0, context=None) -> tf.data.Dataset:
        """The endless training stream, from step `start_step` (see `training_dataset`);
        `context` is the `tf.distribute.InputContext` of a distributed run."""
        return self._stream(self.fit_rows, validation=False, start_step=start_step,
                            context=context)

    def validation(self, context=None) -> tf.data.Dataset | None:
        """One ordered pass over the validation rows (None without validation rows)."""
        if not len(self.val_rows):
            return None
        return self._stream(self.val_rows, validation=True, context=context)

    def first_batch(self) -> dict:
        """A batch of the first fit rows, to build the model's variables. Taken from its own
        ordered pass: the training stream is stateless, so this does not shift it."""
        return next(iter(self._stream(self.fit_rows[:self.batch_size], validation=True)))
