"""Every loss scheme of `dssm_tf.losses` against a numpy reimplementation on hand-made tensors."""

from __future__ import annotations

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf import losses

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


def _call(scheme, user, positive, negatives, mask, batch=None):
    batch = dict(batch or {}, negative_mask=tf.constant(mask))
    return float(scheme(tf.constant(user), tf.constant(positive),
                        None if negatives is None else tf.constant(negatives), batch))


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
    got = _call(losses.make_loss("bce", temperature=temperature), *tensors)
    assert got == pytest.approx(bce_reference(user, positive, negatives, mask, temperature),
                                rel=1e-5)


def test_bce_temperature_changes_the_loss(tensors):
    assert (_call(losses.make_loss("bce", temperature=1.0), *tensors)
            != pytest.approx(_call(losses.make_loss("bce", temperature=0.2), *tensors)))


def test_bce_masked_negative_does_not_count(tensors):
    user, positive, negatives, mask = tensors
    scheme = losses.make_loss("bce")
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
    scheme = losses.make_loss("bce")
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
    got = _call(losses.make_loss("triplet", margin=margin, triplet_distance=distance), *tensors)
    assert got == pytest.approx(
        triplet_reference(user, positive, negatives, mask, margin, distance), rel=1e-5, abs=1e-6)


def test_triplet_cosine_distance_ignores_norms(tensors):
    """1 - cos does not change when the tower outputs are rescaled; ||u - v|| does."""
    user, positive, negatives, mask = tensors
    for distance, invariant in (("cosine", True), ("euclidean", False)):
        scheme = losses.make_loss("triplet", margin=0.5, triplet_distance=distance)
        same = _call(scheme, 3 * user, 2 * positive, 5 * negatives, mask) == pytest.approx(
            _call(scheme, *tensors), rel=1e-5)
        assert same == invariant
    with pytest.raises(ValueError, match="triplet distance"):
        losses.make_loss("triplet", triplet_distance="manhattan")


def test_triplet_margin_and_mask(tensors):
    user, positive, negatives, mask = tensors
    small = _call(losses.make_loss("triplet", margin=0.1), *tensors)
    large = _call(losses.make_loss("triplet", margin=5.0), *tensors)
    assert large > small
    # With a margin this large every valid triplet is active: the loss is linear in the margin.
    assert (_call(losses.make_loss("triplet", margin=6.0), *tensors) - large
            == pytest.approx(1.0, rel=1e-5))
    scheme = losses.make_loss("triplet", margin=1.0)
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
    got = _call(losses.make_loss("softmax", gamma=gamma), *unit, mask)
    assert got == pytest.approx(softmax_reference(*unit, mask, gamma), rel=1e-4, abs=1e-5)


def test_sampled_softmax_gamma_and_mask(tensors):
    user, positive, negatives, mask = tensors
    easy = np.repeat(-user[:, None, :], N, axis=1)  # every negative scores below its positive
    sharp = _call(losses.make_loss("softmax", gamma=20.0), user, user, easy, mask)
    soft = _call(losses.make_loss("softmax", gamma=1.0), user, user, easy, mask)
    assert sharp < soft
    scheme = losses.make_loss("softmax", gamma=2.0)
    changed = negatives.copy()
    changed[2, 2] = 5 * user[2]
    assert _call(scheme, user, positive, changed, mask) == pytest.approx(
        _call(scheme, *tensors), rel=1e-6)
    # All negatives masked: softmax over the positive alone, loss 0.
    assert _call(scheme, user, positive, negatives, np.zeros_like(mask)) == pytest.approx(
        0.0, abs=1e-6)


# --- in-batch softmax (TFRS Retrieval) ---------------------------------------------------------

MOVIE_IDS = np.array([1, 3, 5, 7, 9, 11], np.int64)


def _mixture(train_p, neg_p, batch_size, num_negatives):
    share = num_negatives / (batch_size + num_negatives)
    return train_p * (1 - share) + (share * neg_p if num_negatives else 0.0)


def inbatch_reference(user, positive, negatives, pos_ids, neg_ids, q_of_id, temperature):
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
    pos_ids = np.array([3, 5, 3, 9, 11], np.int64)   # 3 twice: an accidental hit
    neg_ids = np.array([5, 1, 7], np.int64)          # 5 is also row 1's positive
    positive[2], negatives[0] = positive[0], positive[1]  # same movie, same embedding
    user = _unit(positive + 0.5 * user)  # users lean towards their positive
    train_p = np.array([0.05, 0.4, 0.25, 0.1, 0.15, 0.05])
    neg_p = np.array([0.3, 0.1, 0.2, 0.2, 0.1, 0.1])
    mix = _mixture(train_p, neg_p, b, n)
    scheme = losses.make_loss("inbatch", temperature=temperature, movie_ids=MOVIE_IDS,
                              train_probabilities=train_p, negative_probabilities=neg_p,
                              batch_size=b, num_negatives=n)
    batch = {"positive": {"movie_id": tf.constant(pos_ids)},
             "negatives": {"movie_id": tf.constant(neg_ids)}}
    got = _call(scheme, user, positive, negatives, np.ones((b, n), bool), batch)
    q_of_id = dict(zip(MOVIE_IDS.tolist(), mix))
    want = inbatch_reference(user, positive, negatives, pos_ids, neg_ids, q_of_id, temperature)
    assert got == pytest.approx(want, rel=1e-5)
    # The corrections matter: without them the value differs.
    uncorrected = inbatch_reference(user, positive, negatives, pos_ids, neg_ids,
                                    dict.fromkeys(MOVIE_IDS.tolist(), 1.0), temperature)
    assert abs(got - uncorrected) > 1e-2
    no_hit_removal = user @ np.concatenate([positive, negatives]).T / temperature - np.log(
        [q_of_id[i] for i in np.concatenate([pos_ids, neg_ids])])
    no_hit_removal = -_log_softmax(no_hit_removal)[np.arange(b), np.arange(b)].mean()
    assert abs(got - no_hit_removal) > 1e-2


