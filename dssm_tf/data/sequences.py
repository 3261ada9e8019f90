"""User sequences as training examples: every position of a user's history trains at once.

`InputPipeline` (``--examples=interactions``) makes one example per interaction, whose history
is the items before it. A causal encoder (`dssm_tf.models.encoders`) can do better: one
forward pass over a user's window of items gives an output at every position, and the output
at position t is trained to predict item t + 1. `SequencePipeline` (``--examples=sequences``)
feeds that: each example is one user's window of up to L + 1 consecutive training items —
the L inputs, and the L targets shifted by one.

- Windows: with ``--sequence_crop=random`` a user with more than L + 1 items gets a random
  window each epoch (every interaction is trained on over the epochs), with ``latest`` always
  the most recent one.
- Batches: users are shuffled every epoch (seeded, stateless) and grouped by window length in
  buckets of 8 positions, and a batch is only as wide as its longest window: padding costs
  almost nothing, where a fixed width of L = 200 would spend half of every batch on it.
- Ties: with ``--shuffle_ties`` a user's items that share a timestamp come in a new random
  order in every training window. Their source order is close to arbitrary (MovieLens-1M logs
  half of its consecutive ratings in the same second as the one before, and 42% of its last
  ratings), so the encoder learns which items a burst holds, not one order of them.
- Times: with ``--history_time`` a window also carries its inputs' timestamps and, as the
  request time, the last target's: the input at t is followed by item t + 1, so the gap the
  tower embeds there (`dssm_tf.models.time_gaps`) is to the item it predicts.
- Negatives: `num_negatives` items shared by the batch, drawn on the fly by the sampler, or
  with ``--negative_sampler=all`` every training item (a full softmax).
- Validation: a user's window ends at their last validation interaction and covers all their
  training interactions before it; only validation interactions are targets.

A batch is ``{"user": {user key, features, "history": [B, W]}, "positive": item features
[B, W], "positive_item": [B, W] (-1 where no target), "target_mask": [B, W],
"negatives": item features [N], "negative_items": [N]}``.

Usage::

    pipeline = SequencePipeline(dataset, split, sampler_config, tower_config, training_config)
    model.fit(pipeline.training(), steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=pipeline.validation())
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dssm_tf.config import SamplerConfig, TowerConfig, TrainingConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.negatives import make_sampler
from dssm_tf.data.pipeline import FeatureTables, validation_history_ends, validation_split
from dssm_tf.data.schema import HISTORY, HISTORY_TIMESTAMPS, REQUEST_TIME
from dssm_tf.data.splits import Split
from dssm_tf.errors import ConfigError

BUCKET = 8  # window widths are rounded up to a multiple of this (fewer distinct shapes)


def _runs(rows: np.ndarray, users: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) per user of the contiguous runs of `rows` (sorted by user)."""
    counts = np.bincount(users, minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return starts.astype(np.int64), counts.astype(np.int64)


class SequencePipeline:
    """Sequence batches for training and validation (see the module docstring)."""

    def __init__(self, dataset: Dataset, split: Split, sampler: SamplerConfig,
                 tower: TowerConfig, training: TrainingConfig, shared_negatives: bool = True,
                 replicas: int = 1):
        del shared_negatives  # sequence batches always share their negatives
        if replicas > 1:
            raise ConfigError("distribution", "--examples=sequences trains on one replica "
                                              "(its batches are not sharded yet)")
        self.fit_rows, self.val_rows = validation_split(split, training)
        # Where the validation recall's histories stop (`ValidationRecall`).
        self.val_history_ends = validation_history_ends(split, self.val_rows,
                                                        training.validation)
        self.tables = FeatureTables(dataset, split, tower.history_length,
                                    user_features=tower.user_features,
                                    item_features=tower.item_features,
                                    history_time=tower.history_time)
        self.sampler = make_sampler(sampler, split.item_counts)
        self.length = tower.history_length
        self.batch_size = training.batch_size
        self.num_negatives = sampler.num_negatives
        # --negative_sampler=all: every training item (the uniform sampler's support) is a
        # candidate of every batch.
        self.all_items = (tf.constant(self.sampler.support, tf.int64)
                          if sampler.negative_sampler == "all" else None)
        self.seed = training.seed
        self.random_crop = training.sequence_crop == "random"
        train_users = split.train.user.to_numpy()
        train_items = split.train.item.to_numpy().astype(np.int64)
        # Training windows run over the fit rows only (a user's validation items are left out).
        fit_start, fit_length = _runs(self.fit_rows, train_users[self.fit_rows],
                                      split.num_users)
        self.train_users = np.flatnonzero(fit_length >= 2).astype(np.int64)
        # --shuffle_ties: the fit rows' tie groups (a user's items at one timestamp), numbered
        # in order; a training window sorts its rows by group + noise.
        self._fit_ties = None
        if training.shuffle_ties:
            stamps = split.train.timestamp.to_numpy()[self.fit_rows]
            users = train_users[self.fit_rows]
            new_group = (users[1:] != users[:-1]) | (stamps[1:] != stamps[:-1])
            self._fit_ties = tf.constant(
                np.concatenate([[0], np.cumsum(new_group)]).astype(np.float64))
        # --history_time: the rows' times travel with the windows (None: not gathered).
        stamps = split.train.timestamp.to_numpy(np.int64) if tower.history_time else None
        self._fit = (tf.constant(train_items[self.fit_rows]), tf.constant(fit_start),
                     tf.constant(fit_length), tf.ones(len(self.fit_rows), tf.bool),
                     None if stamps is None else tf.constant(stamps[self.fit_rows]))
        # Validation windows run over all training rows; only validation rows are targets.
        is_val = np.zeros(len(split.train), bool)
        is_val[self.val_rows] = True
        self.val_users = np.unique(train_users[self.val_rows]).astype(np.int64)
        last_val = np.zeros(split.num_users, np.int64)
        np.maximum.at(last_val, train_users[self.val_rows], self.val_rows + 1)
        all_start = split.user_offsets[:-1].astype(np.int64)
        self._all = (tf.constant(train_items), tf.constant(all_start),
                     tf.constant(last_val - all_start), tf.constant(is_val),
                     None if stamps is None else tf.constant(stamps))
        targets = np.minimum(fit_length[self.train_users] - 1, self.length)
        self.positions_per_batch = float(targets.mean() * self.batch_size) if len(targets) \
            else 1.0

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_users) / self.batch_size)

    # --- batches -------------------------------------------------------------------------------

    def _windows(self, users: tf.Tensor, runs, seed: tf.Tensor | None,
                 ties: tf.Tensor | None = None, ties_seed: tf.Tensor | None = None) -> dict:
        """Features of one window per user in `users` over `runs` (items, start, length,
        is_target, times or None): the last L + 1 items of the run, or a random L + 1 of them.
        With `ties` (the rows' tie group numbers), the window's rows of one group come in
        random order. With times, the inputs' times and the last target's as the request's."""
        items, starts, lengths, is_target, times = runs
        start, length = tf.gather(starts, users), tf.gather(lengths, users)
        end = start + length                    # one past the window's last item
        spare = tf.maximum(length - (self.length + 1), 0)
        if seed is not None:                    # a random window of a long history
            draw = tf.random.stateless_uniform(tf.shape(users), seed, dtype=tf.float32)
            end -= tf.cast(tf.floor(draw * tf.cast(spare + 1, tf.float32)), tf.int64)
        count = tf.minimum(end - start, self.length + 1)
        width = tf.minimum(
            (tf.reduce_max(count) - 1 + BUCKET - 1) // BUCKET * BUCKET, self.length)
        width = tf.maximum(width, 1)
        inputs = end[:, None] - 1 - width + tf.range(width, dtype=tf.int64)[None, :]
        real = inputs >= tf.maximum(start, end - count)[:, None]
        safe_in = tf.maximum(inputs, 0)
        safe_target = tf.minimum(safe_in + 1, tf.size(items, tf.int64) - 1)
        if ties is not None:
            # The window's L + 1 rows (padding first) sorted by tie group + noise in [0, 1):
            # groups keep their order, a group's rows are shuffled.
            rows = tf.concat([safe_in, safe_target[:, -1:]], axis=1)
            in_window = tf.concat([real, real[:, -1:]], axis=1)
            noise = tf.random.stateless_uniform(tf.shape(rows), ties_seed, dtype=tf.float64)
            key = tf.where(in_window, tf.gather(ties, rows) + noise, -1.0)
            rows = tf.gather(rows, tf.argsort(key, axis=1, stable=True), batch_dims=1)
            safe_in, safe_target = rows[:, :-1], rows[:, 1:]
        target_mask = real & tf.gather(is_target, safe_target)
        input_items = tf.gather(items, safe_in)
        target_items = tf.gather(items, safe_target)
        tables = self.tables
        user = {name: tf.gather(values, users) for name, values in tables.user_columns.items()}
        keys = tf.gather(tables.item_columns[tables.schema.item_key], input_items)
        user[HISTORY] = tf.where(real, keys, tables.padding)
        if times is not None:
            stamps = tf.gather(times, safe_in)
            user[HISTORY_TIMESTAMPS] = tf.where(real, stamps, tf.zeros_like(stamps))
            user[REQUEST_TIME] = tf.gather(times, safe_target[:, -1])
        return {"user": user, "positive": tables.item_features(target_items),
                "positive_item": tf.where(target_mask, target_items, -1),
                "target_mask": target_mask}

    def _with_negatives(self, features: dict, step_seed: tf.Tensor) -> dict:
        if self.all_items is not None or self.num_negatives:
            negatives = (self.all_items if self.all_items is not None else
                         self.sampler.sample(tf.constant([self.num_negatives], tf.int64),
                                             step_seed))
            features["negatives"] = self.tables.item_features(negatives)
            features["negative_items"] = negatives
        return features

    def training(self, start_step: int = 0) -> tf.data.Dataset:
        """The endless training stream from step `start_step`: every epoch each user with a
        target once, in length buckets of random order."""
        users = tf.constant(self.train_users)
        counts = tf.minimum(tf.gather(self._fit[2], users), self.length + 1)
        size, steps = len(self.train_users), self.steps_per_epoch
        batch, seed = self.batch_size, self.seed

        def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            noise = tf.random.stateless_uniform([size], key, dtype=tf.float64)
            order = tf.argsort(tf.cast(counts // BUCKET, tf.float64) + noise)  # by bucket
            batches = tf.random.experimental.stateless_shuffle(
                tf.range(steps, dtype=tf.int64), tf.stack([key[0], epoch + 1_000_003]))
            return tf.data.Dataset.from_tensor_slices(batches).map(
                lambda b: tf.gather(users, order[b * batch:(b + 1) * batch]))

        def to_features(step, batch_users):
            step_seed = tf.stack([tf.cast(seed, tf.int64), step])
            crop = (tf.random.experimental.stateless_fold_in(step_seed, 1)
                    if self.random_crop else None)
            windows = self._windows(batch_users, self._fit, crop, self._fit_ties,
                                    tf.random.experimental.stateless_fold_in(step_seed, 2))
            return self._with_negatives(windows, step_seed)

        first_epoch, offset = divmod(start_step, steps)
        stream = tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches).skip(offset)
        return (tf.data.Dataset.zip((tf.data.Dataset.counter(start_step), stream))
                .map(to_features, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    def _ordered(self, users: np.ndarray, runs, seed: int) -> tf.data.Dataset:
        def to_features(step, batch_users):
            step_seed = tf.stack([tf.constant(seed, tf.int64), step])
            return self._with_negatives(self._windows(batch_users, runs, None), step_seed)

        stream = tf.data.Dataset.from_tensor_slices(users).batch(self.batch_size)
        return (tf.data.Dataset.zip((tf.data.Dataset.counter(), stream))
                .map(to_features, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    def validation(self) -> tf.data.Dataset | None:
        """One ordered pass over the users with validation interactions (None without)."""
        if not len(self.val_users):
            return None
        return self._ordered(self.val_users, self._all, self.seed + 1)

    def first_batch(self) -> dict:
        """A batch of training windows, to build the model's variables."""
        return next(iter(self._ordered(self.train_users[:self.batch_size], self._fit,
                                       self.seed + 1)))
