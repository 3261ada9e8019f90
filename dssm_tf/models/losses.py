"""Loss schemes, chosen by `--loss`; the one training loop calls whichever is configured.

Every scheme is a Keras layer called with explicit tensors::

    scheme(user, positive, negatives, positive_items, negative_items, negative_mask)

`user` and `positive` are ``[B, D]`` tower outputs of matching rows; `negatives` the item-tower
outputs of the sampled negatives (``[B, N, D]``, or ``[N, D]`` shared by the batch when the
scheme's `shares_negatives` is true, or None); `positive_items` / `negative_items` their item
*indices* (for the sampling correction and accidental hits) and `negative_mask` ``[B, N]``
false where a negative is the row's own positive. Scores are inner products (cosine when the
towers normalise). Schemes never see raw features, so they know nothing of any data set.

Usage::

    scheme = make_loss(LossConfig(loss="softmax", gamma=20.0),
                       sampler_probabilities=sampler.probabilities(),
                       train_probabilities=counts / counts.sum(), batch_size=512,
                       num_negatives=3)
    loss = scheme(user, positive, negatives, positive_items, negative_items, negative_mask)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dssm_tf.config import LossConfig

_MASKED = -1e9
_MIN_FLOAT = np.finfo(np.float32).min / 100.0  # TFRS's "minus infinity" for accidental hits


class LossScheme(keras.layers.Layer):
    """Base of the schemes: `call(user, positive, negatives, positive_items, negative_items,
    negative_mask) -> scalar loss` (see the module docstring).

    `shares_negatives`: whether the scheme wants one draw of negatives for the whole batch
    (``[N, D]``) instead of its own per row (``[B, N, D]``). Computes in float32 even under a
    mixed-precision policy (the towers emit float32).
    """

    shares_negatives = False

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, user, positive, negatives, positive_items, negative_items, negative_mask):
        raise NotImplementedError


class SamplingCorrection(keras.layers.Layer):
    """Logit offset -log(q(i) / q_uniform) for negatives drawn from a non-uniform q (logQ).

    Added to every logit of a sampled loss, it makes the scores learned against q-distributed
    negatives rank like scores learned against uniform ones: without it, a frequency sampler
    teaches the towers to demote popular items. Zero for the uniform sampler and for items
    outside the sampler's support.
    """

    def __init__(self, probabilities: np.ndarray, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        probabilities = np.asarray(probabilities, np.float64)
        support = probabilities > 0
        ratio = np.where(support, probabilities * support.sum(), 1.0)
        self.offset = tf.constant(-np.log(ratio), tf.float32)

    def call(self, items: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.offset, items)


def _candidate_items(positive_items: tf.Tensor, negative_items: tf.Tensor) -> tf.Tensor:
    """`[B, 1 + N]` item indices: the positive, then its negatives."""
    return tf.concat([positive_items[:, None], negative_items], axis=1)


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

    def call(self, user, positive, negatives, positive_items, negative_items, negative_mask):
        positive_logit = tf.reduce_sum(user * positive, axis=-1, keepdims=True)
        logits = tf.concat([positive_logit, _negative_scores(user, negatives)], axis=1)
        logits = logits / self.temperature
        if self.correction is not None:
            logits += self.correction(_candidate_items(positive_items, negative_items))
        labels = tf.concat([tf.ones_like(positive_logit), tf.zeros_like(logits[:, 1:])], 1)
        weights = tf.concat([tf.ones_like(positive_logit),
                             tf.cast(negative_mask, logits.dtype)], axis=1)
        losses = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
        if not tf.distribute.in_cross_replica_context():  # e.g. the call that builds the model
            self.auc.update_state(labels, tf.sigmoid(logits), sample_weight=weights)
        return tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)


class TripletMargin(LossScheme):
    """mean over valid negatives of max(d(u,p) - d(u,n) + margin, 0).

    `distance="euclidean"`: d = ||u - v||. `distance="cosine"`: d = 1 - cos(u, v), the
    margin-ranking loss on cosine scores many DSSM notebooks use (for unit vectors it equals
    ||u - v||^2 / 2, the squared distance of FaceNet's triplet loss).
    """

    def __init__(self, margin: float = 0.5, distance: str = "euclidean", **kwargs):
        super().__init__(**kwargs)
        self.margin = margin
        self.distance = distance

    def _distance(self, user: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        if self.distance == "euclidean":
            return tf.norm(user - items, axis=-1)
        return 1.0 - tf.reduce_sum(tf.math.l2_normalize(user, -1)
                                   * tf.math.l2_normalize(items, -1), axis=-1)

    def call(self, user, positive, negatives, positive_items, negative_items, negative_mask):
        d_pos = self._distance(user, positive)[:, None]
        d_neg = self._distance(user[:, None, :], negatives)
        losses = tf.nn.relu(d_pos - d_neg + self.margin)
        weights = tf.cast(negative_mask, losses.dtype)
        return tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)


class SampledSoftmax(LossScheme):
    """DSSM: softmax cross-entropy of gamma * score over [positive, N negatives]."""

    def __init__(self, gamma: float = 20.0, correction: SamplingCorrection | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.gamma = gamma
        self.correction = correction

    def call(self, user, positive, negatives, positive_items, negative_items, negative_mask):
        logits = tf.concat([tf.reduce_sum(user * positive, axis=-1, keepdims=True),
                            _negative_scores(user, negatives)], axis=1) * self.gamma
        if self.correction is not None:
            logits += self.correction(_candidate_items(positive_items, negative_items))
        mask = tf.concat([tf.ones_like(logits[:, :1], tf.bool), negative_mask], 1)
        logits = tf.where(mask, logits, _MASKED)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.zeros_like(logits[:, 0], tf.int32), logits=logits))


class InBatchSoftmax(LossScheme):
    """In-batch softmax with logQ correction and accidental-hit removal; extra sampled
    negatives (shared by the batch) are appended as candidates.

    The sampling probability of a candidate is the mixture actually used: batch positives follow
    the training distribution (`train_probabilities`, per item index), the extra negatives
    `negative_probabilities`. `logq_weight` scales the correction (1 = full logQ, 0 = none).

    Under a `tf.distribute` strategy with several replicas, every replica's users are scored
    against the positives of the *global* batch (gathered from all replicas), so a replica
    sees all the in-batch negatives, not 1/N of them — `tfrs.tasks.Retrieval`, which this
    replaces, scores per replica only. The loss is Retrieval's, in fewer passes over the logits.
    """

    shares_negatives = True

    def __init__(self, train_probabilities: np.ndarray,
                 negative_probabilities: np.ndarray | None = None, temperature: float = 0.05,
                 batch_size: int = 1, num_negatives: int = 0, logq_weight: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        share = num_negatives / (batch_size + num_negatives)
        mix = np.asarray(train_probabilities, np.float64) * (1 - share)
        if num_negatives:
            mix = mix + share * np.asarray(negative_probabilities, np.float64)
        # Items never drawn get the smallest probability. The logits lose log(probability):
        # `logq_weight` < 1 keeps part of the popularity signal.
        mix = np.maximum(mix, mix[mix > 0].min())
        self.log_probability = tf.constant(np.log(np.clip(mix ** logq_weight, 1e-6, 1.0)),
                                           tf.float32)
        self.temperature = temperature

    def call(self, user, positive, negatives, positive_items, negative_items, negative_mask):
        items, candidates = positive_items, positive
        first = tf.zeros([], tf.int32)          # this replica's positives start there
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # tf.identity places a tensor that came straight from the input pipeline on this
            # replica's device: MultiWorkerMirrored gathers only placed tensors.
            items = context.all_gather(tf.identity(positive_items), axis=0)
            candidates = context.all_gather(tf.identity(positive), axis=0)
            first = tf.cast(context.replica_id_in_sync_group, tf.int32) * tf.shape(user)[0]
        if negatives is not None:
            items = tf.concat([items, negative_items], axis=0)
            candidates = tf.concat([candidates, negatives], axis=0)
        # Few passes over the [B, C] logits, which dominate the step: the temperature scales
        # the [B, D] users, logQ is one [C] offset, and the labels stay indices.
        scores = tf.linalg.matmul(user / self.temperature, candidates, transpose_b=True)
        scores -= tf.gather(self.log_probability, items)[None, :]
        labels = first + tf.range(tf.shape(user)[0])
        # Accidental hits: another copy of a row's positive is not a negative for it.
        duplicate = tf.logical_and(
            tf.equal(positive_items[:, None], items[None, :]),
            tf.not_equal(labels[:, None], tf.range(tf.shape(items)[0])[None, :]))
        scores = tf.where(duplicate, _MIN_FLOAT, scores)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=scores)
        # The mean written out (Keras' reduction, which tf.distribute refuses outside compile).
        return tf.math.divide_no_nan(tf.reduce_sum(losses),
                                     tf.cast(tf.size(losses), losses.dtype))


@tf.custom_gradient
def _dense_gradient(x: tf.Tensor):
    """`x`, its gradient made dense: `all_gather`'s gradient all-reduces the gradient it gets,
    which cannot be the `IndexedSlices` a `tf.gather` of its rows gives."""
    return tf.identity(x), tf.convert_to_tensor


class CandidateSoftmax(keras.layers.Layer):
    """Softmax for training on sequences (every position of every window a target), in one of
    three forms, chosen by `candidates` (the ``--negative_sampler`` name):

    - in-batch (``inbatch``): over the distinct items of the batch —
      its targets, plus the shared sampled negatives — each item once, so no accidental hit is
      possible and the logit matrix is positions x distinct items, not positions x positions.
      The logQ correction subtracts `logq_weight` * log of the probability that an item is
      among the candidates, ``1 - (1 - p)^P (1 - q)^N`` for an item of training frequency p
      and sampling probability q, P target positions and N negatives a batch. Unlike log(p),
      it vanishes for items almost every batch holds: a large batch is close to a full
      softmax and is not corrected as if it were a small sample.
    - full (``all``): the batch's items are every training item, so the
      softmax is the exact one over the catalogue (as SASRec trained with cross-entropy) and
      nothing is corrected. A logit matrix of positions x catalogue: affordable for
      catalogues of a few thousand items, where it learns most per step.
    - sampled (``uniform``, ``frequency``): over each position's own target and
      the N shared negatives only — P x (1 + N) logits, far fewer than P x distinct items. A
      negative equal to the target is masked; the negatives' logits lose `logq_weight` *
      log(N q) (the sampled-softmax correction: N draws stand for the whole catalogue).

    With `exclude_user_items`, no other target of a position's window is a negative of that
    position: neither the items the user had before it (evaluation leaves seen items out of
    the ranking, so pushing them down teaches nothing it asks for, and pushes down the items
    like them) nor those still to come (the user's positives at later positions).

    Called as ``scheme(user [P, D], candidates [C, D], candidate_items [C], labels [P],
    negatives [N], windows [P])``: `labels[p]` and `negatives[n]` are rows of `candidates` (the
    distinct items, embedded once) and `windows[p]` the window position p belongs to.

    Under a `tf.distribute` strategy with several replicas, each called with its share of the
    global batch (and the same shared negatives), the loss is that of the global batch: the
    in-batch form gathers every replica's distinct candidates (items and embeddings; an item
    held by several replicas keeps the first one's embedding), so each replica's positions are
    scored against the whole global batch's items, as on one replica; the full and sampled
    forms score against candidates every replica already holds (every item; its own target
    and the shared negatives). The correction's `positions` are the global batch's. A
    replica returns ``sum of its positions' losses * replicas / global positions``: the model
    divides it by the replicas and the replicas' gradients are summed, so the update is that
    of the mean over every target position of the global batch, however the positions fall
    on the replicas. On one replica: the mean over the batch's positions.
    """

    sequence = True
    shares_negatives = True

    def __init__(self, train_probabilities: np.ndarray,
                 negative_probabilities: np.ndarray | None = None, temperature: float = 0.05,
                 positions: float = 1.0, num_negatives: int = 0, logq_weight: float = 1.0,
                 candidates: str = "inbatch", exclude_user_items: bool = False, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        p = np.asarray(train_probabilities, np.float64)
        q = (np.asarray(negative_probabilities, np.float64) if num_negatives
             else np.zeros_like(p))
        self.sampled = candidates not in ("inbatch", "all")
        self.gathers = candidates == "inbatch"  # several replicas: the global batch's items
        self.temperature = temperature
        self.exclude_user_items = exclude_user_items
        if candidates == "all":
            self.correction = None      # the exact softmax: nothing to correct
        elif candidates == "inbatch":
            missed = np.exp(positions * np.log1p(-np.minimum(p, 1 - 1e-12))
                            + num_negatives * np.log1p(-np.minimum(q, 1 - 1e-12)))
            inclusion = 1.0 - missed
            inclusion = np.maximum(inclusion, inclusion[inclusion > 0].min())
            self.correction = tf.constant(logq_weight * np.log(inclusion), tf.float32)
        else:
            expected = np.maximum(num_negatives * q, (num_negatives * q)[q > 0].min())
            self.correction = tf.constant(logq_weight * np.log(expected), tf.float32)

    def call(self, user, candidates, candidate_items, labels, negatives=None, windows=None):
        labels = tf.cast(labels, tf.int32)
        context = tf.distribute.get_replica_context()
        replicas = 1 if context is None else context.num_replicas_in_sync
        if replicas == 1:
            return tf.reduce_mean(self._position_losses(user, candidates, candidate_items,
                                                        labels, negatives, windows))
        positions = tf.shape(user, tf.int64)[0]
        if self.gathers:
            total, candidates, candidate_items, mine = self._global_candidates(
                context, positions, candidates, candidate_items)
            labels = tf.gather(mine, labels)
            if negatives is not None:
                negatives = tf.gather(mine, tf.cast(negatives, tf.int32))
        else:
            total = context.all_reduce(tf.distribute.ReduceOp.SUM,
                                       tf.cast(positions, tf.float32))
        losses = self._position_losses(user, candidates, candidate_items, labels, negatives,
                                       windows)
        return tf.math.divide_no_nan(tf.reduce_sum(losses) * float(replicas), total)

    @staticmethod
    def _global_candidates(context, positions, candidates, candidate_items):
        """(target positions of the global batch, its distinct candidates [C', D] and their
        items [C'], and the rows there of this replica's candidates [C]): every replica's
        distinct candidates gathered, each item kept once, with the first embedding of it.
        The replicas' counts differ from step to step: inside a loop of several steps the
        gathers would reuse collective instances, which must keep their shapes, so the model
        runs one step per call (`TwoTowerModel.compile`)."""
        counts = tf.stack([tf.size(candidate_items, tf.int64), positions])[None, :]
        counts = context.all_gather(counts, axis=0)                      # [replicas, 2]
        # tf.identity places the tensors on this replica's device first (see InBatchSoftmax).
        items = context.all_gather(tf.identity(candidate_items), axis=0)  # in replica order
        embeddings = _dense_gradient(context.all_gather(tf.identity(candidates), axis=0))
        replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
        offset = tf.cast(tf.reduce_sum(counts[:replica, 0]), tf.int32)
        distinct, row = tf.unique(items)
        first = tf.math.unsorted_segment_min(tf.range(tf.size(items)), row, tf.size(distinct))
        mine = row[offset:offset + tf.size(candidate_items)]
        total = tf.cast(tf.reduce_sum(counts[:, 1]), tf.float32)
        return total, tf.gather(embeddings, first), distinct, mine

    def _position_losses(self, user, candidates, candidate_items, labels, negatives, windows):
        """[P] cross-entropy of each position (see the class docstring)."""
        others = (self._other_targets(labels, windows, tf.shape(candidates)[0])
                  if self.exclude_user_items else None)
        if not self.sampled:
            logits = tf.matmul(user, candidates, transpose_b=True) / self.temperature
            if self.correction is not None:
                logits -= tf.gather(self.correction, candidate_items)[None, :]
            if others is not None:
                logits = tf.where(others, _MASKED, logits)
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        negatives = tf.cast(negatives, tf.int32)
        positive = tf.reduce_sum(user * tf.gather(candidates, labels), axis=-1, keepdims=True)
        sampled = tf.matmul(user, tf.gather(candidates, negatives), transpose_b=True)
        sampled -= self.temperature * tf.gather(self.correction,
                                                tf.gather(candidate_items, negatives))[None, :]
        masked = tf.equal(labels[:, None], negatives[None, :])
        if others is not None:
            masked |= tf.gather(others, negatives, axis=1)
        sampled = tf.where(masked, _MASKED, sampled)
        logits = tf.concat([positive, sampled], axis=1) / self.temperature
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.zeros_like(labels),
                                                              logits=logits)

    @staticmethod
    def _other_targets(labels: tf.Tensor, windows: tf.Tensor,
                       num_candidates: tf.Tensor) -> tf.Tensor:
        """[P, C]: whether candidate c is a target of position p's window other than p's own."""
        windows = tf.cast(windows, tf.int32)
        shape = tf.stack([tf.reduce_max(windows) + 1, num_candidates])
        counts = tf.scatter_nd(tf.stack([windows, labels], axis=1), tf.ones_like(labels), shape)
        return tf.gather(counts > 0, windows) & tf.not_equal(
            tf.range(num_candidates)[None, :], labels[:, None])


def make_loss(config: LossConfig, *, sampler_probabilities: np.ndarray,
              train_probabilities: np.ndarray, batch_size: float, num_negatives: int,
              sequences: bool = False, candidates: str = "inbatch") -> LossScheme:
    """The scheme `config.loss` names. `sampler_probabilities` (per item index) drive the
    sampling correction of `bce`/`softmax` and the extra negatives of `inbatch`;
    `train_probabilities` are the in-batch positives' distribution. With `sequences`, the
    in-batch softmax is `CandidateSoftmax` over the `candidates` the sampler names: the
    batch's items (``inbatch``), every item (``all``), or sampled negatives only (the
    samplers), and `batch_size` is the target positions a batch."""
    config.validate()
    if sequences:
        return CandidateSoftmax(train_probabilities, sampler_probabilities,
                                temperature=config.temperature, positions=batch_size,
                                num_negatives=num_negatives, logq_weight=config.logq_weight,
                                candidates=candidates,
                                exclude_user_items=config.exclude_user_items)
    correction = (SamplingCorrection(sampler_probabilities)
                  if config.sampling_correction else None)
    if config.loss == "bce":
        return BinaryCrossEntropy(config.temperature, correction)
    if config.loss == "triplet":
        return TripletMargin(config.margin, config.triplet_distance)
    if config.loss == "softmax":
        return SampledSoftmax(config.gamma, correction)
    return InBatchSoftmax(train_probabilities, sampler_probabilities,
                          temperature=config.temperature, batch_size=batch_size,
                          num_negatives=num_negatives, logq_weight=config.logq_weight)
