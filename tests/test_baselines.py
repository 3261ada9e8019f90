"""Baselines (dssm_tf.evaluation.baselines): itemCF and popularity, hand-made and real."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dssm_tf.config import LEAVE_LAST_ONE_OUT, TIME_SPLIT
from dssm_tf.evaluation import metrics, scoring
from dssm_tf.evaluation.baselines import itemcf, popularity
from tests.conftest import load_ml, make_split
from tests.synthetic import CUTOFF, write_movielens

# --------------------------------------------------------------------------- itemCF by hand
#
# Seen matrix (users x movies A B C D E):
#   u0: A B      |N(u0)| = 2  -> weight 1/ln 3 = 0.910239
#   u1: A B C    |N(u1)| = 3  -> weight 1/ln 4 = 0.721348
#   u2:   B C    |N(u2)| = 2  -> 1/ln 3
#   u3:     C D  |N(u3)| = 2  -> 1/ln 3
#   u4: (none)
# |N(A)| = 2, |N(B)| = 3, |N(C)| = 3, |N(D)| = 1, |N(E)| = 0.
# w_ij = sum over users who rated both of 1/log(1+|N(u)|), / sqrt(|N(i)| |N(j)|):
#   w_AB = (1/ln3 + 1/ln4) / sqrt(2*3) = 1.631587 / 2.449490 = 0.666092   (u0, u1)
#   w_AC = (1/ln4)         / sqrt(2*3) = 0.721348 / 2.449490 = 0.294489   (u1)
#   w_BC = (1/ln4 + 1/ln3) / sqrt(3*3) = 1.631587 / 3        = 0.543862   (u1, u2)
#   w_CD = (1/ln3)         / sqrt(3*1) = 0.910239 / 1.732051 = 0.525527   (u3)
#   w_AD = w_BD = 0, everything with E = 0, diagonal = 0.

SEEN = sp.csr_matrix(np.array([[1, 1, 0, 0, 0],
                               [1, 1, 1, 0, 0],
                               [0, 1, 1, 0, 0],
                               [0, 0, 1, 1, 0],
                               [0, 0, 0, 0, 0]], np.float32))
A, B, C, D, E = range(5)
W_AB, W_AC, W_BC, W_CD = 0.666092, 0.294489, 0.543862, 0.525527


def _similarity(seen, rows):
    """The full similarity matrix, assembled from `itemcf.similarity_blocks` (tests only)."""
    blocks = [block.copy() for _, block in itemcf.similarity_blocks(seen, rows)]
    return np.concatenate(blocks) if blocks else np.zeros((0, seen.shape[1]), np.float32)


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 50])
def test_item_similarity_by_hand(rows):
    assert W_AB == pytest.approx((1 / math.log(3) + 1 / math.log(4)) / math.sqrt(6), abs=1e-6)
    assert W_AC == pytest.approx((1 / math.log(4)) / math.sqrt(6), abs=1e-6)
    assert W_BC == pytest.approx((1 / math.log(4) + 1 / math.log(3)) / 3, abs=1e-6)
    assert W_CD == pytest.approx((1 / math.log(3)) / math.sqrt(3), abs=1e-6)
    want = np.zeros((5, 5))
    for (i, j), w in {(A, B): W_AB, (A, C): W_AC, (B, C): W_BC, (C, D): W_CD}.items():
        want[i, j] = want[j, i] = w
    starts = [start for start, _ in itemcf.similarity_blocks(SEEN, rows)]
    assert starts == list(range(0, 5, rows))  # blocks of `rows` item rows, the last shorter
    sim = _similarity(SEEN, rows)
    assert sim.shape == (5, 5) and sim.dtype == np.float32
    assert np.all(np.isfinite(sim))
    np.testing.assert_allclose(sim, want, atol=1e-5)


def test_item_similarity_accepts_dense_input():
    np.testing.assert_array_equal(_similarity(SEEN.toarray(), 2), _similarity(SEEN, 2))
    np.testing.assert_array_equal(itemcf.neighbor_matrix(SEEN.toarray(), 2).toarray(),
                                  itemcf.neighbor_matrix(SEEN, 2).toarray())


def test_unsorted_or_integer_input_is_read_as_is():
    unsorted = sp.csr_matrix((np.ones(4, np.int64), np.array([1, 0, 2, 1]),
                              np.array([0, 2, 4, 4])), shape=(3, 3))
    assert not unsorted.has_sorted_indices
    indices = unsorted.indices.copy()
    got = itemcf.neighbor_matrix(unsorted, 2)
    np.testing.assert_array_equal(unsorted.indices, indices)   # not sorted in place
    want = itemcf.neighbor_matrix(unsorted.sorted_indices().astype(np.float32), 2)
    np.testing.assert_array_equal(got.toarray(), want.toarray())
    np.testing.assert_array_equal(got.toarray(), dense_top_neighbors(
        dense_item_similarity(unsorted.toarray()), 2).toarray())


@pytest.mark.parametrize("rows", [None, 1, 2, 4])
def test_top_neighbors_by_hand(rows):
    sim = _similarity(SEEN, 5)

    def top(n):
        return itemcf.neighbor_matrix(SEEN, n, rows=rows)

    one = top(1).toarray()
    # Best neighbour per row: A->B, B->A, C->B (0.5439 > 0.5255 for D), D->C, E none.
    assert [tuple(np.flatnonzero(row)) for row in one] == [(B,), (A,), (B,), (C,), ()]
    np.testing.assert_allclose(one[C, B], W_BC, atol=1e-5)
    two = top(2).toarray()
    # Only positive similarities are kept: D has a single neighbour.
    assert [tuple(np.flatnonzero(row)) for row in two] == [(B, C), (A, C), (B, D), (C,), ()]
    assert top(2).nnz == 7  # no explicit zeros stored
    assert top(50).nnz == 8
    # Asking for more neighbours than movies keeps every positive similarity, exactly.
    np.testing.assert_array_equal(top(50).toarray(), sim)
    assert top(0).nnz == 0
    matrix = top(2)
    assert matrix.dtype == np.float32 and matrix.has_sorted_indices


def test_top_neighbors_ties_go_to_the_lower_item():
    # Items 1, 2, 3 are seen by exactly the users who see item 0 and nothing else differs, so
    # item 0's similarities to them are equal (and so are theirs to each other).
    seen = sp.csr_matrix(np.array([[1, 1, 1, 1, 0],
                                   [1, 1, 1, 1, 1],
                                   [0, 0, 0, 0, 1]], np.float32))
    sim = _similarity(seen, 5)
    assert sim[0, 1] == sim[0, 2] == sim[0, 3] > sim[0, 4] > 0
    for rows in (None, 1, 2, 3):
        top = itemcf.neighbor_matrix(seen, 2, rows=rows).toarray()
        assert [tuple(np.flatnonzero(row)) for row in top] == [
            (1, 2), (0, 2), (0, 1), (0, 1), (0, 1)], rows
        np.testing.assert_array_equal(np.flatnonzero(itemcf.neighbor_matrix(
            seen, 3, rows=rows)[4].toarray()), [0, 1, 2])


# --------------------------------------------------------------------------- blocked vs dense
#
# Today's (pre-blocking) dense itemCF, kept here as the reference the blocked version must
# reproduce: one items x items product and norm matrix, then each row's top `neighbors`
# positive similarities, ties by the lower item index (the library's documented rule).


def dense_item_similarity(seen) -> np.ndarray:
    seen = sp.csr_matrix(seen, dtype=np.float32)
    per_user = np.asarray(seen.sum(axis=1)).ravel()
    user_weight = np.zeros_like(per_user)
    np.divide(1.0, np.log1p(per_user), out=user_weight, where=per_user > 0)
    co = (seen.T @ sp.diags(user_weight.astype(np.float32)) @ seen).toarray()
    per_item = np.sqrt(np.asarray(seen.sum(axis=0)).ravel())
    norm = np.outer(per_item, per_item)
    sim = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def dense_top_neighbors(sim: np.ndarray, neighbors: int) -> sp.csr_matrix:
    out = np.zeros_like(sim)
    for i, row in enumerate(sim):
        order = np.lexsort((np.arange(len(row)), -row))[:max(neighbors, 0)]
        order = order[row[order] > 0]
        out[i, order] = row[order]
    return sp.csr_matrix(out)


def random_seen(seed, users, items, density, single=0, empty_items=0):
    """Random binary users x items; `single` users with exactly one item, `empty_items`
    columns nobody saw, and one user with none."""
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, items)) < density).astype(np.float32)
    dense[:single] = 0
    dense[np.arange(single), rng.integers(0, items, single)] = 1
    dense[-1] = 0
    dense[:, rng.choice(items, empty_items, replace=False)] = 0
    return sp.csr_matrix(dense)


RANDOM_CASES = [  # seed, users, items, density, single-item users, unseen items, neighbors, rows
    (0, 40, 23, 0.15, 3, 2, 5, 4),
    (1, 60, 37, 0.08, 10, 5, 3, 10),
    (2, 25, 11, 0.4, 2, 1, 50, 3),      # neighbors > items
    (3, 80, 64, 0.05, 20, 8, 10, 7),    # sparse: many rows with fewer than 10 neighbours
    (4, 30, 19, 0.5, 0, 0, 19, 19),     # neighbors = items, one block
    (5, 200, 97, 0.03, 40, 3, 1, 13),
    (6, 15, 9, 0.3, 5, 4, 2, 1),        # one row per block
    (7, 50, 30, 0.25, 5, 0, 4, None),   # block size from the default budget
]


@pytest.mark.parametrize("case", RANDOM_CASES, ids=[f"case{c[0]}" for c in RANDOM_CASES])
def test_blocked_matches_dense_reference(case):
    seed, users, items, density, single, empty, neighbors, rows = case
    seen = random_seen(seed, users, items, density, single, empty)
    before = seen.copy()
    want_sim = dense_item_similarity(seen)
    # The blocks are the dense similarity's rows, bit for bit (same summation order).
    np.testing.assert_array_equal(_similarity(seen, rows or items), want_sim)
    want = dense_top_neighbors(want_sim, neighbors)
    got = itemcf.neighbor_matrix(seen, neighbors, rows=rows)
    assert got.shape == (items, items)
    np.testing.assert_array_equal(got.indptr, want.indptr)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_allclose(got.data, want.data, rtol=1e-6)
    assert np.all(got.data > 0) and got.has_sorted_indices and got.dtype == np.float32
    assert (seen != before).nnz == 0  # the input is not modified
    # ... hence the same scores and the same top-K lists.
    got_scores, want_scores = (seen @ got).toarray(), (seen @ want).toarray()
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-6)
    for exclude in (None, seen):
        np.testing.assert_array_equal(
            metrics.top_k_from_scores(got_scores, 10, exclude=exclude),
            metrics.top_k_from_scores(want_scores, 10, exclude=exclude))


def test_blocked_with_no_users_or_no_items():
    assert itemcf.neighbor_matrix(sp.csr_matrix((3, 0), dtype=np.float32), 5).shape == (0, 0)
    empty = itemcf.neighbor_matrix(sp.csr_matrix((0, 4), dtype=np.float32), 5)
    assert empty.shape == (4, 4) and empty.nnz == 0


# --------------------------------------------------------------------------- memory bound


def test_block_rows_fit_the_budget():
    budget = itemcf.MEMORY_BUDGET
    rows = itemcf.block_rows(59_047, budget)           # ML-25M's rated movies
    assert 100 < rows < 59_047
    assert rows * 59_047 * itemcf.BYTES_PER_CELL <= budget
    assert itemcf.block_rows(3_706, budget) == 3_706   # ML-1M: one block
    assert itemcf.block_rows(10, 1) == 1               # at least one row
    assert itemcf.block_rows(2_000, 2_000 * itemcf.BYTES_PER_CELL * 64) == 64


@pytest.mark.parametrize("workers", [1, 2])
def test_never_a_dense_items_by_items_array(monkeypatch, workers):
    """On 2,000 items with a 2 MB budget: every block is 2,000 x (64 / workers) rows (the last
    shorter) and numpy's peak allocation stays far below one dense 2,000 x 2,000 float32
    array (16 MB)."""
    import tracemalloc  # noqa: PLC0415

    items = 2_000
    budget = items * itemcf.BYTES_PER_CELL * 64
    rows = 64 // workers
    seen = random_seen(9, 3_000, items, 0.02, single=100, empty_items=50)
    shapes = []
    top_positive = itemcf.top_positive

    def recording(block, neighbors):
        shapes.append(block.shape)
        return top_positive(block, neighbors)

    monkeypatch.setattr(itemcf, "top_positive", recording)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        got = itemcf.neighbor_matrix(seen, 20, memory_budget=budget, workers=workers)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert sorted(shapes, reverse=True) == [(rows, items)] * (items // rows) + [
        (items % rows, items)]
    assert peak < budget + 4 * 2**20, peak        # budget + the O(nnz) inputs and result
    assert peak < items * items * 4 / 2, peak
    assert got.nnz <= 20 * items
    monkeypatch.undo()
    want = dense_top_neighbors(dense_item_similarity(seen), 20)
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.indptr, want.indptr)


@pytest.mark.parametrize("workers", [1, 3])
def test_workers_and_block_size_do_not_change_the_result(workers):
    seen = random_seen(11, 120, 53, 0.1, single=10, empty_items=4)
    want = itemcf.neighbor_matrix(seen, 7, rows=53, workers=1)
    for rows in (1, 6, 52, None):
        got = itemcf.neighbor_matrix(seen, 7, rows=rows, workers=workers)
        for field in ("indptr", "indices", "data"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def _itemcf_split(tmp_path):
    """SEEN as training ratings before CUTOFF, plus test ratings after it.

    Raw ids: users 1..5 = u0..u4; movies 1, 2, 10, 32, 50 = A..E.
    Test: u0 -> C, u3 -> B, u4 -> A (u4 has no training rating: dropped).
    """
    movie_ids = [1, 2, 10, 32, 50]
    users = [(u, "F", 25, 1, "12345") for u in range(1, 6)]
    movies = [(m, f"Movie {m} (1999)", "Drama") for m in movie_ids]
    rows, cols = SEEN.nonzero()
    ratings = [(int(r) + 1, movie_ids[c], 4, 978300000 + 10 * i)
               for i, (r, c) in enumerate(zip(rows, cols))]
    ratings += [(1, 10, 5, CUTOFF + 1), (4, 2, 5, CUTOFF + 2), (5, 1, 5, CUTOFF + 3)]
    ml = load_ml(write_movielens(tmp_path, users=users, movies=movies,
                                             ratings=ratings))
    return make_split(ml, TIME_SPLIT)


def test_itemcf_scorer_by_hand(tmp_path):
    split = _itemcf_split(tmp_path)
    np.testing.assert_array_equal(split.test_users, [0, 3])
    np.testing.assert_array_equal(split.seen.toarray(), SEEN.toarray())
    scores = itemcf.itemcf_scorer(split, neighbors=50)(np.array([0, 3]))
    # u0 (history A, B): A <- w_BA, B <- w_AB, C <- w_AC + w_BC, D, E <- 0.
    # u3 (history C, D): A <- w_CA, B <- w_CB, C <- w_DC, D <- w_CD.
    np.testing.assert_allclose(scores, [[W_AB, W_AB, W_AC + W_BC, 0, 0],
                                        [W_AC, W_BC, W_CD, W_CD, 0]], atol=1e-5)
    # Seen excluded, the expected movie ranks first for both users; D and E are never rated
    # by u0's neighbours, but D (a training movie) is still a candidate, E (no training
    # rating) is not.
    top = scoring.top_k_for_users(split, itemcf.itemcf_scorer(split), split.test_users, 3,
                                     exclude_seen=True)
    np.testing.assert_array_equal(top, [[C, D, -1], [B, A, -1]])
    got = scoring.evaluate_scorer(split, itemcf.itemcf_scorer(split), 1, exclude_seen=True)
    assert got["recall@1"] == 1.0 and got["n_test_users"] == 2
    # Seed's protocol: seen movies stay in. u0: C (0.838) then A, B (0.666 each);
    # u3: B (0.544) then C, D (0.526 each), then A (0.294).
    top = scoring.top_k_for_users(split, itemcf.itemcf_scorer(split), split.test_users, 4,
                                     exclude_seen=False)
    assert top[0, 0] == C and set(top[0, 1:3]) == {A, B} and top[0, 3] == D
    assert top[1, 0] == B and set(top[1, 1:3]) == {C, D} and top[1, 3] == A


def test_itemcf_neighbors_limit(tmp_path):
    split = _itemcf_split(tmp_path)
    # neighbors=1 (A->B, B->A, C->B, D->C): u0's history A, B gives C nothing.
    scores = itemcf.itemcf_scorer(split, neighbors=1)(np.array([0, 3]))
    np.testing.assert_allclose(scores, [[W_AB, W_AB, 0, 0, 0], [0, W_BC, W_CD, 0, 0]],
                               atol=1e-5)


# --------------------------------------------------------------------------- popularity by hand


def _popularity_split(tmp_path):
    """Training counts: movie 1 -> 4, 2 -> 3, 10 -> 2, 32 -> 1, 50 -> 0 (not a candidate)."""
    users = [(u, "M", 35, 7, "54321") for u in range(1, 5)]
    movies = [(m, f"Movie {m} (1999)", "Comedy") for m in (1, 2, 10, 32, 50)]
    history = {1: [1, 2, 10, 32], 2: [1, 2, 10], 3: [1, 2], 4: [1]}
    ratings = [(u, m, 3, 978300000 + 100 * u + i) for u, ms in history.items()
               for i, m in enumerate(ms)]
    ratings += [(2, 50, 4, CUTOFF), (3, 32, 4, CUTOFF + 1), (4, 10, 4, CUTOFF + 2)]
    ml = load_ml(write_movielens(tmp_path, users=users, movies=movies,
                                             ratings=ratings))
    return make_split(ml, TIME_SPLIT)


def test_popularity_by_hand(tmp_path):
    split = _popularity_split(tmp_path)
    scorer = popularity.popularity_scorer(split)
    np.testing.assert_array_equal(scorer(np.array([1, 3])), [[4, 3, 2, 1, 0]] * 2)
    users = split.test_users
    np.testing.assert_array_equal(users, [1, 2, 3])
    # Seen excluded: u2 (seen 1, 2, 10) -> [32]; u3 (seen 1, 2) -> [10, 32]; u4 -> [2, 10, 32].
    top = scoring.top_k_for_users(split, scorer, users, 3, exclude_seen=True)
    np.testing.assert_array_equal(top, [[3, -1, -1], [2, 3, -1], [1, 2, 3]])
    got = scoring.evaluate_scorer(split, scorer, 3, exclude_seen=True)
    # Test: u2 -> 50 (never a candidate), u3 -> 32 (rank 1), u4 -> 10 (rank 1).
    assert got["recall@3"] == pytest.approx(2 / 3)
    assert got["ndcg@3"] == pytest.approx(2 / 3 / math.log2(3))
    # Not excluded: everyone gets [1, 2, 10]; only u4's 10 (rank 2) is a hit.
    top = scoring.top_k_for_users(split, scorer, users, 3, exclude_seen=False)
    np.testing.assert_array_equal(top, [[0, 1, 2]] * 3)
    got = scoring.evaluate_scorer(split, scorer, 3, exclude_seen=False)
    assert got["recall@3"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("protocol", [TIME_SPLIT, LEAVE_LAST_ONE_OUT])
def test_planted_structure_is_learnable(synthetic_data, protocol):
    """On the synthetic set, itemCF (and an oracle knowing the groups) beat popularity."""
    ml = load_ml(synthetic_data.folder)
    split = make_split(ml, protocol)
    pop = scoring.evaluate_scorer(split, popularity.popularity_scorer(split), 10, True)
    icf = scoring.evaluate_scorer(split, itemcf.itemcf_scorer(split), 10, True)
    assert icf["recall@10"] > pop["recall@10"] + 0.2, (icf, pop)
    user_group = np.array([synthetic_data.user_group[u] for u in ml.users.user_id])
    movie_group = np.array([synthetic_data.movie_group[m] for m in ml.items.movie_id])

    def oracle(users):  # the planted preference, with popularity to break ties
        same = user_group[users][:, None] == movie_group[None, :]
        return same * 1e6 + split.item_counts[None, :]

    best = scoring.evaluate_scorer(split, oracle, 10, True)
    assert best["recall@10"] > pop["recall@10"] + 0.2, (best, pop)


# --------------------------------------------------------------------------- real ML-1M


@pytest.fixture(scope="module")
def real_splits(real_ml):
    return {p: make_split(real_ml, p) for p in (TIME_SPLIT, LEAVE_LAST_ONE_OUT)}


@pytest.fixture(scope="module")
def real_itemcf(real_splits):
    return {p: itemcf.itemcf_scorer(s) for p, s in real_splits.items()}


@pytest.mark.slow
def test_real_time_split_counts(real_splits):
    split = real_splits[TIME_SPLIT]
    assert len(split.train) == 996_861
    assert len(split.test) == 3_348
    assert len(split.test_users) == 178
    assert split.cutoff == 1041379200


@pytest.mark.slow
def test_real_leave_last_one_out_counts(real_splits, real_ml):
    split = real_splits[LEAVE_LAST_ONE_OUT]
    assert len(split.test_users) == len(split.test) == 6_040
    assert len(split.train) == len(real_ml.interactions) - 6_040


@pytest.mark.slow
def test_real_itemcf_time_split(real_splits, real_itemcf):
    split, scorer = real_splits[TIME_SPLIT], real_itemcf[TIME_SPLIT]
    got = scoring.evaluate_scorer(split, scorer, 50, exclude_seen=True)
    assert got["recall@50"] >= 0.14, got          # measured 0.1449
    seed = scoring.evaluate_scorer(split, scorer, 50, exclude_seen=False)
    assert 0.05 <= seed["recall@50"] <= 0.08, seed  # seed published 0.057; measured 0.0669
    assert (got["n_test_users"], got["n_test_items"]) == (178, 3_348)


@pytest.mark.slow
def test_real_itemcf_leave_last_one_out(real_splits, real_itemcf):
    split = real_splits[LEAVE_LAST_ONE_OUT]
    got = scoring.evaluate_scorer(split, real_itemcf[LEAVE_LAST_ONE_OUT], 50, True)
    assert got["hit@50"] >= 0.19, got               # measured 0.2205
    assert got["hit@50"] == got["recall@50"]         # one test item per user


@pytest.mark.slow
def test_real_itemcf_figures_are_those_of_the_dense_version(real_splits, real_itemcf):
    """The blocked itemCF reproduces the dense version's ML-1M figures to the last digit (its
    neighbour lists differ from the old argpartition's only in ties at the 50th place, ~200
    of 3,706 rows, and not in any top-50 list that counts)."""
    want = {TIME_SPLIT: {"recall@50": 0.1448626045400239, "hit@50": 0.5224719101123596,
                         "ndcg@50": 0.10655959270121551},
            LEAVE_LAST_ONE_OUT: {"hit@50": 0.2205298013245033,
                                 "ndcg@50": 0.06864393403501275}}
    for protocol, figures in want.items():
        got = scoring.evaluate_scorer(real_splits[protocol], real_itemcf[protocol], 50, True)
        for key, value in figures.items():
            assert got[key] == pytest.approx(value, abs=1e-12), (protocol, key, got)


@pytest.mark.slow
def test_real_popularity(real_splits):
    split = real_splits[TIME_SPLIT]
    got = scoring.evaluate_scorer(split, popularity.popularity_scorer(split), 50, True)
    assert got["recall@50"] == pytest.approx(0.126, abs=0.01), got      # measured 0.1257
    split = real_splits[LEAVE_LAST_ONE_OUT]
    got = scoring.evaluate_scorer(split, popularity.popularity_scorer(split), 50, True)
    assert got["hit@50"] == pytest.approx(0.140, abs=0.015), got        # measured 0.1397


@pytest.mark.slow
def test_real_ml1m_as_a_csv_gives_the_same_split_and_baselines(real_ml, tmp_path):
    """The ML-1M ratings written as a CSV with a header, read by `--dataset=tabular` with
    the seed's cutoff: the same test pairs on both protocols, the same baseline figures."""
    from dssm_tf.config import DataConfig  # noqa: PLC0415
    from dssm_tf.data.sources import load_dataset  # noqa: PLC0415

    frame = real_ml.interactions
    csv = tmp_path / "ratings.csv"
    pd.DataFrame({"user_id": real_ml.user_keys[frame.user], "movie_id": real_ml.item_keys[
        frame.item], "rating": frame.rating, "timestamp": frame.timestamp}).to_csv(
        csv, index=False)
    tabular = load_dataset(DataConfig(dataset="tabular", interactions=str(csv),
                                      item_column="movie_id", rating_column="rating"))
    for protocol in (TIME_SPLIT, LEAVE_LAST_ONE_OUT):
        ours, theirs = (make_split(d, protocol, CUTOFF if protocol == TIME_SPLIT else None)
                        for d in (real_ml, tabular))

        def pairs(split, dataset):
            return sorted(zip(dataset.user_keys[split.test.user].tolist(),
                              dataset.item_keys[split.test.item].tolist()))

        assert pairs(ours, real_ml) == pairs(theirs, tabular)
        assert len(ours.train) == len(theirs.train)
        for scorer in (popularity.popularity_scorer, itemcf.itemcf_scorer):
            want = scoring.evaluate_scorer(ours, scorer(ours), 50, True)
            got = scoring.evaluate_scorer(theirs, scorer(theirs), 50, True)
            for key in ("recall@50", "hit@50", "ndcg@50", "n_test_users", "n_test_items"):
                assert got[key] == pytest.approx(want[key], abs=1e-12), (protocol, key)
