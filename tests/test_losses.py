"""Every loss scheme of `dssm_tf.models.losses` against a numpy reimplementation on hand-made
tensors."""

from __future__ import annotations

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import LossConfig
from dssm_tf.errors import ConfigError
from dssm_tf.models import losses

B, N, D = 4, 3, 5


def _sigmoid_ce(labels, logits):
    return np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@pytest.fixture
def tensors():
    rng = np.random.default_rng(42)
    user = rng.normal(size=(B, D)).astype(np.float32)
    positive = rng.normal(size=(B, D)).astype(np.float32)
    negatives = rng.normal(size=(B, N, D)).astype(np.float32)
    mask = np.ones((B, N), bool)
    mask[0, 1] = mask[2, 0] = mask[2, 2] = False
    return user, positive, negatives, mask


def make_loss(name, probabilities=None, batch_size=B, num_negatives=N, **params):
    """`losses.make_loss` of a LossConfig; `probabilities` serve as both distributions."""
    q = np.full(6, 1 / 6) if probabilities is None else probabilities
    return losses.make_loss(LossConfig(loss=name, **params), sampler_probabilities=q,
                            train_probabilities=q, batch_size=batch_size,
                            num_negatives=num_negatives)


def _call(scheme, user, positive, negatives, mask, positive_items=None, negative_items=None):
    positive_items = np.zeros(len(user), np.int64) if positive_items is None else positive_items
    if negative_items is None:
        negative_items = np.zeros(mask.shape, np.int64)
    return float(scheme(tf.constant(user), tf.constant(positive),
                        None if negatives is None else tf.constant(negatives),
                        tf.constant(positive_items, tf.int64),
                        tf.constant(negative_items, tf.int64), tf.constant(mask)))


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _scores(user, positive, negatives):
    pos = (user * positive).sum(-1)
    neg = np.einsum("bd,bnd->bn", user, negatives)
    return pos, neg


# --- binary cross-entropy ----------------------------------------------------------------------

def bce_reference(user, positive, negatives, mask, temperature):
    pos, neg = _scores(user, positive, negatives)
    total = _sigmoid_ce(1.0, pos / temperature).sum()
    total += (_sigmoid_ce(0.0, neg / temperature) * mask).sum()
    return total / (len(pos) + mask.sum())


@pytest.mark.parametrize("temperature", [1.0, 0.2, 3.0])
def test_bce_matches_numpy(tensors, temperature):
    user, positive, negatives, mask = tensors
    got = _call(make_loss("bce", temperature=temperature), *tensors)
    assert got == pytest.approx(bce_reference(user, positive, negatives, mask, temperature),
                                rel=1e-5)


def test_bce_temperature_changes_the_loss(tensors):
    assert (_call(make_loss("bce", temperature=1.0), *tensors)
            != pytest.approx(_call(make_loss("bce", temperature=0.2), *tensors)))


def test_bce_masked_negative_does_not_count(tensors):
    user, positive, negatives, mask = tensors
    scheme = make_loss("bce")
    before = _call(scheme, *tensors)
    changed = negatives.copy()
    changed[0, 1] = 10 * user[0]  # masked: a huge score must not matter
    assert _call(scheme, user, positive, changed, mask) == pytest.approx(before, rel=1e-6)
    changed[0, 0] = 10 * user[0]  # unmasked: it does
    assert _call(scheme, user, positive, changed, mask) > before + 0.1


def test_bce_auc_metric_updates_on_valid_pairs_only():
    user = np.eye(2, 3, dtype=np.float32)
    positive = user.copy()                          # positive score 1
    negatives = np.stack([-user, -user], axis=1)    # valid negatives score -1
    negatives[:, 1] = 2 * user                      # a masked negative scores 2
    mask = np.array([[True, False], [True, False]])
    scheme = make_loss("bce")
    assert float(scheme.auc.result()) == 0.0
    _call(scheme, user, positive, negatives, mask)
    assert float(scheme.auc.result()) == pytest.approx(1.0)  # masked pair ignored
    _call(scheme, user, positive, negatives, np.ones_like(mask))
    assert float(scheme.auc.result()) < 0.9                  # now it counts
    scheme.auc.reset_state()
    _call(scheme, user, -positive, np.stack([user, user], axis=1), np.ones_like(mask))
    assert float(scheme.auc.result()) == pytest.approx(0.0)  # every negative above its positive


