"""Top-K retrieval over item embeddings with faiss (inner product), with exact seen-item exclusion.

Scores are inner products of user and item embeddings (the towers L2-normalise already when the
model uses cosine similarity), so every index uses ``METRIC_INNER_PRODUCT``:

- ``flat``: ``IndexFlatIP``, exact (the default);
- ``ivf``: ``IndexIVFFlat`` over a flat inner-product quantizer, ``nlist`` lists, ``nprobe``
  probed per query;
- ``hnsw``: ``IndexHNSWFlat`` with ``M`` links per node and ``efSearch`` candidates per query
  (raised to the search depth; searches deeper than a quarter of the items, i.e. users who have
  seen a large part of the catalogue, scan the index's stored vectors exactly instead: a graph
  walk that deep costs more than the scan).

Only the items that can be recommended go into the index; ``item_ids[row]`` maps a faiss row
back to its item index.

Seen-item exclusion never loses candidates: users are grouped into buckets by how many of their
excluded items are in the index, and each bucket is searched ``k + max excluded in bucket``
deep (capped at the index size). Dropping the excluded items then still leaves the ``k`` best
allowed ones. The buckets grow geometrically (a few dozen for ML-1M, ~45 for ML-25M, whose
heaviest users have seen 20,000 items), and everything within a bucket is vectorised, in chunks
of at most 4096 users and 2M result cells (users x depth), so memory stays bounded however deep
a bucket goes; excluded items are looked up in the sparse matrix, never in a dense mask.

Usage::

    index = build_index(item_embeddings[split.candidates], "flat")
    top = search(index, user_embeddings, 50, exclude=split.seen[users],
                 item_ids=np.flatnonzero(split.candidates))   # [n, 50] item indices, -1 pads
"""

from __future__ import annotations

import dataclasses
import math

import faiss
import numpy as np
import scipy.sparse as sp

from dssm_tf.config import INDEX_KINDS, IndexConfig
from dssm_tf.errors import ConfigError
from dssm_tf.progress import progress

_DEFAULTS = IndexConfig()   # a parameter left None takes its default, as the flags do
_LOWER_BOUNDS = {field.name: field.metadata["lower"] for field in dataclasses.fields(IndexConfig)
                 if "lower" in field.metadata}   # the flags' bounds (hnsw_m: 2)
_BUCKET_GROWTH = 1.25   # a bucket's depth is at most ~25% above its shallowest member's need
_HNSW_SCAN_FRACTION = 128  # HNSW searches deeper than 1/128 of the items scan them instead
_CHUNK_ROWS = 4096      # at most this many users per faiss call
_CHUNK_CELLS = 1 << 21  # and at most this many result cells (users x search depth): faiss'
#                         results are 12 bytes a cell, the exclusion arrays ~5x that, so
#                         ~150 MB at most however deep heavy users make the search
_COUNT_ROWS = 8192      # users per block when counting excluded items in the index


def _as_matrix(embeddings, name: str) -> np.ndarray:
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return matrix


