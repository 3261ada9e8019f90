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
  almost nothing, where a fixed width of L = 200 would spend half of every batch on it. A
  batch holds about as many positions as `batch_size` users of the mean length: more users
  when their windows are short, fewer when they are long, so every step costs about the same
  and a batch of short users does not waste its step.
- Ties: with ``--shuffle_ties`` a user's items that share a timestamp come in a new random
  order in every training window. Their source order is close to arbitrary (MovieLens-1M logs
  half of its consecutive ratings in the same second as the one before, and 42% of its last
  ratings), so the encoder learns which items a burst holds, not one order of them.
- Times: with ``--history_time`` a window also carries its inputs' timestamps and, as the
  request time, the last target's: the request of position t is item t + 1's time, which
  only ``--request_gap`` reads (`dssm_tf.models.time_gaps`).
- Negatives: `num_negatives` items shared by the batch, drawn on the fly by the sampler, or
  with ``--negative_sampler=all`` every training item (a full softmax).
- Validation: a user's window ends at their last validation interaction and covers all their
  training interactions before it; only validation interactions are targets.
- Replicas (``--distribution=mirrored|multi_worker``, `SequencePipeline(..., replicas=R)`):
  a packed batch is the global batch, its users a multiple of R, and replica r reads the r-th
  equal share of it, a disjoint slice of the same seeded order on every machine: the shares
  of a step are that step's whole batch split (the same users and windows: a random crop is
  drawn for the whole batch; tie orders are drawn per share). Every replica of a step draws
  the same shared negatives (seeded by the global step), so the global batch has one set of
  candidates, which `CandidateSoftmax` gathers (`dssm_tf.models.losses`). A bucket's leftover
  users (fewer than R) are joined to the next bucket's first batch; the ``users % R`` left
  at the end are random users, drawn anew every epoch, who sit that epoch out, so
  `steps_per_epoch` stays fixed. Validation reads whole global batches of `batch_size`
  users (rounded down to a multiple of R), endlessly: a run reads `validation_steps` of them.
  On one replica, nothing of this changes a batch.

A batch is ``{"user": {user key, features, "history": [B, W]}, "positive": item features
[B, W], "positive_item": [B, W] (-1 where no target), "target_mask": [B, W],
"negatives": item features [N], "negative_items": [N]}``.

Usage::

    pipeline = SequencePipeline(dataset, split, sampler_config, tower_config, training_config)
    model.fit(pipeline.training(), steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=pipeline.validation())
    # on several replicas
    pipeline = SequencePipeline(..., replicas=strategy.num_replicas_in_sync)
    model.fit(strategy.distribute_datasets_from_function(
                  lambda context: pipeline.training(start_step, context)),
              steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=strategy.distribute_datasets_from_function(pipeline.validation),
              validation_steps=pipeline.validation_steps)
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from dssm_tf.config import SamplerConfig, TowerConfig, TrainingConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.negatives import make_sampler
from dssm_tf.data.pipeline import (FeatureTables, Shard, validation_history_ends,
                                   validation_split)
from dssm_tf.data.schema import HISTORY, HISTORY_TIMESTAMPS, REQUEST_TIME
from dssm_tf.data.splits import Split
from dssm_tf.errors import ConfigError

BUCKET = 8  # window widths are rounded up to a multiple of this (fewer distinct shapes)
_RESTING = 1e9  # added to the sort key of the users that rest for an epoch: last in its order


