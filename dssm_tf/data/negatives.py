"""Negative samplers: draw item indices with stateless random ops, inside the input pipeline.

A sampler is asked for a tensor of item indices of any shape with a ``(seed, step)`` seed, so
negatives are fresh at every step and epoch, reproducible under ``--seed``, and never a
precomputed table. `probabilities()` gives each item's draw probability, which the losses use
for the logQ sampling correction.

Usage::

    sampler = make_sampler(SamplerConfig(negative_sampler="frequency"), split.item_counts)
    negatives = sampler.sample(tf.constant([512, 3]), tf.constant([0, 7], tf.int64))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dssm_tf.config import SamplerConfig
from dssm_tf.errors import ConfigError


class Sampler:
    """Draws negative item indices with stateless ops: `sample(shape, seed) -> int64`."""

    def sample(self, shape: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def probabilities(self) -> np.ndarray:
        """Probability of each item index under this sampler (for tests and logQ)."""
        raise NotImplementedError


class UniformSampler(Sampler):
    """Uniform over `support` (the items seen in training)."""

    def __init__(self, support: np.ndarray, num_items: int):
        self.support = np.asarray(support, np.int64)
        self.num_items = num_items
        self._support = tf.constant(self.support)

    def sample(self, shape, seed):
        picks = tf.random.stateless_uniform(shape, seed, 0, len(self.support), dtype=tf.int64)
        return tf.gather(self._support, picks)

    def probabilities(self):
        p = np.zeros(self.num_items)
        p[self.support] = 1.0 / len(self.support)
        return p


class FrequencySampler(Sampler):
    """The seed's mix: with probability `frequent_share`, an item with >= `min_count`
    training interactions drawn proportionally to count**power; otherwise a rarer item,
    uniformly."""

    def __init__(self, counts: np.ndarray, frequent_share: float = 0.3, min_count: int = 5,
                 power: float = 0.75):
        counts = np.asarray(counts)
        self.frequent = np.flatnonzero(counts >= min_count)
        self.rare = np.flatnonzero((counts > 0) & (counts < min_count))
        if len(self.frequent) == 0:
            raise ConfigError("frequent_min_count", f"{min_count}: no item has that many "
                                                    f"training interactions (the most has "
                                                    f"{int(counts.max(initial=0))})")
        # With no rare item, every draw comes from the frequent ones.
        self.share = frequent_share if len(self.rare) else 1.0
        self.weights = counts[self.frequent].astype(np.float64) ** power
        self.num_items = len(counts)
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
        p = np.zeros(self.num_items)
        p[self.frequent] = self.share * self.weights / self.weights.sum()
        if len(self.rare):
            p[self.rare] = (1.0 - self.share) / len(self.rare)
        return p


def make_sampler(config: SamplerConfig, counts: np.ndarray) -> Sampler:
    """The sampler `config.negative_sampler` names, over items with training `counts`;
    `inbatch` still gets a uniform one for optional extra (mixed) negatives, and `all` one whose
    `support` is the items every batch holds."""
    config.validate()
    if config.negative_sampler == "frequency":
        return FrequencySampler(counts, config.frequent_share, config.frequent_min_count,
                                config.frequency_power)
    return UniformSampler(np.flatnonzero(np.asarray(counts) > 0), len(counts))
