"""Popularity baseline: every user gets the items with the most training interactions (seen
ones excluded).

Usage::

    scorer = popularity_scorer(split)
    evaluate_scorer(split, scorer, k=50, exclude_seen=True)
"""

from __future__ import annotations

import numpy as np

from dssm_tf.data.splits import Split
from dssm_tf.evaluation.scoring import Scorer


def popularity_scorer(split: Split) -> Scorer:
    """Scores = training interaction counts, the same for every user."""
    counts = split.item_counts.astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), len(counts)))
