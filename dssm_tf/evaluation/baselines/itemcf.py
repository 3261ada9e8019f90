"""Item-based collaborative filtering in numpy/scipy, the seed's scheme, blocked and sparse.

Similarity w_ij = sum over users u who interacted with both of 1/log(1+|N(u)|), divided by
sqrt(|N(i)| |N(j)|), with w_ii = 0. A user's score for item j sums w_ij over the history items
i of which j is one of the top `neighbors` neighbours.

Memory is O(non-zeros + items x neighbours): the co-occurrence ``seen.T @ diag(w) @ seen`` is
computed a block of item rows at a time (``left[block] @ seen``, a sparse product with
``left = seen.T @ diag(w)``), normalised, and cut down to each row's top `neighbors` before
the next block; no items x items matrix is ever built. One block per core is computed at once
(threads: scipy's product and numpy's partition release the GIL), each of `block_rows` rows,
chosen so that their sparse products, dense copies and the selection's workspace
(`BYTES_PER_CELL` per items-wide cell) fit `memory_budget` bytes together (256 MB by
default: ~135 rows of ML-25M's 59,000 items per block on 2 cores; ML-1M's 3,706 items are
one block). Results do not depend on the block size or the number of threads.

Neighbours are ranked by similarity, higher first, equal similarities by item index, lower
first, so the neighbour matrix does not depend on how a partial sort orders ties. Only
positive similarities are kept.

Usage::

    scorer = itemcf_scorer(split, neighbors=50)
    evaluate_scorer(split, scorer, k=50, exclude_seen=True)
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from dssm_tf.data.splits import Split, csr_from_grouped_rows
from dssm_tf.evaluation.scoring import Scorer
from dssm_tf.progress import progress

MEMORY_BUDGET = 256 * 2**20  # bytes, for all the similarity blocks in flight together
# Per items-wide cell of a block, at worst: the sparse product (float32 value + int32 column)
# with its dense float32 copy; later the dense block with a float32 copy (the denominators,
# then the array partitioned to find the k-th value).
BYTES_PER_CELL = 16
MAX_WORKERS = 4  # threads computing blocks at once (at most; one per core)


def block_rows(num_items: int, memory_budget: int = MEMORY_BUDGET) -> int:
    """Item rows per similarity block: the most whose workspace fits `memory_budget` bytes
    (at least 1, at most `num_items`)."""
    rows = int(memory_budget) // (max(int(num_items), 1) * BYTES_PER_CELL)
    return max(1, min(rows, int(num_items)))


def user_weights(seen: sp.csr_matrix) -> np.ndarray:
    """1 / log(1 + |N(u)|) per user (float32; 0 for users with no interaction)."""
    per_user = np.asarray(seen.sum(axis=1), dtype=np.float32).ravel()
    weight = np.zeros_like(per_user)
    np.divide(np.float32(1.0), np.log1p(per_user), out=weight, where=per_user > 0)
    return weight


class _Similarity:
    """What every block needs: the weighted items x users matrix, `seen`, the item norms."""

    def __init__(self, seen):
        seen = sp.csr_matrix(seen, dtype=np.float32)
        if not seen.has_sorted_indices:
            seen = seen.sorted_indices()  # a copy: the caller's matrix is left alone
        self.seen = seen
        self.num_items = seen.shape[1]
        # items x users, each user's column scaled by its weight; rows list users in order,
        # so every co-occurrence is summed in the same order as by the one-product dense
        # version, and comes out bit for bit the same.
        left = seen.T.tocsr()
        left.sort_indices()
        left.data *= user_weights(seen)[left.indices]
        self.left = left
        self.norm = np.sqrt(np.asarray(seen.sum(axis=0), dtype=np.float32).ravel())

    def block(self, start: int, stop: int) -> np.ndarray:
        """Dense similarity rows start:stop, diagonal zeroed."""
        co = self.left[start:stop] @ self.seen
        block = co.toarray()
        del co
        denominator = np.multiply.outer(self.norm[start:stop], self.norm)
        np.divide(block, denominator, out=block, where=denominator > 0)
        del denominator
        block[np.arange(stop - start), np.arange(start, stop)] = 0.0
        return block


def similarity_blocks(seen, rows: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, dense similarity rows start:start + `rows`) for consecutive blocks of items.

    Each block is ``[stop - start, num_items]`` float32 with the diagonal zeroed; the caller
    should drop it before asking for the next. The values are bit-for-bit those of the dense
    ``seen.T @ diag(w) @ seen / outer(sqrt|N(i)|, sqrt|N(j)|)`` in float32.
    """
    similarity = _Similarity(seen)
    rows = max(1, int(rows))
    for start in range(0, similarity.num_items, rows):
        yield start, similarity.block(start, min(start + rows, similarity.num_items))


