"""User windows as training examples (`dssm_tf.data.sequences`) and their training step."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import LEAVE_LAST_ONE_OUT, SamplerConfig, TowerConfig, TrainingConfig
from dssm_tf.data.pipeline import validation_split
from dssm_tf.data.sequences import BUCKET, SequencePipeline
from tests.conftest import load_ml, make_split, run_config

L = 6


@pytest.fixture(scope="module")
def world(synthetic_session):
    ml = load_ml(synthetic_session.folder)
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    return ml, split


def _pipeline(world, crop="random", validation="last", negatives=4, batch=8, seed=0,
              sampler="uniform", shuffle_ties=False):
    ml, split = world
    return SequencePipeline(ml, split, SamplerConfig(sampler, num_negatives=negatives),
                            TowerConfig(history_length=L),
                            TrainingConfig(batch_size=batch, seed=seed, validation=validation,
                                           sequence_crop=crop, examples="sequences",
                                           shuffle_ties=shuffle_ties))


def _numpy(batch):
    return tf.nest.map_structure(lambda t: t.numpy(), batch)


def _sequences(world, pipeline):
    """user index -> the user's fit items (indices), in time order."""
    ml, split = world
    users = split.train.user.to_numpy()[pipeline.fit_rows]
    items = split.train.item.to_numpy()[pipeline.fit_rows]
    return {int(u): items[users == u].tolist() for u in np.unique(users)}


def test_windows_shift_targets_by_one_and_cover_each_user_once_an_epoch(world):
    ml, _ = world
    pipeline = _pipeline(world)
    sequences = _sequences(world, pipeline)
    user_of_key = {int(k): i for i, k in enumerate(ml.user_keys)}
    seen_users = []
    for batch in map(_numpy, pipeline.training().take(pipeline.steps_per_epoch)):
        history, mask = batch["user"]["history"], batch["target_mask"]
        width = history.shape[1]
        assert width <= L and (width % BUCKET == 0 or width == L)
        for row, key in enumerate(batch["user"]["user_id"]):
            user = user_of_key[int(key)]
            seen_users.append(user)
            real = history[row] != 0
            inputs = ml.item_index(history[row][real])
            targets = batch["positive_item"][row][mask[row]]
            assert (mask[row] == real).all()            # a target wherever an input is real
            window = list(inputs) + [targets[-1]]
            mine = sequences[user]
            # The window is L + 1 consecutive fit items (or all of a shorter history) ...
            assert len(window) == min(len(mine), L + 1)
            assert any(mine[s:s + len(window)] == window for s in range(len(mine)))
            # ... and each target is the item after its input.
            assert list(targets[:-1]) == list(inputs[1:])
            np.testing.assert_array_equal(ml.item_keys[targets],
                                          batch["positive"]["movie_id"][row][mask[row]])
        assert batch["negatives"]["movie_id"].shape == (4,)
    # Every user with at least two fit items, once an epoch.
    assert sorted(seen_users) == sorted(int(u) for u in pipeline.train_users)


def test_batches_are_grouped_by_length(world):
    pipeline = _pipeline(world, batch=4)
    widths = [int(b["user"]["history"].shape[1]) for b in
              pipeline.training().take(pipeline.steps_per_epoch)]
    lengths = np.minimum(np.diff(np.r_[0, np.cumsum(np.bincount(
        world[1].train.user.to_numpy()[pipeline.fit_rows]))])[pipeline.train_users], L + 1)
    # Few batches are wider than their users need: the padding is almost gone.
    assert sum(widths) * 4 < 1.5 * np.sum(lengths - 1) + 4 * BUCKET * len(widths)


def test_latest_windows_are_fixed_and_random_ones_move_over_epochs(world):
    latest = _pipeline(world, crop="latest")
    moving = _pipeline(world, crop="random")
    steps = latest.steps_per_epoch

    def windows(pipeline, epoch):
        stream = pipeline.training(start_step=epoch * steps).take(steps)
        return {int(k): tuple(h) for b in map(_numpy, stream)
                for k, h in zip(b["user"]["user_id"], b["user"]["history"])}

    assert windows(latest, 0) == windows(latest, 1)
    first, second = windows(moving, 0), windows(moving, 1)
    assert first.keys() == second.keys() and first != second
    sequences = _sequences(world, latest)
    ml = world[0]
    for key, history in windows(latest, 0).items():   # the latest window ends the history
        user = int(ml.user_index([key])[0])
        real = [h for h in history if h]
        assert ml.item_index(real).tolist() == sequences[user][-1 - len(real):-1]


