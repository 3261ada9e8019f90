"""Item-based collaborative filtering in numpy/scipy, the seed's scheme, vectorised.

Similarity w_ij = sum over users u who interacted with both of 1/log(1+|N(u)|), divided by
sqrt(|N(i)| |N(j)|). A user's score for item j sums w_ij over the history items i of which j
is one of the top `neighbors` neighbours. The seed's dict version took 19 minutes; this is two
sparse products.

Usage::

    scorer = itemcf_scorer(split, neighbors=50)
    evaluate_scorer(split, scorer, k=50, exclude_seen=True)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dssm_tf.data.splits import Split
from dssm_tf.evaluation.scoring import Scorer


def item_similarity(seen: sp.csr_matrix) -> np.ndarray:
    """Dense items x items similarity from a binary users x items matrix; zero diagonal."""
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


def top_neighbors(sim: np.ndarray, neighbors: int) -> sp.csr_matrix:
    """Keep each row's `neighbors` largest positive similarities (sparse)."""
    n = min(neighbors, sim.shape[1])
    cols = np.argpartition(-sim, n - 1, axis=1)[:, :n]
    vals = np.take_along_axis(sim, cols, axis=1)
    rows = np.repeat(np.arange(sim.shape[0]), n)
    keep = vals.ravel() > 0
    return sp.csr_matrix((vals.ravel()[keep], (rows[keep], cols.ravel()[keep])),
                         shape=sim.shape)


def itemcf_scorer(split: Split, neighbors: int = 50) -> Scorer:
    """Scores = a user's training items times the top-`neighbors` similarity matrix."""
    neighbor_matrix = top_neighbors(item_similarity(split.seen), neighbors)
    return lambda users: (split.seen[users] @ neighbor_matrix).toarray()