def top_positive(block: np.ndarray, neighbors: int) -> tuple[np.ndarray, np.ndarray,
                                                                     np.ndarray]:
    """(row, column, value) of each row's `neighbors` largest positive entries, ties by
    lower column first; rows ascending, columns ascending within a row."""
    n, m = block.shape
    k = min(int(neighbors), m)
    if k <= 0 or n == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, block.dtype)
    work = np.negative(block)
    work.partition(k - 1, axis=1)
    kth = -work[:, k - 1:k]                  # each row's k-th largest value
    del work
    # Everything at or above the k-th value (positive only), then the k best by
    # (value descending, column ascending): ties at the k-th value go to lower columns.
    row, col = np.nonzero((block >= kth) & (block > 0))
    value = block[row, col]
    order = np.lexsort((col, -value, row))
    row, col, value = row[order], col[order], value[order]
    first = np.searchsorted(row, row, side="left")
    keep = np.arange(len(row)) - first < k
    row, col, value = row[keep], col[keep], value[keep]
    order = np.lexsort((col, row))
    return row[order], col[order], value[order]


def default_workers() -> int:
    """Blocks computed at once: one per available core, at most `MAX_WORKERS`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def neighbor_matrix(seen, neighbors: int, memory_budget: int = MEMORY_BUDGET,
                    rows: int | None = None, workers: int | None = None) -> sp.csr_matrix:
    """items x items CSR of each item's top-`neighbors` positive similarities (float32).

    `workers` threads (default `default_workers()`; scipy's product and numpy's partition
    release the GIL) each work on a block of `rows` item rows (default: the most that keep
    the blocks in flight within `memory_budget`, `block_rows(num_items, budget / workers)`).
    The result does not depend on `rows` or `workers`.
    """
    workers = default_workers() if workers is None else max(1, int(workers))
    num_items = seen.shape[1]
    if rows is None:
        rows = block_rows(num_items, int(memory_budget) // workers)
    rows = max(1, int(rows))
    similarity = _Similarity(seen)
    starts = range(0, num_items, rows)

    def block_neighbors(start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        block = similarity.block(start, min(start + rows, num_items))
        row, col, value = top_positive(block, neighbors)
        return row + start, col, value

    parts = []
    with progress(total=num_items, what="itemCF similarity", unit="items") as bar:
        pool = (ThreadPoolExecutor(workers, thread_name_prefix="itemcf")
                if workers > 1 and len(starts) > 1 else None)
        try:
            for start, part in zip(starts, (pool.map if pool else map)(block_neighbors,
                                                                         starts)):
                parts.append(part)
                bar.update(min(start + rows, num_items) - start)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    row, col, value = (np.concatenate(p) for p in zip(*parts)) if parts else (
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return csr_from_grouped_rows(row, col, value.astype(np.float32, copy=False),
                                 (num_items, num_items))


def itemcf_scorer(split: Split, neighbors: int = 50) -> Scorer:
    """Scores = a user's training items times the top-`neighbors` similarity matrix."""
    neighbors_of = neighbor_matrix(split.seen, neighbors)
    return lambda users: (split.seen[users] @ neighbors_of).toarray()