def test_shuffled_ties_reorder_only_the_items_of_one_timestamp(world):
    ml, split = world
    # Every three consecutive interactions of a user share a timestamp.
    users = split.train.user.to_numpy()
    position = np.arange(len(users)) - split.user_offsets[users]
    tied = (ml, dataclasses.replace(split, train=split.train.assign(timestamp=position // 3)))
    stamp = {(u, i): t for u, i, t in zip(users, split.train.item, position // 3)}
    user_of_key = {int(k): i for i, k in enumerate(ml.user_keys)}
    plain, shuffled = _pipeline(tied), _pipeline(tied, shuffle_ties=True)
    steps = plain.steps_per_epoch * 2
    moved = 0
    for a, b in zip(map(_numpy, plain.training().take(steps)),
                    map(_numpy, shuffled.training().take(steps))):
        np.testing.assert_array_equal(a["target_mask"], b["target_mask"])
        for row, key in enumerate(a["user"]["user_id"]):
            user, mask = user_of_key[int(key)], a["target_mask"][row]

            def window(batch):
                inputs = ml.item_index(batch["user"]["history"][row][mask])
                targets = batch["positive_item"][row][mask]
                assert list(targets[:-1]) == list(inputs[1:])   # still shifted by one
                return list(inputs) + [targets[-1]]

            before, after = window(a), window(b)
            times = [stamp[user, i] for i in before]
            # The same items, and each timestamp's items still where that timestamp was.
            assert [stamp[user, i] for i in after] == times
            assert sorted(zip(times, before)) == sorted(zip(times, after))
            moved += before != after
    assert moved > 0


def test_shuffled_ties_are_refused_outside_sequences():
    from dssm_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="sequences") as error:
        run_config(shuffle_ties=True, history_length=L).validate()
    assert error.value.parameter == "shuffle_ties"


def test_validation_windows_end_at_each_users_validation_item(world):
    ml, split = world
    pipeline = _pipeline(world, validation="last")
    _, val = validation_split(split, TrainingConfig(validation="last"))
    np.testing.assert_array_equal(pipeline.val_rows, val)
    targets = {}
    for batch in map(_numpy, pipeline.validation()):
        assert batch["target_mask"].sum(axis=1).tolist() == [1] * len(batch["target_mask"])
        assert batch["target_mask"][:, -1].all()       # the last position, as served
        for key, item in zip(batch["user"]["user_id"], batch["positive_item"][:, -1]):
            targets[int(key)] = int(item)
    users = split.train.user.to_numpy()[val]
    items = split.train.item.to_numpy()[val]
    assert targets == {int(ml.user_keys[u]): int(i) for u, i in zip(users, items)}


def test_validation_splits(world):
    _, split = world
    fit, val = validation_split(split, TrainingConfig(validation="last"))
    counts = np.diff(split.user_offsets)
    assert len(val) == int((counts >= 2).sum())
    assert set(val) == set((split.user_offsets[1:] - 1)[counts >= 2])
    fit, val = validation_split(split, TrainingConfig(validation="temporal",
                                                      validation_share=0.2))
    stamps = split.train.timestamp.to_numpy()
    assert stamps[val].min() >= stamps[fit].max()       # the last part of the period
    assert len(val) == pytest.approx(0.2 * len(stamps), rel=0.1)
    fit, val = validation_split(split, TrainingConfig(validation="random", seed=3))
    assert sorted(np.r_[fit, val]) == list(range(len(stamps)))
    fit, val = validation_split(split, TrainingConfig(validation="none"))
    assert fit.tolist() == list(range(len(stamps))) and len(val) == 0


def test_without_validation_every_training_item_is_a_target(world):
    """--validation=none (the refit): no validation pass, and the training windows predict
    each user's last training item too, which --validation=last holds out."""
    from dssm_tf.errors import ConfigError

    ml, split = world
    items = split.train.item.to_numpy()
    ends = split.user_offsets[1:]
    for validation, offset in (("last", 2), ("none", 1)):
        pipeline = _pipeline(world, validation=validation, crop="latest")
        assert (pipeline.validation() is None) == (validation == "none")
        final = {}     # user key -> the item the last target position of its window predicts
        for batch in map(_numpy, pipeline.training().take(pipeline.steps_per_epoch)):
            for key, targets, mask in zip(batch["user"]["user_id"], batch["positive_item"],
                                          batch["target_mask"]):
                final[int(key)] = int(targets[np.flatnonzero(mask)[-1]])
        expected = {int(ml.user_keys[u]): int(items[ends[u] - offset])
                    for u in range(len(ends)) if ends[u] - split.user_offsets[u] > offset}
        assert {key: final[key] for key in expected} == expected
    with pytest.raises(ConfigError, match="--validation=none holds none out") as error:
        run_config(examples="sequences", loss="inbatch", history_length=L, validation="none",
                   early_stopping_metric="recall").validate()
    assert error.value.parameter == "early_stopping_metric"


def test_the_all_sampler_makes_every_training_item_a_candidate_of_every_batch(world):
    ml, split = world
    trained = np.flatnonzero(split.item_counts > 0)
    pipeline = _pipeline(world, sampler="all", negatives=0)
    for batch in map(_numpy, pipeline.training().take(3)):
        assert batch["negative_items"].tolist() == trained.tolist()
        np.testing.assert_array_equal(batch["negatives"]["movie_id"], ml.item_keys[trained])


def test_the_all_sampler_is_refused_outside_sequences():
    from dssm_tf.errors import ConfigError

    with pytest.raises(ConfigError, match="full softmax") as error:
        run_config(loss="inbatch", negative_sampler="all", history_length=L).validate()
    assert error.value.parameter == "negative_sampler"
    run_config(examples="sequences", loss="inbatch", negative_sampler="all", num_negatives=0,
               history_length=L).validate()
    with pytest.raises(ConfigError, match="needs --examples=sequences") as error:
        run_config(loss="inbatch", history_length=L, exclude_user_items=True).validate()
    assert error.value.parameter == "exclude_user_items"


def test_sequence_training_learns(world, tmp_path):
    from dssm_tf.training import trainer

    ml, split = world
    for encoder, sampler, exclude in (("attention", "uniform", False), ("mean", "inbatch", False),
                                      ("mean", "all", False), ("attention", "all", True)):
        run = run_config(examples="sequences", user_encoder=encoder, history_length=L,
                         loss="inbatch", negative_sampler=sampler, num_negatives=8,
                         temperature=0.2, epochs=3, batch_size=16, embedding_dim=8,
                         hidden_units=(8,), learning_rate=0.01, validation="last",
                         exclude_user_items=exclude, verbose=False)
        run.validate()
        result = trainer.fit(run, ml, split, str(tmp_path / f"{encoder}-{sampler}-{exclude}"))
        history = result.model.history.history
        assert all(math.isfinite(v) for v in history["loss"] + history["val_loss"])
        assert history["loss"][-1] < history["loss"][0], (encoder, history["loss"])