def _runs(rows: np.ndarray, users: np.ndarray, num_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) per user of the contiguous runs of `rows` (sorted by user)."""
    counts = np.bincount(users, minlength=num_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return starts.astype(np.int64), counts.astype(np.int64)


def bucket_widths(targets: np.ndarray, length: int) -> np.ndarray:
    """The padded width of each window of `targets` target positions: rounded up to a multiple
    of `BUCKET`, at most `length`, at least 1. Users are batched by it (`packed_batches`, and
    the epoch's order in `SequencePipeline.training`).

    >>> bucket_widths(np.array([1, 8, 9, 200]), 200).tolist()
    [8, 8, 16, 200]
    """
    widths = np.minimum((np.asarray(targets) + BUCKET - 1) // BUCKET * BUCKET, length)
    return np.maximum(widths, 1)


def packed_batches(targets: np.ndarray, length: int, positions: float,
                   replicas: int = 1) -> np.ndarray:
    """`[steps, 2]` (start, size) of an epoch's batches in the users' order by bucket
    (`bucket_widths`): each bucket's users are cut into batches of about `positions` padded
    positions (at least one user), so a batch of short windows holds more users than one of
    long windows.

    With `replicas` > 1 every size is a multiple of `replicas` (at least `replicas`: each
    replica's share holds a user or more). A bucket's leftover users, fewer than `replicas`,
    are joined to the next bucket's first batch (as wide as that bucket's windows); the last
    bucket's leftover, the final ``len(targets) % replicas`` users of the order, is in no batch
    (`SequencePipeline.training` puts random users there, who rest for that epoch).

    >>> packed_batches(np.array([3, 3, 3, 3, 16, 16]), 16, 16.0).tolist()
    [[0, 2], [2, 2], [4, 1], [5, 1]]
    >>> packed_batches(np.array([3, 3, 3, 16, 16, 16, 16]), 16, 16.0, replicas=2).tolist()
    [[0, 2], [2, 2], [4, 2]]
    """
    widths = np.sort(bucket_widths(targets, length))
    batches, start = [], 0
    for width in np.unique(widths):
        last = np.searchsorted(widths, width, "right")
        per_batch = max(replicas, max(1, int(positions // width)) // replicas * replicas)
        while last - start >= replicas:     # start: this bucket's first user, or a leftover
            size = min(per_batch, (last - start) // replicas * replicas)
            batches.append((start, size))
            start += size
    return np.array(batches, np.int64).reshape(-1, 2)


class SequencePipeline:
    """Sequence batches for training and validation (see the module docstring)."""

    def __init__(self, dataset: Dataset, split: Split, sampler: SamplerConfig,
                 tower: TowerConfig, training: TrainingConfig, shared_negatives: bool = True,
                 replicas: int = 1):
        del shared_negatives  # sequence batches always share their negatives
        self.replicas = replicas
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
        # positions_per_batch is the global batch's (the logQ correction's count, whatever
        # the replicas); on several replicas each packed batch splits evenly over them.
        self._batches = packed_batches(targets, self.length, self.positions_per_batch,
                                       replicas)
        self._widths = bucket_widths(targets, self.length)  # each training user's bucket
        # Users in no batch of an epoch (fewer than the replicas; none on one replica).
        self.resting = len(self.train_users) - int(self._batches[:, 1].sum())
        if replicas > 1 and not len(self._batches):
            raise ConfigError("distribution", f"{len(self.train_users)} training users "
                                              f"cannot give each of {replicas} replicas one")

    @property
    def steps_per_epoch(self) -> int:
        """Global steps an epoch (the same every epoch)."""
        return len(self._batches)

    def _validation_batch(self) -> int:
        """Users of a global validation batch on several replicas: `batch_size` rounded down
        to a multiple of the replicas (at least one user each)."""
        users = min(self.batch_size, len(self.val_users))
        return max(self.replicas, users // self.replicas * self.replicas)

    @property
    def validation_steps(self) -> int:
        """Global batches of one validation pass: every user once on one replica; on several,
        the whole global batches (the last users, fewer than a batch, are left out)."""
        if self.replicas == 1:
            return math.ceil(len(self.val_users) / self.batch_size)
        return len(self.val_users) // self._validation_batch()

    def _shard(self, context) -> Shard:
        """The `Shard` of `context` (None: whole global batches)."""
        shard = Shard.of(context)
        if shard.replicas not in (1, self.replicas):
            raise ValueError(f"a pipeline built for {self.replicas} replicas cannot feed "
                             f"{shard.replicas}")
        return shard

    # --- batches -------------------------------------------------------------------------------

    def _windows(self, users: tf.Tensor, runs, crop: tf.Tensor | None,
                 ties: tf.Tensor | None = None, ties_seed: tf.Tensor | None = None) -> dict:
        """Features of one window per user in `users` over `runs` (items, start, length,
        is_target, times or None): the last L + 1 items of the run, or with `crop` (a uniform
        draw in [0, 1) per user) a random L + 1 of them. With `ties` (the rows' tie group
        numbers), the window's rows of one group come in random order. With times, the
        inputs' times and the last target's as the request's."""
        items, starts, lengths, is_target, times = runs
        start, length = tf.gather(starts, users), tf.gather(lengths, users)
        end = start + length                    # one past the window's last item
        spare = tf.maximum(length - (self.length + 1), 0)
        if crop is not None:                    # a random window of a long history
            end -= tf.cast(tf.floor(crop * tf.cast(spare + 1, tf.float32)), tf.int64)
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

    def training(self, start_step: int = 0, context=None) -> tf.data.Dataset:
        """The endless training stream from global step `start_step`: every epoch each user
        with a target once (but the resting few on several replicas), in length buckets of
        random order. `context`, the `tf.distribute.InputContext` of a distributed run, picks
        this input pipeline's replicas' shares of every global batch, in replica order;
        without it, whole global batches."""
        shard = self._shard(context)
        users = tf.constant(self.train_users)
        buckets = tf.constant(self._widths, tf.float64)  # each user's, as `packed_batches`
        size, steps, resting = len(self.train_users), self.steps_per_epoch, self.resting
        starts, sizes = (tf.constant(column) for column in self._batches.T)
        seed = self.seed

        def epoch_shares(epoch: tf.Tensor) -> tf.data.Dataset:
            # Users sorted by bucket, in a new random order within each: the buckets keep their
            # places, so the packed batches (`packed_batches`) are slices of fixed bounds.
            key = tf.stack([tf.constant(seed, tf.int64), epoch])
            noise = tf.random.stateless_uniform([size], key, dtype=tf.float64)
            if resting:
                # The epoch's resting users, drawn anew, go last (past every batch); the
                # others may then shift by up to `resting` places across a bucket's bound.
                draw = tf.random.stateless_uniform(
                    [size], tf.stack([key[0], epoch + 2_000_003]), dtype=tf.float64)
                rest = tf.math.top_k(draw, resting).indices
                noise = tf.tensor_scatter_nd_add(
                    noise, rest[:, None], tf.fill([resting], tf.constant(_RESTING, tf.float64)))
            order = tf.argsort(buckets + noise)
            batches = tf.random.experimental.stateless_shuffle(
                tf.range(steps, dtype=tf.int64), tf.stack([key[0], epoch + 1_000_003]))

            def share(index):
                # Replica r of the step's global batch of n users: its r-th n / replicas.
                step, replica, _ = shard.locate(epoch, steps, index)
                batch = batches[step]
                part = sizes[batch] // shard.replicas
                first = starts[batch] + replica * part
                return (epoch * steps + step, replica, sizes[batch],
                        tf.gather(users, order[first:first + part]))

            return tf.data.Dataset.range(steps * shard.count).map(share)

        def to_features(step, replica, total, batch_users):
            step_seed = tf.stack([tf.cast(seed, tf.int64), step])
            crop = None
            if self.random_crop:
                # One draw for the whole global batch, of which a share takes its own part:
                # the shares' windows are the whole batch's.
                whole = tf.random.stateless_uniform(
                    total[None], tf.random.experimental.stateless_fold_in(step_seed, 1),
                    dtype=tf.float32)
                part = tf.size(batch_users, tf.int64)
                crop = whole[replica * part:(replica + 1) * part]
            ties_seed = tf.random.experimental.stateless_fold_in(step_seed, 2)
            if shard.replicas > 1:  # a share's own tie orders (its windows' widths are its own)
                ties_seed = tf.random.experimental.stateless_fold_in(ties_seed, replica)
            windows = self._windows(batch_users, self._fit, crop, self._fit_ties, ties_seed)
            # The global step seeds the negatives: every replica of a step draws the same.
            return self._with_negatives(windows, step_seed)

        first_epoch, offset = divmod(start_step, steps)
        stream = (tf.data.Dataset.counter(first_epoch).flat_map(epoch_shares)
                  .skip(offset * shard.count))
        return stream.map(to_features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)

    def _ordered(self, users: np.ndarray, runs, seed: int,
                 shard: Shard = Shard()) -> tf.data.Dataset:
        """`users` in order, `batch_size` a batch; on several replicas, endless passes of this
        shard's shares of the whole global batches (`_validation_batch` users)."""
        def to_features(step, batch_users):
            step_seed = tf.stack([tf.constant(seed, tf.int64), step])
            return self._with_negatives(self._windows(batch_users, runs, None), step_seed)

        if shard.replicas == 1:
            stream = tf.data.Dataset.from_tensor_slices(users).batch(self.batch_size)
            keyed = tf.data.Dataset.zip((tf.data.Dataset.counter(), stream))
        else:
            table = tf.constant(users)
            batch = self._validation_batch()
            part, steps = batch // shard.replicas, len(users) // batch

            def share(index):
                step, replica, _ = shard.locate(0, steps, index)
                first = step * batch + replica * part
                return step, table[first:first + part]

            # Endless: Keras reads `validation_steps` global batches of it at every evaluation.
            keyed = tf.data.Dataset.range(steps * shard.count).map(share).repeat()
        return keyed.map(to_features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)

    def validation(self, context=None) -> tf.data.Dataset | None:
        """One ordered pass over the users with validation interactions (None without); with
        `context` (a distributed run), endless passes of this input pipeline's shares of the
        `validation_steps` whole global batches."""
        if not len(self.val_users):
            return None
        shard = self._shard(context)
        if shard.replicas > 1 and len(self.val_users) < shard.replicas:
            raise ConfigError("distribution", f"{len(self.val_users)} validation users cannot "
                                              f"give each of {shard.replicas} replicas one")
        return self._ordered(self.val_users, self._all, self.seed + 1, shard)

    def first_batch(self) -> dict:
        """A batch of training windows, to build the model's variables."""
        return next(iter(self._ordered(self.train_users[:self.batch_size], self._fit,
                                       self.seed + 1)))
