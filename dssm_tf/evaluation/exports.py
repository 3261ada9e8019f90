"""Metrics of an exported two-tower model, from its SavedModels alone.

The split defaults to the one recorded in ``metadata.json`` (protocol and cutoff), so test
interactions are never training interactions of the model; an explicit protocol or cutoff
overrides it with a warning when it differs. Retrieval is `dssm_tf.serving.loaded.retrieve`
(faiss, seen items excluded by default) and the lists are scored by
`dssm_tf.evaluation.scoring.evaluate_lists`, the code every baseline uses.

Usage::

    split = split_for_export(dataset, metadata, protocol=None, cutoff=None)
    metrics, top = evaluate_export("runs/bce/export", dataset, split, k=50, exclude_seen=True)
"""

from __future__ import annotations

import logging
import time

import numpy as np

from dssm_tf.config import TIME_SPLIT, IndexConfig, SplitConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import Split, make_split
from dssm_tf.evaluation.scoring import cutoffs, evaluate_lists
from dssm_tf.serving import contract
from dssm_tf.serving.loaded import DEFAULT_BATCH_SIZE, Export, load_export, retrieve

log = logging.getLogger("dssm_tf")


def evaluate_export(export_dir: str | Export, dataset: Dataset, split: Split, k: int,
                    exclude_seen: bool, index: IndexConfig = IndexConfig(),
                    max_k: int | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[dict, np.ndarray]:
    """Contract metrics at `k` of an export on `split`, and the top lists behind them.

    The lists have `max(k, 50, max_k)` columns (longer lists serve recall curves; metrics are
    also reported at K = 10 and 50) and one row per `split.test_users`. `export_dir` may also be an already loaded `Export`.
    """
    export = export_dir if isinstance(export_dir, Export) else load_export(export_dir)
    start = time.perf_counter()
    depth = max(max(cutoffs(k)), max_k or k)
    top = retrieve(export, dataset, split, split.test_users, depth, exclude_seen, index,
                   batch_size)
    result = evaluate_lists(split, top, k, exclude_seen)
    result.update(model="two_tower", export_dir=export.export_dir, index=index.index,
                  similarity=export.similarity, embedding_dim=export.embedding_dim,
                  history_length=export.history_length,
                  seconds=round(time.perf_counter() - start, 3))
    settings = export.metadata.get("flags")
    if isinstance(settings, dict):
        for key, value in settings.items():
            result.setdefault(key, value)
    return result, top


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
    return make_split(dataset, SplitConfig(protocol=chosen, cutoff=chosen_cutoff))
