"""The two-tower model: one training step for every loss scheme, trained with Keras `fit`.

The model embeds the batch with both towers and hands the embeddings, with the item indices
and the negative mask, to the configured scheme; nothing else differs between schemes.

Usage::

    model = TwoTowerModel(user_tower, item_tower, make_loss(...))
    model.compile(optimizer=keras.optimizers.Adam(0.005))
    model.fit(pipeline.training(), steps_per_epoch=pipeline.steps_per_epoch,
              validation_data=pipeline.validation())
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from dssm_tf.models.losses import LossScheme


class TwoTowerModel(keras.Model):
    """User tower + item tower + a loss scheme from `dssm_tf.models.losses`.

    `loss` in the logs is the epoch mean of the scheme's loss (TFRS's base model reports the
    last batch's value instead, which makes `val_loss` too noisy for early stopping).
    Regularisation losses are added for the gradient; `optimizer.minimize` handles loss
    scaling under mixed precision.
    """

    def __init__(self, user_tower: keras.Model, item_tower: keras.Model, scheme: LossScheme):
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.scheme = scheme
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def batch_loss(self, batch: dict, training: bool = False) -> tf.Tensor:
        """The scheme's loss on one batch of `dssm_tf.data.pipeline` features (or of
        `dssm_tf.data.sequences` windows: those have a `target_mask`)."""
        if "target_mask" in batch:
            return self._sequence_loss(batch, training)
        user = self.user_tower(batch["user"], training=training)
        positive = self.item_tower(batch["positive"], training=training)
        negatives = negative_items = negative_mask = None
        if "negatives" in batch:
            negative_items, negative_mask = batch["negative_items"], batch["negative_mask"]
            if self.scheme.shares_negatives:
                negatives = self.item_tower(batch["negatives"], training=training)
            else:  # [B, N] inputs: embed them flat, then restore the shape
                flat = {name: tf.reshape(value, [-1])
                        for name, value in batch["negatives"].items()}
                negatives = tf.reshape(self.item_tower(flat, training=training),
                                       tf.concat([tf.shape(negative_items), [-1]], axis=0))
        return self.scheme(user, positive, negatives, batch["positive_item"], negative_items,
                           negative_mask)

    def _sequence_loss(self, batch: dict, training: bool) -> tf.Tensor:
        """Every target position of every window against the distinct candidate items: the
        batch's targets and its shared negatives, each embedded once."""
        mask = batch["target_mask"]
        user = tf.boolean_mask(self.user_tower.sequence(batch["user"], training=training), mask)
        items = tf.boolean_mask(batch["positive_item"], mask)
        features = {name: tf.boolean_mask(value, mask)
                    for name, value in batch["positive"].items()}
        if "negatives" in batch:
            items = tf.concat([items, batch["negative_items"]], axis=0)
            features = {name: tf.concat([value, batch["negatives"][name]], axis=0)
                        for name, value in features.items()}
        distinct, row = tf.unique(items)
        first = tf.math.unsorted_segment_min(tf.range(tf.size(items)), row, tf.size(distinct))
        candidates = self.item_tower({name: tf.gather(value, first)
                                      for name, value in features.items()}, training=training)
        positions = tf.shape(user)[0]
        windows = tf.where(mask)[:, 0]     # the window (batch row) of each target position
        return self.scheme(user, candidates, distinct, row[:positions], row[positions:],
                           windows=windows)

    def call(self, batch: dict, training: bool = False) -> tf.Tensor:
        """The batch loss; calling the model once on a batch builds every variable."""
        return self.batch_loss(batch, training=training)

    def train_step(self, batch: dict) -> dict:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            loss = self.batch_loss(batch, training=True)
            total = loss + tf.add_n(self.losses) if self.losses else loss
            if replicas > 1:  # the replicas' gradients are summed: make it the global mean
                total = total / replicas
        self.optimizer.minimize(total, self.trainable_variables, tape=tape)
        self.loss_tracker.update_state(loss)
        return {metric.name: metric.result() for metric in self.metrics}

    def test_step(self, batch: dict) -> dict:
        self.loss_tracker.update_state(self.batch_loss(batch, training=False))
        return {metric.name: metric.result() for metric in self.metrics}
