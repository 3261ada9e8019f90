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
from dssm_tf.data.sequences import BUCKET, SequencePipeline, packed_batches
from tests.conftest import load_ml, make_split, run_config

L = 6


@pytest.fixture(scope="module")
def world(synthetic_session):
    ml = load_ml(synthetic_session.folder)
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    return ml, split


def _pipeline(world, crop="random", validation="last", negatives=4, batch=8, seed=0,
              sampler="uniform", shuffle_ties=False, replicas=1):
    ml, split = world
    return SequencePipeline(ml, split, SamplerConfig(sampler, num_negatives=negatives),
                            TowerConfig(history_length=L),
                            TrainingConfig(batch_size=batch, seed=seed, validation=validation,
                                           sequence_crop=crop, examples="sequences",
                                           shuffle_ties=shuffle_ties), replicas=replicas)


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


def test_shuffled_ties_are_on_by_default_and_only_reorder_sequences():
    """On by default (a model must not learn a file's order); interaction examples ignore it."""
    assert run_config().training.shuffle_ties
    run_config(history_length=L).validate()


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


# --- several replicas (tf.distribute) ------------------------------------------------------------


def test_packed_batches_split_evenly_over_replicas():
    rng = np.random.default_rng(1)
    targets = np.concatenate([rng.integers(1, 30, 101), [24, 24, 3]])
    np.testing.assert_array_equal(packed_batches(targets, 24, 60.0, replicas=1),
                                  packed_batches(targets, 24, 60.0))
    widths = np.sort(np.minimum((targets + BUCKET - 1) // BUCKET * BUCKET, 24))
    for replicas in (1, 2, 3, 4, 7):
        batches = packed_batches(targets, 24, 60.0, replicas)
        starts, sizes = batches.T
        assert (sizes % replicas == 0).all() and (sizes >= replicas).all()
        assert starts[0] == 0 and np.array_equal(starts[1:], (starts + sizes)[:-1])  # tiled
        assert len(targets) - sizes.sum() == len(targets) % replicas     # the resting few
        for start, size in batches:   # a batch spans at most a leftover of the bucket before
            block = widths[start:start + size]
            assert (block != block[-1]).sum() < replicas
            assert size <= max(replicas, 60 // block[-1] // replicas * replicas)


def _windows(batch) -> dict:
    """user key -> (real history keys, target items) of each window of a batch."""
    return {int(key): (tuple(history[mask]), tuple(targets[mask]))
            for key, history, targets, mask in zip(batch["user"]["user_id"],
                                                   batch["user"]["history"],
                                                   batch["positive_item"],
                                                   batch["target_mask"])}


def _keys(batch) -> list[int]:
    return batch["user"]["user_id"].tolist()


@pytest.mark.parametrize("replicas", [2, 7])
def test_the_replicas_shares_of_a_step_split_its_global_batch(world, replicas):
    """The shares of a step, from one input pipeline or one per worker, are disjoint, as many
    users each, and together the global batch: its users, windows (random crops included)
    and negatives; a resumed stream is the same stream; users rest in turn."""
    pipeline = _pipeline(world, replicas=replicas)
    steps = pipeline.steps_per_epoch
    assert pipeline.resting == len(pipeline.train_users) % replicas
    start, count = steps + 3, steps

    def context(pipelines, index):
        return tf.distribute.InputContext(pipelines, index, replicas)

    whole = list(map(_numpy, pipeline.training(start).take(count)))
    local = list(map(_numpy, pipeline.training(start, context(1, 0)).take(count * replicas)))
    workers = [list(map(_numpy, pipeline.training(start, context(replicas, w)).take(count)))
               for w in range(replicas)]
    resumed = list(map(_numpy, pipeline.training(0, context(1, 0)).skip(start * replicas)
                       .take(count * replicas)))
    for step, batch in enumerate(whole):
        shares = local[step * replicas:(step + 1) * replicas]
        assert [_keys(s) for s in shares] == [_keys(w[step]) for w in workers]
        assert [_keys(s) for s in shares] == [_keys(s) for s in resumed[step * replicas:]
                                              [:replicas]]
        keys = [_keys(s) for s in shares]
        assert len({len(k) for k in keys}) == 1 and len(keys[0]) >= 1
        assert sum(keys, []) == _keys(batch)          # disjoint, in order: the global batch
        merged = {}
        for share in shares:
            merged.update(_windows(share))
            np.testing.assert_array_equal(share["negative_items"], batch["negative_items"])
        assert merged == _windows(batch)
    # An epoch trains every user once but the resting few, who change from epoch to epoch.
    users = set(map(int, world[0].user_keys[pipeline.train_users]))
    rested = []
    for epoch in range(3):
        seen = sum((_keys(b) for b in map(_numpy, pipeline.training(epoch * steps)
                                          .take(steps))), [])
        assert len(seen) == len(set(seen)) == len(users) - pipeline.resting
        rested.append(users - set(seen))
    assert not pipeline.resting or len(set(map(frozenset, rested))) > 1


def test_validation_on_replicas_is_whole_global_batches_split_endlessly(world):
    single, pipeline = _pipeline(world), _pipeline(world, replicas=2)
    steps = pipeline.validation_steps
    assert steps == len(pipeline.val_users) // 8 and single.validation_steps == \
        math.ceil(len(single.val_users) / 8)
    whole = list(map(_numpy, single.validation()))
    context = tf.distribute.InputContext(1, 0, 2)
    shares = list(map(_numpy, pipeline.validation(context).take(2 * steps * 2)))  # two passes
    for step in range(2 * steps):
        first, second = shares[2 * step], shares[2 * step + 1]
        batch = whole[step % steps]
        assert _keys(first) + _keys(second) == _keys(batch) and len(_keys(first)) == 4
        assert {**_windows(first), **_windows(second)} == _windows(batch)
        np.testing.assert_array_equal(first["negative_items"], batch["negative_items"])
        np.testing.assert_array_equal(second["negative_items"], batch["negative_items"])


def test_a_pipeline_feeds_the_replicas_it_was_built_for(world):
    from dssm_tf.errors import ConfigError

    with pytest.raises(ValueError, match="built for 1 replicas"):
        _pipeline(world).training(0, tf.distribute.InputContext(1, 0, 2))
    with pytest.raises(ConfigError, match="cannot give each of 1000 replicas one") as error:
        _pipeline(world, replicas=1000)
    assert error.value.parameter == "distribution"
