"""Glue between models, protocols and metrics: score users, take the top K, measure.

Every model and baseline is measured through `evaluate_scorer` (dense scores) or
`evaluate_lists` (ready top-K lists), so all numbers come from one implementation.

Usage::

    evaluate_scorer(split, popularity_scorer(split), k=50, exclude_seen=True)
    # {"protocol": ..., "recall@50": ..., "recall@50_user_mean": ..., "hit@50": ..., ...}
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from dssm_tf.data.splits import Split
from dssm_tf.evaluation import metrics

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> [n, num_items] scores
# Besides the asked K, metrics are always reported at these: the literature's hit@10 / NDCG@10
# and the seed's K = 50, so every figure compares with both.
REPORTED_KS = (10, 50)


def cutoffs(k: int) -> list[int]:
    """The K values metrics are reported at: `k` and `REPORTED_KS`."""
    return sorted({k, *REPORTED_KS})


def headline_keys(k: int) -> list[str]:
    """The metrics a summary table shows: all four at `k`, hit and NDCG at the other cutoffs."""
    return [f"recall@{k}", f"recall@{k}_user_mean", f"hit@{k}", f"ndcg@{k}"] + [
        f"{name}@{cutoff}" for cutoff in cutoffs(k) if cutoff != k for name in ("hit", "ndcg")]


def top_k_for_users(split: Split, scorer: Scorer, users: np.ndarray, k: int,
                    exclude_seen: bool, batch_size: int = 1024) -> np.ndarray:
    """Top-`k` item indices for `users` among the split's candidates, in batches."""
    blocks = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        blocks.append(metrics.top_k_from_scores(
            scorer(batch), k, exclude=split.seen[batch] if exclude_seen else None,
            candidates=split.candidates))
    return np.concatenate(blocks) if blocks else np.zeros((0, k), np.int64)


def evaluate_lists(split: Split, top_k: np.ndarray, k: int, exclude_seen: bool) -> dict:
    """Contract metrics for lists `top_k` whose rows are `split.test_users`, at `k` and at
    each of `REPORTED_KS` the lists are long enough for."""
    result = {"protocol": split.protocol, "k": k, "exclude_seen": exclude_seen}
    for cutoff in cutoffs(k):
        if cutoff <= top_k.shape[1]:
            result.update(metrics.evaluate_top_k(top_k, split.test_users,
                                                 split.test.user.to_numpy(),
                                                 split.test.item.to_numpy(), cutoff))
    return result


def test_ranks(split: Split, top_k: np.ndarray) -> np.ndarray:
    """Rank of each test interaction in `top_k` (for recall curves)."""
    return metrics.hit_ranks(top_k, split.test_users, split.test.user.to_numpy(),
                             split.test.item.to_numpy())


def evaluate_scorer(split: Split, scorer: Scorer, k: int, exclude_seen: bool) -> dict:
    """Contract metrics of a dense scorer on the split's test users."""
    top = top_k_for_users(split, scorer, split.test_users, max(cutoffs(k)), exclude_seen)
    return evaluate_lists(split, top, k, exclude_seen)
