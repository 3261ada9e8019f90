"""History encoders of the user tower: from the embeddings of a user's last L items to one
vector (serving) or to one vector per position (training on every position at once).

Both take right-aligned windows ``[B, W, d]`` (W <= L, the most recent item last) and `valid`,
``[B, W]``, true for the real items; padding is on the left.

- `MeanEncoder` (``--user_encoder=mean``): the masked mean of the embeddings, order-blind —
  the YouTube-DNN pooling dssm_tf always had. Its per-position form is the running mean.
- `AttentionEncoder` (``--user_encoder=attention``): SASRec-style causal self-attention —
  learned position embeddings counted from the most recent item, `blocks` pre-norm blocks of
  multi-head attention and a position-wise feed-forward layer (`feed_forward` times as wide
  as the embedding), dropout, a padding mask; with `gating`, LiGR's learned sigmoid gates
  scale what each block's attention and feed-forward add to its input (eSASRec). With
  `time_bias`, each block adds to its attention scores a learned bias per head and bucket of
  the time from key item j to query item i (HSTU's relative time bias, anchored at the
  query's own item: `dssm_tf.models.time_gaps.relative_buckets`). The
  output at position t only sees items up to t, so one forward pass over a user's sequence
  yields a training example at every position (the output at t predicts item t + 1), and the
  last position is the user's embedding at serving time.

Usage::

    encoder = make_encoder(TowerConfig(user_encoder="attention", history_length=200))
    per_position = encoder.sequence(embeddings, valid, training=True)   # [B, W, d]
    user = encoder(embeddings, valid)                                    # [B, d]
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

from dssm_tf.config import TowerConfig
from dssm_tf.models import time_gaps


def masked_mean(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of `[B, L, D]` where `mask` `[B, L]` is true; zeros for empty rows."""
    mask = tf.cast(mask, embeddings.dtype)[:, :, None]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


