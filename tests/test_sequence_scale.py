"""Sequence training at any catalogue size: a step's tensors, packed batches, derived settings.

The memory test records the shape of every tensor one training step computes (TensorFlow's
debugger in SHAPE mode) at 1,000 and at 50,000 items with the same users and batch: with the
sampled softmaxes, no tensor may hold positions x catalogue values; only the item tables (and
their rows' corrections) grow with the catalogue.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dssm_tf.config import DataConfig, SplitConfig
from dssm_tf.data import sequence_settings, splits
from dssm_tf.data.sources import load_dataset
from tests.conftest import run_config

DIM = 8


def _order_only_data(tmp_path, num_items: int, users: int = 40, length: int = 30):
    """`users` users of `length` items each (a shared seed, so the users' sequences have the
    same shape at any `num_items`), plus one interaction of every other item by an extra
    user, so the catalogue really has `num_items` items."""
    rng = np.random.default_rng(0)
    user = np.repeat(np.arange(users), length)
    item = rng.integers(0, 1000, users * length)
    step = np.tile(np.arange(length), users)
    rest = np.setdiff1d(np.arange(num_items), item)
    frame = pd.DataFrame({"user": np.concatenate([user, np.full(len(rest), users)]),
                          "item": np.concatenate([item, rest]) + 1,   # key 0 pads histories
                          "step": np.concatenate([step, np.arange(len(rest))])})
    path = tmp_path / f"events-{num_items}.csv"
    frame.to_csv(path, index=False)
    return load_dataset(DataConfig(dataset="tabular", interactions=str(path),
                                   user_column="user", item_column="item",
                                   time_column="step:order"))


def _step_tensor_shapes(tmp_path, num_items: int, sampler: str) -> list[tuple[int, ...]]:
    """The shape of every tensor of one training step (forward, gradient and update)."""
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.python.debug.lib import debug_events_reader  # noqa: PLC0415

    from dssm_tf.training import trainer  # noqa: PLC0415

    dataset = _order_only_data(tmp_path, num_items)
    run = run_config(protocol="leave_last_one_out", examples="sequences",
                     user_encoder="mean", history_length=8, embedding_dim=DIM,
                     hidden_units=(), similarity="dot", share_item_embeddings=True,
                     user_key_embedding=False, loss="inbatch", negative_sampler=sampler,
                     num_negatives=64, exclude_user_items=True, temperature=1.0,
                     batch_size=8, epochs=1, optimizer="lazy_adam", validation="none")
    split = splits.make_split(dataset, SplitConfig(protocol="leave_last_one_out"))
    pipeline = trainer.make_pipeline(run, dataset, split)
    model = trainer.build_model(run, dataset, split, pipeline)
    batch = next(iter(pipeline.training()))
    model(batch)
    step = tf.function(model.train_step)
    dump = str(tmp_path / f"dump-{num_items}-{sampler}")
    tf.debugging.experimental.enable_dump_debug_info(dump, tensor_debug_mode="SHAPE",
                                                     circular_buffer_size=-1)
    try:
        step(batch)
    finally:
        tf.debugging.experimental.disable_dump_debug_info()
    shapes = []
    with debug_events_reader.DebugDataReader(dump) as reader:
        reader.update()
        for trace in reader.graph_execution_traces():
            value = reader.graph_execution_trace_to_tensor_value(trace)
            rank = int(value[2])   # SHAPE mode: [id, dtype, rank, size, shape (6 dims)]
            shapes.append(tuple(int(d) for d in value[4:4 + rank]))
    assert shapes, "the debugger recorded no tensor"
    return shapes


def _grown(shapes, catalogue: int) -> list[tuple[int, ...]]:
    return [s for s in shapes if any(d >= 0.9 * catalogue for d in s)]


def test_step_memory_does_not_grow_with_the_catalogue(tmp_path):
    """The in-batch + sampled softmax (targets of the batch and 64 shared negatives)."""
    small = _step_tensor_shapes(tmp_path, 1_000, "inbatch")
    large = _step_tensor_shapes(tmp_path, 50_000, "inbatch")
    # Only the item tables and per-item vectors grow: [items (+ padding rows), dim or less].
    grown = _grown(large, 50_000)
    assert grown, "the item table never appeared: the check would prove nothing"
    for shape in grown:
        assert len(shape) <= 2 and np.prod(shape) <= (50_000 + 2) * DIM, shape
    # Everything else is the same size at 1k and 50k items.
    others = [int(np.prod(s)) for s in large if not any(d >= 1_000 for d in s)]
    small_others = [int(np.prod(s)) for s in small if not any(d >= 1_000 for d in s)]
    assert max(others) <= 2 * max(small_others)


def test_sampled_softmax_is_bounded_and_the_full_one_is_not(tmp_path):
    """The sampled form (own target + shared negatives) holds no positions x catalogue
    tensor; the full softmax (`all`), the control, does, so the check can tell."""
    for shape in _grown(_step_tensor_shapes(tmp_path, 10_000, "uniform"), 10_000):
        assert len(shape) <= 2 and np.prod(shape) <= (10_000 + 2) * DIM, shape
    full = _grown(_step_tensor_shapes(tmp_path, 10_000, "all"), 10_000)
    assert any(len(s) == 2 and min(s) > DIM for s in full)


def test_derived_settings_follow_the_data():
    run = run_config(examples="sequences", history_length=0, batch_size=0, epochs=0,
                     loss="inbatch", negative_sampler="inbatch", num_negatives=0)
    run.validate()
    long_users = np.cumsum([0] + [400] * 500)          # 500 users of 400 items
    derived, message = sequence_settings.derive(run, long_users)
    assert (derived.tower.history_length, derived.training.batch_size,
            derived.training.epochs) == (200, 10, 50)   # 6.5M positions / 100k: capped at 50
    assert "history_length=200" in message and "batch_size=10" in message
    short = np.cumsum([0] + [1] * 50 + list(np.arange(2, 14)) * 1000)   # 2..13 items
    derived, _ = sequence_settings.derive(run, short)
    assert derived.tower.history_length == 16          # 90% have <= 12 items
    assert derived.training.batch_size > 200           # short windows: many users a batch
    huge = np.cumsum([0] + [200] * 200_000)            # 40M positions an epoch
    assert sequence_settings.derive(run, huge)[0].training.epochs == 1


def test_settings_that_are_set_are_kept():
    run = run_config(examples="sequences", history_length=50, batch_size=0, epochs=7,
                     loss="inbatch", negative_sampler="inbatch", num_negatives=0)
    derived, message = sequence_settings.derive(run, np.cumsum([0] + [400] * 500))
    assert (derived.tower.history_length, derived.training.epochs) == (50, 7)
    assert derived.training.batch_size == round(2048 / 50)
    assert "epochs" not in message and "history_length" not in message
    pairs = run_config(batch_size=64, epochs=3)
    assert sequence_settings.derive(pairs, np.cumsum([0] + [400] * 5)) == (pairs, "")


def test_zero_batch_or_epochs_is_refused_outside_sequences():
    from dssm_tf.errors import ConfigError  # noqa: PLC0415

    for field in ("batch_size", "epochs"):
        with pytest.raises(ConfigError) as error:
            run_config(**{field: 0}).validate()
        assert error.value.parameter == field


def test_packed_batches_hold_about_the_same_positions():
    from dssm_tf.data.sequences import packed_batches  # noqa: PLC0415

    rng = np.random.default_rng(0)
    targets = np.concatenate([rng.integers(1, 9, 300), np.full(50, 200)])
    batches = packed_batches(targets, 200, 400.0)
    starts, sizes = batches[:, 0], batches[:, 1]
    assert np.array_equal(np.sort(starts), starts) and sizes.sum() == len(targets)
    assert np.array_equal(starts[1:], (starts + sizes)[:-1])      # slices tile the users
    widths = np.sort(np.minimum((targets + 7) // 8 * 8, 200))
    for start, size in batches:
        block = widths[start:start + size]
        assert len(set(block)) == 1                               # one bucket a batch
        assert size == 1 or block.sum() <= 400                    # about 400 positions
    assert sizes.max() == 50 and sizes.min() >= 1                 # 8-wide: 50 users a batch
