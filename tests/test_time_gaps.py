"""Request-anchored time gaps (``--history_time``): the buckets, the timed user tower, the times
the pipelines feed it, the request time evaluation uses, and the checks on the flag."""

from __future__ import annotations

import dataclasses
import doctest
import math

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import (LEAVE_LAST_ONE_OUT, TIME_SPLIT, SamplerConfig, TowerConfig,
                            TrainingConfig)
from dssm_tf.data.pipeline import FeatureTables
from dssm_tf.data.schema import Feature, Schema
from dssm_tf.data.sequences import SequencePipeline
from dssm_tf.errors import ConfigError
from dssm_tf.models import time_gaps
from dssm_tf.models.time_gaps import BUCKETS, gap_buckets
from dssm_tf.serving import contract
from tests.conftest import make_split, run_config, tiny_towers

L = 6


def test_docstring_examples():
    assert doctest.testmod(time_gaps, raise_on_error=False).failed == 0


def test_buckets_are_zero_for_no_gap_then_two_per_doubling_up_to_a_cap():
    gaps = np.array([0, -5, 1, 2, 3, 4, 5, 7, 8, 60, 3600, 86_400, 2**31, 2**40], np.int64)
    got = gap_buckets(tf.zeros([len(gaps), 1], tf.int64), tf.constant(gaps)).numpy()[:, 0]
    want = [0 if g <= 0 else min(1 + math.floor(2 * math.log2(g)), BUCKETS - 1) for g in gaps]
    assert got.tolist() == want
    assert got.tolist()[:9] == [0, 0, 1, 3, 4, 5, 5, 6, 7]      # 2^k lands on 2k + 1 exactly
    assert got[-1] == got[-2] == BUCKETS - 1
    # Each item's gap runs to the next item; the last one's to the request.
    stamps = tf.constant([[10, 10, 12, 100]], tf.int64)
    assert gap_buckets(stamps, tf.constant([100], tf.int64)).numpy().tolist() == [[0, 3, 13, 0]]


def _features(ml, rng, batch=3, width=L):
    users = ml.users.iloc[:batch]
    history = rng.choice(ml.item_keys, size=(batch, width)).astype(np.int64)
    history[0, :2] = 0                               # a short history, left-padded
    stamps = np.tile([1_000, 5_000, 90_000, 400_000, 1_000_000, 1_500_000][-width:], (batch, 1))
    stamps[0, :2] = 0
    return {"user_id": users.user_id.to_numpy(np.int64), "gender": users.gender.to_numpy(str),
            "age": users.age.to_numpy(np.int64),
            "occupation": users.occupation.to_numpy(np.int64), "history": history,
            "history_timestamps": stamps.astype(np.int64),
            "request_time": stamps[:, -1] + np.array([0, 30, 86_400 * 90])}


def _call(tower, features, per_position=False):
    tensors = {name: tf.constant(value) for name, value in features.items()}
    return (tower.sequence(tensors) if per_position else tower(tensors)).numpy()


@pytest.mark.parametrize("encoder", ["attention", "mean", "attention_time_bias"])
def test_the_timed_tower_sees_the_request_and_never_the_future(synthetic_ml, encoder):
    """Served (`call`) = the last position of `sequence`; the request time moves the served
    embedding; a history time moves only the positions that follow it and the one before
    (whose next event it is): no position sees an item or a time beyond the one it predicts."""
    biased = encoder == "attention_time_bias"
    user_tower, _ = tiny_towers(synthetic_ml, history_length=L, history_time=True,
                                user_encoder="attention" if biased else encoder,
                                attention_time_bias=biased, similarity="dot")
    features = _features(synthetic_ml, np.random.default_rng(0))
    if biased:  # the biases start at 0: give them values, as training would
        _call(user_tower, features)
        for block in user_tower.encoder.blocks:
            table = block["time_bias"].embeddings
            table.assign(tf.random.stateless_normal(table.shape, [1, 2]))
    per_position = _call(user_tower, features, per_position=True)
    served = _call(user_tower, features)
    np.testing.assert_allclose(per_position[:, -1], served, rtol=1e-4, atol=1e-5)

    later = dict(features, request_time=features["request_time"] + 86_400 * 365)
    assert np.abs(_call(user_tower, later) - served).max(axis=1).min() > 1e-5
    moved = dict(features, history_timestamps=features["history_timestamps"].copy())
    moved["history_timestamps"][1:, 3] = 90_000      # item 3 at item 2's time (rows 1, 2)
    changed = np.abs(_call(user_tower, moved, per_position=True) - per_position).max(axis=2)
    assert changed[1:, :2].max() < 1e-6              # before item 3's predecessor: untouched
    assert changed[1:, 2:4].min() > 1e-6             # the gaps 2 -> 3 and 3 -> 4 changed
    # A history wider than L is cut to its last L items and times, as `history` always was.
    wider = dict(features, history=np.pad(features["history"], [(0, 0), (2, 0)],
                                          constant_values=int(synthetic_ml.item_keys[0])),
                 history_timestamps=np.pad(features["history_timestamps"], [(0, 0), (2, 0)],
                                           constant_values=5))
    np.testing.assert_allclose(_call(user_tower, wider), served, rtol=1e-4, atol=1e-5)


