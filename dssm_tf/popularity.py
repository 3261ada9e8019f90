"""Popularity baseline: every user gets the most-rated training movies (seen ones excluded).

Usage::

    scorer = popularity_scorer(split)
    evaluation.evaluate_scorer(split, scorer, k=50, exclude_seen=True)
"""

from __future__ import annotations

import numpy as np

from dssm_tf.evaluation import Scorer
from dssm_tf.protocols import Split


def popularity_scorer(split: Split) -> Scorer:
    """Scores = training rating counts, the same for every user."""
    counts = split.movie_counts.astype(np.float32)
    return lambda users: np.broadcast_to(counts, (len(users), len(counts)))