# --- triplet margin ----------------------------------------------------------------------------

def triplet_reference(user, positive, negatives, mask, margin, distance="euclidean"):
    if distance == "euclidean":
        d_pos = np.linalg.norm(user - positive, axis=-1)[:, None]
        d_neg = np.linalg.norm(user[:, None] - negatives, axis=-1)
    else:
        def unit(x):
            return x / np.linalg.norm(x, axis=-1, keepdims=True)
        d_pos = 1 - (unit(user) * unit(positive)).sum(-1)[:, None]
        d_neg = 1 - (unit(user)[:, None] * unit(negatives)).sum(-1)
    losses_ = np.maximum(d_pos - d_neg + margin, 0) * mask
    return losses_.sum() / max(mask.sum(), 1)


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
def test_triplet_matches_numpy(tensors, margin, distance):
    user, positive, negatives, mask = tensors
    got = _call(make_loss("triplet", margin=margin, triplet_distance=distance), *tensors)
    assert got == pytest.approx(
        triplet_reference(user, positive, negatives, mask, margin, distance), rel=1e-5, abs=1e-6)


def test_triplet_cosine_distance_ignores_norms(tensors):
    """1 - cos does not change when the tower outputs are rescaled; ||u - v|| does."""
    user, positive, negatives, mask = tensors
    for distance, invariant in (("cosine", True), ("euclidean", False)):
        scheme = make_loss("triplet", margin=0.5, triplet_distance=distance)
        same = _call(scheme, 3 * user, 2 * positive, 5 * negatives, mask) == pytest.approx(
            _call(scheme, *tensors), rel=1e-5)
        assert same == invariant
    with pytest.raises(ConfigError, match="expected one of") as error:
        make_loss("triplet", triplet_distance="manhattan")
    assert error.value.parameter == "triplet_distance"


def test_triplet_margin_and_mask(tensors):
    user, positive, negatives, mask = tensors
    small = _call(make_loss("triplet", margin=0.1), *tensors)
    large = _call(make_loss("triplet", margin=5.0), *tensors)
    assert large > small
    # With a margin this large every valid triplet is active: the loss is linear in the margin.
    assert (_call(make_loss("triplet", margin=6.0), *tensors) - large
            == pytest.approx(1.0, rel=1e-5))
    scheme = make_loss("triplet", margin=1.0)
    changed = negatives.copy()
    changed[2, 0] = user[2]  # masked, distance 0: would be a maximal violation
    assert _call(scheme, user, positive, changed, mask) == pytest.approx(
        _call(scheme, *tensors), rel=1e-6)
    assert _call(scheme, user, positive, negatives, np.zeros_like(mask)) == 0.0


# --- sampled softmax ---------------------------------------------------------------------------

def softmax_reference(user, positive, negatives, mask, gamma):
    pos, neg = _scores(user, positive, negatives)
    logits = gamma * np.concatenate([pos[:, None], neg], axis=1)
    logits = np.where(np.concatenate([np.ones((len(pos), 1), bool), mask], 1), logits, -np.inf)
    return -_log_softmax(logits)[:, 0].mean()


@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
def test_sampled_softmax_matches_numpy(tensors, gamma):
    user, positive, negatives, mask = tensors
    # Unit vectors (cosine scores), as the towers produce, keep gamma=20 well conditioned.
    unit = [_unit(x) for x in (user, positive, negatives)]
    got = _call(make_loss("softmax", gamma=gamma), *unit, mask)
    assert got == pytest.approx(softmax_reference(*unit, mask, gamma), rel=1e-4, abs=1e-5)


