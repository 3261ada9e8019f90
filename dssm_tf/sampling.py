"""tf.data input pipelines: training interactions with negatives drawn on the fly.

Each element of the training stream is one batch of interactions, shuffled (seeded) and
turned into raw MovieLens features by one vectorised `map`. Negatives are drawn inside that map
with stateless random ops seeded by ``(seed, step)``: fresh at every step and epoch,
reproducible under ``--seed``, never a precomputed table.

The user's history for an interaction is the `history_length` training movies rated *before*
it (YouTube-DNN style), so the model is trained the way it is used at serving time.

Usage::

    tables = FeatureTables.from_split(ml, split, history_length=10)
    sampler = make_sampler("frequency", split.movie_counts, frequent_share=0.3)
    ds = training_dataset(tables, rows, sampler, num_negatives=3, batch_size=512, seed=0)
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from dssm_tf.data import MovieLens
from dssm_tf.errors import InputError
from dssm_tf.protocols import Split

SAMPLERS = ("uniform", "frequency", "inbatch")


@dataclasses.dataclass
class FeatureTables:
    """Constant tensors that turn interaction rows into raw tower inputs."""

    user_id: tf.Tensor      # per user index: raw UserID
    gender: tf.Tensor
    age: tf.Tensor
    occupation: tf.Tensor
    movie_id: tf.Tensor     # per movie index: raw MovieID
    genres_table: tf.Tensor  # per movie index: "A|B|C"
    train_user: tf.Tensor   # per training row (sorted by user, time): user index
    train_movie: tf.Tensor  # per training row: movie index
    user_start: tf.Tensor   # per user index: first training row
    history_length: int
    history_gap: int = 0    # history of row p ends at p - g, g uniform in [0, history_gap]
    user_fields: bool = True  # gather gender/age/occupation (skipped when no tower reads them)
    genres: bool = True       # gather genre strings (the costliest gather; same)

    @classmethod
    def from_split(cls, ml: MovieLens, split: Split, history_length: int,
                   history_gap: int = 0, user_fields: bool = True,
                   genres: bool = True) -> "FeatureTables":
        users, movies = ml.users, ml.movies
        return cls(
            user_id=tf.constant(users.user_id.to_numpy(np.int64)),
            gender=tf.constant(users.gender.to_numpy(str)),
            age=tf.constant(users.age.to_numpy(np.int64)),
            occupation=tf.constant(users.occupation.to_numpy(np.int64)),
            movie_id=tf.constant(movies.movie_id.to_numpy(np.int64)),
            genres_table=tf.constant(movies.genres.to_numpy(str)),
            train_user=tf.constant(split.train.user.to_numpy(np.int64)),
            train_movie=tf.constant(split.train.movie.to_numpy(np.int64)),
            user_start=tf.constant(split.user_offsets[:-1].astype(np.int64)),
            history_length=history_length,
            history_gap=history_gap,
            user_fields=user_fields,
            genres=genres,
        )

    def user_features(self, users: tf.Tensor, history_end: tf.Tensor) -> dict[str, tf.Tensor]:
        """Raw user fields; history = training movies in rows [start(user), history_end)."""
        length = self.history_length
        positions = history_end[:, None] - length + tf.range(length, dtype=tf.int64)[None, :]
        valid = positions >= tf.gather(self.user_start, users)[:, None]
        safe = tf.maximum(positions, 0)
        history = tf.where(valid, tf.gather(self.movie_id, tf.gather(self.train_movie, safe)),
                           tf.zeros_like(safe))
        features = {"user_id": tf.gather(self.user_id, users), "history": history}
        if self.user_fields:
            features.update(gender=tf.gather(self.gender, users), age=tf.gather(self.age, users),
                            occupation=tf.gather(self.occupation, users))
        return features

    def movie_features(self, movies: tf.Tensor) -> dict[str, tf.Tensor]:
        features = {"movie_id": tf.gather(self.movie_id, movies)}
        if self.genres:
            features["genres"] = tf.gather(self.genres_table, movies)
        return features

    def interaction_features(self, rows: tf.Tensor, seed: tf.Tensor | None = None
                             ) -> dict[str, dict[str, tf.Tensor]]:
        """Features of training rows: the user (history = rows before it) and the positive.

        With `history_gap` > 0 and a `seed`, each history stops a random 0..gap rows earlier,
        so the model also learns to predict movies further ahead than the next one.
        """
        users = tf.gather(self.train_user, rows)
        history_end = rows
        if self.history_gap and seed is not None:
            gap = tf.random.stateless_uniform(tf.shape(rows), seed, 0, self.history_gap + 1,
                                              dtype=tf.int64)
            history_end = tf.maximum(rows - gap, tf.gather(self.user_start, users))
        return {"user": self.user_features(users, history_end),
                "positive": self.movie_features(tf.gather(self.train_movie, rows))}


class Sampler:
    """Draws negative movie indices with stateless ops: `sample(shape, seed) -> int64`."""

    def sample(self, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def probabilities(self) -> np.ndarray:
        """Probability of each movie index under this sampler (for tests and logQ)."""
        raise NotImplementedError


class UniformSampler(Sampler):
    """Uniform over `support` (the movies seen in training)."""

    def __init__(self, support: np.ndarray, num_movies: int):
        self.support = np.asarray(support, np.int64)
        self.num_movies = num_movies
        self._support = tf.constant(self.support)

    def sample(self, shape, seed):
        picks = tf.random.stateless_uniform(shape, seed, 0, len(self.support), dtype=tf.int64)
        return tf.gather(self._support, picks)

    def probabilities(self):
        p = np.zeros(self.num_movies)
        p[self.support] = 1.0 / len(self.support)
        return p


class FrequencySampler(Sampler):
    """The seed's mix: with probability `frequent_share`, a movie with >= `min_count`
    training ratings drawn proportionally to count**power; otherwise a rarer movie, uniformly."""

    def __init__(self, counts: np.ndarray, frequent_share: float = 0.3, min_count: int = 5,
                 power: float = 0.75):
        counts = np.asarray(counts)
        self.frequent = np.flatnonzero(counts >= min_count)
        self.rare = np.flatnonzero((counts > 0) & (counts < min_count))
        if len(self.frequent) == 0:
            # A flag/data mismatch (exit 2 from the CLI), not a crash.
            raise InputError(f"--frequent_min_count={min_count}: no movie has that many "
                             f"training ratings (the most rated has {int(counts.max(initial=0))})")
        # With no rare movie, every draw comes from the frequent ones.
        self.share = frequent_share if len(self.rare) else 1.0
        self.weights = counts[self.frequent].astype(np.float64) ** power
        self.num_movies = len(counts)
        self._frequent = tf.constant(self.frequent, tf.int64)
        self._rare = tf.constant(self.rare if len(self.rare) else self.frequent, tf.int64)
        cdf = np.cumsum(self.weights) / self.weights.sum()
        self._cdf = tf.constant(cdf, tf.float64)

    def sample(self, shape, seed):
        seeds = tf.random.experimental.stateless_split(seed, 3)
        size = tf.reduce_prod(shape)
        # Inverse-CDF draw: O(log n) per sample, where a categorical op costs O(n).
        draws = tf.random.stateless_uniform([size], seeds[0], dtype=tf.float64)
        frequent = tf.gather(self._frequent, tf.minimum(
            tf.searchsorted(self._cdf, draws, side="right"), len(self.frequent) - 1))
        rare = tf.gather(self._rare, tf.random.stateless_uniform(
            [size], seeds[1], 0, tf.size(self._rare, tf.int64), dtype=tf.int64))
        pick_frequent = tf.random.stateless_uniform([size], seeds[2]) < self.share
        return tf.reshape(tf.where(pick_frequent, frequent, rare), shape)

    def probabilities(self):
        p = np.zeros(self.num_movies)
        p[self.frequent] = self.share * self.weights / self.weights.sum()
        if len(self.rare):
            p[self.rare] = (1.0 - self.share) / len(self.rare)
        return p


def make_sampler(name: str, counts: np.ndarray, frequent_share: float = 0.3,
                 frequent_min_count: int = 5, frequency_power: float = 0.75) -> Sampler:
    """The sampler `--negative_sampler` names; `inbatch` still gets a uniform one for
    optional extra (mixed) negatives."""
    if name == "frequency":
        return FrequencySampler(counts, frequent_share, frequent_min_count, frequency_power)
    if name in ("uniform", "inbatch"):
        return UniformSampler(np.flatnonzero(np.asarray(counts) > 0), len(counts))
    raise ValueError(f"unknown sampler {name!r}; expected one of {SAMPLERS}")


def _shuffled_batches(rows: np.ndarray, batch_size: int, seed: int,
                      start_step: int) -> tf.data.Dataset:
    """Endless batches of `rows`: epoch e is one stateless permutation keyed by (seed, e), cut
    into `ceil(len(rows) / batch_size)` slices (the last may be short), so a batch never spans
    two epochs. One op per epoch and a slice per batch: ~30x the rate of a per-element
    `Dataset.shuffle` buffer, which was the pipeline's bottleneck. Starts at step `start_step`."""
    if len(rows) == 0:
        raise ValueError("no rows to train on")
    table = tf.constant(rows)
    steps = math.ceil(len(rows) / batch_size)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            table, tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.range(steps).map(
            lambda step: order[step * batch_size:(step + 1) * batch_size])

    first_epoch, offset = divmod(start_step, steps)
    return tf.data.Dataset.counter(first_epoch).flat_map(epoch_batches).skip(offset)