def default_nlist(num_items: int) -> int:
    """About sqrt(n) lists, and at least 39 training points per list (faiss' own minimum)."""
    return max(1, min(int(round(math.sqrt(num_items))), num_items // 39))


def index_params(kind: str, num_items: int, *, nlist: int | None = None,
                 nprobe: int | None = None, hnsw_m: int | None = None,
                 ef_search: int | None = None, ef_construction: int | None = None) -> dict:
    """Check the parameters of a `kind` index over `num_items` items and fill in defaults.

    Raises ConfigError naming the parameter (as the flags are named).
    """
    if kind == "flat":
        return {}
    if kind == "ivf":
        lists = default_nlist(num_items) if nlist is None else int(nlist)
        if not 1 <= lists <= num_items:
            raise ConfigError("nlist", f"expected 1..{num_items} (the number of items), "
                                       f"got {lists}")
        probes = max(1, lists // 4) if nprobe is None else int(nprobe)
        if not 1 <= probes <= lists:
            raise ConfigError("nprobe", f"expected 1..{lists} (nlist), got {probes}")
        return {"nlist": lists, "nprobe": probes}
    if kind == "hnsw":
        given = {"hnsw_m": hnsw_m, "ef_search": ef_search, "ef_construction": ef_construction}
        params = {name: getattr(_DEFAULTS, name) if value is None else int(value)
                  for name, value in given.items()}
        for name, value in params.items():
            low = _LOWER_BOUNDS.get(name, 1)
            if value < low:
                raise ConfigError(name, f"expected at least {low}, got {value}")
        return params
    raise ConfigError("index", f"expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")


def build_index(item_embeddings, kind: str = _DEFAULTS.index, *, nlist: int | None = None,
                nprobe: int | None = None, hnsw_m: int | None = None,
                ef_search: int | None = None, ef_construction: int | None = None,
                seed: int = 0) -> faiss.Index:
    """An inner-product faiss index over the rows of `item_embeddings` ([n, D] float32).

    `kind` is "flat" (exact), "ivf" (`nlist` lists, default ~sqrt(n); `nprobe` probed, default
    nlist/4) or "hnsw" (`hnsw_m` links; `ef_search`, raised to the search depth when a search
    asks for more; `ef_construction`). A parameter left None takes `IndexConfig`'s default
    (hnsw: 32, 64 and 80).
    """
    items = _as_matrix(item_embeddings, "item_embeddings")
    num_items, dim = items.shape
    if num_items == 0:
        raise ValueError("item_embeddings: no items to index")
    params = index_params(kind, num_items, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                          ef_search=ef_search, ef_construction=ef_construction)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(dim)  # the Python wrapper keeps it alive with the index
        index = faiss.IndexIVFFlat(quantizer, dim, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # small catalogues: no warning, still correct
        index.train(items)
        index.nprobe = params["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
        index.hnsw.efSearch = params["ef_search"]
    index.add(items)
    return index


def _raw_search(index: faiss.Index, queries: np.ndarray, depth: int, exhaustive: bool = False):
    """faiss search `depth` deep. HNSW's efSearch is raised to `depth` so it can fill the list;
    `exhaustive` makes IVF probe every list."""
    hnsw = getattr(index, "hnsw", None)
    if hnsw is not None and depth * _HNSW_SCAN_FRACTION > index.ntotal:
        # A graph walk this deep visits most nodes anyway: scan the stored vectors instead.
        return faiss.downcast_index(index.storage).search(queries, depth)
    if hnsw is not None and hnsw.efSearch < depth:
        params = faiss.SearchParametersHNSW()
        params.efSearch = depth
        return index.search(queries, depth, params=params)
    if exhaustive and isinstance(index, faiss.IndexIVF):
        params = faiss.SearchParametersIVF()
        params.nprobe = index.nlist
        return index.search(queries, depth, params=params)
    return index.search(queries, depth)


def _buckets(need: np.ndarray) -> list[np.ndarray]:
    """Group row positions by `need` so that each group's max need is close to its min."""
    order = np.argsort(need, kind="stable")
    sorted_need = need[order]
    # Bucket id grows with log(need + 1): needs 0, 1, 2-3, ... in ~25% steps.
    key = np.floor(np.log1p(sorted_need) / math.log(_BUCKET_GROWTH)).astype(np.int64)
    bounds = np.flatnonzero(np.diff(key)) + 1
    return [group for group in np.split(order, bounds) if len(group)]


def _as_csr(exclude) -> sp.csr_matrix:
    """`exclude` as a canonical CSR matrix (sorted columns, no repeats), not copied when it
    already is one (``split.seen`` of 25M interactions is 200 MB)."""
    if not (sp.issparse(exclude) and exclude.format == "csr"):
        exclude = sp.csr_matrix(exclude)
    if not exclude.has_canonical_format:
        exclude = exclude.copy()
        exclude.sum_duplicates()
    return exclude


def _excluded_counts(exclude: sp.csr_matrix, multiplicity: np.ndarray) -> np.ndarray:
    """Per row of `exclude`, how many faiss rows its nonzero columns hold (`multiplicity[c]`
    is the number of index rows of item c), in blocks of rows (no nnz-sized int64 arrays)."""
    n = exclude.shape[0]
    need = np.zeros(n, np.int64)
    indptr = exclude.indptr.astype(np.int64)
    for start in range(0, n, _COUNT_ROWS):
        stop = min(n, start + _COUNT_ROWS)
        low, high = indptr[start], indptr[stop]
        hits = multiplicity[exclude.indices[low:high]]
        hits[exclude.data[low:high] == 0] = 0  # explicitly stored zeros exclude nothing
        total = np.zeros(high - low + 1, np.int64)
        np.cumsum(hits, out=total[1:])
        need[start:stop] = (total[indptr[start + 1:stop + 1] - low]
                            - total[indptr[start:stop] - low])
    return need


def search(index: faiss.Index, user_embeddings, k: int, exclude: sp.spmatrix | None = None,
           item_ids: np.ndarray | None = None, *, return_scores: bool = False):
    """The `k` best items per user, best first, as item indices ([n, k] int64, -1 pads).

    `exclude` (users x items, rows aligned with `user_embeddings`, nonzero = drop) removes each
    user's seen items before the top `k` is taken. `item_ids[row]` is the item index of faiss
    row `row` (default: the row itself). With `return_scores`, also returns the [n, k] float32
    inner products (-inf where padded).

    Lists are only shorter than `k` when fewer allowed items exist. (An IVF row whose probed
    lists ran out of allowed items is searched again probing every list.)

    Memory stays bounded at any scale: users are searched in chunks of at most `_CHUNK_ROWS`
    users and `_CHUNK_CELLS` result cells (users x depth), and exclusion is looked up in the
    sparse matrix (no dense users x items mask). A progress bar counts the users searched
    (on a terminal only).
    """
    if k < 1:
        raise ValueError(f"k: expected at least 1, got {k}")
    queries = _as_matrix(user_embeddings, "user_embeddings")
    n = len(queries)
    if queries.shape[1] != index.d:
        raise ValueError(f"user_embeddings: dimension {queries.shape[1]}, index has {index.d}")
    total = int(index.ntotal)
    item_ids = (np.arange(total, dtype=np.int64) if item_ids is None
                else np.asarray(item_ids, dtype=np.int64))
    if len(item_ids) != total:
        raise ValueError(f"item_ids: {len(item_ids)} ids for an index of {total} items")
    top = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    if n == 0 or total == 0:
        return (top, scores) if return_scores else top

    if exclude is None:
        need = np.zeros(n, np.int64)
    else:
        exclude = _as_csr(exclude)
        if exclude.shape[0] != n:
            raise ValueError(f"exclude: {exclude.shape[0]} rows for {n} users")
        if exclude.shape[1] <= item_ids.max():
            raise ValueError(f"exclude: {exclude.shape[1]} columns, item_ids go up to "
                             f"{item_ids.max()}")
        # Only excluded items that are in the index can take a place in a faiss result list.
        multiplicity = np.bincount(item_ids[item_ids >= 0], minlength=exclude.shape[1])
        need = _excluded_counts(exclude, multiplicity)

    def fill(rows_subset: np.ndarray, exhaustive: bool = False, bar=None) -> None:
        for bucket in _buckets(need[rows_subset]) if exclude is not None else [None]:
            group = rows_subset if bucket is None else np.sort(rows_subset[bucket])
            depth = int(min(k + need[group].max(), total))
            step = max(1, min(_CHUNK_ROWS, _CHUNK_CELLS // depth))
            for start in range(0, len(group), step):
                rows = group[start:start + step]
                _fill_rows(index, queries, rows, depth, k, exclude, item_ids, top, scores,
                           exhaustive)
                if bar is not None:
                    bar.update(len(rows))

    with progress(total=n, what="searching", unit="users") as bar:
        fill(np.arange(n), bar=bar)
    if isinstance(index, faiss.IndexIVF):
        short = np.flatnonzero((top >= 0).sum(axis=1) < np.minimum(k, total - need))
        if len(short):
            top[short], scores[short] = -1, -np.inf
            fill(short, exhaustive=True)
    return (top, scores) if return_scores else top


def _excluded(exclude: sp.csr_matrix, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """[len(rows), depth] bool: is `items[i, j]` (-1: none) excluded for user `rows[i]`?

    Looked up as sorted keys ``i * num_items + item`` of the rows' nonzero cells, so memory is
    that of the result lists, not of a dense users x items mask (4096 x 59,000 on ML-25M)."""
    block = exclude[rows]
    num_items = np.int64(exclude.shape[1])
    keys = np.repeat(np.arange(len(rows), dtype=np.int64) * num_items, np.diff(block.indptr))
    keys += block.indices
    keys = keys[block.data != 0]  # ascending: canonical rows, in row order
    if len(keys) == 0:
        return np.zeros(items.shape, bool)
    wanted = np.arange(len(rows), dtype=np.int64)[:, None] * num_items + np.maximum(items, 0)
    found = np.searchsorted(keys, wanted)
    np.minimum(found, len(keys) - 1, out=found)
    return (keys[found] == wanted) & (items >= 0)


def _fill_rows(index, queries, rows, depth, k, exclude, item_ids, top, scores,
               exhaustive) -> None:
    """Search `rows` `depth` deep; write each one's first `k` allowed items into top/scores."""
    found_scores, labels = _raw_search(index, queries[rows], depth, exhaustive)
    items = np.where(labels >= 0, item_ids[np.maximum(labels, 0)], -1)
    del labels
    keep = items >= 0
    if exclude is not None:
        keep &= ~_excluded(exclude, rows, items)
    rank = np.cumsum(keep, axis=1) - 1
    r, c = np.nonzero(keep & (rank < k))
    top[rows[r], rank[r, c]] = items[r, c]
    scores[rows[r], rank[r, c]] = found_scores[r, c]


def config_params(config: IndexConfig) -> dict:
    """The parameters of `config` that its kind of index uses (for `index_params` and
    `build_index`)."""
    config.validate()
    if config.index == "ivf":
        return {"nlist": config.nlist, "nprobe": config.nprobe}
    if config.index == "hnsw":
        return {"hnsw_m": config.hnsw_m, "ef_search": config.ef_search,
                "ef_construction": config.ef_construction}
    return {}
