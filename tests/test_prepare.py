"""Prepared TFRecord shards (`dssm_tf.data.records`, `python -m dssm_tf.prepare`) and training
from them (`train --train_files`): what the files hold, that the batches read back equal the
in-memory pipeline's examples, sharding, resume, the manifest check, the commands."""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import TIME_SPLIT
from dssm_tf.data import records, splits
from dssm_tf.data.pipeline import InputPipeline
from dssm_tf.data.schema import HISTORY
from dssm_tf import io as dssm_io
from dssm_tf.errors import ConfigError
from tests import synthetic
from tests.conftest import load_ml, make_split, run_command, run_config

SMALL = 24_000   # a shuffle of ~115 examples (of ~210 bytes): 3 batches of 32 a block
SETTINGS = dict(history_length=4, user_features=True, item_features=True, batch_size=32,
                num_negatives=3)


def _run(ml, split, **fields):
    """A RunConfig of SETTINGS + `fields`, with the data and split as `train` resolves them."""
    run = run_config(**{**SETTINGS, **fields})
    return dataclasses.replace(run, data=ml.config,
                               split=splits.resolve(ml, splits.SplitConfig(
                                   protocol=split.protocol, cutoff=split.cutoff)))


def _write(tmp_path, ml, split, run, shards=3, chunk_rows=100, name="records"):
    return records.write_records(str(tmp_path / name), ml, split, run, shards=shards,
                                 chunk_rows=chunk_rows)


def _pipeline(run, ml, split, files, replicas=1, **extra):
    training = dataclasses.replace(run.training, train_files=files)
    return records.RecordPipeline(ml, split, run.sampler, run.tower, training,
                                  shared_negatives=run.loss.shares_negatives,
                                  replicas=replicas, **extra)


def _memory(run, ml, split):
    return InputPipeline(ml, split, run.sampler, run.tower, run.training,
                         shared_negatives=run.loss.shares_negatives)


def _numpy(batch):
    return tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, batch)


def _value(x):
    return x.decode() if isinstance(x, bytes) else x.item() if hasattr(x, "item") else x


def _examples(batch) -> list[tuple]:
    """One hashable tuple per row of a batch: user inputs (history as a tuple), positive item
    inputs and index."""
    batch = _numpy(batch)
    user, positive = batch["user"], batch["positive"]
    rows = len(batch["positive_item"])
    out = []
    for i in range(rows):
        out.append((tuple((name, _value(user[name][i])) for name in sorted(user)
                          if name != HISTORY),
                    tuple(_value(v) for v in user[HISTORY][i]),
                    tuple((name, _value(positive[name][i])) for name in sorted(positive)),
                    int(batch["positive_item"][i])))
    return out


def _memory_examples(run, ml, split) -> collections.Counter:
    """The in-memory pipeline's examples of every fit row (an ordered pass over them)."""
    memory = _memory(run, ml, split)
    features = memory.tables.interaction_features(tf.constant(memory.fit_rows))
    return collections.Counter(_examples(features))


def _epoch(pipeline, context=None, start_step=0, steps=None):
    stream = pipeline.training(start_step=start_step, context=context)
    count = pipeline.steps_per_epoch if steps is None else steps
    return [_numpy(batch) for batch in stream.take(count)]


def _structure(batch):
    """Keys, dtypes and shapes beyond the batch dimension of a batch."""
    return tf.nest.map_structure(lambda t: (t.dtype.name, tuple(t.shape[1:])), batch)


@pytest.fixture(scope="module")
def data(synthetic_session):
    ml = load_ml(synthetic_session.folder)
    return ml, make_split(ml, TIME_SPLIT)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, data):
    """(run, summary) of the module's files: SETTINGS, 3 shards, written 100 rows at a time."""
    ml, split = data
    run = _run(ml, split)
    return run, _write(tmp_path_factory.mktemp("prepared"), ml, split, run)


def _glob(summary):
    return os.path.join(summary.folder, "*" + records.SUFFIX)


# --- the files ---------------------------------------------------------------------------------

