"""The two-tower model: one training step for every loss scheme, trained with Keras `fit`.

The model embeds the batch with both towers and hands the embeddings to the configured scheme;
nothing else differs between schemes.

Usage::

    model = TwoTowerModel(user_tower, item_tower, make_loss("bce"))
    model.compile(optimizer=keras.optimizers.Adam(0.005))
    model.fit(training_dataset(...), steps_per_epoch=..., validation_data=...)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import tensorflow as tf
import tf_keras as keras

from dssm_tf import metrics
from dssm_tf.sampling import FeatureTables


class TwoTowerModel(keras.Model):
    """User tower + item tower + a loss scheme from `dssm_tf.losses`.

    `loss` in the logs is the epoch mean of the scheme's loss (TFRS's base model reports the
    last batch's value instead, which makes `val_loss` too noisy for early stopping).
    Regularisation losses are added for the gradient; `optimizer.minimize` handles loss
    scaling under mixed precision.
    """

    def __init__(self, user_tower: keras.Model, item_tower: keras.Model,
                 scheme: keras.layers.Layer, shared_negatives: bool = False):
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.scheme = scheme
        self.shared_negatives = shared_negatives
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def batch_loss(self, features: dict, training: bool = False) -> tf.Tensor:
        """The scheme's loss on one batch of `sampling` features."""
        user = self.user_tower(features["user"], training=training)
        positive = self.item_tower(features["positive"], training=training)
        negatives = None
        if "negatives" in features:
            movies = features["negatives"]
            if self.shared_negatives:
                negatives = self.item_tower(movies, training=training)
            else:
                shape = tf.shape(movies["movie_id"])
                flat = {name: tf.reshape(value, [-1]) for name, value in movies.items()}
                negatives = tf.reshape(self.item_tower(flat, training=training),
                                       tf.concat([shape, [-1]], axis=0))
        return self.scheme(user, positive, negatives, features)

    def call(self, features: dict, training: bool = False) -> tf.Tensor:
        """The batch loss; calling the model once on a batch builds every variable."""
        return self.batch_loss(features, training=training)

    def train_step(self, features: dict) -> dict:
        with tf.GradientTape() as tape:
            loss = self.batch_loss(features, training=True)
            total = loss + tf.add_n(self.losses) if self.losses else loss
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, features: dict) -> dict:
        self.loss_tracker.update_state(self.batch_loss(features, training=False))
        return {metric.name: metric.result() for metric in self.metrics}


class ValidationRecall(keras.callbacks.Callback):
    """Adds `val_recall@K` to the epoch logs: share of held-out training interactions whose
    movie is in the top K of its user (history before it), the user's fit movies excluded.

    Place it before `EarlyStopping` so `--early_stopping_metric=recall` can monitor it.
    """

    def __init__(self, tables: FeatureTables, rows: np.ndarray, fit_seen: sp.csr_matrix,
                 candidates: np.ndarray, k: int = 50, batch_size: int = 2048):
        super().__init__()
        self.tables, self.rows, self.k, self.batch_size = tables, rows, k, batch_size
        self.fit_seen, self.candidates = fit_seen, candidates
        self.users = tables.train_user.numpy()[rows]
        self.targets = tables.train_movie.numpy()[rows]
        self.name = f"val_recall@{k}"

    def recall(self) -> float:
        all_movies = tf.range(len(self.candidates), dtype=tf.int64)
        items = self.model.item_tower(self.tables.movie_features(all_movies)).numpy()
        hits = 0
        for start in range(0, len(self.rows), self.batch_size):
            rows = tf.constant(self.rows[start:start + self.batch_size], tf.int64)
            users = self.users[start:start + self.batch_size]
            query = self.model.user_tower(self.tables.interaction_features(rows)["user"])
            top = metrics.top_k_from_scores(query.numpy() @ items.T, self.k,
                                            exclude=self.fit_seen[users],
                                            candidates=self.candidates)
            hits += int((top == self.targets[start:start + len(users), None]).any(1).sum())
        return hits / len(self.rows)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = self.recall()
        if logs is not None:
            logs[self.name] = value
        print(f" - {self.name}: {value:.4f}")
