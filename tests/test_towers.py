"""The two Keras towers (`dssm_tf.models.towers`): shapes, normalisation, OOV keys, features,
history, and towers built from a non-MovieLens schema (string keys, numeric features)."""

from __future__ import annotations

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import TowerConfig
from dssm_tf.models.towers import fit_width, masked_mean
from tests.conftest import tiny_towers
from tests.synthetic import string_keyed_dataset

L = 5


@pytest.fixture(scope="module")
def ml(synthetic_ml):
    return synthetic_ml


def _towers(ml, **overrides):
    return tiny_towers(ml, seed=0, **{"history_length": L, **overrides})


def user_inputs(ml, n=6, history_width=L, **replace):
    users, movies = ml.users.iloc[:n], ml.items.movie_id.to_numpy()
    rng = np.random.default_rng(0)
    history = rng.choice(movies, size=(n, history_width)).astype(np.int64)
    if history_width and n >= 2:
        history[0, :2] = 0      # a short history, zero-padded on the left
        history[1, :] = 0       # no history at all
    inputs = {"user_id": users.user_id.to_numpy(np.int64),
              "gender": users.gender.to_numpy(str),
              "age": users.age.to_numpy(np.int64),
              "occupation": users.occupation.to_numpy(np.int64),
              "history": history}
    inputs.update(replace)
    return {k: tf.constant(v) for k, v in inputs.items()}


def item_inputs(ml, n=7, **replace):
    movies = ml.items.iloc[:n]
    inputs = {"movie_id": movies.movie_id.to_numpy(np.int64),
              "genres": movies.genres.to_numpy(str)}
    inputs.update(replace)
    return {k: tf.constant(v) for k, v in inputs.items()}


def _norms(x):
    return np.linalg.norm(np.asarray(x), axis=-1)


@pytest.mark.parametrize("hidden_units,dim", [((16, 6), 6), ((), 8)])
def test_output_shapes(ml, hidden_units, dim):
    user_tower, item_tower = _towers(ml, hidden_units=hidden_units, user_features=False,
                                     item_features=False, history_length=0)
    assert user_tower(user_inputs(ml)).shape == (6, dim)
    assert item_tower(item_inputs(ml)).shape == (7, dim)
    assert TowerConfig(embedding_dim=8, hidden_units=hidden_units).output_dim == dim


def test_cosine_towers_output_unit_vectors(ml):
    user_tower, item_tower = _towers(ml, similarity="cosine")
    np.testing.assert_allclose(_norms(user_tower(user_inputs(ml))), 1.0, rtol=1e-5)
    np.testing.assert_allclose(_norms(item_tower(item_inputs(ml))), 1.0, rtol=1e-5)


def test_dot_towers_are_not_normalised(ml):
    user_tower, item_tower = _towers(ml, similarity="dot")
    for norms in (_norms(user_tower(user_inputs(ml))), _norms(item_tower(item_inputs(ml)))):
        assert np.all(norms > 0)
        assert np.abs(norms - 1.0).max() > 1e-2
        assert np.ptp(norms) > 1e-4  # not a constant rescaling either


def test_unknown_similarity_is_rejected(ml):
    with pytest.raises(ValueError, match="similarity"):
        _towers(ml, similarity="euclidean")