def test_inbatch_without_extra_negatives_and_unknown_id():
    rng = np.random.default_rng(3)
    b = 4
    user = rng.normal(size=(b, D)).astype(np.float32)
    positive = rng.normal(size=(b, D)).astype(np.float32)
    pos_ids = np.array([1, 7, 1000, 9], np.int64)  # 1000 is unknown: the smallest probability
    train_p = np.array([0.1, 0.3, 0.2, 0.2, 0.15, 0.05])
    scheme = losses.make_loss("inbatch", temperature=0.5, movie_ids=MOVIE_IDS,
                              train_probabilities=train_p, batch_size=b, num_negatives=0)
    batch = {"positive": {"movie_id": tf.constant(pos_ids)}}
    got = _call(scheme, user, positive, None, np.ones((b, 0), bool), batch)
    q_of_id = dict(zip(MOVIE_IDS.tolist(), train_p))
    q_of_id[1000] = train_p.min()
    want = inbatch_reference(user, positive, None, pos_ids, None, q_of_id, 0.5)
    assert np.isfinite(got)
    assert got == pytest.approx(want, rel=1e-4)


def test_make_loss_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown loss"):
        losses.make_loss("hinge")


# --- sampling correction (bce / softmax with a non-uniform negative sampler) -------------------

CORRECTED_IDS = np.array([10, 20, 30, 40, 50, 60])
CORRECTED_Q = np.array([0.4, 0.3, 0.15, 0.1, 0.05, 0.0])  # the last movie is never sampled


def _ids_batch():
    rng = np.random.default_rng(1)
    positive = rng.choice(CORRECTED_IDS[:5], size=B)
    negatives = rng.choice(CORRECTED_IDS[:5], size=(B, N))
    batch = {"positive": {"movie_id": tf.constant(positive, tf.int64)},
             "negatives": {"movie_id": tf.constant(negatives, tf.int64)}}
    offset = {m: -np.log(q * 5) for m, q in zip(CORRECTED_IDS, CORRECTED_Q) if q > 0}
    return batch, np.vectorize(offset.get)(positive), np.vectorize(offset.get)(negatives)


def test_sampling_correction_offsets():
    correction = losses.SamplingCorrection(CORRECTED_IDS, CORRECTED_Q)
    got = correction(tf.constant([10, 50, 60, 999], tf.int64)).numpy()
    # -log(q / q_uniform) with q_uniform = 1/5 (five movies can be drawn); 0 outside the support.
    np.testing.assert_allclose(got, [-np.log(2.0), -np.log(0.25), 0.0, 0.0], rtol=1e-6)
    uniform = losses.SamplingCorrection(CORRECTED_IDS, np.r_[np.full(5, 0.2), 0.0])
    np.testing.assert_allclose(uniform(tf.constant(CORRECTED_IDS[:5])).numpy(), 0.0, atol=1e-6)


def test_bce_and_softmax_with_correction_match_numpy(tensors):
    user, positive, negatives, mask = tensors
    batch, pos_offset, neg_offset = _ids_batch()
    correction = losses.SamplingCorrection(CORRECTED_IDS, CORRECTED_Q)
    pos, neg = _scores(user, positive, negatives)

    temperature = 0.5
    pos_logit, neg_logit = pos / temperature + pos_offset, neg / temperature + neg_offset
    want = (_sigmoid_ce(1.0, pos_logit).sum() + (_sigmoid_ce(0.0, neg_logit) * mask).sum())
    want /= B + mask.sum()
    got = _call(losses.make_loss("bce", temperature=temperature, correction=correction),
                *tensors, batch=batch)
    assert got == pytest.approx(want, rel=1e-5)

    gamma = 5.0
    logits = np.concatenate([(gamma * pos + pos_offset)[:, None], gamma * neg + neg_offset], 1)
    logits[:, 1:][~mask] = -1e9
    want = -_log_softmax(logits)[:, 0].mean()
    got = _call(losses.make_loss("softmax", gamma=gamma, correction=correction), *tensors,
                batch=batch)
    assert got == pytest.approx(want, rel=1e-5)
