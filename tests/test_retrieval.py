"""faiss retrieval against brute-force numpy top-K, with and without seen-item exclusion."""

import faiss
import numpy as np
import pytest
import scipy.sparse as sp

from dssm_tf.errors import ConfigError
from dssm_tf.retrieval import index as retrieval

NUM_MOVIES = 300


def brute_force(users, items, item_ids, k, exclude=None, num_movies=NUM_MOVIES):
    """[n, k] movie indices by descending inner product (-1 pads) and the dense score matrix."""
    scores = np.full((len(users), num_movies), -np.inf)
    scores[:, item_ids] = users.astype(np.float64) @ items.astype(np.float64).T
    if exclude is not None:
        rows, cols = sp.csr_matrix(exclude).nonzero()
        scores[rows, cols] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.where(np.isfinite(np.take_along_axis(scores, order, axis=1)), order, -1)
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])), constant_values=-1)
    return top, scores


def assert_same_lists(top, ref, scores):
    """Identical padding, identical scores rank by rank (float32 near-ties may swap ids)."""
    assert top.shape == ref.shape
    np.testing.assert_array_equal(top < 0, ref < 0)
    rows = np.arange(len(top))[:, None]
    valid = ref >= 0
    np.testing.assert_allclose(scores[rows, np.maximum(top, 0)][valid],
                               scores[rows, np.maximum(ref, 0)][valid], rtol=1e-5, atol=1e-5)
    assert np.mean(top[valid] == ref[valid]) > 0.99


def assert_valid(top, item_ids, exclude=None):
    """Candidates only, nothing excluded, no duplicates, -1 only as a suffix."""
    allowed = set(np.asarray(item_ids).tolist())
    dense = None if exclude is None else sp.csr_matrix(exclude).toarray() != 0
    for i, row in enumerate(top):
        real = row[row >= 0]
        assert np.all(row[len(real):] == -1), row
        assert len(set(real.tolist())) == len(real)
        assert set(real.tolist()) <= allowed
        if dense is not None:
            assert not dense[i, real].any()


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(42)
    item_ids = np.sort(rng.choice(NUM_MOVIES, size=220, replace=False))  # candidates only
    items = rng.standard_normal((len(item_ids), 12)).astype(np.float32)
    users = rng.standard_normal((150, 12)).astype(np.float32)
    # Seen counts from 0 to far beyond k, some seen movies outside the index.
    counts = np.concatenate([[0, 1, 5, 30, 100, 200, 215, 220, NUM_MOVIES],
                             rng.integers(0, 60, size=len(users) - 9)])
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([rng.choice(NUM_MOVIES, size=c, replace=False) for c in counts])
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), NUM_MOVIES))
    return users, items, item_ids, exclude


@pytest.mark.parametrize("k", [1, 10, 50])
def test_flat_equals_brute_force(problem, k):
    users, items, item_ids, _ = problem
    index = retrieval.build_index(items)
    top = retrieval.search(index, users, k, item_ids=item_ids)
    ref, scores = brute_force(users, items, item_ids, k)
    assert_same_lists(top, ref, scores)
    assert (top >= 0).all()


@pytest.mark.parametrize("k", [1, 10, 50])
def test_flat_with_exclusion_equals_brute_force(problem, k):
    users, items, item_ids, exclude = problem
    index = retrieval.build_index(items, "flat")
    top, top_scores = retrieval.search(index, users, k, exclude=exclude, item_ids=item_ids,
                                       return_scores=True)
    ref, scores = brute_force(users, items, item_ids, k, exclude)
    assert_same_lists(top, ref, scores)
    assert_valid(top, item_ids, exclude)
    # Users whose seen movies outnumber k still get full lists while candidates remain.
    allowed = len(item_ids) - np.asarray(exclude[:, item_ids].sum(axis=1)).ravel()
    np.testing.assert_array_equal((top >= 0).sum(axis=1), np.minimum(allowed, k))
    assert (np.asarray(exclude.sum(axis=1)).ravel() > k).sum() > 5
    rows = np.arange(len(top))[:, None]
    np.testing.assert_allclose(top_scores[top >= 0], scores[rows, np.maximum(top, 0)][top >= 0],
                               rtol=1e-5, atol=1e-5)
    assert np.all(np.isneginf(top_scores[top < 0]))


def test_k_beyond_the_index_pads(problem):
    users, items, item_ids, exclude = problem
    index = retrieval.build_index(items[:7])
    top = retrieval.search(index, users[:3], 10, item_ids=item_ids[:7])
    assert top.shape == (3, 10)
    assert (top[:, :7] >= 0).all() and (top[:, 7:] == -1).all()
    top = retrieval.search(index, users, 10, exclude=exclude, item_ids=item_ids[:7])
    ref, scores = brute_force(users, items[:7], item_ids[:7], 10, exclude)
    assert_same_lists(top, ref, scores)