def test_unknown_ids_and_values_give_finite_embeddings(ml):
    user_tower, item_tower = _towers(ml, similarity="dot")
    n = 3
    users = user_inputs(ml, n=n, user_id=np.array([999_999, -1, 0], np.int64),
                        gender=np.array(["X", "", "F"]), age=np.array([7, 999, -3], np.int64),
                        occupation=np.array([99, -1, 1000], np.int64),
                        history=np.array([[0, 0, 0, 888_888, 2],
                                          [777, 777, 777, 777, 777],
                                          [0, 0, 0, 0, -5]], np.int64))
    out = user_tower(users).numpy()
    assert out.shape == (n, 6) and np.all(np.isfinite(out))
    items = item_inputs(ml, n=3, movie_id=np.array([999_999, -7, 0], np.int64),
                        genres=np.array(["Nonexistent", "", "Drama|Space Opera|"]))
    out = item_tower(items).numpy()
    assert out.shape == (3, 6) and np.all(np.isfinite(out))
    # Every unknown user id maps to the same out-of-vocabulary row.
    twins = user_inputs(ml, n=2, user_id=np.array([123_456, 654_321], np.int64),
                        gender=np.array(["F", "F"]), age=np.array([25, 25], np.int64),
                        occupation=np.array([1, 1], np.int64),
                        history=np.zeros((2, L), np.int64))
    a, b = user_tower(twins).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_history_padding_and_width_do_not_matter(ml):
    user_tower, _ = _towers(ml)
    inputs = user_inputs(ml)
    base = user_tower(inputs).numpy()
    history = inputs["history"].numpy()
    for width in (L + 3, L + 20):  # extra zero padding on the left
        wider = np.concatenate([np.zeros((len(history), width - L), np.int64), history], 1)
        got = user_tower(dict(inputs, history=tf.constant(wider))).numpy()
        np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-6)
    # Longer histories keep only the newest L movies.
    older = np.concatenate([history[:, :3], history], axis=1)
    older[:, :3] = ml.items.movie_id.iloc[-1]  # older movies, beyond the last L
    got = user_tower(dict(inputs, history=tf.constant(older))).numpy()
    np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-6)
    # A narrow history is left-padded: row 0 holds zeros in its first 2 columns.
    narrow = tf.constant(history[:1, 2:])
    got = user_tower(dict({k: v[:1] for k, v in inputs.items()}, history=narrow)).numpy()
    np.testing.assert_allclose(got, base[:1], rtol=1e-5, atol=1e-6)
    # Zero-width history equals an all-padding history (row 1).
    empty = tf.zeros((1, 0), tf.int64)
    got = user_tower(dict({k: v[1:2] for k, v in inputs.items()}, history=empty)).numpy()
    np.testing.assert_allclose(got, base[1:2], rtol=1e-5, atol=1e-6)


def test_padding_is_masked_not_averaged(ml):
    """[0, 0, 0, a, b] pools like [a, b]: the mean ignores zeros rather than counting them."""
    user_tower, _ = _towers(ml, similarity="dot", hidden_units=())
    movies = ml.items.movie_id.to_numpy(np.int64)
    inputs = user_inputs(ml, n=1, history=np.array([[0, 0, 0, movies[3], movies[8]]]))
    out = user_tower(inputs).numpy()[0]
    # With no MLP, the output is [user | gender | age | occupation | mean(history)] embeddings.
    lookup = user_tower.history_lookup(tf.constant([movies[3], movies[8]]))
    expected = user_tower.history_embedding(lookup).numpy().mean(axis=0)
    np.testing.assert_allclose(out[-8:], expected, rtol=1e-5)


def test_features_change_the_output(ml):
    user_tower, item_tower = _towers(ml, similarity="dot")
    inputs = user_inputs(ml, n=2)
    base = user_tower(inputs).numpy()
    changed = {
        "gender": np.where(inputs["gender"].numpy() == b"F", "M", "F"),
        "age": np.where(inputs["age"].numpy() == 56, 1, 56).astype(np.int64),
        "occupation": (inputs["occupation"].numpy() + 1) % 21,
        "history": np.full((2, L), ml.items.movie_id.iloc[-1], np.int64),
        "user_id": inputs["user_id"].numpy()[::-1].copy(),
    }
    for name, value in changed.items():
        got = user_tower(dict(inputs, **{name: tf.constant(value)})).numpy()
        assert np.abs(got - base).max() > 1e-5, name
    items = item_inputs(ml, n=2)
    base = item_tower(items).numpy()
    got = item_tower(dict(items, genres=tf.constant(["Western|War", "Horror"]))).numpy()
    assert np.abs(got - base).max() > 1e-5
    got = item_tower(dict(items, movie_id=items["movie_id"][::-1])).numpy()
    assert np.abs(got - base).max() > 1e-5


