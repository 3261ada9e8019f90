"""Request-anchored time gaps of a history (``--history_time``): how long after each item the
next event came — for the most recent item, the request itself.

Each history item gets an embedding of the gap, in seconds, from its own time to the time of
the item after it, and the last item's gap runs to `request_time`. The encoder's output at a
position therefore knows when the prediction it makes is asked for: the same second as the
item before (MovieLens-1M logs 42% of its last ratings in the same second as the one before,
in bursts of rating), minutes later, or a return months later. This is HSTU's relative time
as its authors use it for retrieval (the bias of query i uses the timestamp of item i + 1:
"we know the request timestamp already and want to predict the content to show",
meta-recsys/generative-recommenders#348), reduced to one embedding per item.

Gaps are bucketed on a log scale, two buckets per doubling: 0 for a gap of 0 (or a negative
one, which bad input can give), then ``1 + floor(2 log2(gap))``, capped at the last of
`BUCKETS` rows (2^31 seconds, 68 years). During training the gap at position t is to item
t + 1, whose time is the request time of the example at t; in evaluation the request is the
time of the interaction the model is asked to predict (the user's first test interaction).

Usage::

    gaps = TimeGapEmbedding(dim=64)
    extra = gaps(history_timestamps, request_time)   # [B, W] int64, [B] int64 -> [B, W, 64]
"""

from __future__ import annotations

import math

import tensorflow as tf
import tf_keras as keras

BUCKETS = 64


def gap_buckets(timestamps: tf.Tensor, request_time: tf.Tensor) -> tf.Tensor:
    """`[B, W]` bucket of the gap from each of `timestamps` (`[B, W]`, Unix seconds, the most
    recent last) to the next one, or to `request_time` (`[B]`) for the last.

    >>> gap_buckets(tf.constant([[0, 100, 100]], tf.int64), tf.constant([108], tf.int64))
    <tf.Tensor: shape=(1, 3), dtype=int64, numpy=array([[14,  0,  7]])>
    """
    timestamps, following = _with_following(timestamps, request_time)
    return bucket_of(following - timestamps)


def relative_buckets(timestamps: tf.Tensor, request_time: tf.Tensor) -> tf.Tensor:
    """`[B, W, W]`: for query position i and key position j, the bucket of the gap from item j
    to the event after item i (item i + 1, or the request for the last): how long before the
    moment position i predicts for, item j came. HSTU's relative time bias as its authors
    compute it for next-item prediction (`--attention_time_bias`).

    >>> relative_buckets(tf.constant([[0, 8]], tf.int64), tf.constant([10], tf.int64))[0]
    <tf.Tensor: shape=(2, 2), dtype=int64, numpy=
    array([[7, 0],
           [7, 3]])>
    """
    timestamps, following = _with_following(timestamps, request_time)
    return bucket_of(following[:, :, None] - timestamps[:, None, :])


def _with_following(timestamps: tf.Tensor,
                    request_time: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(the times as int64, the time of the event after each: the next item's, the request's
    for the last)."""
    timestamps = tf.cast(timestamps, tf.int64)
    following = tf.concat([timestamps[:, 1:], tf.cast(request_time, tf.int64)[:, None]], axis=1)
    return timestamps, following


def bucket_of(gap: tf.Tensor) -> tf.Tensor:
    """The bucket of each gap in seconds (any shape; see the module docstring)."""
    gap = tf.cast(tf.maximum(gap, 0), tf.float64)
    doubled_log = 2.0 * tf.math.log(tf.maximum(gap, 1.0)) / math.log(2.0)
    bucket = tf.where(gap > 0, 1.0 + tf.floor(doubled_log), 0.0)
    return tf.cast(tf.minimum(bucket, BUCKETS - 1), tf.int64)


class TimeGapEmbedding(keras.layers.Layer):
    """`[B, W, dim]`: an embedding of each history item's bucketed gap (`gap_buckets`), added to
    its item embedding by the user tower."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(BUCKETS, dim, name="gap_embedding")

    def call(self, timestamps: tf.Tensor, request_time: tf.Tensor) -> tf.Tensor:
        return self.embedding(gap_buckets(timestamps, request_time))
