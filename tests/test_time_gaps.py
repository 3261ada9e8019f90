"""Time features (``--history_time``, ``--attention_time_bias``, ``--request_gap``): the buckets,
the timed user tower (history times never reach a position before them, and only
``--request_gap`` reads the request time), the times the pipelines feed it, the request time
evaluation uses, and the checks on the flags."""

from __future__ import annotations

import dataclasses
import doctest
import math

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import (LEAVE_LAST_ONE_OUT, NO_REQUEST_TIME, REQUEST_TIMES, TIME_SPLIT,
                            SamplerConfig, TowerConfig, TrainingConfig)
from dssm_tf.data.pipeline import FeatureTables
from dssm_tf.data.schema import Feature, Schema
from dssm_tf.data.sequences import SequencePipeline
from dssm_tf.errors import ConfigError
from dssm_tf.models import time_gaps
from dssm_tf.models.time_gaps import (BUCKETS, START, UNKNOWN, bucket_of, gap_buckets,
                                      request_buckets)
from dssm_tf.serving import contract
from tests.conftest import make_split, run_config, tiny_towers

L = 6


def test_docstring_examples():
    assert doctest.testmod(time_gaps, raise_on_error=False).failed == 0


def test_buckets_are_zero_for_no_gap_then_two_per_doubling_up_to_a_cap():
    gaps = np.array([0, -5, 1, 2, 3, 4, 5, 7, 8, 60, 3600, 86_400, 2**31, 2**40], np.int64)
    got = bucket_of(tf.constant(gaps)).numpy()
    want = [0 if g <= 0 else min(1 + math.floor(2 * math.log2(g)), BUCKETS - 1) for g in gaps]
    assert got.tolist() == want
    assert got.tolist()[:9] == [0, 0, 1, 3, 4, 5, 5, 6, 7]      # 2^k lands on 2k + 1 exactly
    assert got[-1] == got[-2] == BUCKETS - 1
    # Each item's gap is since the item before it in the window; the first has none.
    stamps = tf.constant([[0, 10, 10, 12, 100]], tf.int64)
    valid = tf.constant([[False, True, True, True, True]])
    assert gap_buckets(stamps, valid).numpy().tolist() == [[START, START, 0, 3, 13]]
    # The request's gap runs from the last item; an unknown request (< 0) has a row of its own.
    assert request_buckets(stamps, tf.constant([100])).numpy().tolist() == [0]
    assert request_buckets(stamps, tf.constant([NO_REQUEST_TIME])).numpy().tolist() == [UNKNOWN]
    assert request_buckets(stamps, tf.constant([108]), every_position=True).numpy().tolist() \
        == [[7, 0, 3, 13, 7]]


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


