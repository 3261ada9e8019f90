"""Top-K metrics shared by every model and baseline: recall (micro and user-mean), hit, NDCG.

A model hands over a ``[n_users, K]`` array of recommended item indices (``-1`` pads rows with
fewer candidates); the test interactions are ``(user, item)`` index pairs. Recall@K is computed as
the seed does: hits / number of test interactions.

Usage::

    top = top_k_from_scores(scores, 50, exclude=split.seen[users], candidates=split.candidates)
    evaluate_top_k(top, users, split.test.user, split.test.item, k=50)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_k_from_scores(scores: np.ndarray, k: int, exclude: sp.spmatrix | None = None,
                      candidates: np.ndarray | None = None) -> np.ndarray:
    """The `k` best columns of each row of `scores`, best first, skipping excluded cells.

    `exclude` (rows x columns, nonzero = drop) removes seen items; `candidates` (bool per
    column) restricts the catalogue. Rows with fewer than `k` allowed columns are padded with
    -1. Equal scores rank by column (the lower first), so the lists do not depend on how a
    partial sort happens to order ties (a popularity baseline has many).

    >>> top_k_from_scores(np.array([[0.5, 2.0, 0.5, 1.0]]), 3).tolist()
    [[1, 3, 0]]
    """
    scores = np.array(scores, dtype=np.float32, copy=True)
    if candidates is not None:
        scores[:, ~np.asarray(candidates, bool)] = -np.inf
    if exclude is not None:
        coo = sp.coo_matrix(exclude)
        scores[coo.row, coo.col] = -np.inf
    n, m = scores.shape
    k_eff = min(k, m)
    top = np.full((n, k), -1, np.int64)
    if k_eff == 0 or n == 0:
        return top
    # The k-th best score of each row; the cells at or above it hold each row's top k (ties at
    # it included), and only those are sorted: best first, equal scores by column.
    work = np.negative(scores)
    work.partition(k_eff - 1, axis=1)
    threshold = -work[:, k_eff - 1:k_eff]
    del work
    row, column = np.nonzero(scores >= threshold)  # row-major: columns ascending
    value = scores[row, column]
    order = np.lexsort((column, -value, row))
    row, column, value = row[order], column[order], value[order]
    rank = np.arange(len(row)) - np.searchsorted(row, row)
    keep = rank < k_eff
    columns = column[keep].reshape(n, k_eff)
    top[:, :k_eff] = np.where(np.isfinite(value[keep].reshape(n, k_eff)), columns, -1)
    return top


def hit_ranks(top_k: np.ndarray, users: np.ndarray, test_users: np.ndarray,
              test_items: np.ndarray) -> np.ndarray:
    """0-based rank of each test interaction's item in its user's list; `top_k.shape[1]` if absent.

    `users[i]` is the user of row `i` of `top_k` (sorted, unique).
    """
    rows = np.searchsorted(users, test_users)
    if np.any(rows >= len(users)) or np.any(users[np.minimum(rows, len(users) - 1)] != test_users):
        raise ValueError("every test user needs a row in top_k")
    return ranks_in_lists(top_k[rows], test_items)


def ranks_in_lists(top_k: np.ndarray, items: np.ndarray) -> np.ndarray:
    """0-based rank of `items[i]` in the list `top_k[i]`; `top_k.shape[1]` where it is absent."""
    match = top_k == np.asarray(items)[:, None]
    return np.where(match.any(axis=1), match.argmax(axis=1), top_k.shape[1])


def metrics_from_ranks(ranks: np.ndarray, test_users: np.ndarray, k: int) -> dict[str, float]:
    """recall@k (micro), recall@k_user_mean, hit@k and ndcg@k from `hit_ranks` output."""
    ranks = np.asarray(ranks)
    _, row, n_test = np.unique(test_users, return_inverse=True, return_counts=True)
    hit = ranks < k
    user_hits = np.bincount(row, weights=hit, minlength=len(n_test))
    gains = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    dcg = np.bincount(row, weights=gains, minlength=len(n_test))
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = discounts[np.minimum(n_test, k) - 1]
    return {
        f"recall@{k}": float(hit.mean()),
        f"recall@{k}_user_mean": float(np.mean(user_hits / n_test)),
        f"hit@{k}": float(np.mean(user_hits > 0)),
        f"ndcg@{k}": float(np.mean(dcg / idcg)),
        "n_test_users": int(len(n_test)),
        "n_test_items": int(len(ranks)),
    }


def evaluate_top_k(top_k: np.ndarray, users: np.ndarray, test_users: np.ndarray,
                   test_items: np.ndarray, k: int) -> dict[str, float]:
    """All contract metrics at `k` for recommendation lists `top_k` (rows = sorted `users`)."""
    ranks = hit_ranks(np.asarray(top_k)[:, :k], np.asarray(users), np.asarray(test_users),
                      test_items)
    return metrics_from_ranks(ranks, np.asarray(test_users), k)


def recall_curve(ranks: np.ndarray, max_k: int) -> np.ndarray:
    """recall@k (micro) for k = 1..max_k from `hit_ranks` of lists at least `max_k` long."""
    counts = np.bincount(np.minimum(ranks, max_k), minlength=max_k + 1)[:max_k]
    return np.cumsum(counts) / len(ranks)