def test_encode_examples_parse_as_tf_train_example():
    columns = {"id": tf.constant([7, -3], tf.int64),
               "window": tf.constant([[1, 2, 300000], [0, 0, 5]], tf.int64),
               "text": tf.constant(["Été|Noir", ""]),
               "spend": tf.constant([1.5, -0.25], tf.float32)}
    serialized = records.encode_examples(columns).numpy()
    for i, record in enumerate(serialized):
        feature = tf.train.Example.FromString(record).features.feature
        assert list(feature["id"].int64_list.value) == [columns["id"].numpy()[i]]
        assert list(feature["window"].int64_list.value) == list(columns["window"].numpy()[i])
        assert list(feature["text"].bytes_list.value) == [columns["text"].numpy()[i]]
        assert list(feature["spend"].float_list.value) == [columns["spend"].numpy()[i]]
    parsed = tf.io.parse_example(serialized, {
        "id": tf.io.FixedLenFeature([], tf.int64),
        "window": tf.io.FixedLenFeature([3], tf.int64),
        "text": tf.io.FixedLenFeature([], tf.string),
        "spend": tf.io.FixedLenFeature([], tf.float32)})
    for name, value in columns.items():
        np.testing.assert_array_equal(parsed[name].numpy(), value.numpy())


def test_files_hold_every_fit_row_once_with_its_features(prepared, data):
    ml, split = data
    run, summary = prepared
    manifest = summary.manifest
    fit_rows, val_rows = splits_of(run, split)
    assert summary.rows == manifest["rows"] == len(fit_rows)
    assert summary.validation_rows == len(val_rows) > 0
    assert sorted(os.listdir(summary.folder)) == sorted(
        [records.MANIFEST] + [s["file"] for s in manifest["shards"]])
    counts = [s["rows"] for s in manifest["shards"]]
    assert sum(counts) == len(fit_rows) and max(counts) - min(counts) <= 1
    assert all(os.path.getsize(os.path.join(summary.folder, s["file"])) == s["bytes"]
               for s in manifest["shards"])
    assert manifest["split"] == {"protocol": TIME_SPLIT, "cutoff": synthetic.CUTOFF}
    assert manifest["history_length"] == 4 and manifest["checksums"] == ml.checksums
    assert manifest["features"]["user/history"] == {"dtype": "int64", "shape": [4]}
    assert {"user/user_id", "user/gender", "user/age", "user/occupation", "item/movie_id",
            "positive_item", "timestamp"} <= set(manifest["features"])

    spec = {name: tf.io.FixedLenFeature(f["shape"], records._TF_DTYPES[f["dtype"]])
            for name, f in manifest["features"].items()}
    found = collections.Counter()
    for shard in manifest["shards"]:
        path = os.path.join(summary.folder, shard["file"])
        rows = list(tf.data.TFRecordDataset(path).batch(1000).map(
            lambda s: tf.io.parse_example(s, spec)))
        assert sum(len(r["timestamp"]) for r in rows) == shard["rows"]
        for parsed in rows:
            parsed = _numpy(parsed)
            for i in range(len(parsed["timestamp"])):
                found[tuple((name, _value(parsed[name][i]) if parsed[name].ndim == 1
                             else tuple(parsed[name][i].tolist())) for name in sorted(spec))] += 1
    # The same rows, as FeatureTables computes their features in memory.
    tables = _memory(run, ml, split).tables
    features = _numpy(tables.interaction_features(tf.constant(fit_rows)))
    stamps = split.train.timestamp.to_numpy()[fit_rows]
    expected = collections.Counter()
    for i in range(len(fit_rows)):
        values = {f"user/{n}": v[i] for n, v in features["user"].items()}
        values["item/movie_id"] = features["positive"]["movie_id"][i]
        values["positive_item"] = features["positive_item"][i]
        values["timestamp"] = stamps[i]
        expected[tuple((name, _value(values[name]) if np.ndim(values[name]) == 0
                        else tuple(values[name].tolist())) for name in sorted(spec))] += 1
    assert found == expected
    assert max(found.values()) == 1  # every fit row once


def splits_of(run, split):
    from dssm_tf.data.pipeline import validation_split  # noqa: PLC0415
    return validation_split(split, run.training)