def test_sampled_softmax_gamma_and_mask(tensors):
    user, positive, negatives, mask = tensors
    easy = np.repeat(-user[:, None, :], N, axis=1)  # every negative scores below its positive
    sharp = _call(make_loss("softmax", gamma=20.0), user, user, easy, mask)
    soft = _call(make_loss("softmax", gamma=1.0), user, user, easy, mask)
    assert sharp < soft
    scheme = make_loss("softmax", gamma=2.0)
    changed = negatives.copy()
    changed[2, 2] = 5 * user[2]
    assert _call(scheme, user, positive, changed, mask) == pytest.approx(
        _call(scheme, *tensors), rel=1e-6)
    # All negatives masked: softmax over the positive alone, loss 0.
    assert _call(scheme, user, positive, negatives, np.zeros_like(mask)) == pytest.approx(
        0.0, abs=1e-6)


# --- in-batch softmax (TFRS Retrieval) ---------------------------------------------------------



def _mixture(train_p, neg_p, batch_size, num_negatives):
    share = num_negatives / (batch_size + num_negatives)
    return train_p * (1 - share) + (share * neg_p if num_negatives else 0.0)


def inbatch_reference(user, positive, negatives, pos_ids, neg_ids, q_of_id, temperature):
    """`pos_ids`/`neg_ids` are item indices; `q_of_id` their sampling probabilities."""
    candidates = positive if negatives is None else np.concatenate([positive, negatives])
    ids = pos_ids if negatives is None else np.concatenate([pos_ids, neg_ids])
    logits = user @ candidates.T / temperature - np.log(np.array([q_of_id[i] for i in ids]))
    for row, pid in enumerate(pos_ids):
        hit = ids == pid
        hit[row] = False
        logits[row, hit] = -np.inf  # accidental hits: other copies of the positive
    return -_log_softmax(logits)[np.arange(len(pos_ids)), np.arange(len(pos_ids))].mean()


@pytest.mark.parametrize("temperature", [1.0, 0.1])
def test_inbatch_matches_numpy_with_logq_and_hits(temperature):
    rng = np.random.default_rng(7)
    b, n = 5, 3
    user, positive, negatives = (_unit(rng.normal(size=(rows, D)).astype(np.float32))
                                 for rows in (b, b, n))
    pos_ids = np.array([1, 2, 1, 4, 5], np.int64)   # item 1 twice: an accidental hit
    neg_ids = np.array([2, 0, 3], np.int64)         # item 2 is also row 1's positive
    positive[2], negatives[0] = positive[0], positive[1]  # same movie, same embedding
    user = _unit(positive + 0.5 * user)  # users lean towards their positive
    train_p = np.array([0.05, 0.4, 0.25, 0.1, 0.15, 0.05])
    neg_p = np.array([0.3, 0.1, 0.2, 0.2, 0.1, 0.1])
    mix = _mixture(train_p, neg_p, b, n)
    scheme = losses.make_loss(LossConfig(loss="inbatch", temperature=temperature),
                              sampler_probabilities=neg_p, train_probabilities=train_p,
                              batch_size=b, num_negatives=n)
    assert scheme.shares_negatives
    got = _call(scheme, user, positive, negatives, np.ones((b, n), bool), pos_ids, neg_ids)
    q_of_id = dict(enumerate(mix))
    want = inbatch_reference(user, positive, negatives, pos_ids, neg_ids, q_of_id, temperature)
    assert got == pytest.approx(want, rel=1e-5)
    # The corrections matter: without them the value differs.
    uncorrected = inbatch_reference(user, positive, negatives, pos_ids, neg_ids,
                                    dict.fromkeys(range(6), 1.0), temperature)
    assert abs(got - uncorrected) > 1e-2
    no_hit_removal = user @ np.concatenate([positive, negatives]).T / temperature - np.log(
        [q_of_id[i] for i in np.concatenate([pos_ids, neg_ids])])
    no_hit_removal = -_log_softmax(no_hit_removal)[np.arange(b), np.arange(b)].mean()
    assert abs(got - no_hit_removal) > 1e-2


