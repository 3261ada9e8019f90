"""A tiny, contract-true two-tower export built without the training code, for tests.

The towers are plain ``tf.Module``s with ``serving_default`` signatures exactly as CONTRACT.md
fixes them, and their embeddings are a known function of the raw inputs, so a test can compute
the same scores in numpy (`FakeModel.user_embeddings` / `FakeModel.item_embeddings`):

- item = movie_vectors[movie_id] + sum of genre_vectors[g] over the `|`-separated genres;
- user = user_vectors[user_id] + gender_vectors[gender] + age / 56 * age_vector
  + occupation / 20 * occupation_vector + mean of movie_vectors over the non-zero history ids
  (zero when the history is empty, including a history tensor with no columns);
- with ``similarity="cosine"`` both are L2-normalised as ``tf.math.l2_normalize`` does.

Unknown raw ids (users, movies, genres, genders) look up row 0, the out-of-vocabulary row, as a
real export must: they never crash. Genre row 0 is zero, so an unknown genre adds nothing.

`write_tiny_movielens` writes a small ML-1M-format folder (``::`` separators, latin-1 titles,
timestamps on both sides of the time-split cutoff) to evaluate the fake export on.

Usage::

    ml = load_ml(write_tiny_movielens(tmp_path / "ml"))
    model = build_fake_export(tmp_path / "export", ml, dim=16, history_length=5,
                              protocol="time_split")
    model.user_embeddings(user_ids, genders, ages, occupations, raw_history)   # numpy
"""

from __future__ import annotations

import dataclasses
import json
import os

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import numpy as np
import tensorflow as tf

from dssm_tf.config import TIME_SPLIT
from dssm_tf.data.sources.movielens import ML1M_CUTOFF

AGE_SCALE, OCCUPATION_SCALE = 56.0, 20.0
_L2_EPSILON = 1e-12


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    """numpy twin of tf.math.l2_normalize(x, axis=1)."""
    square = np.sum(np.square(x, dtype=np.float32), axis=1, keepdims=True)
    return (x / np.sqrt(np.maximum(square, _L2_EPSILON))).astype(np.float32)


@dataclasses.dataclass
class FakeModel:
    """The parameters of a fake export and a numpy implementation of its two towers."""

    user_ids: np.ndarray        # raw UserIDs; user_vectors[i + 1] belongs to user_ids[i]
    movie_ids: np.ndarray       # raw MovieIDs; movie_vectors[i + 1] belongs to movie_ids[i]
    genres: list[str]           # genre_vectors[i + 1] belongs to genres[i]
    user_vectors: np.ndarray    # [len(user_ids) + 1, D], row 0 = out of vocabulary
    movie_vectors: np.ndarray   # [len(movie_ids) + 1, D]
    genre_vectors: np.ndarray   # [len(genres) + 1, D], row 0 = zeros
    gender_vectors: np.ndarray  # [3, D]: unknown, F, M
    age_vector: np.ndarray      # [D]
    occupation_vector: np.ndarray  # [D]
    similarity: str = "dot"

    @property
    def dim(self) -> int:
        return self.user_vectors.shape[1]

    @staticmethod
    def _rows(ids, vocabulary) -> np.ndarray:
        index = {int(v): i + 1 for i, v in enumerate(vocabulary)}
        return np.array([index.get(int(v), 0) for v in np.ravel(ids)], np.int64).reshape(
            np.shape(ids))

    def _finish(self, x: np.ndarray) -> np.ndarray:
        x = x.astype(np.float32)
        return _l2_normalize(x) if self.similarity == "cosine" else x

    def item_embeddings(self, movie_ids, genres) -> np.ndarray:
        vectors = self.movie_vectors[self._rows(movie_ids, self.movie_ids)].copy()
        genre_row = {g: i + 1 for i, g in enumerate(self.genres)}
        for i, text in enumerate(genres):
            for g in str(text).split("|"):
                vectors[i] += self.genre_vectors[genre_row.get(g, 0)]
        return self._finish(vectors)

    def user_embeddings(self, user_ids, genders, ages, occupations, history) -> np.ndarray:
        history = np.asarray(history, np.int64).reshape(len(user_ids), -1)
        gender_row = np.array([{"F": 1, "M": 2}.get(str(g), 0) for g in genders])
        x = (self.user_vectors[self._rows(user_ids, self.user_ids)]
             + self.gender_vectors[gender_row]
             + (np.asarray(ages, np.float32) / AGE_SCALE)[:, None] * self.age_vector
             + (np.asarray(occupations, np.float32) / OCCUPATION_SCALE)[:, None]
             * self.occupation_vector)
        mask = (history != 0).astype(np.float32)
        hist = self.movie_vectors[self._rows(history, self.movie_ids)] * mask[..., None]
        count = np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        return self._finish(x + hist.sum(axis=1) / count)