def test_files_are_in_a_seeded_random_order(tmp_path, data, prepared):
    ml, split = data
    run, summary = prepared
    again = _write(tmp_path, ml, split, run, name="again")
    other = _write(tmp_path, ml, split, _run(ml, split, seed=0, validation="temporal"),
                   name="other")
    first = os.path.join(summary.folder, summary.manifest["shards"][0]["file"])
    with open(first, "rb") as f, open(os.path.join(again.folder, again.manifest["shards"][0]
                                                   ["file"]), "rb") as g:
        assert f.read() == g.read()   # same seed, same bytes
    assert other.manifest["fit_rows_md5"] != summary.manifest["fit_rows_md5"]
    stamps = [int(tf.train.Example.FromString(r.numpy()).features.feature["timestamp"]
                  .int64_list.value[0]) for r in tf.data.TFRecordDataset(first)]
    assert stamps != sorted(stamps)   # not in split order


# --- reading them back -------------------------------------------------------------------------

def test_an_epoch_of_batches_equals_the_in_memory_examples(prepared, data):
    ml, split = data
    run, summary = prepared
    pipeline = _pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL)
    memory = _memory(run, ml, split)
    assert pipeline.steps_per_epoch == memory.steps_per_epoch
    np.testing.assert_array_equal(pipeline.fit_rows, memory.fit_rows)
    np.testing.assert_array_equal(pipeline.val_rows, memory.val_rows)
    batches = _epoch(pipeline)
    sizes = [len(b["positive_item"]) for b in batches]
    assert sizes[:-1] == [32] * (len(sizes) - 1) and sum(sizes) == summary.rows
    found = collections.Counter(e for b in batches for e in _examples(b))
    assert found == _memory_examples(run, ml, split)
    reference = _structure(next(iter(memory.training())))
    assert _structure(next(iter(pipeline.training()))) == reference
    assert _structure(pipeline.first_batch()) == reference
    for batch in batches:  # negatives as in memory: [B, N], masked where equal to the positive
        assert batch["negative_items"].shape == (len(batch["positive_item"]), 3)
        np.testing.assert_array_equal(
            batch["negative_mask"], batch["negative_items"] != batch["positive_item"][:, None])
        np.testing.assert_array_equal(batch["negatives"]["movie_id"],
                                      ml.item_keys[batch["negative_items"]])


def test_epochs_differ_and_a_resumed_stream_continues_exactly(prepared, data):
    ml, split = data
    run, summary = prepared
    pipeline = _pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL)
    steps = pipeline.steps_per_epoch
    two = _epoch(pipeline, steps=2 * steps)
    first, second = two[:steps], two[steps:]
    order = [tuple(b["positive_item"]) for b in first]
    assert order != [tuple(b["positive_item"]) for b in second]
    assert collections.Counter(e for b in second for e in _examples(b)) == \
        collections.Counter(e for b in first for e in _examples(b))
    resumed = _epoch(_pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL),
                     start_step=steps - 2, steps=4)
    for got, want in zip(resumed, two[steps - 2:steps + 2]):
        for key in ("positive_item", "negative_items"):
            np.testing.assert_array_equal(got[key], want[key])
        np.testing.assert_array_equal(got["user"][HISTORY], want["user"][HISTORY])


def test_two_workers_read_disjoint_files(tmp_path, data):
    ml, split = data
    run = _run(ml, split, batch_size=16)
    summary = _write(tmp_path, ml, split, run, shards=4)
    pipeline = _pipeline(run, ml, split, _glob(summary), replicas=2, shuffle_bytes=SMALL)
    contexts = [tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                           num_replicas_in_sync=2) for i in range(2)]
    files = [pipeline.files_of(c)[0] for c in contexts]
    assert not set(files[0]) & set(files[1])
    assert sorted(files[0] + files[1]) == sorted(pipeline.files) and len(files[0]) == 2
    per_worker = []
    for context, mine in zip(contexts, files):
        batches = _epoch(pipeline, context=context)   # steps of one global batch share each
        assert {len(b["positive_item"]) for b in batches} == {8}
        assert len(batches) == pipeline.steps_per_epoch == summary.rows // 16
        own = collections.Counter()
        for path in mine:
            own.update(e for b in _read_all(pipeline, path) for e in _examples(b))
        seen = collections.Counter(e for b in batches for e in _examples(b))
        assert not seen - own   # read from its own files only, each example at most once
        per_worker.append(seen)
    assert not per_worker[0] & per_worker[1]
    with pytest.raises(ConfigError, match="--shards"):
        pipeline.files_of(tf.distribute.InputContext(5, 0, 5))


