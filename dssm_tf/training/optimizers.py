"""Optimizers, chosen by `--optimizer`, and the learning-rate schedule.

`lazy_adam` is Adam that, for an embedding table, updates only the rows the batch touched:
Keras' Adam decays the moments of *every* row of every table at every step (three passes over
each table, however few rows the batch used), which on small towers costs more than the rest
of the step. Rows a batch does not touch keep their moments until they are next used — the
LazyAdam of TensorFlow Addons and of most recommender stacks. Dense variables (the MLPs) get
Keras' own Adam update.

Usage::

    optimizer = make_optimizer(TrainingConfig(optimizer="lazy_adam"), steps_per_epoch=874)
    model.compile(optimizer=optimizer)
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from dssm_tf.config import TrainingConfig


class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse (embedding) updates touch only the rows in the gradient.

    >>> table = tf.Variable(tf.ones([4, 2]))
    >>> optimizer = LazyAdam(learning_rate=0.1)
    >>> _ = optimizer.apply_gradients([(tf.IndexedSlices(tf.ones([1, 2]), tf.constant([1]),
    ...                                                    tf.constant([4, 2])), table)])
    >>> [round(float(x), 2) for x in table[:, 0]]   # only row 1 moved
    [1.0, 0.9, 1.0, 1.0]
    """

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        alpha = (tf.cast(self.learning_rate, dtype) * tf.sqrt(1 - tf.pow(beta_2, step))
                 / (1 - tf.pow(beta_1, step)))
        key = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[key], self._velocities[key]
        # A row may appear several times in one batch: sum its gradients first.
        rows, position = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.size(rows))
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon),
                                              rows))


_KINDS = {"adam": keras.optimizers.Adam, "lazy_adam": LazyAdam,
          "adagrad": keras.optimizers.Adagrad, "sgd": keras.optimizers.SGD}


def make_optimizer(training: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The optimizer `training` names, at its learning rate or schedule: with
    ``learning_rate_schedule="cosine"`` a warm-up epoch from a tenth of the rate, then a cosine
    decay to a tenth at the last epoch (the step counter is checkpointed, so a resumed run
    continues the schedule)."""
    rate = training.learning_rate
    if training.learning_rate_schedule == "cosine":
        total = max(training.epochs * steps_per_epoch, 2)
        warmup = min(steps_per_epoch, total // 2)
        rate = keras.optimizers.schedules.CosineDecay(
            rate / 10, total - warmup, alpha=0.1, warmup_target=rate, warmup_steps=warmup)
    return _KINDS[training.optimizer](learning_rate=rate)