def test_disabled_features_are_accepted_and_ignored(ml):
    user_tower, item_tower = _towers(ml, user_features=False, item_features=False,
                                     history_length=0)
    inputs = user_inputs(ml, n=2)
    base = user_tower(inputs).numpy()
    other = dict(inputs, gender=tf.constant(["M", "M"]), age=tf.constant([1, 1], tf.int64),
                 occupation=tf.constant([0, 0], tf.int64),
                 history=tf.constant(np.full((2, 9), 1, np.int64)))
    np.testing.assert_allclose(user_tower(other).numpy(), base, rtol=1e-6)
    items = item_inputs(ml, n=2)
    np.testing.assert_allclose(
        item_tower(dict(items, genres=tf.constant(["Western", "War"]))).numpy(),
        item_tower(items).numpy(), rtol=1e-6)


def test_fit_width():
    history = tf.constant([[1, 2, 3, 4], [0, 0, 5, 6]], tf.int64)
    np.testing.assert_array_equal(fit_width(history, 2), [[3, 4], [5, 6]])
    np.testing.assert_array_equal(fit_width(history, 4), history)
    np.testing.assert_array_equal(fit_width(history, 6),
                                  [[0, 0, 1, 2, 3, 4], [0, 0, 0, 0, 5, 6]])
    assert fit_width(history, 0).shape == (2, 0)
    np.testing.assert_array_equal(fit_width(tf.zeros((2, 0), tf.int64), 3), np.zeros((2, 3)))


def test_masked_mean():
    embeddings = tf.constant(np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2))
    mask = tf.constant([[True, False, True], [False, False, False]])
    got = masked_mean(embeddings, mask).numpy()
    np.testing.assert_allclose(got[0], (embeddings[0, 0] + embeddings[0, 2]) / 2)
    np.testing.assert_array_equal(got[1], [0.0, 0.0])  # empty rows: zeros, not NaN
    full = masked_mean(embeddings, tf.ones((2, 3), tf.bool)).numpy()
    np.testing.assert_allclose(full, embeddings.numpy().mean(axis=1))


# --- a schema of another shape: string keys, a numeric user feature, a multi item feature ------

@pytest.fixture(scope="module")
def shop():
    return string_keyed_dataset()


def _shop_inputs(dataset, history):
    users = dataset.users.iloc[:3]
    items = dataset.items.iloc[:3]
    user = {"customer": tf.constant(users.customer.to_numpy(str)),
            "segment": tf.constant(users.segment.to_numpy(str)),
            "spend": tf.constant(users.spend.to_numpy(np.float32)),
            "history": tf.constant(history)}
    item = {"sku": tf.constant(items.sku.to_numpy(str)),
            "tags": tf.constant(items.tags.to_numpy(str))}
    return user, item


def test_towers_follow_a_string_keyed_schema(shop):
    user_tower, item_tower = tiny_towers(shop, similarity="dot", history_length=3)
    history = np.array([["", "", "b"], ["", "", ""], ["a", "c", "zzz-unknown"]])
    user, item = _shop_inputs(shop, history)
    base = user_tower(user).numpy()
    assert base.shape == (3, 6) and np.all(np.isfinite(base))
    assert item_tower(item).numpy().shape == (3, 6)
    # "" is padding: a history of only padding equals one of no columns at all.
    empty = user_tower(dict({k: v[1:2] for k, v in user.items()},
                            history=tf.zeros((1, 0), tf.string))).numpy()
    np.testing.assert_allclose(empty, base[1:2], rtol=1e-5, atol=1e-6)
    # The numeric feature is used (standardised), and so are the string features.
    for name, value in (("spend", tf.constant([1e3, 0.0, -5.0])),
                        ("segment", tf.constant(["new", "new", "new"])),
                        ("customer", tf.constant(["x", "y", "z"]))):
        got = user_tower(dict(user, **{name: value})).numpy()
        assert np.abs(got - base).max() > 1e-5, name
    got = item_tower(dict(item, tags=tf.constant(["", "", ""]))).numpy()
    assert np.abs(got - item_tower(item).numpy()).max() > 1e-5
    # Without the features the towers ignore them.
    plain_user, _ = tiny_towers(shop, user_features=False, item_features=False,
                                history_length=0)
    np.testing.assert_allclose(plain_user(dict(user, spend=tf.constant([9.0, 9.0, 9.0]))),
                               plain_user(user), rtol=1e-6)