def _batches(tables: FeatureTables, rows: np.ndarray, sampler: Sampler, num_negatives: int,
             batch_size: int, seed: int, shuffle: bool, shared: bool,
             start_step: int = 0) -> tf.data.Dataset:
    rows = np.asarray(rows, np.int64)
    if shuffle:
        rows_ds = _shuffled_batches(rows, batch_size, seed, start_step)
    else:
        rows_ds = tf.data.Dataset.from_tensor_slices(rows).batch(batch_size).skip(start_step)

    def to_features(step, batch_rows):
        step_seed = tf.stack([tf.cast(seed, tf.int64), step])
        features = tables.interaction_features(
            batch_rows, tf.random.experimental.stateless_fold_in(step_seed, 1))
        if num_negatives:
            batch = tf.size(batch_rows, tf.int64)
            shape = tf.stack([num_negatives] if shared else [batch, num_negatives])
            negatives = sampler.sample(shape, step_seed)
            positive = tf.gather(tables.train_movie, batch_rows)
            features["negatives"] = tables.movie_features(negatives)
            # A negative that happens to be the positive must not count against it.
            features["negative_mask"] = tf.not_equal(
                negatives[None, :] if shared else negatives, positive[:, None])
        return features

    return (tf.data.Dataset.zip((tf.data.Dataset.counter(start_step), rows_ds))
            .map(to_features, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def training_dataset(tables: FeatureTables, rows: np.ndarray, sampler: Sampler,
                     num_negatives: int, batch_size: int, seed: int,
                     shared_negatives: bool = False, start_step: int = 0) -> tf.data.Dataset:
    """Endless, reshuffled-every-epoch batches; use `steps_per_epoch = ceil(len(rows)/batch)`.

    With `shared_negatives`, one draw of `num_negatives` movies serves the whole batch
    (mixed negative sampling): `negatives` is `[num_negatives]`, `negative_mask` stays
    `[batch, num_negatives]`. `start_step` skips the first batches of the stream: a run
    resumed after `start_step` steps sees the same batches and negatives as an uninterrupted one.
    """
    return _batches(tables, rows, sampler, num_negatives, batch_size, seed, shuffle=True,
                    shared=shared_negatives, start_step=start_step)


def validation_dataset(tables: FeatureTables, rows: np.ndarray, sampler: Sampler,
                       num_negatives: int, batch_size: int, seed: int,
                       shared_negatives: bool = False) -> tf.data.Dataset:
    """One pass over `rows` in order; the same negatives at every evaluation."""
    return _batches(tables, rows, sampler, num_negatives, batch_size, seed + 1, shuffle=False,
                    shared=shared_negatives)


def split_validation(num_rows: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random (fit rows, validation rows) of the *training* interactions."""
    order = np.random.default_rng(seed).permutation(num_rows)
    n_val = int(round(num_rows * share))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
