"""dssm_tf.evaluation.metrics (top-K, recall, hit, NDCG, recall curve), the scoring glue,
and the JSON writers."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import scipy.sparse as sp

from dssm_tf.cli.app import report
from dssm_tf.config import LEAVE_LAST_ONE_OUT, TIME_SPLIT
from dssm_tf.evaluation import metrics
from dssm_tf.evaluation import scoring
from dssm_tf.io import write_json
from tests.conftest import make_split

# --------------------------------------------------------------------------- top_k_from_scores

SCORES = np.array([[0.1, 0.5, 0.3, 0.9, 0.2],
                   [0.8, 0.1, 0.7, 0.0, 0.6]], np.float32)


def test_top_k_orders_best_first():
    np.testing.assert_array_equal(metrics.top_k_from_scores(SCORES, 3), [[3, 1, 2], [0, 2, 4]])
    np.testing.assert_array_equal(metrics.top_k_from_scores(SCORES, 5),
                                  [[3, 1, 2, 4, 0], [0, 2, 4, 1, 3]])
    np.testing.assert_array_equal(metrics.top_k_from_scores(SCORES, 1), [[3], [0]])


def test_top_k_exclusion_and_candidates():
    original = SCORES.copy()
    exclude = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0]]))
    # Row 0 loses columns 1 and 3: 0.3 (2), 0.2 (4), 0.1 (0). Row 1 loses column 0.
    np.testing.assert_array_equal(metrics.top_k_from_scores(SCORES, 3, exclude=exclude),
                                  [[2, 4, 0], [2, 4, 1]])
    candidates = np.array([True, True, True, False, True])
    np.testing.assert_array_equal(metrics.top_k_from_scores(SCORES, 3, candidates=candidates),
                                  [[1, 2, 4], [0, 2, 4]])
    np.testing.assert_array_equal(
        metrics.top_k_from_scores(SCORES, 2, exclude=exclude, candidates=~candidates),
        [[-1, -1], [3, -1]])
    np.testing.assert_array_equal(SCORES, original)  # the input is not modified


def test_top_k_pads_with_minus_one():
    candidates = np.array([True, False, False, False, True])
    exclude = sp.csr_matrix(([1.0], ([0], [0])), shape=(2, 5))
    got = metrics.top_k_from_scores(SCORES, 3, exclude=exclude, candidates=candidates)
    np.testing.assert_array_equal(got, [[4, -1, -1], [0, 4, -1]])
    # k beyond the catalogue: padded to k columns.
    got = metrics.top_k_from_scores(SCORES, 7)
    assert got.shape == (2, 7)
    np.testing.assert_array_equal(got[:, 5:], -1)
    assert sorted(got[0, :5]) == [0, 1, 2, 3, 4]


def test_top_k_keeps_negative_scores():
    scores = np.array([[-3.0, -1.0, -2.0]])
    np.testing.assert_array_equal(metrics.top_k_from_scores(scores, 3), [[1, 2, 0]])


# --------------------------------------------------------------------------- recall/hit/NDCG
#
# Three users (rows of TOP), lists of length 3:
#   user 0: [10, 11, 12]; test movies 11 (rank 1), 12 (rank 2), 99 (absent)  -> 3 items
#   user 1: [20, 21, 22]; test movie 20 (rank 0)                             -> 1 item
#   user 2: [30, 31, 32]; test movies 98, 97 (absent)                        -> 2 items
# Test rows are given in a mixed order.

USERS = np.array([0, 1, 2])
TOP = np.array([[10, 11, 12], [20, 21, 22], [30, 31, 32]])
TEST_USERS = np.array([1, 0, 2, 0, 0, 2])
TEST_MOVIES = np.array([20, 11, 98, 99, 12, 97])
L2_3, L2_4 = math.log2(3), math.log2(4)


def test_hit_ranks():
    ranks = metrics.hit_ranks(TOP, USERS, TEST_USERS, TEST_MOVIES)
    np.testing.assert_array_equal(ranks, [0, 1, 3, 3, 2, 3])  # 3 = not in the list


def test_hit_ranks_needs_every_test_user():
    with pytest.raises(ValueError):
        metrics.hit_ranks(TOP[:2], USERS[:2], TEST_USERS, TEST_MOVIES)
    with pytest.raises(ValueError):
        metrics.hit_ranks(TOP, np.array([0, 1, 5]), TEST_USERS, TEST_MOVIES)


def test_metrics_at_3():
    got = metrics.evaluate_top_k(TOP, USERS, TEST_USERS, TEST_MOVIES, k=3)
    # recall (micro): 3 hits (11, 12, 20) / 6 test ratings = 0.5
    assert got["recall@3"] == pytest.approx(0.5)
    # user-mean recall: (2/3 + 1/1 + 0/2) / 3 = 5/9
    assert got["recall@3_user_mean"] == pytest.approx(5 / 9)
    # hit: users 0 and 1 have a hit -> 2/3
    assert got["hit@3"] == pytest.approx(2 / 3)
    # NDCG: user 0 DCG = 1/log2(3) + 1/log2(4) = 0.6309 + 0.5 = 1.1309, IDCG (3 relevant,
    #   3 slots) = 1 + 1/log2(3) + 1/log2(4) = 2.1309 -> 0.5307; user 1: 1/1 = 1; user 2: 0.
    #   mean = (0.5307 + 1 + 0) / 3 = 0.5102
    ndcg0 = (1 / L2_3 + 1 / L2_4) / (1 + 1 / L2_3 + 1 / L2_4)
    assert ndcg0 == pytest.approx(0.53072, abs=1e-5)
    assert got["ndcg@3"] == pytest.approx((ndcg0 + 1) / 3)
    assert got["ndcg@3"] == pytest.approx(0.51024, abs=1e-5)
    assert got["n_test_users"] == 3 and got["n_test_items"] == 6


def test_metrics_truncate_to_k():
    # k=1: only user 1's movie 20 is a hit.
    got = metrics.evaluate_top_k(TOP, USERS, TEST_USERS, TEST_MOVIES, k=1)
    assert got["recall@1"] == pytest.approx(1 / 6)
    assert got["recall@1_user_mean"] == pytest.approx(1 / 3)   # (0 + 1 + 0) / 3
    assert got["hit@1"] == pytest.approx(1 / 3)
    assert got["ndcg@1"] == pytest.approx(1 / 3)
    # k=2: hits 20 (rank 0) and 11 (rank 1).
    got = metrics.evaluate_top_k(TOP, USERS, TEST_USERS, TEST_MOVIES, k=2)
    assert got["recall@2"] == pytest.approx(2 / 6)
    assert got["recall@2_user_mean"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # 4/9
    assert got["hit@2"] == pytest.approx(2 / 3)
    # user 0: DCG = 1/log2(3); IDCG with min(3 relevant, 2 slots) = 1 + 1/log2(3).
    ndcg0 = (1 / L2_3) / (1 + 1 / L2_3)
    assert got["ndcg@2"] == pytest.approx((ndcg0 + 1) / 3)
    assert got["ndcg@2"] == pytest.approx(0.46228, abs=1e-5)


def test_padding_never_hits():
    # Padded lists (user 1 has no candidates at all): user 0 hits at rank 0, user 1 cannot.
    top = np.array([[5, -1, -1], [-1, -1, -1]])
    got = metrics.evaluate_top_k(top, np.array([0, 1]), np.array([0, 1]), np.array([5, 7]), 3)
    assert got["recall@3"] == pytest.approx(0.5) and got["ndcg@3"] == pytest.approx(0.5)
    np.testing.assert_array_equal(
        metrics.hit_ranks(top, np.array([0, 1]), np.array([0, 1]), np.array([5, 7])), [0, 3])


def test_perfect_lists_score_one():
    top = np.array([[1, 2, 3], [4, 5, 6]])
    got = metrics.evaluate_top_k(top, np.array([3, 8]), np.array([3, 3, 8]),
                                 np.array([1, 2, 4]), k=3)
    for key in ("recall@3", "recall@3_user_mean", "hit@3", "ndcg@3"):
        assert got[key] == pytest.approx(1.0), key


def test_recall_curve():
    ranks = metrics.hit_ranks(TOP, USERS, TEST_USERS, TEST_MOVIES)
    curve = metrics.recall_curve(ranks, 3)
    # ranks [0, 1, 3, 3, 2, 3]: one hit at each of ranks 0, 1, 2 -> 1/6, 2/6, 3/6.
    np.testing.assert_allclose(curve, [1 / 6, 2 / 6, 3 / 6])
    np.testing.assert_allclose(metrics.recall_curve(ranks, 2), [1 / 6, 2 / 6])
    for k in (1, 2, 3):  # agrees with recall@k
        assert curve[k - 1] == pytest.approx(
            metrics.evaluate_top_k(TOP, USERS, TEST_USERS, TEST_MOVIES, k)[f"recall@{k}"])


# --------------------------------------------------------------------------- evaluation glue
# TINY time_split (see test_splits.py): test users 0 and 1 with test movies 1 and 2;
# seen: user 0 -> {0, 2}, user 1 -> {0, 1, 3}.


def _fixed_scorer(users):
    return np.tile(np.array([4.0, 3.0, 2.0, 1.0], np.float32), (len(users), 1))


def test_evaluate_scorer_exclude_seen(tiny_ml):
    split = make_split(tiny_ml, TIME_SPLIT)
    # Seen excluded, k=1: user 0 -> [1] (hit), user 1 -> [2] (hit).
    got = scoring.evaluate_scorer(split, _fixed_scorer, k=1, exclude_seen=True)
    assert got["recall@1"] == 1.0 and got["hit@1"] == 1.0 and got["ndcg@1"] == 1.0
    assert (got["protocol"], got["k"], got["exclude_seen"]) == (TIME_SPLIT, 1, True)
    assert (got["n_test_users"], got["n_test_items"]) == (2, 2)
    # Seed's protocol, k=2: both get [0, 1]; user 0 hits at rank 1, user 1 misses.
    got = scoring.evaluate_scorer(split, _fixed_scorer, k=2, exclude_seen=False)
    assert got["recall@2"] == 0.5 and got["hit@2"] == 0.5
    assert got["ndcg@2"] == pytest.approx(0.5 / math.log2(3))


def test_top_k_for_users_batches_and_pads(tiny_ml):
    split = make_split(tiny_ml, TIME_SPLIT)
    users = split.test_users
    whole = scoring.top_k_for_users(split, _fixed_scorer, users, 3, exclude_seen=True)
    np.testing.assert_array_equal(whole, [[1, 3, -1], [2, -1, -1]])
    one_by_one = scoring.top_k_for_users(split, _fixed_scorer, users, 3, True, batch_size=1)
    np.testing.assert_array_equal(whole, one_by_one)
    assert scoring.top_k_for_users(split, _fixed_scorer, users[:0], 3, True).shape == (0, 3)


def test_evaluate_lists_and_test_ranks(tiny_ml):
    split = make_split(tiny_ml, LEAVE_LAST_ONE_OUT)
    # Test movies per user: user 0 -> 1, user 1 -> 2, user 2 -> 0 (see test_splits.py).
    lists = np.array([[1, 0], [3, 0], [1, 0]])
    np.testing.assert_array_equal(scoring.test_ranks(split, lists), [0, 1, 2])
    got = scoring.evaluate_lists(split, lists, k=2, exclude_seen=False)
    assert got["hit@2"] == pytest.approx(2 / 3)
    assert got["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_write_json_atomic(tmp_path):
    path = str(tmp_path / "out" / "metrics.json")
    write_json(path, {"b": 1, "a": 0.5})
    with open(path) as f:
        assert json.load(f) == {"a": 0.5, "b": 1}
    with pytest.raises(TypeError):
        write_json(path, {"a": object()})
    with open(path) as f:  # the old file survives a failed write; no temp file is left
        assert json.load(f) == {"a": 0.5, "b": 1}
    assert os.listdir(tmp_path / "out") == ["metrics.json"]


def test_report_prints_and_writes(tmp_path, capsys):
    path = str(tmp_path / "m.json")
    report({"recall@50": 0.25, "k": 50}, path)
    printed = json.loads(capsys.readouterr().out)
    with open(path) as f:
        assert json.load(f) == printed == {"recall@50": 0.25, "k": 50}
    report({"k": 1}, None)
    assert json.loads(capsys.readouterr().out) == {"k": 1}