def _read_all(pipeline, path):
    """The batches of one file, through the pipeline's own parsing (in file order)."""
    stream = tf.data.TFRecordDataset(path).batch(64).enumerate().map(pipeline._to_features)
    return [_numpy(b) for b in stream]


def test_history_gap_cuts_the_stored_window_as_in_memory(tmp_path, data):
    ml, split = data
    run = _run(ml, split, history_gap=2)
    summary = _write(tmp_path, ml, split, run)
    assert summary.manifest["features"]["user/history"]["shape"] == [6]
    pipeline = _pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL)
    train = split.train
    user_keys = ml.user_keys[train.user.to_numpy()]
    row_of = {(int(u), int(i)): r for r, (u, i) in enumerate(zip(user_keys, train.item))}
    assert len(row_of) == len(train)   # a user rates a movie once here
    tables = _memory(run, ml, split).tables
    gaps = collections.Counter()
    for batch in _epoch(pipeline):
        assert batch["user"][HISTORY].shape[1] == 4
        rows = np.array([row_of[(int(u), int(i))] for u, i in
                         zip(batch["user"]["user_id"], batch["positive_item"])])
        users = train.user.to_numpy()[rows]
        starts = split.user_offsets[users]
        options = [tables.user_features(tf.constant(users), tf.constant(
            np.maximum(rows - g, starts)))[HISTORY].numpy() for g in range(3)]
        match = [(batch["user"][HISTORY] == o).all(axis=1) for o in options]
        assert np.any(match, axis=0).all()
        gaps.update(int(np.argmax(m)) for m in zip(*match))
    assert len(gaps) == 3   # every gap 0..2 drawn


def test_string_keys_and_numeric_features_round_trip(tmp_path):
    ml = synthetic.string_keyed_dataset()
    split = make_split(ml, "leave_last_one_out")
    run = _run(ml, split, history_length=3, batch_size=8, validation_share=0.2)
    summary = _write(tmp_path, ml, split, run, shards=2, chunk_rows=7)
    assert summary.manifest["features"]["user/spend"]["dtype"] == "float32"
    pipeline = _pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL // 4)
    batches = _epoch(pipeline)
    assert collections.Counter(e for b in batches for e in _examples(b)) == \
        _memory_examples(run, ml, split)
    assert "" in {h for b in batches for row in b["user"][HISTORY] for h in row.tolist()} or \
        b"" in {h for b in batches for row in b["user"][HISTORY] for h in row.tolist()}


def test_without_history_or_features_the_batches_match_too(tmp_path, data):
    ml, split = data
    run = _run(ml, split, history_length=0, user_features=False, item_features=False,
               loss="inbatch", negative_sampler="uniform", num_negatives=5)
    summary = _write(tmp_path, ml, split, run, shards=2)
    assert "user/history" not in summary.manifest["features"]
    pipeline = _pipeline(run, ml, split, _glob(summary), shuffle_bytes=SMALL)
    batches = _epoch(pipeline)
    assert _structure(next(iter(pipeline.training()))) == \
        _structure(next(iter(_memory(run, ml, split).training())))
    assert batches[0]["negative_items"].shape == (5,)   # shared by the batch (inbatch)
    assert collections.Counter(e for b in batches for e in _examples(b)) == \
        _memory_examples(run, ml, split)


# --- the manifest check ------------------------------------------------------------------------

