"""The one-piece retrieval SavedModel: raw user inputs and `k` in, the top-k item keys out.

Serving two towers needs a vector index beside them; this model carries its own. It holds the
user tower, the embeddings and keys of every candidate item (those with a training
interaction, as in evaluation) and scores them with one matmul and `tf.math.top_k`:

    serving_default(<the user tower's inputs>, k: int32 [], exclude_history: bool [])
        -> {"item_keys": [n, k] (the item key dtype), "scores": float32 [n, k]}

`k` is an input, so it can change at every call after loading (TFRS's loaded BruteForce index
fixes it). With `exclude_history`, every item of the `history` input (all its columns, not
only the last L the tower encodes) is left out: pass a user's whole history to get what
`evaluate` scores with seen items excluded. Ranks equal an exact (flat) faiss search over the
two towers' embeddings. It loads with plain `tf.saved_model.load`, without dssm_tf.

Usage::

    module = RetrievalModule(user_tower, item_keys, item_embeddings, user_inputs)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    model = tf.saved_model.load("runs/x/export/<version>/retrieval")
    out = model.signatures["serving_default"](user_id=..., gender=..., age=...,
        occupation=..., history=..., k=tf.constant(10), exclude_history=tf.constant(True))
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dssm_tf.data.schema import HISTORY
from dssm_tf.serving.contract import EXCLUDE, ITEM_KEYS, K, SCORES


class RetrievalModule(tf.Module):
    """User tower + candidate embeddings + exact top-k (see the module docstring)."""

    def __init__(self, user_tower: keras.Model, item_keys: np.ndarray,
                 item_embeddings: np.ndarray, user_inputs: dict[str, tuple[str, int]]):
        super().__init__()
        self.user_tower = user_tower
        keys = tf.constant(item_keys)
        self.item_keys = tf.Variable(keys, trainable=False, name="item_keys")
        self.item_embeddings = tf.Variable(np.asarray(item_embeddings, np.float32),
                                           trainable=False, name="item_embeddings")
        self.rows = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                keys, tf.range(tf.size(keys, out_type=tf.int64), dtype=tf.int64)),
            default_value=tf.constant(-1, tf.int64))
        names = list(user_inputs)
        specs = [tf.TensorSpec([None] * rank, dtype, name=name)
                 for name, (dtype, rank) in user_inputs.items()]
        specs += [tf.TensorSpec([], tf.int32, name=K), tf.TensorSpec([], tf.bool, name=EXCLUDE)]

        @tf.function(input_signature=specs)
        def serve(*tensors):
            features = dict(zip(names, tensors[:len(names)]))
            k, exclude = tensors[len(names):]
            users = tf.cast(self.user_tower(features, training=False), tf.float32)
            scores = tf.matmul(users, self.item_embeddings, transpose_b=True)
            history = self.rows.lookup(features[HISTORY])         # -1: padding or not a candidate
            seen = tf.where(history >= 0)                         # (row in batch, column)
            hits = tf.stack([seen[:, 0], tf.gather_nd(history, seen)], axis=1)
            masked = tf.tensor_scatter_nd_update(
                scores, hits, tf.fill([tf.shape(hits)[0]], tf.constant(-np.inf, tf.float32)))
            scores = tf.where(exclude, masked, scores)
            top = tf.math.top_k(scores, tf.minimum(k, tf.shape(scores)[1]))
            return {ITEM_KEYS: tf.gather(self.item_keys, top.indices), SCORES: top.values}

        self.serve = serve