def test_sequence_windows_carry_their_times_and_the_predicted_items_time(synthetic_session):
    from tests.conftest import load_ml

    ml = load_ml(synthetic_session.folder)
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    stamps = split.train.timestamp.to_numpy(np.int64)
    # Times of each user's fit items, by (user key, item key): the pairs are unique here.
    time_of = {(int(ml.user_keys[u]), int(ml.item_keys[i])): int(t) for u, i, t in
               zip(split.train.user, split.train.item, stamps)}
    pipeline = SequencePipeline(ml, split, SamplerConfig("uniform", num_negatives=4),
                                TowerConfig(history_length=L, history_time=True),
                                TrainingConfig(batch_size=8, validation="last",
                                               examples="sequences"))
    batches = list(pipeline.training().take(pipeline.steps_per_epoch))
    batches += list(pipeline.validation())
    checked = 0
    for batch in batches:
        user = {k: v.numpy() for k, v in batch["user"].items()}
        targets = batch["positive"]["movie_id"].numpy()
        for row, key in enumerate(user["user_id"]):
            real = user["history"][row] != 0
            want = [time_of[int(key), int(item)] for item in user["history"][row][real]]
            assert user["history_timestamps"][row][real].tolist() == want
            assert (user["history_timestamps"][row][~real] == 0).all()
            # The request is the last target's time: the interaction the last position predicts.
            assert user["request_time"][row] == time_of[int(key), int(targets[row, -1])]
            checked += 1
    assert checked > len(pipeline.train_users)
    # Interaction rows (`InputPipeline`, `ValidationRecall`): the history before the row, the
    # row's own time as the request's.
    tables = FeatureTables(ml, split, L, history_time=True)
    rows = tf.constant([3, 10, 11], tf.int64)
    features = {k: v.numpy() for k, v in tables.interaction_features(rows)["user"].items()}
    assert features["request_time"].tolist() == stamps[[3, 10, 11]].tolist()
    for row, history_row in enumerate(rows.numpy()):
        start = split.user_offsets[split.train.user.to_numpy()[history_row]]
        want = stamps[max(start, history_row - L):history_row]
        got = features["history_timestamps"][row]
        assert got[got > 0].tolist() == want.tolist()


@pytest.mark.parametrize("protocol", [LEAVE_LAST_ONE_OUT, TIME_SPLIT])
def test_evaluation_asks_at_the_first_test_interaction(synthetic_ml, protocol):
    split = make_split(synthetic_ml, protocol)
    users = np.arange(split.num_users)
    times = split.request_times(users)
    test = split.test
    first = test.groupby("user").timestamp.min()
    np.testing.assert_array_equal(times[first.index.to_numpy()], first.to_numpy())
    others = np.setdiff1d(users, first.index.to_numpy())
    assert (times[others] == split.train.timestamp.max()).all()
    inputs = contract.user_inputs(synthetic_ml, split, users[:5], 4, timed=True)
    assert inputs["history_timestamps"].shape == (5, 4)
    assert inputs["request_time"].tolist() == times[:5].tolist()
    assert ((inputs["history_timestamps"] > 0) == (inputs["history"] > 0)).all()
    assert "request_time" not in contract.user_inputs(synthetic_ml, split, users[:5], 4)


def test_timed_towers_declare_their_inputs_and_the_flag_is_checked():
    schema = Schema(user_key="user_id", item_key="movie_id")
    timed = contract.signatures(schema, timed=True)
    names = [entry["name"] for entry in timed["user_tower"]["inputs"]]
    assert names == ["user_id", "history", "history_timestamps", "request_time"]
    assert [entry["name"] for entry in timed["retrieval"]["inputs"]][-2:] == \
        ["k", "exclude_history"]
    assert contract.is_timed({"signatures": timed})
    assert not contract.is_timed({"signatures": contract.signatures(schema)})
    with pytest.raises(ValueError, match="request_time"):
        Schema(user_features=(Feature("request_time", "numeric", "float32"),))
    with pytest.raises(ConfigError, match="history_length") as error:
        TowerConfig(history_time=True).validate()
    assert error.value.parameter == "history_time"
    with pytest.raises(ConfigError, match="--history_time") as error:
        TowerConfig(history_length=L, user_encoder="attention",
                    attention_time_bias=True).validate()
    assert error.value.parameter == "attention_time_bias"
    with pytest.raises(ConfigError, match="times") as error:
        run_config(history_time=True, history_length=L, train_files="/x/*.tfrecord").validate()
    assert error.value.parameter == "train_files"


@pytest.mark.parametrize("examples", ["sequences", "interactions"])
def test_timed_training_learns(synthetic_ml, tmp_path, examples):
    from dssm_tf.training import trainer

    split = make_split(synthetic_ml, LEAVE_LAST_ONE_OUT)
    run = run_config(examples=examples, user_encoder="attention", history_length=L,
                     history_time=True, loss="inbatch", negative_sampler="inbatch",
                     num_negatives=0, temperature=0.2, epochs=3, batch_size=16,
                     embedding_dim=8, hidden_units=(8,), learning_rate=0.01,
                     validation="last", verbose=False)
    run.validate()
    result = trainer.fit(run, synthetic_ml, split, str(tmp_path / examples))
    history = result.model.history.history
    assert all(math.isfinite(v) for v in history["loss"] + history["val_loss"])
    assert history["loss"][-1] < history["loss"][0]
    assert dataclasses.asdict(run)["tower"]["history_time"] is True
