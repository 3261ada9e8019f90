"""The two Keras towers, built from the data set's schema.

Both take raw inputs by name (the serving contract) and look keys and values up inside the
model, so an exported tower serves raw keys; unknown keys and values land in an
out-of-vocabulary row, never crash.

User tower: key embedding [+ one embedding per categorical user feature, mean-pooled
embeddings per multi-valued one, standardised numeric ones] [+ the user's last
`history_length` items, encoded by a `dssm_tf.models.encoders` encoder: their mean, or causal
self-attention; with `history_time`, each item's embedding plus that of its gap since the
item before it (`dssm_tf.models.time_gaps`); with `request_gap`, plus an embedding of the gap
from the last item to the request] -> MLP -> (L2-normalised) embedding. `UserTower.sequence`
gives that embedding at every position of a history at once (training on sequences).
Item tower: key embedding [+ the item features, likewise] -> MLP -> (L2-normalised) embedding.

Usage::

    user_tower, item_tower = build_towers(TowerConfig(history_length=10), dataset)
    user_tower({"user_id": ..., "gender": ..., "age": ..., "occupation": ..., "history": ...})
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras

from dssm_tf.config import TowerConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.schema import (HISTORY, HISTORY_TIMESTAMPS, INT64, MULTI, MULTI_SEPARATOR,
                                 NUMERIC, REQUEST_TIME, Feature, Schema)
from dssm_tf.models.encoders import make_encoder, masked_mean
from dssm_tf.models.time_gaps import ROWS, TimeGapEmbedding, relative_buckets, request_buckets


def fit_width(history: tf.Tensor, width: int, padding=0) -> tf.Tensor:
    """Keep the last `width` columns of a right-aligned history, left-padding with `padding`."""
    history = history[:, -width:] if width else history[:, :0]
    missing = width - tf.shape(history)[1]
    return tf.pad(history, [[0, 0], [missing, 0]], constant_values=padding)


def _lookup(dtype: str, vocabulary: list, mask_token=None) -> keras.layers.Layer:
    """Value -> row: 0 = out of vocabulary (1 with a mask token, which takes row 0)."""
    if dtype == INT64:
        return keras.layers.IntegerLookup(vocabulary=list(vocabulary), mask_token=mask_token)
    return keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token=mask_token)


def _embedding(rows: int, dim: int, config: TowerConfig, name: str) -> keras.layers.Embedding:
    regularizer = keras.regularizers.l2(config.embedding_l2) if config.embedding_l2 else None
    return keras.layers.Embedding(rows, dim, embeddings_initializer=config.initializer,
                                  embeddings_regularizer=regularizer, name=name)


class FeatureEncoder(keras.layers.Layer):
    """One declared feature -> a `[B, feature_dim]` (or `[B, 1]` numeric) vector.

    `vocabulary` is the categorical values / multi tokens, or `(mean, std)` for numeric ones.
    """

    def __init__(self, feature: Feature, vocabulary, config: TowerConfig, **kwargs):
        super().__init__(name=f"{feature.name}_encoder", **kwargs)
        self.feature = feature
        if feature.kind == NUMERIC:
            self.mean, self.std = (float(v) for v in vocabulary)
        elif feature.kind == MULTI:
            self.lookup = _lookup(feature.dtype, vocabulary, mask_token="")
            self.embedding = _embedding(len(vocabulary) + 2, config.feature_dim, config,
                                        f"{feature.name}_embedding")
        else:
            self.lookup = _lookup(feature.dtype, vocabulary)
            self.embedding = _embedding(len(vocabulary) + 1, config.feature_dim, config,
                                        f"{feature.name}_embedding")

    def call(self, values: tf.Tensor) -> tf.Tensor:
        if self.feature.kind == NUMERIC:
            scaled = (tf.cast(values, tf.float32) - self.mean) / self.std
            return tf.cast(scaled, self.compute_dtype)[:, None]
        if self.feature.kind == MULTI:
            tokens = tf.strings.split(values, MULTI_SEPARATOR).to_tensor(default_value="")
            return masked_mean(self.embedding(self.lookup(tokens)), tf.not_equal(tokens, ""))
        return self.embedding(self.lookup(values))


class _Head(keras.layers.Layer):
    """MLP over the concatenated inputs, then L2 normalisation for cosine similarity."""

    def __init__(self, config: TowerConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.mlp = []
        for i, units in enumerate(config.hidden_units):
            last = i == len(config.hidden_units) - 1
            self.mlp.append(keras.layers.Dense(
                units, activation=config.output_activation if last else config.activation))
            if config.dropout and not last:
                self.mlp.append(keras.layers.Dropout(config.dropout))

    def call(self, inputs: list[tf.Tensor], training: bool = False) -> tf.Tensor:
        x = tf.concat(inputs, axis=-1) if len(inputs) > 1 else inputs[0]
        for layer in self.mlp:
            x = layer(x, training=training)
        x = tf.cast(x, tf.float32)  # the output stays float32 under mixed precision
        if self.config.similarity == "cosine":
            x = tf.math.l2_normalize(x, axis=-1)  # a true unit norm (the seed divided by |x|^2)
        return x


class _Tower(keras.Model):
    """Base of both towers: a key embedding, the configured features, an MLP head.

    `get_config` reports the architecture (the vocabularies live in the lookup layers), which
    also keeps SavedModel export free of "non-serializable" warnings.
    """

    def __init__(self, config: TowerConfig, key: str, key_dtype: str, keys: list,
                 features: tuple[Feature, ...], vocabularies: dict, embed_key: bool = True,
                 key_mask=None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.key = key
        self.embed_key = embed_key
        if embed_key:
            # With a mask token (shared with the history) row 0 is padding, 1 unknown.
            self.key_lookup = _lookup(key_dtype, keys, mask_token=key_mask)
            self.key_embedding = _embedding(len(keys) + 1 + (key_mask is not None),
                                            config.embedding_dim, config, f"{key}_embedding")
        self.encoders = [FeatureEncoder(f, vocabularies[f.name], config) for f in features]
        self.head = _Head(config)

    def parts(self, features: dict[str, tf.Tensor]) -> list[tf.Tensor]:
        keyed = ([self.key_embedding(self.key_lookup(features[self.key]))] if self.embed_key
                 else [])
        return keyed + [encoder(features[encoder.feature.name]) for encoder in self.encoders]

    def get_config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.config)}


class UserTower(_Tower):
    """Raw user inputs -> embedding. Accepts every contract input, uses those configured."""

    def __init__(self, config: TowerConfig, schema: Schema, user_keys: list, item_keys: list,
                 vocabularies: dict, item_tower: "ItemTower | None" = None, **kwargs):
        features = schema.user_features if config.user_features else ()
        super().__init__(config, schema.user_key, schema.user_key_dtype, user_keys, features,
                         vocabularies, embed_key=config.user_key_embedding, **kwargs)
        self.padding = schema.history_padding
        if config.history_length:
            if item_tower is not None:  # --share_item_embeddings: the item tower's table
                self.history_lookup = item_tower.key_lookup
                self.history_embedding = item_tower.key_embedding
            else:
                # Row 0 = padding (the mask token), 1 = unknown item, then the vocabulary.
                self.history_lookup = _lookup(schema.item_key_dtype, item_keys,
                                              mask_token=self.padding)
                self.history_embedding = _embedding(len(item_keys) + 2, config.embedding_dim,
                                                    config, "history_embedding")
            self.encoder = make_encoder(config)
            if config.history_time:
                self.time_gaps = TimeGapEmbedding(config.embedding_dim, name="time_gaps")
            if config.request_gap:
                self.request_gap = keras.layers.Embedding(ROWS, config.embedding_dim,
                                                          embeddings_initializer="zeros",
                                                          name="request_gap")

    def _history(self, features: dict[str, tf.Tensor], width: int | None = None) -> dict:
        """The encoder's inputs for the right-aligned history window (its last `width` columns,
        left-padded to `width`, when given): `embeddings` and `valid`; with `history_time`,
        each embedding plus that of its time gap, and with `attention_time_bias` the
        `time_buckets` of every (query, key) pair."""
        history = features[HISTORY]
        if width is not None:
            history = fit_width(history, width, self.padding)
        inputs = {"embeddings": self.history_embedding(self.history_lookup(history)),
                  "valid": tf.not_equal(history, self.padding)}
        if self.config.history_time:
            stamps = self._stamps(features, width)
            inputs["embeddings"] += tf.cast(self.time_gaps(stamps, inputs["valid"]),
                                            inputs["embeddings"].dtype)
            if self.config.attention_time_bias:
                inputs["time_buckets"] = relative_buckets(stamps)
        return inputs

    @staticmethod
    def _stamps(features: dict[str, tf.Tensor], width: int | None) -> tf.Tensor:
        stamps = features[HISTORY_TIMESTAMPS]
        return stamps if width is None else fit_width(stamps, width)

    def _with_request(self, encoded: tf.Tensor, features: dict[str, tf.Tensor],
                      width: int | None = None) -> tf.Tensor:
        """`encoded` plus the embedding of the gap to the request (``--request_gap``): at the
        last item (`[B, D]`), or at every position, whose request is the next item's time
        (`[B, W, D]`, training on sequences)."""
        if not self.config.request_gap:
            return encoded
        buckets = request_buckets(self._stamps(features, width), features[REQUEST_TIME],
                                  every_position=width is None)
        return encoded + tf.cast(self.request_gap(buckets), encoded.dtype)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = self.parts(features)
        if self.config.history_length:
            width = self.config.history_length
            encoded = self.encoder(**self._history(features, width), training=training)
            parts.append(self._with_request(encoded, features, width))
        return self.head(parts, training=training)

    def sequence(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """`[B, W, D]`: the user's embedding after each position of `features["history"]`
        (`[B, W]`, right-aligned, W <= history_length), each position seeing only the items up
        to it — what `call` gives for the history that ends there (with `request_gap`, the
        request at the time of the next item: `request_time` is the time of the item after the
        last)."""
        encoded = self._with_request(
            self.encoder.sequence(**self._history(features), training=training), features)
        width = tf.shape(features[HISTORY])[1]
        parts = [tf.repeat(part[:, None, :], width, axis=1) for part in self.parts(features)]
        return self.head(parts + [encoded], training=training)


class ItemTower(_Tower):
    """Raw item inputs -> embedding."""

    def __init__(self, config: TowerConfig, schema: Schema, item_keys: list, vocabularies: dict,
                 **kwargs):
        features = schema.item_features if config.item_features else ()
        super().__init__(config, schema.item_key, schema.item_key_dtype, item_keys, features,
                         vocabularies, key_mask=(schema.history_padding
                                                 if config.share_item_embeddings else None),
                         **kwargs)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.head(self.parts(features), training=training)


def vocabularies(dataset: Dataset, side: str) -> dict:
    """Per declared feature of `side` ("user"/"item"): its vocabulary, or (mean, std)."""
    schema = dataset.schema
    features = schema.user_features if side == "user" else schema.item_features
    return {f.name: (dataset.numeric_stats(side, f.name) if f.kind == NUMERIC
                     else dataset.vocabulary(side, f.name)) for f in features}


def build_towers(config: TowerConfig, dataset: Dataset) -> tuple[UserTower, ItemTower]:
    """Both towers, with vocabularies taken from the whole data set (keys + features)."""
    config.validate()
    user_keys = dataset.user_keys.tolist()
    item_keys = dataset.item_keys.tolist()
    item_tower = ItemTower(config, dataset.schema, item_keys, vocabularies(dataset, "item"),
                           name="item_tower")
    user_tower = UserTower(config, dataset.schema, user_keys, item_keys,
                           vocabularies(dataset, "user"), name="user_tower",
                           item_tower=item_tower if config.share_item_embeddings else None)
    return user_tower, item_tower