def test_inbatch_without_extra_negatives_and_an_unsampled_item():
    rng = np.random.default_rng(3)
    b = 4
    user = rng.normal(size=(b, D)).astype(np.float32)
    positive = rng.normal(size=(b, D)).astype(np.float32)
    pos_ids = np.array([0, 3, 5, 4], np.int64)  # item 5 has probability 0: gets the smallest
    train_p = np.array([0.1, 0.3, 0.2, 0.2, 0.2, 0.0])
    scheme = make_loss("inbatch", train_p, batch_size=b, num_negatives=0, temperature=0.5)
    got = _call(scheme, user, positive, None, np.ones((b, 0), bool), pos_ids)
    q_of_id = dict(enumerate(train_p))
    q_of_id[5] = 0.1
    want = inbatch_reference(user, positive, None, pos_ids, None, q_of_id, 0.5)
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4)


def test_make_loss_rejects_unknown_name():
    with pytest.raises(ConfigError, match="expected one of") as error:
        make_loss("hinge")
    assert error.value.parameter == "loss"


# --- sampling correction (bce / softmax with a non-uniform negative sampler) -------------------

CORRECTED_Q = np.array([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])  # the last item is never sampled


def _corrected_items():
    rng = np.random.default_rng(1)
    positive = rng.integers(0, 5, size=B)
    negatives = rng.integers(0, 5, size=(B, N))
    offset = -np.log(CORRECTED_Q[:5] * 5)
    return positive, negatives, offset[positive], offset[negatives]


def test_sampling_correction_offsets():
    correction = losses.SamplingCorrection(CORRECTED_Q)
    got = correction(tf.constant([0, 4, 5], tf.int64)).numpy()
    # -log(q / q_uniform) with q_uniform = 1/5 (five items can be drawn); 0 outside the support.
    np.testing.assert_allclose(got, [-np.log(2.0), -np.log(0.25), 0.0], rtol=1e-6)
    uniform = losses.SamplingCorrection(np.r_[np.full(5, 0.2), 0.0])
    np.testing.assert_allclose(uniform(tf.range(5, dtype=tf.int64)).numpy(), 0.0, atol=1e-6)


def test_bce_and_softmax_with_correction_match_numpy(tensors):
    user, positive, negatives, mask = tensors
    pos_items, neg_items, pos_offset, neg_offset = _corrected_items()
    pos, neg = _scores(user, positive, negatives)

    temperature = 0.5
    pos_logit, neg_logit = pos / temperature + pos_offset, neg / temperature + neg_offset
    want = (_sigmoid_ce(1.0, pos_logit).sum() + (_sigmoid_ce(0.0, neg_logit) * mask).sum())
    want /= B + mask.sum()
    got = _call(make_loss("bce", CORRECTED_Q, temperature=temperature,
                          sampling_correction=True), *tensors, pos_items, neg_items)
    assert got == pytest.approx(want, rel=1e-5)

    gamma = 5.0
    logits = np.concatenate([(gamma * pos + pos_offset)[:, None], gamma * neg + neg_offset], 1)
    logits[:, 1:][~mask] = -1e9
    want = -_log_softmax(logits)[:, 0].mean()
    got = _call(make_loss("softmax", CORRECTED_Q, gamma=gamma, sampling_correction=True),
                *tensors, pos_items, neg_items)
    assert got == pytest.approx(want, rel=1e-5)


# --- sequences: the distinct candidates of a batch, or sampled negatives ------------------------

