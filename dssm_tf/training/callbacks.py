"""Keras callbacks of the training loop that Keras does not ship.

Usage::

    recall = ValidationRecall(pipeline.tables, rows, split.seen_rows(pipeline.fit_rows),
                              split.candidates)
    model.fit(..., callbacks=[recall, keras.callbacks.EarlyStopping(monitor=recall.name,
                                                                    mode="max")])
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
import tf_keras as keras

from dssm_tf.data.pipeline import FeatureTables
from dssm_tf.evaluation import metrics
from dssm_tf.serving.contract import users_per_call


class ValidationRecall(keras.callbacks.Callback):
    """Adds `val_recall@K` to the epoch logs: share of held-out training interactions whose
    item is in the top K of its user (history before it, or before `history_ends[row]` —
    see `dssm_tf.data.pipeline.validation_history_ends`), the user's fit items excluded. Also
    `val_recall@10` and `val_ndcg@10` (a held-out interaction's item at 0-based rank r gains
    1 / log2(r + 2)) from the same lists: with ``--validation=last`` (one interaction a user)
    they are leave-last-one-out's hit@10 and NDCG@10 on validation data.

    Place it before `EarlyStopping` so `--early_stopping_metric=recall` can monitor it.
    """

    def __init__(self, tables: FeatureTables, rows: np.ndarray, fit_seen: sp.csr_matrix,
                 candidates: np.ndarray, k: int = 50, batch_size: int = 2048,
                 history_ends: np.ndarray | None = None):
        super().__init__()
        self.history_ends = None if history_ends is None else np.asarray(history_ends)[rows]
        self.tables, self.rows, self.k = tables, rows, k
        self.batch_size = users_per_call(tables.history_length, batch_size)
        self.fit_seen, self.candidates = fit_seen, candidates
        self.users = tables.train_user.numpy()[rows]
        self.targets = tables.train_item.numpy()[rows]
        self.name = f"val_recall@{k}"

    def measure(self) -> dict[str, float]:
        """The validation metrics of the model as it stands (the epoch log entries)."""
        ranks = self.ranks()
        # Each held-out row scored on its own, by the test metrics' own formulas.
        at10 = metrics.metrics_from_ranks(ranks, np.arange(len(ranks)), 10)
        return {self.name: float(np.mean(ranks < self.k)),
                "val_recall@10": at10["recall@10"], "val_ndcg@10": at10["ndcg@10"]}

    def ranks(self) -> np.ndarray:
        """0-based rank of each held-out item in its user's top K; K where it is absent."""
        all_items = tf.range(len(self.candidates), dtype=tf.int64)
        items = self.model.item_tower(self.tables.item_features(all_items)).numpy()
        ranks = []
        for start in range(0, len(self.rows), self.batch_size):
            rows = tf.constant(self.rows[start:start + self.batch_size], tf.int64)
            users = self.users[start:start + self.batch_size]
            ends = (None if self.history_ends is None else
                    tf.constant(self.history_ends[start:start + self.batch_size], tf.int64))
            query = self.model.user_tower(
                self.tables.interaction_features(rows, history_end=ends)["user"])
            top = metrics.top_k_from_scores(query.numpy() @ items.T, self.k,
                                            exclude=self.fit_seen[users],
                                            candidates=self.candidates)
            ranks.append(metrics.ranks_in_lists(top, self.targets[start:start + len(users)]))
        return np.concatenate(ranks)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        values = self.measure()
        if logs is not None:
            logs.update(values)
        print("".join(f" - {name}: {value:.4f}" for name, value in values.items()))