def make_fake_model(user_ids, movie_ids, genres, dim: int = 16, similarity: str = "dot",
                    seed: int = 0) -> FakeModel:
    """Random parameters (normal, scaled so no single part dominates the scores)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    genre_vectors = normal(len(genres) + 1, dim, scale=0.3)
    genre_vectors[0] = 0.0
    return FakeModel(
        user_ids=np.asarray(user_ids, np.int64), movie_ids=np.asarray(movie_ids, np.int64),
        genres=list(genres), user_vectors=normal(len(user_ids) + 1, dim),
        movie_vectors=normal(len(movie_ids) + 1, dim), genre_vectors=genre_vectors,
        gender_vectors=normal(3, dim, scale=0.3), age_vector=normal(dim, scale=0.3),
        occupation_vector=normal(dim, scale=0.3), similarity=similarity)


def _table(keys, key_dtype) -> tf.lookup.StaticHashTable:
    """Raw key -> row (1-based, 0 = out of vocabulary)."""
    keys = tf.constant(keys, dtype=key_dtype)
    rows = tf.range(1, tf.size(keys, out_type=tf.int64) + 1, dtype=tf.int64)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, rows),
                                     default_value=tf.constant(0, tf.int64))


def _finish(x: tf.Tensor, similarity: str) -> tf.Tensor:
    return tf.math.l2_normalize(x, axis=1, epsilon=_L2_EPSILON) if similarity == "cosine" else x


class ItemTower(tf.Module):
    def __init__(self, model: FakeModel):
        super().__init__()
        self.similarity = model.similarity
        self.movie_table = _table(model.movie_ids, tf.int64)
        self.genre_table = _table(model.genres or [""], tf.string)
        self.movie_vectors = tf.constant(model.movie_vectors)
        self.genre_vectors = tf.constant(model.genre_vectors if model.genres
                                         else np.zeros((2, model.dim), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="movie_id"),
                                  tf.TensorSpec([None], tf.string, name="genres")])
    def serve(self, movie_id, genres):
        x = tf.gather(self.movie_vectors, self.movie_table.lookup(movie_id))
        parts = tf.strings.split(genres, "|")
        rows = tf.ragged.map_flat_values(self.genre_table.lookup, parts)
        x += tf.reduce_sum(tf.ragged.map_flat_values(tf.gather, self.genre_vectors, rows), axis=1)
        return {"embedding": _finish(x, self.similarity)}


class UserTower(tf.Module):
    def __init__(self, model: FakeModel):
        super().__init__()
        self.similarity = model.similarity
        self.user_table = _table(model.user_ids, tf.int64)
        self.movie_table = _table(model.movie_ids, tf.int64)
        self.gender_table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(["F", "M"]),
                                                tf.constant([1, 2], tf.int64)),
            default_value=tf.constant(0, tf.int64))
        self.user_vectors = tf.constant(model.user_vectors)
        self.movie_vectors = tf.constant(model.movie_vectors)
        self.gender_vectors = tf.constant(model.gender_vectors)
        self.age_vector = tf.constant(model.age_vector)
        self.occupation_vector = tf.constant(model.occupation_vector)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_id"),
                                  tf.TensorSpec([None], tf.string, name="gender"),
                                  tf.TensorSpec([None], tf.int64, name="age"),
                                  tf.TensorSpec([None], tf.int64, name="occupation"),
                                  tf.TensorSpec([None, None], tf.int64, name="history")])
    def serve(self, user_id, gender, age, occupation, history):
        x = tf.gather(self.user_vectors, self.user_table.lookup(user_id))
        x += tf.gather(self.gender_vectors, self.gender_table.lookup(gender))
        x += (tf.cast(age, tf.float32) / AGE_SCALE)[:, None] * self.age_vector[None, :]
        x += ((tf.cast(occupation, tf.float32) / OCCUPATION_SCALE)[:, None]
              * self.occupation_vector[None, :])
        mask = tf.cast(tf.not_equal(history, 0), tf.float32)
        hist = tf.gather(self.movie_vectors, self.movie_table.lookup(history)) * mask[..., None]
        count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
        x += tf.reduce_sum(hist, axis=1) / count
        return {"embedding": _finish(x, self.similarity)}


def save_fake_export(model: FakeModel, export_dir, history_length: int = 5,
                     protocol: str = TIME_SPLIT,
                     cutoff: int | None = ML1M_CUTOFF,
                     checksums: dict[str, str] | None = None,
                     extra_metadata: dict | None = None) -> str:
    """Write `user_tower/`, `item_tower/` and `metadata.json` under `export_dir`."""
    export_dir = os.fspath(export_dir)
    os.makedirs(export_dir, exist_ok=True)
    for name, tower in (("user_tower", UserTower(model)), ("item_tower", ItemTower(model))):
        tf.saved_model.save(tower, os.path.join(export_dir, name),
                            signatures={"serving_default": tower.serve.get_concrete_function()})
    metadata = {
        "similarity": model.similarity,
        "embedding_dim": model.dim,
        "history_length": int(history_length),
        "protocol": protocol,
        "cutoff": cutoff if protocol == TIME_SPLIT else None,
        "flags": {"scheme": "fake", "seed": 0},
        "checksums": dict(checksums or {}),
    }
    metadata.update(extra_metadata or {})
    with open(os.path.join(export_dir, "metadata.json"), "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)
    return export_dir


GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
          "Thriller", "War", "Western")


def write_tiny_movielens(folder, num_users: int = 40, num_movies: int = 80,
                         seed: int = 0) -> str:
    """A small ML-1M-format data set; raw ids are not contiguous (user 3i+2, movie 7j+3).

    Per-user rating counts vary from a handful to almost the whole catalogue (users 0 and 1
    rate all but 3 movies), so seen-item exclusion removes more than K items for some users.
    Timestamps straddle `ML1M_CUTOFF` and repeat within users (ties by file
    order). The last movie is never rated and the one before it only after the cutoff, so
    neither is a candidate under the time split.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    user_ids = 3 * np.arange(num_users) + 2
    movie_ids = 7 * np.arange(num_movies) + 3
    with open(os.path.join(folder, "users.dat"), "w", encoding="latin-1") as f:
        for i, uid in enumerate(user_ids):
            f.write(f"{uid}::{'FM'[i % 2]}::{[1, 18, 25, 35, 45, 50, 56][i % 7]}::"
                    f"{i % 21}::{10000 + i}\n")
    with open(os.path.join(folder, "movies.dat"), "w", encoding="latin-1") as f:
        for j, mid in enumerate(movie_ids):
            title = "Café Society (1995)" if j == 1 else f"Movie {j}, The ({1950 + j % 50})"
            genres = "|".join(sorted(rng.choice(GENRES, size=1 + j % 3, replace=False)))
            f.write(f"{mid}::{title}::{genres}\n")
    cutoff = ML1M_CUTOFF
    rows = []
    for i, uid in enumerate(user_ids):
        rated = num_movies - 3 if i < 2 else int(rng.integers(4, num_movies // 2))
        movies = rng.choice(num_movies - 2, size=rated, replace=False)
        if i == 2:
            movies = np.append(movies[:-1], num_movies - 2)  # the only rating of that movie
        stamps = cutoff + rng.integers(-400, 200, size=rated) * 3600
        stamps[rng.random(rated) < 0.2] = stamps[0]  # ties
        if i == 2:
            stamps[-1] = cutoff + 1
        for movie, stamp in zip(movies, stamps):
            rows.append(f"{uid}::{movie_ids[movie]}::{int(rng.integers(1, 6))}::{stamp}\n")
    with open(os.path.join(folder, "ratings.dat"), "w", encoding="latin-1") as f:
        f.writelines(rows)
    return folder


def build_fake_export(export_dir, ml, dim: int = 16, history_length: int = 5,
                      protocol: str = TIME_SPLIT,
                      cutoff: int | None = ML1M_CUTOFF, similarity: str = "dot",
                      seed: int = 0) -> FakeModel:
    """A fake export whose vocabularies are those of `ml` (a MovieLens-1M `Dataset`)."""
    model = make_fake_model(ml.users.user_id.to_numpy(), ml.items.movie_id.to_numpy(),
                            ml.vocabulary("item", "genres"), dim=dim, similarity=similarity,
                            seed=seed)
    save_fake_export(model, export_dir, history_length, protocol, cutoff, ml.checksums)
    return model