@pytest.mark.parametrize("encoder", ["attention", "mean", "attention_time_bias", "request_gap"])
def test_the_timed_tower_never_sees_the_future(synthetic_ml, encoder):
    """Served (`call`) = the last position of `sequence`; a history time moves only its own
    position and those after it (no position sees a later item or time); the request time
    moves the served embedding with ``--request_gap`` only."""
    biased, requested = encoder == "attention_time_bias", encoder == "request_gap"
    user_tower, _ = tiny_towers(synthetic_ml, history_length=L, history_time=True,
                                user_encoder="attention" if biased or requested else encoder,
                                attention_time_bias=biased, request_gap=requested,
                                similarity="dot")
    features = _features(synthetic_ml, np.random.default_rng(0))
    if biased or requested:  # these start at 0: give them values, as training would
        _call(user_tower, features)
        tables = ([block["time_bias"].embeddings for block in user_tower.encoder.blocks]
                  if biased else [user_tower.request_gap.embeddings])
        for table in tables:
            table.assign(tf.random.stateless_normal(table.shape, [1, 2]))
    per_position = _call(user_tower, features, per_position=True)
    served = _call(user_tower, features)
    if not requested:   # in training, position t's request is item t + 1's time
        np.testing.assert_allclose(per_position[:, -1], served, rtol=1e-4, atol=1e-5)

    later = dict(features, request_time=features["request_time"] + 86_400 * 365)
    moved_by_request = np.abs(_call(user_tower, later) - served).max(axis=1)
    if requested:
        assert moved_by_request.min() > 1e-5
        unknown = dict(features, request_time=np.full(3, NO_REQUEST_TIME))
        assert np.abs(_call(user_tower, unknown) - served).max(axis=1).min() > 1e-5
    else:
        assert moved_by_request.max() < 1e-6
    moved = dict(features, history_timestamps=features["history_timestamps"].copy())
    moved["history_timestamps"][1:, 3] = 90_000      # item 3 at item 2's time (rows 1, 2)
    changed = np.abs(_call(user_tower, moved, per_position=True) - per_position).max(axis=2)
    # Before item 3: untouched (with --request_gap, position 2's request is item 3's time).
    assert changed[1:, :2 if requested else 3].max() < 1e-6
    assert changed[1:, 3].min() > 1e-6               # its own gap changed
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
def test_evaluation_feeds_the_request_time_of_each_mode(synthetic_ml, protocol):
    """none: -1 (unknown) for everyone; last: the time of the last history item; next: the
    first test interaction's, else the user's last training time."""
    split = make_split(synthetic_ml, protocol)
    users = np.arange(split.num_users)
    first = split.test.groupby("user").timestamp.min()
    tested = first.index.to_numpy()
    others = np.setdiff1d(users, tested)
    feeds = {mode: contract.user_inputs(synthetic_ml, split, users, 4, timed=True,
                                        request_time=mode) for mode in REQUEST_TIMES}
    for mode, inputs in feeds.items():
        assert inputs["history_timestamps"].shape == (len(users), 4)
        assert ((inputs["history_timestamps"] > 0) == (inputs["history"] > 0)).all()
        np.testing.assert_array_equal(inputs["history_timestamps"],
                                      feeds["none"]["history_timestamps"])
        np.testing.assert_array_equal(inputs["request_time"],
                                      split.request_times(users, mode))
        assert inputs["request_time"].dtype == np.int64
    assert (feeds["none"]["request_time"] == NO_REQUEST_TIME).all()
    has_history = feeds["none"]["history_timestamps"][:, -1] > 0
    last = feeds["last"]["request_time"]
    np.testing.assert_array_equal(last[has_history],
                                  feeds["none"]["history_timestamps"][has_history, -1])
    assert (last[~has_history] == NO_REQUEST_TIME).all()
    following = feeds["next"]["request_time"]
    np.testing.assert_array_equal(following[tested], first.to_numpy())
    np.testing.assert_array_equal(following[others], last[others])
    assert (following[tested] >= last[tested]).all()   # the held-out one comes after
    # The default is "none"; untimed towers get no times at all.
    np.testing.assert_array_equal(
        contract.user_inputs(synthetic_ml, split, users[:5], 4, timed=True)["request_time"],
        np.full(5, NO_REQUEST_TIME))
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
                     history_time=True, request_gap=examples == "sequences",
                     loss="inbatch", negative_sampler="inbatch",
                     num_negatives=0, temperature=0.2, epochs=3, batch_size=16,
                     embedding_dim=8, hidden_units=(8,), learning_rate=0.01,
                     validation="last", verbose=False)
    run.validate()
    result = trainer.fit(run, synthetic_ml, split, str(tmp_path / examples))
    history = result.model.history.history
    assert all(math.isfinite(v) for v in history["loss"] + history["val_loss"])
    assert history["loss"][-1] < history["loss"][0]
    assert dataclasses.asdict(run)["tower"]["history_time"] is True
    if examples == "sequences":
        _check_the_report_of_a_timed_export(run, synthetic_ml, split, result.model,
                                            str(tmp_path / "export"))


def _check_the_report_of_a_timed_export(run, ml, split, model, export_root):
    """`train`'s report on an export that reads the request time (``--request_gap``): headline
    at --request_time (none), the other two modes written as request_time=<mode>/<metric> and
    shown as extra rows."""
    from dssm_tf.cli import train
    from dssm_tf.serving import export
    from dssm_tf.serving.loaded import load_export
    from dssm_tf.training import trainer

    export_dir = export.export_towers(
        model.user_tower, model.item_tower, export_root,
        contract.build_metadata(run, ml, split, trainer.versions()),
        candidates=contract.item_inputs(ml, np.flatnonzero(split.candidates)))
    exported = load_export(export_dir)
    assert exported.timed and exported.reads_request_time
    output, text = train.report(exported, ml, split, 10, "inbatch", "none", tie_shuffles=1)
    assert (output["request_time"], output["tie_shuffles"]) == ("none", 1)
    for mode in ("last", "next"):
        for key in ("recall@10", "recall@10_user_mean", "hit@10", "ndcg@10", "hit@50"):
            assert 0.0 <= output[f"request_time={mode}/{key}"] <= 1.0, (mode, key)
        assert f"request_time={mode}/n_test_users" not in output
        assert f"two-tower inbatch (request_time={mode})" in text
    assert "request_time=none/recall@10" not in output
    assert "seed_protocol/recall@10" in output
    lines = text.strip().splitlines()
    assert lines[1].startswith("model") and len(lines) == 2 + 4   # headline, seed, last, next
    assert len({len(line) for line in lines[1:]}) == 1             # columns stay aligned
    # Asked at "next" (HSTU's setting), the extra rows are the other two.
    output, text = train.report(exported, ml, split, 10, "inbatch", "next", tie_shuffles=1)
    assert output["request_time"] == "next"
    assert {key.split("/")[0] for key in output if key.startswith("request_time=")} == {
        "request_time=none", "request_time=last"}