MISMATCHES = {
    "history_length": (dict(history_length=5), "history_length 4 in the files, 5"),
    "history_gap": (dict(history_gap=1), "history_gap 0 in the files, 1"),
    "cutoff": (dict(cutoff=synthetic.CUTOFF - 30 * synthetic.DAY), "split.cutoff"),
    "protocol": (dict(protocol="leave_last_one_out"), "split.protocol"),
    "seed": (dict(seed=1), "validation.seed 0 in the files, 1"),
    "validation": (dict(validation="last"), "validation.validation 'random' in the files"),
    "share": (dict(validation_share=0.2), "validation.validation_share 0.1 in the files"),
    "min_rating": (dict(min_rating=3.0), "data.min_rating None in the files, 3.0"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_files_of_other_settings_are_refused_naming_the_difference(prepared, data, case):
    ml, split = data
    _, summary = prepared
    fields, text = MISMATCHES[case]
    split_fields = {k: fields.pop(k) for k in ("cutoff", "protocol") if k in fields}
    data_fields = {k: fields.pop(k) for k in ("min_rating",) if k in fields}
    if data_fields:
        ml = load_ml_with(ml, **data_fields)
    if split_fields or data_fields:
        split = splits.make_split(ml, splits.SplitConfig(
            protocol=split_fields.get("protocol", TIME_SPLIT),
            cutoff=split_fields.get("cutoff")))
    run = _run(ml, split, **fields)
    with pytest.raises(ConfigError) as raised:
        _pipeline(run, ml, split, _glob(summary))
    assert raised.value.parameter == "train_files"
    assert text in raised.value.message and summary.folder in raised.value.message
    assert "\n" not in raised.value.message


def load_ml_with(ml, **fields):
    from dssm_tf.data.sources import load_dataset  # noqa: PLC0415
    return load_dataset(dataclasses.replace(ml.config, **fields))


def test_files_of_other_data_are_refused(prepared, tmp_path):
    _, summary = prepared
    other = load_ml(synthetic.make_dataset(tmp_path / "other", n_users=60, n_movies=90,
                                           seed=1).folder)
    split = make_split(other, TIME_SPLIT)
    with pytest.raises(ConfigError, match=r"ratings\.dat \(another file: checksum"):
        _pipeline(_run(other, split), other, split, _glob(summary))


def test_the_seed_of_a_temporal_validation_does_not_matter(tmp_path, data):
    ml, split = data
    summary = _write(tmp_path, ml, split, _run(ml, split, validation="temporal"))
    pipeline = _pipeline(_run(ml, split, validation="temporal", seed=5), ml, split,
                         _glob(summary))
    assert pipeline.rows == summary.rows


def test_bad_globs_and_changed_files_are_refused(prepared, data, tmp_path, caplog):
    ml, split = data
    run, summary = prepared
    with pytest.raises(ConfigError, match="no file matches"):
        _pipeline(run, ml, split, str(tmp_path / "nothing" / "*.tfrecord"))
    # The folder itself, and a glob that also matches the manifest, read every shard.
    assert _pipeline(run, ml, split, summary.folder).rows == summary.rows
    assert _pipeline(run, ml, split, os.path.join(summary.folder, "*")).rows == summary.rows
    with caplog.at_level(logging.WARNING, logger="dssm_tf"):
        subset = _pipeline(run, ml, split, os.path.join(summary.folder, "part-00000-*"))
    assert subset.rows == summary.manifest["shards"][0]["rows"]
    assert "matches 1 of the 3 files" in caplog.text
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(summary.folder):
        with open(os.path.join(summary.folder, name), "rb") as f:
            data_ = f.read()
        if name.startswith("part-00001"):
            data_ = data_[:-10]    # cut short
        (copy / name).write_bytes(data_)
    with pytest.raises(ConfigError, match="cut short"):
        _pipeline(run, ml, split, str(copy / "part-00001-*"))
    (copy / "extra.tfrecord").write_bytes(b"")
    with pytest.raises(ConfigError, match="not one of the files"):
        _pipeline(run, ml, split, str(copy / "extra.tfrecord"))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "x.tfrecord").write_bytes(b"")
    with pytest.raises(ConfigError, match="manifest.json not found"):
        _pipeline(run, ml, split, str(tmp_path / "bare" / "*"))
    with pytest.raises(ConfigError, match="2 folders"):
        _pipeline(run, ml, split, str(tmp_path / "*" / "*.tfrecord"))


# --- writing safely ----------------------------------------------------------------------------

def test_out_must_be_new_empty_or_prepared(tmp_path, data, prepared):
    ml, split = data
    run, _ = prepared
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        _write(tmp_path, ml, split, run, name="file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="other files"):
        _write(tmp_path, ml, split, run, name="full")
    (tmp_path / "empty").mkdir()
    first = _write(tmp_path, ml, split, run, name="empty")
    second = _write(tmp_path, ml, split, run, shards=2, name="empty")   # replaced
    assert len(os.listdir(second.folder)) == 3 and first.folder == second.folder
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


def test_a_failed_or_killed_prepare_leaves_nothing_at_out(tmp_path, data, prepared,
                                                          monkeypatch):
    ml, split = data
    run, _ = prepared
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".records{dssm_io.PARTIAL}{dead.pid}-abc"
    leftover.mkdir()
    (leftover / "part-00000-of-00003.tfrecord").write_bytes(b"half")

    class Broken:
        def __init__(self, *args, **kwargs):
            self.calls = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(records, "progress", Broken)
    with pytest.raises(KeyboardInterrupt):
        _write(tmp_path, ml, split, run)
    assert os.listdir(tmp_path) == []   # neither `out` nor a temporary folder, nor the leftover


# --- the commands ------------------------------------------------------------------------------

ARGS = ("--epochs=2", "--batch_size=64", "--embedding_dim=16", "--hidden_units=16",
        "--feature_dim=4", "--history_length=5", "--user_features", "--item_features",
        "--k=10", "--seed=0", "--verbose=false", "--nobaselines")


@pytest.fixture(scope="module")
def command_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    return root, synthetic.make_dataset(root / "data", n_users=120, n_movies=90, seed=2).folder


def test_prepare_then_train_from_the_files(command_data):
    root, folder = command_data
    out = root / "records"
    proc = run_command("prepare", f"--data_dir={folder}", f"--out={out}", "--shards=4", *ARGS,
                       tmp_path=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"wrote {out}: ") and "--train_files=" in proc.stdout
    assert proc.stderr == ""
    with open(out / records.MANIFEST) as f:
        manifest = json.load(f)
    assert len(manifest["shards"]) == 4 and manifest["history_length"] == 5
    assert not [n for n in os.listdir(root) if n.startswith(".")]   # no temporary folder

    model_dir = root / "model"
    proc = run_command("train", f"--data_dir={folder}", f"--model_dir={model_dir}",
                       f"--train_files={out}/*.tfrecord", *ARGS, tmp_path=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["epochs_run"] == 2 and metrics["train_files"] == f"{out}/*.tfrecord"
    assert 0.0 <= metrics["recall@10"] <= 1.0

    # Other settings than the files': exit 2, one line naming the difference.
    proc = run_command("train", f"--data_dir={folder}", f"--model_dir={root / 'other'}",
                       f"--train_files={out}/*.tfrecord", *ARGS, "--history_length=3",
                       tmp_path=root)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --train_files: ")
    assert "history_length 5 in the files, 3 in this run" in lines[0]


@pytest.mark.parametrize("args, text", [
    ((), "error: --out: required"),
    (("--out={root}/notes",), "error: --out: "),
    (("--out={root}/records", "--shards=0"), "--shards"),
    (("--out={root}/fresh", "--train_files=x", "--examples=sequences", "--loss=inbatch",
      "--history_length=2"), "--train_files"),
])
def test_prepare_bad_flags_exit_2_with_one_line(command_data, args, text):
    root, folder = command_data
    (root / "notes").mkdir(exist_ok=True)
    (root / "notes" / "a.txt").write_text("x")
    proc = run_command("prepare", f"--data_dir={folder}",
                       *[a.format(root=root) for a in args], tmp_path=root)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert not (root / "fresh").exists()


@pytest.mark.bench  # two TensorFlow processes for minutes: `make bench`; the sequence
# examples' two-worker run and the gathered-loss test stay in `make test`
def test_two_workers_on_loopback_train_from_their_own_files(tmp_path):
    """A real 2-worker `multi_worker` cluster (loopback) on prepared files: each worker reads
    its half of the files, the chief writes the metrics."""
    from tests.test_distribute import TRAIN, _metrics, run_two_workers  # noqa: PLC0415

    folder = synthetic.make_dataset(tmp_path / "data", n_users=240, n_movies=90,
                                    seed=4).folder
    out = tmp_path / "records"
    proc = run_command("prepare", f"--data_dir={folder}", f"--out={out}", "--shards=4",
                       *TRAIN, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model_dir = tmp_path / "model"
    outputs = run_two_workers(tmp_path, folder, model_dir, f"--train_files={out}/*.tfrecord")
    assert "test users" in outputs[1] and "test users" not in outputs[0]
    got = _metrics(model_dir)
    assert got["distribution"] == "multi_worker" and got["epochs_run"] == 3
    assert got["hit@10"] > 0.0