class MeanEncoder(keras.layers.Layer):
    """The masked mean of the history embeddings (no weights)."""

    def call(self, embeddings: tf.Tensor, valid: tf.Tensor, training: bool = False,
             time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        return masked_mean(embeddings, valid)

    def sequence(self, embeddings: tf.Tensor, valid: tf.Tensor, training: bool = False,
                 time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        """`[B, W, d]`: at each position, the mean of the real items up to it."""
        weights = tf.cast(valid, embeddings.dtype)[:, :, None]
        total = tf.cumsum(embeddings * weights, axis=1)
        return total / tf.maximum(tf.cumsum(weights, axis=1), 1.0)


class AttentionEncoder(keras.layers.Layer):
    """Causal self-attention over the history (see the module docstring)."""

    def __init__(self, length: int, dim: int, blocks: int = 2, heads: int = 1,
                 dropout: float = 0.2, feed_forward: int = 1, gating: bool = False,
                 time_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"attention_heads ({heads}) must divide embedding_dim ({dim})")
        self.length, self.dim, self.heads = length, dim, heads
        self.position = keras.layers.Embedding(length, dim, name="position_embedding")
        self.dropout = keras.layers.Dropout(dropout)
        # Plain matmuls rather than keras' MultiHeadAttention: 25% faster here, same maths.
        self.blocks = [{
            "attention_norm": keras.layers.LayerNormalization(epsilon=1e-6),
            "query_key_value": keras.layers.Dense(3 * dim),
            "attention_output": keras.layers.Dense(dim),
            "feed_forward_norm": keras.layers.LayerNormalization(epsilon=1e-6),
            "inner": keras.layers.Dense(feed_forward * dim, activation="gelu"),
            "outer": keras.layers.Dense(dim),
        } for _ in range(blocks)]
        if gating:  # LiGR: sigmoid(W x + b) scales what each branch adds to x
            for block in self.blocks:
                block["attention_gate"] = keras.layers.Dense(dim, activation="sigmoid")
                block["feed_forward_gate"] = keras.layers.Dense(dim, activation="sigmoid")
        if time_bias:  # HSTU: a learned bias per head and time bucket, in every block
            for i, block in enumerate(self.blocks):
                block["time_bias"] = keras.layers.Embedding(
                    time_gaps.BUCKETS, heads, embeddings_initializer="zeros",
                    name=f"time_bias_{i}")
        self.gating = gating
        self.final_norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def _split_heads(self, x: tf.Tensor) -> tf.Tensor:
        """[B, W, dim] -> [B, heads, W, dim / heads]."""
        shape = tf.shape(x)
        x = tf.reshape(x, [shape[0], shape[1], self.heads, self.dim // self.heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def _attention(self, block: dict, h: tf.Tensor, bias: tf.Tensor, training: bool,
                   last_query: bool = False,
                   time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        """The block's attention output at every position, or at the last one only."""
        query, key, value = (self._split_heads(part) for part in
                             tf.split(block["query_key_value"](h), 3, axis=-1))
        if last_query:
            query = query[:, :, -1:]
        scores = tf.matmul(query, key, transpose_b=True) / math.sqrt(self.dim // self.heads)
        if time_buckets is not None and "time_bias" in block:  # [B, Wq, W] -> [B, h, Wq, W]
            time_bias = block["time_bias"](time_buckets[:, -1:] if last_query else time_buckets)
            scores += tf.cast(tf.transpose(time_bias, [0, 3, 1, 2]), scores.dtype)
        weights = self.dropout(tf.nn.softmax(scores + bias), training=training)
        mixed = tf.transpose(tf.matmul(weights, value), [0, 2, 1, 3])
        shape = tf.shape(mixed)
        return block["attention_output"](tf.reshape(mixed, [shape[0], shape[1], self.dim]))

    def _encode(self, embeddings: tf.Tensor, valid: tf.Tensor, training: bool,
                last_only: bool, time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        """`[B, W, dim]` outputs, or `[B, 1, dim]` at the last position with `last_only`: the
        last block then attends from that position alone (its keys still see every item), so
        serving one embedding skips a block's worth of work on the other positions."""
        width = tf.shape(embeddings)[1]
        # Position L-1 is the most recent item, whatever the window's width.
        positions = tf.range(self.length - width, self.length)
        x = embeddings * math.sqrt(self.dim) + self.position(positions)[None]
        keep = tf.cast(valid, x.dtype)[:, :, None]
        x = self.dropout(x, training=training) * keep
        # Query t sees the real items up to t: a causal mask and a padding mask, as one
        # additive bias [B, 1, W, W] (a query with no real item sees the padding, harmlessly:
        # its output is masked out).
        causal = tf.linalg.band_part(tf.ones([width, width], x.dtype), -1, 0)
        seen = causal[None] * tf.cast(valid, x.dtype)[:, None, :]
        bias = ((seen - 1.0) * 1e9)[:, None]
        for i, block in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            if last:  # from here on, the last position only
                bias, keep = bias[:, :, -1:], keep[:, -1:]
            h = block["attention_norm"](x)
            attended = self.dropout(self._attention(block, h, bias, training, last,
                                                    time_buckets), training=training)
            x = x[:, -1:] if last else x
            x += block["attention_gate"](x) * attended if self.gating else attended
            h = block["feed_forward_norm"](x)
            fed = self.dropout(block["outer"](block["inner"](h)), training=training)
            x += block["feed_forward_gate"](x) * fed if self.gating else fed
            x *= keep
        return self.final_norm(x)

    def sequence(self, embeddings: tf.Tensor, valid: tf.Tensor, training: bool = False,
                 time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        return self._encode(embeddings, valid, training, False, time_buckets)

    def call(self, embeddings: tf.Tensor, valid: tf.Tensor, training: bool = False,
             time_buckets: tf.Tensor | None = None) -> tf.Tensor:
        return self._encode(embeddings, valid, training, True, time_buckets)[:, -1]


def make_encoder(config: TowerConfig) -> keras.layers.Layer:
    """The history encoder `config.user_encoder` names."""
    if config.user_encoder == "attention":
        return AttentionEncoder(config.history_length, config.embedding_dim,
                                config.attention_blocks, config.attention_heads,
                                config.encoder_dropout, config.attention_feed_forward,
                                config.attention_gating, config.attention_time_bias,
                                name="history_encoder")
    return MeanEncoder(name="history_encoder")
