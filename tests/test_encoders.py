"""History encoders (`dssm_tf.models.encoders`) and the user tower's per-position form."""

from __future__ import annotations

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf
import tf_keras as keras

from dssm_tf.config import TowerConfig
from dssm_tf.models.encoders import AttentionEncoder, MeanEncoder, masked_mean
from tests.conftest import tiny_towers


def _inputs(seed=0, batch=3, width=6, dim=8):
    rng = np.random.default_rng(seed)
    embeddings = tf.constant(rng.normal(size=(batch, width, dim)).astype(np.float32))
    valid = np.ones((batch, width), bool)
    valid[0, :2] = False   # a short history, padded on the left
    valid[1, :] = False    # no history at all
    return embeddings, tf.constant(valid)


def test_mean_encoder_per_position_is_the_running_mean():
    embeddings, valid = _inputs()
    encoder = MeanEncoder()
    running = encoder.sequence(embeddings, valid).numpy()
    for t in range(embeddings.shape[1]):
        np.testing.assert_allclose(running[:, t], masked_mean(embeddings[:, :t + 1],
                                                              valid[:, :t + 1]).numpy(),
                                   rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoder(embeddings, valid).numpy(), running[:, -1], rtol=1e-5)


def test_attention_encoder_is_causal_and_serves_from_its_last_position():
    keras.utils.set_random_seed(0)
    embeddings, valid = _inputs(width=6)
    encoder = AttentionEncoder(length=6, dim=8, blocks=2, heads=2, dropout=0.3)
    full = encoder.sequence(embeddings, valid).numpy()
    assert full.shape == (3, 6, 8) and np.all(np.isfinite(full))
    # What comes after position t never changes the output at t.
    changed = embeddings.numpy().copy()
    changed[:, 4:] = np.random.default_rng(9).normal(size=changed[:, 4:].shape)
    other = encoder.sequence(tf.constant(changed), valid).numpy()
    np.testing.assert_allclose(other[:, :4], full[:, :4], rtol=1e-4, atol=1e-5)
    assert np.abs(other[:, 4:] - full[:, 4:]).max() > 1e-3
    # Padding is masked: what a padded slot holds does not matter.
    padded = embeddings.numpy().copy()
    padded[0, :2] = np.random.default_rng(8).normal(size=(2, 8)) * 50
    np.testing.assert_allclose(encoder.sequence(tf.constant(padded), valid).numpy()[0, 2:],
                               full[0, 2:], rtol=1e-4, atol=1e-5)
    # Serving is the last position (its last block attends from there only, whatever the
    # depth); a narrower window is the same positions from the end.
    np.testing.assert_allclose(encoder(embeddings, valid).numpy(), full[:, -1], rtol=1e-5)
    for blocks, wide, gated in ((1, 1, False), (3, 1, False), (2, 4, True)):
        other = AttentionEncoder(length=6, dim=8, blocks=blocks, heads=2, feed_forward=wide,
                                 gating=gated)
        np.testing.assert_allclose(other(embeddings, valid).numpy(),
                                   other.sequence(embeddings, valid).numpy()[:, -1],
                                   rtol=1e-5, atol=1e-6)
        # A block: 2 norms, 4 dense layers (+ 2 gates), 2 weights each; positions, final norm.
        assert len(other.trainable_weights) == (12 + 4 * gated) * blocks + 1 + 2
        assert other.blocks[0]["inner"].kernel.shape == (8, 8 * wide)
    np.testing.assert_allclose(encoder.sequence(embeddings[:, 2:], valid[:, 2:]).numpy()[0],
                               full[0, 2:], rtol=1e-4, atol=1e-5)
    # Dropout only in training; the order of the items matters (unlike a mean).
    assert not np.allclose(encoder.sequence(embeddings, valid, training=True).numpy(), full)
    swapped = embeddings.numpy()[:, [0, 1, 2, 3, 5, 4]]
    assert np.abs(encoder(tf.constant(swapped), valid).numpy()[0] - full[0, -1]).max() > 1e-4


@pytest.mark.parametrize("encoder", ["mean", "attention"])
def test_user_tower_per_position_is_the_tower_on_each_prefix(synthetic_ml, encoder):
    """`UserTower.sequence(history)[:, -1]` is `UserTower(history)`; with the mean encoder
    every position t is the tower on the history up to t (the attention encoder's positions
    count from the window's end, so only its last position is the served one)."""
    user_tower, _ = tiny_towers(synthetic_ml, history_length=5, user_encoder=encoder,
                                similarity="dot")
    users = synthetic_ml.users.iloc[:4]
    items = synthetic_ml.item_keys
    rng = np.random.default_rng(1)
    history = rng.choice(items, size=(4, 5)).astype(np.int64)
    history[0, :3] = 0
    features = {"user_id": tf.constant(users.user_id.to_numpy(np.int64)),
                "gender": tf.constant(users.gender.to_numpy(str)),
                "age": tf.constant(users.age.to_numpy(np.int64)),
                "occupation": tf.constant(users.occupation.to_numpy(np.int64)),
                "history": tf.constant(history)}
    per_position = user_tower.sequence(features).numpy()
    assert per_position.shape == (4, 5, 6)
    np.testing.assert_allclose(per_position[:, -1], user_tower(features).numpy(), rtol=1e-4,
                               atol=1e-5)
    if encoder == "mean":
        for t in range(5):
            prefix = dict(features, history=tf.constant(history[:, :t + 1]))
            np.testing.assert_allclose(per_position[:, t], user_tower(prefix).numpy(),
                                       rtol=1e-4, atol=1e-5)


def test_a_history_encoder_needs_a_history():
    from dssm_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="needs --history_length") as error:
        TowerConfig(user_encoder="attention", history_length=0).validate()
    assert error.value.parameter == "user_encoder"


def test_without_a_head_the_towers_score_in_the_item_embedding_space(synthetic_ml):
    """`--hidden_units=` (configs/sequence.flags): no MLP on either side, as in SASRec — the
    user vector is the encoder's last output and an item's vector is its row of the shared
    embedding table, so the score is their dot product."""
    user_tower, item_tower = tiny_towers(synthetic_ml, history_length=5, user_encoder="attention",
                                         similarity="dot", hidden_units=(),
                                         share_item_embeddings=True, user_features=False,
                                         item_features=False, user_key_embedding=False)
    items = synthetic_ml.item_keys[:4].astype(np.int64)
    vectors = item_tower({"movie_id": tf.constant(items)}).numpy()
    table = item_tower.key_embedding(item_tower.key_lookup(tf.constant(items))).numpy()
    np.testing.assert_array_equal(vectors, table)
    history = tf.constant(np.tile(items, (2, 1))[:, :4])
    user = user_tower({"user_id": tf.constant([1, 2], tf.int64), "history": history}).numpy()
    encoded = user_tower.encoder(**user_tower._history({"history": history})).numpy()
    assert user.shape == (2, 8)
    np.testing.assert_allclose(user, encoded, rtol=1e-5, atol=1e-6)