def test_candidate_softmax_both_forms_match_numpy():
    rng = np.random.default_rng(5)
    positions, distinct, n = 7, 5, 3
    user = rng.normal(size=(positions, D)).astype(np.float32)
    candidates = rng.normal(size=(distinct, D)).astype(np.float32)
    items = np.array([4, 0, 2, 3, 1])                    # item index of each candidate row
    labels = np.array([0, 1, 1, 2, 3, 0, 4])             # row of each position's target
    negatives = np.array([2, 4, 0])                      # rows of the shared negatives
    p = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    q = np.full(5, 0.2)
    temperature, weight = 0.5, 0.7

    scheme = losses.CandidateSoftmax(p, q, temperature=temperature, positions=positions,
                                     num_negatives=n, logq_weight=weight, candidates="inbatch")
    inclusion = 1 - (1 - p) ** positions * (1 - q) ** n
    logits = user @ candidates.T / temperature - weight * np.log(inclusion[items])[None]
    want = -_log_softmax(logits)[np.arange(positions), labels].mean()
    got = float(scheme(tf.constant(user), tf.constant(candidates), tf.constant(items),
                       tf.constant(labels)))
    assert got == pytest.approx(want, rel=1e-5)

    # Every item a candidate (--negative_sampler=all): the exact softmax, nothing corrected.
    scheme = losses.CandidateSoftmax(p, q, temperature=temperature, positions=positions,
                                     num_negatives=n, logq_weight=weight, candidates="all")
    logits = user @ candidates.T / temperature
    want = -_log_softmax(logits)[np.arange(positions), labels].mean()
    got = float(scheme(tf.constant(user), tf.constant(candidates), tf.constant(items),
                       tf.constant(labels)))
    assert got == pytest.approx(want, rel=1e-5)

    scheme = losses.CandidateSoftmax(p, q, temperature=temperature, positions=positions,
                                     num_negatives=n, logq_weight=weight, candidates="uniform")
    positive = (user * candidates[labels]).sum(-1, keepdims=True)
    sampled = user @ candidates[negatives].T - temperature * weight * np.log(
        n * q[items[negatives]])[None]
    sampled[labels[:, None] == negatives[None, :]] = -1e9  # a negative that is the target
    logits = np.concatenate([positive, sampled], axis=1) / temperature
    want = -_log_softmax(logits)[:, 0].mean()
    got = float(scheme(tf.constant(user), tf.constant(candidates), tf.constant(items),
                       tf.constant(labels), tf.constant(negatives)))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("candidates", ["all", "inbatch", "uniform"])
def test_candidate_softmax_leaves_the_users_own_items_out_of_its_negatives(candidates):
    """--exclude_user_items: a position's softmax drops every other target of its window (the
    items its user has or will have), keeping its own target; other windows are unaffected."""
    rng = np.random.default_rng(6)
    positions, distinct = 6, 5
    user = rng.normal(size=(positions, D)).astype(np.float32)
    candidates_ = rng.normal(size=(distinct, D)).astype(np.float32)
    items = np.arange(distinct)
    labels = np.array([0, 1, 2, 3, 3, 4])
    windows = np.array([0, 0, 0, 1, 1, 1])               # window 0 holds 0-2, window 1 3-4
    negatives = np.array([0, 2, 4])
    p = np.full(distinct, 0.2)
    own = np.zeros((positions, distinct), bool)
    for position, window in enumerate(windows):
        own[position, labels[windows == window]] = True
    own[np.arange(positions), labels] = False             # the target itself stays
    kwargs = dict(temperature=0.5, positions=positions, num_negatives=3, candidates=candidates)
    plain = losses.CandidateSoftmax(p, p, **kwargs)
    scheme = losses.CandidateSoftmax(p, p, exclude_user_items=True, **kwargs)
    args = (tf.constant(user), tf.constant(candidates_), tf.constant(items),
            tf.constant(labels), tf.constant(negatives))
    got = float(scheme(*args, windows=tf.constant(windows, tf.int64)))
    if candidates == "uniform":
        positive = (user * candidates_[labels]).sum(-1, keepdims=True)
        sampled = user @ candidates_[negatives].T - 0.5 * np.log(3 * p[negatives])[None]
        sampled[(labels[:, None] == negatives[None, :]) | own[:, negatives]] = -1e9
        logits = np.concatenate([positive, sampled], axis=1) / 0.5
        want = -_log_softmax(logits)[:, 0].mean()
    else:
        logits = user @ candidates_.T / 0.5
        if candidates == "inbatch":
            logits -= np.log(1 - (1 - p) ** positions * (1 - p) ** 3)[None]
        logits[own] = -1e9
        want = -_log_softmax(logits)[np.arange(positions), labels].mean()
    assert got == pytest.approx(want, rel=1e-5)
    assert got < float(plain(*args))      # fewer terms in each denominator
