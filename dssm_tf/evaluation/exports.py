"""Metrics of an exported two-tower model, from its SavedModels alone.

The split defaults to the one recorded in ``metadata.json`` (protocol and cutoff), so test
interactions are never training interactions of the model; an explicit protocol or cutoff
overrides it with a warning when it differs. Retrieval is `dssm_tf.serving.loaded.retrieve`
(faiss, seen items excluded by default) and the lists are scored by
`dssm_tf.evaluation.scoring.evaluate_lists`, the code every baseline uses.

Two settings keep the held-out interactions from leaking into the inputs:

- `request_time` (timed towers, ``--history_time``): when the tower is told the request comes,
  `Split.request_times` mode ``none`` (unknown, -1: the default), ``last`` (the last history
  item's time) or ``next`` (the held-out interaction's own time, HSTU's setting);
- `tie_shuffles`: an export with a history is evaluated `tie_shuffles` times, each on
  `Split.with_shuffled_ties(s)` for s = 0..N-1 (the same test rows, a user's same-second
  training interactions in another order), and the metrics are the mean of those passes
  (0: the data's source order, one pass). Exports without a history take one pass.

Every metrics dict says which (``request_time``, ``tie_shuffles``).

Usage::

    split = split_for_export(dataset, metadata, protocol=None, cutoff=None)
    metrics, top = evaluate_export("runs/bce/export", dataset, split, k=50, exclude_seen=True,
                                   request_time="none", tie_shuffles=3)
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dssm_tf.config import REQUEST_TIMES, TIME_SPLIT, IndexConfig, SplitConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import Split, make_split
from dssm_tf.errors import ConfigError
from dssm_tf.evaluation.scoring import cutoffs, evaluate_lists
from dssm_tf.serving import contract
from dssm_tf.serving.loaded import DEFAULT_BATCH_SIZE, Export, load_export, retrieve

log = logging.getLogger("dssm_tf")


def evaluate_export(export_dir: str | Export, dataset: Dataset, split: Split, k: int,
                    exclude_seen: bool, index: IndexConfig = IndexConfig(),
                    max_k: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                    request_time: str = "none",
                    tie_shuffles: int = 0) -> tuple[dict, np.ndarray]:
    """Contract metrics at `k` of an export on `split`, and the top lists behind them.

    The lists have `max(k, 50, max_k)` columns (longer lists serve recall curves; metrics are
    also reported at K = 10 and 50) and one row per `split.test_users`. `export_dir` may also
    be an already loaded `Export`. `request_time` and `tie_shuffles`: see the module; with
    several passes the metrics are their mean and the lists are the first pass's (seed 0;
    `evaluate_export_passes` returns them all).
    """
    result, tops = evaluate_export_passes(export_dir, dataset, split, k, exclude_seen, index,
                                          max_k, batch_size, request_time, tie_shuffles)
    return result, tops[0]


def evaluate_export_passes(export_dir: str | Export, dataset: Dataset, split: Split, k: int,
                           exclude_seen: bool, index: IndexConfig = IndexConfig(),
                           max_k: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                           request_time: str = "none",
                           tie_shuffles: int = 0) -> tuple[dict, list[np.ndarray]]:
    """`evaluate_export`'s metrics (the mean over the tie-shuffle passes) and every pass's top
    lists (one per `Split.with_shuffled_ties` seed, or the one source-order pass)."""
    if request_time not in REQUEST_TIMES:
        raise ConfigError("request_time", f"expected one of {', '.join(REQUEST_TIMES)}, "
                                          f"got {request_time!r}")
    if tie_shuffles < 0:
        raise ConfigError("tie_shuffles", f"expected at least 0, got {tie_shuffles}")
    export = export_dir if isinstance(export_dir, Export) else load_export(export_dir)
    start = time.perf_counter()
    depth = max(max(cutoffs(k)), max_k or k)
    shuffles = tie_shuffles if export.history_length > 0 else 0  # no history: order is moot
    passes, tops = [], []
    for seed in range(max(shuffles, 1)):
        shown = split.with_shuffled_ties(seed) if shuffles else split
        top = retrieve(export, dataset, shown, shown.test_users, depth, exclude_seen, index,
                       batch_size, request_time=request_time)
        passes.append(evaluate_lists(shown, top, k, exclude_seen))
        tops.append(top)
    result = mean_of_passes(passes)
    result.update(model="two_tower", export_dir=export.export_dir, index=index.index,
                  similarity=export.similarity, embedding_dim=export.embedding_dim,
                  history_length=export.history_length, request_time=request_time,
                  tie_shuffles=shuffles, seconds=round(time.perf_counter() - start, 3))
    settings = export.metadata.get("flags")
    if isinstance(settings, dict):
        for key, value in settings.items():
            result.setdefault(key, value)
    return result, tops


def mean_of_passes(passes: list[dict]) -> dict:
    """One metrics dict of several evaluations of the same test rows: each metric (a key with
    "@") is the mean over `passes`; everything else (protocol, k, the counts) is the first
    pass's, the same in all of them."""
    result = dict(passes[0])
    if len(passes) > 1:
        for key, value in result.items():
            if "@" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                result[key] = float(np.mean([one[key] for one in passes]))
    return result


def split_for_export(dataset: Dataset, metadata: dict, protocol: str | None = None,
                     cutoff: int | None = None) -> Split:
    """The split the export was trained under, unless `protocol`/`cutoff` override it.

    An override that differs from ``metadata.json`` is logged as a warning: test interactions
    of one split can be training interactions of the other, so the metrics would be
    optimistic. So are data files whose checksums differ from the recorded ones.
    """
    trained_protocol = metadata.get("protocol")
    trained_cutoff = contract.trained_cutoff(metadata)
    chosen = protocol or trained_protocol or TIME_SPLIT
    chosen_cutoff = cutoff if cutoff is not None else trained_cutoff
    # The split first: a cutoff that leaves a side empty is its one error line, no warning.
    split = make_split(dataset, SplitConfig(protocol=chosen, cutoff=chosen_cutoff))
    if trained_protocol is not None and chosen != trained_protocol:
        log.warning("the export was trained under --protocol=%s; evaluating under %s can count "
                    "training interactions as test interactions", trained_protocol, chosen)
    elif (chosen == TIME_SPLIT and trained_cutoff is not None and cutoff is not None
          and cutoff != trained_cutoff):
        log.warning("the export was trained with --cutoff=%s; evaluating with %s can count "
                    "training interactions as test interactions", trained_cutoff, cutoff)
    recorded = metadata.get("checksums")
    if isinstance(recorded, dict) and recorded:
        differ = sorted(name for name, value in recorded.items()
                        if name in dataset.checksums and dataset.checksums[name] != value)
        if differ:
            log.warning("%s in %s differ from the data the export was trained on "
                        "(metadata.json checksums)", ", ".join(differ), dataset.data_dir)
    return split
