"""Loss schemes, chosen by `--loss`; the one training loop calls whichever is configured.

Every scheme is a Keras layer called as ``scheme(user, positive, negatives, batch)``:
`user` and `positive` are ``[B, D]`` tower outputs of matching rows, `negatives` the item-tower
outputs of the sampled negatives (``[B, N, D]``, or ``[N, D]`` shared by the batch for
`inbatch`, or None), and `batch` the input features (for ids and the negative mask).
Scores are inner products (cosine when the towers normalise).

Usage::

    scheme = make_loss("softmax", gamma=20.0)
    loss = scheme(user, positive, negatives, batch)
"""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

LOSSES = ("bce", "triplet", "softmax", "inbatch")
_MASKED = -1e9


class LossScheme(keras.layers.Layer):
    """Base of the schemes: `call(user, positive, negatives, batch) -> scalar loss`.

    Computes in float32 even under a mixed-precision policy (the towers emit float32).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)


@contextlib.contextmanager
def _float32_policy():
    """Build Keras layers under float32 whatever the global (mixed-precision) policy.

    tfrs' Retrieval takes no dtype and creates layers inside `call`; under `mixed_float16` they
    would cast some of their inputs to float16 and not others.
    """
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(policy)


class SamplingCorrection(keras.layers.Layer):
    """Logit offset -log(q(i) / q_uniform) for negatives drawn from a non-uniform q (logQ).

    Added to every logit of a sampled loss, it makes the scores learned against q-distributed
    negatives rank like scores learned against uniform ones: without it, a frequency sampler
    teaches the towers to demote popular movies. Zero for the uniform sampler.
    """

    def __init__(self, movie_ids: np.ndarray, probabilities: np.ndarray, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        probabilities = np.asarray(probabilities, np.float64)
        support = probabilities > 0
        ratio = np.where(support, probabilities * support.sum(), 1.0)
        self.lookup = keras.layers.IntegerLookup(vocabulary=list(movie_ids))
        # Index 0 (unknown movie) and movies outside the sampler's support get no offset.
        self.offset = tf.constant(np.concatenate([[0.0], -np.log(ratio)]), tf.float32)

    def call(self, movie_ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.offset, self.lookup(movie_ids))


def _candidate_ids(batch: dict) -> tf.Tensor:
    """`[B, 1 + N]` MovieIDs: the positive, then its negatives."""
    return tf.concat([batch["positive"]["movie_id"][:, None], batch["negatives"]["movie_id"]],
                     axis=1)


def _negative_scores(user: tf.Tensor, negatives: tf.Tensor) -> tf.Tensor:
    """`[B, N]` inner products of each user with its own negatives."""
    return tf.einsum("bd,bnd->bn", user, negatives)


class BinaryCrossEntropy(LossScheme):
    """Pointwise: sigmoid cross-entropy on logits score / temperature, positive 1, negatives 0.

    Tracks `auc` (tf.keras.metrics.AUC) on whatever data it is evaluated on, so `val_auc` is
    computed on validation data, not on training predictions as in the seed.
    """

    def __init__(self, temperature: float = 1.0,
                 correction: SamplingCorrection | None = None, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.correction = correction
        self.auc = keras.metrics.AUC(name="auc")

    def call(self, user, positive, negatives, batch):
        positive_logit = tf.reduce_sum(user * positive, axis=-1, keepdims=True)
        logits = tf.concat([positive_logit, _negative_scores(user, negatives)], axis=1)
        logits = logits / self.temperature
        if self.correction is not None:
            logits += self.correction(_candidate_ids(batch))
        labels = tf.concat([tf.ones_like(positive_logit), tf.zeros_like(logits[:, 1:])], 1)
        weights = tf.concat([tf.ones_like(positive_logit),
                             tf.cast(batch["negative_mask"], logits.dtype)], axis=1)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        self.auc.update_state(labels, tf.sigmoid(logits), sample_weight=weights)
        return tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)


class TripletMargin(LossScheme):
    """mean over valid negatives of max(d(u,p) - d(u,n) + margin, 0).

    `distance="euclidean"`: d = ||u - v||. `distance="cosine"`: d = 1 - cos(u, v), the
    margin-ranking loss on cosine scores many DSSM notebooks use (for unit vectors it equals
    ||u - v||^2 / 2, the squared distance of FaceNet's triplet loss).
    """

    DISTANCES = ("euclidean", "cosine")

    def __init__(self, margin: float = 0.5, distance: str = "euclidean", **kwargs):
        super().__init__(**kwargs)
        if distance not in self.DISTANCES:
            raise ValueError(f"unknown triplet distance {distance!r}; expected one of "
                             f"{self.DISTANCES}")
        self.margin = margin
        self.distance = distance

    def _distance(self, user: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        if self.distance == "euclidean":
            return tf.norm(user - items, axis=-1)
        return 1.0 - tf.reduce_sum(tf.math.l2_normalize(user, -1)
                                   * tf.math.l2_normalize(items, -1), axis=-1)

    def call(self, user, positive, negatives, batch):
        d_pos = self._distance(user, positive)[:, None]
        d_neg = self._distance(user[:, None, :], negatives)
        losses = tf.nn.relu(d_pos - d_neg + self.margin)
        weights = tf.cast(batch["negative_mask"], losses.dtype)
        return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class SampledSoftmax(LossScheme):
    """DSSM: softmax cross-entropy of gamma * score over [positive, N negatives]."""

    def __init__(self, gamma: float = 20.0, correction: SamplingCorrection | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma
        self.correction = correction

    def call(self, user, positive, negatives, batch):
        logits = tf.concat([tf.reduce_sum(user * positive, axis=-1, keepdims=True),
                            _negative_scores(user, negatives)], axis=1) * self.gamma
        if self.correction is not None:
            logits += self.correction(_candidate_ids(batch))
        mask = tf.concat([tf.ones_like(logits[:, :1], tf.bool), batch["negative_mask"]], 1)
        logits = tf.where(mask, logits, _MASKED)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.zeros_like(logits[:, 0], tf.int32), logits=logits))


class InBatchSoftmax(LossScheme):
    """In-batch softmax via `tfrs.tasks.Retrieval`, with logQ correction and accidental-hit
    removal; extra sampled negatives (shared by the batch) are appended as candidates.

    The sampling probability of a candidate is the mixture actually used: batch positives follow
    the training distribution (`train_probabilities`), the extra negatives `negative_probabilities`.
    `logq_weight` scales the correction (1 = full logQ, 0 = none).
    """

    def __init__(self, movie_ids: np.ndarray, train_probabilities: np.ndarray,
                 negative_probabilities: np.ndarray | None = None, temperature: float = 0.05,
                 batch_size: int = 1, num_negatives: int = 0, logq_weight: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        share = num_negatives / (batch_size + num_negatives)
        mix = np.asarray(train_probabilities, np.float64) * (1 - share)
        if num_negatives:
            mix = mix + share * np.asarray(negative_probabilities, np.float64)
        self.lookup = keras.layers.IntegerLookup(vocabulary=list(movie_ids))
        # Index 0 is the out-of-vocabulary row; it gets the smallest probability. Retrieval
        # subtracts log(probability): `logq_weight` < 1 keeps part of the popularity signal.
        mix = np.concatenate([[mix[mix > 0].min()], np.maximum(mix, mix[mix > 0].min())])
        self.probability = tf.constant(mix ** logq_weight, tf.float32)
        with _float32_policy():
            self.task = tfrs.tasks.Retrieval(
                loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                temperature=temperature, remove_accidental_hits=True)

    def call(self, user, positive, negatives, batch):
        ids = batch["positive"]["movie_id"]
        candidates = positive
        if negatives is not None:
            ids = tf.concat([ids, batch["negatives"]["movie_id"]], axis=0)
            candidates = tf.concat([positive, negatives], axis=0)
        probability = tf.gather(self.probability, self.lookup(ids))
        with _float32_policy():  # Retrieval builds its helper layers while it is called
            return self.task(user, candidates, candidate_sampling_probability=probability,
                             candidate_ids=ids, compute_metrics=False,
                             compute_batch_metrics=False)


def make_loss(name: str, *, temperature: float = 1.0, margin: float = 0.5,
              triplet_distance: str = "euclidean", gamma: float = 20.0,
              correction: SamplingCorrection | None = None, **inbatch_args) -> LossScheme:
    """The scheme `--loss` names. `correction` applies to `bce` and `softmax`;
    `inbatch_args` go to `InBatchSoftmax`."""
    if name == "bce":
        return BinaryCrossEntropy(temperature, correction)
    if name == "triplet":
        return TripletMargin(margin, triplet_distance)
    if name == "softmax":
        return SampledSoftmax(gamma, correction)
    if name == "inbatch":
        return InBatchSoftmax(temperature=temperature, **inbatch_args)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
