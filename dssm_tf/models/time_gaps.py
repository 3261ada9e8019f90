"""Time features of a history (``--history_time``), and of the request (``--request_gap``).

History features use only the history's own times, so no input depends on the interaction
the model is asked to predict:

- `gap_buckets`: each item's gap since the item before it in the window (`START` for the
  window's first real item). It tells a burst of ratings entered in one session (MovieLens-1M
  logs half of its consecutive ratings in the same second) from a return months later.
- `relative_buckets`: for the attention query at item i and the key item j, how long before
  item i item j came (``--attention_time_bias``, HSTU's relative time bias anchored at the
  query's own item instead of at the item it predicts).

The request's time is another matter: HSTU biases query i by the time of item i + 1, the one
it predicts ("we know the request timestamp already", meta-recsys/generative-recommenders#348).
In a leave-one-out evaluation that is the held-out interaction's own timestamp, so it is kept
apart: `request_buckets` is the gap from the last item to the request, which ``--request_gap``
adds to the user's embedding (during training, position t's request is item t + 1's time).
A request time below 0 (`dssm_tf.config.NO_REQUEST_TIME`) is unknown, and gets a row of its
own (`UNKNOWN`).

Gaps are bucketed on a log scale, two buckets per doubling: 0 for a gap of 0 (or a negative
one, which bad input can give), then ``1 + floor(2 log2(gap))``, capped at the last of
`BUCKETS` rows (2^31 seconds, 68 years).

Usage::

    gaps = TimeGapEmbedding(dim=64)
    extra = gaps(history_timestamps, valid)   # [B, W] int64, [B, W] bool -> [B, W, 64]
"""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

BUCKETS = 64          # bucketed gaps: 0 .. BUCKETS - 1
START = BUCKETS       # a window's first real item: nothing before it to measure from
UNKNOWN = BUCKETS     # a request of unknown time (request_time < 0)
ROWS = BUCKETS + 1    # embedding rows of either kind of gap


def bucket_of(gap: tf.Tensor) -> tf.Tensor:
    """The int32 bucket of each gap in seconds (any shape; see the module docstring).

    >>> bucket_of(tf.constant([-5, 0, 1, 2, 3, 100, 2**40], tf.int64)).numpy().tolist()
    [0, 0, 1, 3, 4, 14, 63]
    """
    gap = tf.cast(tf.maximum(gap, 0), tf.float32)
    bucket = 1.0 + tf.floor(2.0 * tf.math.log(tf.maximum(gap, 1.0)) / tf.math.log(2.0))
    bucket = tf.where(gap > 0, bucket, 0.0)
    return tf.cast(tf.minimum(bucket, BUCKETS - 1), tf.int32)


def gap_buckets(timestamps: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
    """`[B, W]` bucket of each item's gap since the item before it; `START` where that item is
    not in the window (`valid` `[B, W]` marks the real items, right-aligned).

    >>> gap_buckets(tf.constant([[0, 100, 100, 108]], tf.int64),
    ...             tf.constant([[False, True, True, True]])).numpy().tolist()
    [[64, 64, 0, 7]]
    """
    timestamps = tf.cast(timestamps, tf.int64)
    before = tf.pad(timestamps[:, :-1], [[0, 0], [1, 0]])
    has_before = tf.pad(valid[:, :-1], [[0, 0], [1, 0]])
    return tf.where(has_before, bucket_of(timestamps - before), START)


def relative_buckets(timestamps: tf.Tensor) -> tf.Tensor:
    """`[B, W, W]`: for query item i and key item j, the bucket of the time from item j to item
    i (0 for a later key, which the causal mask hides anyway).

    >>> relative_buckets(tf.constant([[0, 8]], tf.int64))[0].numpy().tolist()
    [[0, 0], [7, 0]]
    """
    timestamps = tf.cast(timestamps, tf.int64)
    return bucket_of(timestamps[:, :, None] - timestamps[:, None, :])


def request_buckets(timestamps: tf.Tensor, request_time: tf.Tensor,
                    every_position: bool = False) -> tf.Tensor:
    """The bucket of the gap from the last item to the request (`[B]`; `UNKNOWN` where
    `request_time` < 0), or with `every_position`, from each item to the event after it: the
    next item, the request for the last (`[B, W]`, the requests of training on sequences).

    >>> request_buckets(tf.constant([[0, 100], [0, 100]]), tf.constant([108, -1])).numpy()
    array([ 7, 64], dtype=int32)
    >>> request_buckets(tf.constant([[0, 100]], tf.int64), tf.constant([108]), True).numpy()
    array([[14,  7]], dtype=int32)
    """
    timestamps = tf.cast(timestamps, tf.int64)
    request = tf.cast(request_time, tf.int64)
    if every_position:
        following = tf.concat([timestamps[:, 1:], request[:, None]], axis=1)
        known = tf.concat([tf.ones_like(timestamps[:, 1:], tf.bool), request[:, None] >= 0], 1)
        return tf.where(known, bucket_of(following - timestamps), UNKNOWN)
    return tf.where(request >= 0, bucket_of(request - timestamps[:, -1]), UNKNOWN)


class TimeGapEmbedding(keras.layers.Layer):
    """`[B, W, dim]`: an embedding of each history item's bucketed gap since the item before it
    (`gap_buckets`), added to its item embedding by the user tower."""

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(ROWS, dim, name="gap_embedding")

    def call(self, timestamps: tf.Tensor, valid: tf.Tensor) -> tf.Tensor:
        return self.embedding(gap_buckets(timestamps, valid))
