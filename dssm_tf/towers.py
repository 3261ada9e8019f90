"""The two Keras towers. Both take raw MovieLens fields and look ids up inside the model, so an
exported tower serves raw ids; unknown ids land in an out-of-vocabulary row, never crash.

User tower: user_id embedding [+ gender/age/occupation embeddings] [+ masked mean of the
embeddings of the user's last `history_length` movies] -> MLP -> (L2-normalised) embedding.
Movie tower: movie_id embedding [+ mean of genre embeddings] -> MLP -> (L2-normalised) embedding.

Usage::

    config = TowerConfig(embedding_dim=64, hidden_units=(128, 64), history_length=50)
    user_tower, item_tower = build_towers(config, ml)
    user_tower({"user_id": ..., "gender": ..., "age": ..., "occupation": ..., "history": ...})
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf
import tf_keras as keras

from dssm_tf.data import MovieLens

SIMILARITIES = ("cosine", "dot")


@dataclasses.dataclass(frozen=True)
class TowerConfig:
    """Architecture shared by both towers."""

    embedding_dim: int = 64
    hidden_units: tuple[int, ...] = (128, 64)
    activation: str = "relu"
    output_activation: str = "linear"
    dropout: float = 0.0
    similarity: str = "cosine"
    embedding_l2: float = 0.0
    initializer: str = "uniform"
    feature_dim: int = 16
    user_features: bool = False
    item_features: bool = False
    history_length: int = 0

    @property
    def output_dim(self) -> int:
        return self.hidden_units[-1] if self.hidden_units else self.embedding_dim


def masked_mean(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of `[B, L, D]` where `mask` `[B, L]` is true; zeros for empty rows."""
    mask = tf.cast(mask, embeddings.dtype)[:, :, None]
    total = tf.reduce_sum(embeddings * mask, axis=1)
    return total / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)


def fit_width(history: tf.Tensor, width: int) -> tf.Tensor:
    """Keep the last `width` columns of a right-aligned history, left-padding with zeros."""
    history = history[:, -width:] if width else history[:, :0]
    missing = width - tf.shape(history)[1]
    return tf.pad(history, [[0, 0], [missing, 0]])


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


def _embedding(rows: int, dim: int, config: TowerConfig, name: str) -> keras.layers.Embedding:
    regularizer = keras.regularizers.l2(config.embedding_l2) if config.embedding_l2 else None
    return keras.layers.Embedding(rows, dim, embeddings_initializer=config.initializer,
                                  embeddings_regularizer=regularizer, name=name)


class _Tower(keras.Model):
    """Base of both towers: `get_config` reports the architecture (the vocabularies live in the
    lookup layers), which also keeps SavedModel export free of "non-serializable" warnings."""

    config: TowerConfig

    def get_config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self.config)}


class UserTower(_Tower):
    """Raw user fields -> embedding. Accepts every contract field, uses those configured."""

    def __init__(self, config: TowerConfig, user_ids, movie_ids, genders, ages, occupations,
                 **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.user_lookup = keras.layers.IntegerLookup(vocabulary=list(user_ids))
        self.user_embedding = _embedding(len(user_ids) + 1, config.embedding_dim, config,
                                         "user_embedding")
        if config.user_features:
            self.gender_lookup = keras.layers.StringLookup(vocabulary=list(genders))
            self.age_lookup = keras.layers.IntegerLookup(vocabulary=list(ages))
            self.occupation_lookup = keras.layers.IntegerLookup(vocabulary=list(occupations))
            self.gender_embedding = _embedding(len(genders) + 1, config.feature_dim, config,
                                               "gender_embedding")
            self.age_embedding = _embedding(len(ages) + 1, config.feature_dim, config,
                                            "age_embedding")
            self.occupation_embedding = _embedding(len(occupations) + 1, config.feature_dim,
                                                   config, "occupation_embedding")
        if config.history_length:
            # Index 0 = padding (MovieID 0), 1 = unknown movie, then the vocabulary.
            self.history_lookup = keras.layers.IntegerLookup(vocabulary=list(movie_ids),
                                                             mask_token=0)
            self.history_embedding = _embedding(len(movie_ids) + 2, config.embedding_dim,
                                                config, "history_embedding")
        self.head = _Head(config)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = [self.user_embedding(self.user_lookup(features["user_id"]))]
        if self.config.user_features:
            parts += [self.gender_embedding(self.gender_lookup(features["gender"])),
                      self.age_embedding(self.age_lookup(features["age"])),
                      self.occupation_embedding(self.occupation_lookup(features["occupation"]))]
        if self.config.history_length:
            history = fit_width(features["history"], self.config.history_length)
            parts.append(masked_mean(self.history_embedding(self.history_lookup(history)),
                                     tf.not_equal(history, 0)))
        return self.head(parts, training=training)


class ItemTower(_Tower):
    """Raw movie fields (movie_id, genres "A|B|C") -> embedding."""

    def __init__(self, config: TowerConfig, movie_ids, genres, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.movie_lookup = keras.layers.IntegerLookup(vocabulary=list(movie_ids))
        self.movie_embedding = _embedding(len(movie_ids) + 1, config.embedding_dim, config,
                                          "movie_embedding")
        if config.item_features:
            self.genre_lookup = keras.layers.StringLookup(vocabulary=list(genres), mask_token="")
            self.genre_embedding = _embedding(len(genres) + 2, config.feature_dim, config,
                                              "genre_embedding")
        self.head = _Head(config)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = [self.movie_embedding(self.movie_lookup(features["movie_id"]))]
        if self.config.item_features:
            genres = tf.strings.split(features["genres"], "|").to_tensor(default_value="")
            parts.append(masked_mean(self.genre_embedding(self.genre_lookup(genres)),
                                     tf.not_equal(genres, "")))
        return self.head(parts, training=training)


def build_towers(config: TowerConfig, ml: MovieLens) -> tuple[UserTower, ItemTower]:
    """Both towers, with vocabularies taken from the whole data set (ids + features)."""
    if config.similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}")
    users, movies = ml.users, ml.movies
    user_tower = UserTower(config, users.user_id.tolist(), movies.movie_id.tolist(),
                           sorted(users.gender.unique()), sorted(users.age.unique().tolist()),
                           sorted(users.occupation.unique().tolist()), name="user_tower")
    item_tower = ItemTower(config, movies.movie_id.tolist(), ml.genre_vocabulary,
                           name="item_tower")
    return user_tower, item_tower