def test_default_item_ids_are_rows(problem):
    users, items, _, _ = problem
    top = retrieval.search(retrieval.build_index(items), users[:5], 4)
    ref = np.argsort(-(users[:5] @ items.T), axis=1)[:, :4]
    np.testing.assert_array_equal(top, ref)


def clustered(seed=0, num_items=2000, num_users=200, dim=16, clusters=40):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim)) * 3
    items = centers[rng.integers(clusters, size=num_items)] + rng.standard_normal(
        (num_items, dim))
    users = centers[rng.integers(clusters, size=num_users)] + rng.standard_normal(
        (num_users, dim))
    return users.astype(np.float32), items.astype(np.float32)


@pytest.mark.parametrize("kind,params", [("ivf", {}), ("ivf", {"nlist": 20, "nprobe": 5}),
                                         ("hnsw", {}), ("hnsw", {"hnsw_m": 16, "ef_search": 8})])
def test_approximate_indexes_valid_and_close(kind, params):
    users, items = clustered()
    item_ids = np.arange(len(items)) * 2 + 1  # not the identity
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 300, size=len(users))
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([rng.choice(item_ids, size=c, replace=False) for c in counts])
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, cols)),
                            shape=(len(users), 2 * len(items) + 1))
    k = 20
    index = retrieval.build_index(items, kind, **params)
    top = retrieval.search(index, users, k, exclude=exclude, item_ids=item_ids)
    ref, _ = brute_force(users, items, item_ids, k, exclude, num_movies=2 * len(items) + 1)
    assert_valid(top, item_ids, exclude)
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top, ref)])
    assert overlap > 0.8, overlap
    if kind == "hnsw":  # efSearch is raised to the search depth: lists are always full
        assert (top >= 0).all()


def test_ivf_lists_are_never_short_and_exhaustive_ivf_is_exact(problem):
    users, items, item_ids, exclude = problem
    ref, scores = brute_force(users, items, item_ids, 25, exclude)
    sparse_probe = retrieval.build_index(items, "ivf", nlist=8, nprobe=1)
    top = retrieval.search(sparse_probe, users, 25, exclude=exclude, item_ids=item_ids)
    assert_valid(top, item_ids, exclude)
    np.testing.assert_array_equal((top >= 0).sum(axis=1), (ref >= 0).sum(axis=1))
    exhaustive = retrieval.build_index(items, "ivf", nlist=8, nprobe=8)
    top = retrieval.search(exhaustive, users, 25, exclude=exclude, item_ids=item_ids)
    assert_same_lists(top, ref, scores)


def test_bad_arguments():
    items = np.ones((10, 4), np.float32)
    for kind, params, parameter in (("lsh", {}, "index"), ("ivf", {"nlist": 11}, "nlist"),
                                    ("ivf", {"nlist": 2, "nprobe": 3}, "nprobe")):
        with pytest.raises(ConfigError, match="expected") as error:
            retrieval.build_index(items, kind, **params)
        assert error.value.parameter == parameter
    with pytest.raises(ValueError, match="NaN"):
        retrieval.build_index(np.full((3, 4), np.nan, np.float32))
    index = retrieval.build_index(items)
    with pytest.raises(ValueError, match="dimension"):
        retrieval.search(index, np.ones((2, 5), np.float32), 3)
    with pytest.raises(ValueError, match="item_ids"):
        retrieval.search(index, np.ones((2, 4), np.float32), 3, item_ids=np.arange(9))
    with pytest.raises(ValueError, match="exclude"):
        retrieval.search(index, np.ones((2, 4), np.float32), 3, exclude=sp.csr_matrix((3, 10)))


def test_buckets_are_few_and_cover_every_row():
    need = np.random.default_rng(0).integers(0, 2400, size=6040)
    buckets = retrieval._buckets(need)
    assert len(buckets) <= 40
    np.testing.assert_array_equal(np.sort(np.concatenate(buckets)), np.arange(len(need)))
    for bucket in buckets:  # depth k + max(need) wastes at most ~25% over the smallest need
        assert need[bucket].max() + 1 <= 1.25 * (need[bucket].min() + 1) + 1


# --- scale: bounded chunks, sparse exclusion lookups, deep (heavy-user) buckets -----------------

@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_small_chunks_give_the_same_lists(problem, monkeypatch, kind):
    """Chunks of a few users and cells (as heavy users' deep buckets get at scale) change
    nothing: the same lists and scores as one chunk per bucket."""
    users, items, item_ids, exclude = problem
    index = retrieval.build_index(items, kind, **({"nlist": 8, "nprobe": 2} if kind == "ivf"
                                                  else {}))
    want, want_scores = retrieval.search(index, users, 30, exclude=exclude, item_ids=item_ids,
                                         return_scores=True)
    monkeypatch.setattr(retrieval, "_CHUNK_ROWS", 7)
    monkeypatch.setattr(retrieval, "_CHUNK_CELLS", 500)  # below one row's depth: 1 row a chunk
    monkeypatch.setattr(retrieval, "_COUNT_ROWS", 3)
    got, got_scores = retrieval.search(index, users, 30, exclude=exclude, item_ids=item_ids,
                                       return_scores=True)
    np.testing.assert_array_equal(got < 0, want < 0)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
    assert np.mean(got == want) > 0.99
    assert_valid(got, item_ids, exclude)
    if kind == "flat":
        ref, scores = brute_force(users, items, item_ids, 30, exclude)
        assert_same_lists(got, ref, scores)


