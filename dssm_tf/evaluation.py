"""Glue between models, protocols and metrics: score users, take top K, measure, save.

Every model and baseline is measured through `evaluate_scorer` (dense scores) or
`evaluate_lists` (ready top-K lists), so all numbers come from one implementation.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Callable

import numpy as np

from dssm_tf import metrics
from dssm_tf.protocols import Split

Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> [n, num_movies] scores


def top_k_for_users(split: Split, scorer: Scorer, users: np.ndarray, k: int,
                    exclude_seen: bool, batch_size: int = 1024) -> np.ndarray:
    """Top-`k` movie indices for `users` among the split's candidates, in batches."""
    blocks = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        blocks.append(metrics.top_k_from_scores(
            scorer(batch), k, exclude=split.seen[batch] if exclude_seen else None,
            candidates=split.candidates))
    return np.concatenate(blocks) if blocks else np.zeros((0, k), np.int64)


def evaluate_lists(split: Split, top_k: np.ndarray, k: int, exclude_seen: bool) -> dict:
    """Contract metrics for lists `top_k` whose rows are `split.test_users`."""
    result = {"protocol": split.protocol, "k": k, "exclude_seen": exclude_seen}
    result.update(metrics.evaluate_top_k(top_k, split.test_users, split.test.user.to_numpy(),
                                         split.test.movie.to_numpy(), k))
    return result


def test_ranks(split: Split, top_k: np.ndarray) -> np.ndarray:
    """Rank of each test rating in `top_k` (for recall curves)."""
    return metrics.hit_ranks(top_k, split.test_users, split.test.user.to_numpy(),
                             split.test.movie.to_numpy())


def evaluate_scorer(split: Split, scorer: Scorer, k: int, exclude_seen: bool) -> dict:
    """Contract metrics of a dense scorer on the split's test users."""
    top = top_k_for_users(split, scorer, split.test_users, k, exclude_seen)
    return evaluate_lists(split, top, k, exclude_seen)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp_path)` into a temp file beside `path`, then rename it to `path`: readers see
    the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temp file only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def write_json(path: str, payload: dict) -> None:
    """Write `payload` as JSON atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def report(result: dict, output: str | None) -> None:
    """Print `result` as JSON and, if `output` is set, write it there atomically."""
    print(json.dumps(result, indent=2, sort_keys=True))
    if output:
        write_json(output, result)