def test_excluded_counts_are_those_of_the_index(problem, monkeypatch):
    """`need` counts a user's excluded items that are in the index, block by block."""
    _, _, item_ids, exclude = problem
    want = np.asarray((exclude[:, item_ids] != 0).sum(axis=1)).ravel()
    multiplicity = np.bincount(item_ids, minlength=exclude.shape[1])
    np.testing.assert_array_equal(retrieval._excluded_counts(exclude, multiplicity), want)
    monkeypatch.setattr(retrieval, "_COUNT_ROWS", 4)
    np.testing.assert_array_equal(retrieval._excluded_counts(exclude, multiplicity), want)


def test_exclusion_accepts_any_sparse_form_and_never_copies_a_csr(problem):
    users, items, item_ids, exclude = problem
    index = retrieval.build_index(items)
    want = retrieval.search(index, users, 20, exclude=exclude, item_ids=item_ids)
    canonical = sp.csr_matrix(exclude)
    assert retrieval._as_csr(canonical) is canonical          # split.seen is used as it is
    # COO with repeated cells, and explicitly stored zeros (which exclude nothing).
    coo = sp.coo_matrix(exclude)
    repeated = sp.coo_matrix((np.r_[coo.data, coo.data], (np.r_[coo.row, coo.row],
                                                          np.r_[coo.col, coo.col])),
                             shape=exclude.shape)
    np.testing.assert_array_equal(
        retrieval.search(index, users, 20, exclude=repeated, item_ids=item_ids), want)
    zeros = sp.csr_matrix(exclude, copy=True)
    zeros.data[:] = 0.0          # stored, but zero: nothing is excluded
    np.testing.assert_array_equal(retrieval.search(index, users, 20, exclude=zeros,
                                                   item_ids=item_ids),
                                  retrieval.search(index, users, 20, item_ids=item_ids))
    dense = exclude.toarray()
    np.testing.assert_array_equal(
        retrieval.search(index, users, 20, exclude=dense, item_ids=item_ids), want)


def test_heavy_users_search_deep_and_capped_at_the_index():
    """A heavy user (seen most of the catalogue, as ML-25M's 20,000-rating users) gets the k
    best unseen items; a user who has seen all but a few gets exactly those few."""
    rng = np.random.default_rng(5)
    num_items, k = 3000, 50
    items = rng.standard_normal((num_items, 8)).astype(np.float32)
    users = rng.standard_normal((6, 8)).astype(np.float32)
    counts = [0, 40, 900, 2500, num_items - 10, num_items]
    rows = np.repeat(np.arange(len(users)), counts)
    cols = np.concatenate([rng.choice(num_items, size=c, replace=False) for c in counts])
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), num_items))
    item_ids = np.arange(num_items)
    ref, scores = brute_force(users, items, item_ids, k, exclude, num_movies=num_items)
    for kind in ("flat", "hnsw", "ivf"):
        index = retrieval.build_index(items, kind)
        top = retrieval.search(index, users, k, exclude=exclude, item_ids=item_ids)
        assert_valid(top, item_ids, exclude)
        np.testing.assert_array_equal((top >= 0).sum(axis=1), [k, k, k, k, 10, 0])
        if kind == "flat":
            assert_same_lists(top, ref, scores)
        elif kind == "hnsw":  # the heavy users' searches are deep enough to scan: exact
            np.testing.assert_array_equal(np.sort(top[2:], axis=1), np.sort(ref[2:], axis=1))


def test_hnsw_walks_shallow_searches_and_scans_deep_ones(monkeypatch):
    """HNSW walks the graph while a search is shallower than 1/128 of the items (cheaper than
    a scan) and scans the stored vectors beyond (a walk that deep costs more)."""
    users, items = clustered(num_items=6400, num_users=50)
    index = retrieval.build_index(items, "hnsw", ef_search=16)
    calls = []
    storage = type(faiss.downcast_index(index.storage))
    original = storage.search
    monkeypatch.setattr(storage, "search",
                        lambda self, *a, **kw: calls.append(a[1]) or original(self, *a, **kw))
    retrieval.search(index, users, 50)            # 50 <= 6400 / 128: the graph
    assert calls == []
    top = retrieval.search(index, users, 51)      # deeper: the scan, exact
    assert calls and set(calls) == {51}
    ref, scores = brute_force(users, items, np.arange(len(items)), 51, num_movies=len(items))
    assert_same_lists(top, ref, scores)
