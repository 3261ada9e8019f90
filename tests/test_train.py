"""`python -m dssm_tf.train`: flag validation, an end-to-end run, resuming, every loss scheme."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)

from dssm_tf.config import TIME_SPLIT
from tests import synthetic
from tests.conftest import REPO_ROOT, TRAIN_K, command_env, load_ml, make_split, run_config

# --- flag validation ---------------------------------------------------------------------------

# case: (arguments, text the error line must contain); all are caught before TensorFlow loads
BAD_FLAGS = {
    "unknown_loss": (["--loss=hinge"], "--loss"),
    "negative_num_negatives": (["--num_negatives=-1"], "--num_negatives"),
    "hidden_units_not_ints": (["--hidden_units=12,abc"], "--hidden_units"),
    "zero_batch_size": (["--batch_size=0"], "--batch_size"),
    "missing_data_dir": (["--data_dir={tmp}/no-such-folder"], "no-such-folder"),
    "inbatch_sampler_with_bce": (["--negative_sampler=inbatch", "--loss=bce",
                                  "--data_dir={data}"], "--negative_sampler"),
    "no_frequent_movie": (["--negative_sampler=frequency", "--frequent_min_count=100000",
                           "--data_dir={data}"], "--frequent_min_count"),
}


@pytest.fixture(scope="module")
def bad_flag_runs(tmp_path_factory):
    """Every BAD_FLAGS case, run concurrently."""
    root = tmp_path_factory.mktemp("bad_flags")
    folder = synthetic.make_dataset(root / "data", n_users=30, n_movies=30).folder
    procs = {}
    for name, (args, _) in BAD_FLAGS.items():
        model_dir = root / name
        args = [a.format(tmp=root, data=folder) for a in args]
        procs[name] = (model_dir, time.perf_counter(), subprocess.Popen(
            [sys.executable, "-m", "dssm_tf.train", *args, f"--model_dir={model_dir}"],
            cwd=REPO_ROOT, env=command_env(root), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    results = {}
    for name, (model_dir, start, proc) in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, stderr, time.perf_counter() - start,
                         model_dir)
    return results


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_bad_flags_exit_2_with_one_line_before_training(bad_flag_runs, case):
    returncode, stdout, stderr, seconds, model_dir = bad_flag_runs[case]
    _, names = BAD_FLAGS[case]
    assert returncode == 2, stderr[-2000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr  # flag and data errors come before TensorFlow's import
    assert lines[0].startswith("error: ") and names in lines[0], lines[0]
    assert "Epoch" not in stdout + stderr        # failed before training
    assert not os.path.exists(model_dir)          # nothing half-written
    assert seconds < 60


# --- end to end --------------------------------------------------------------------------------

def _random_recall(split, k: int) -> float:
    """Expected micro recall@k of a uniformly random list of unseen candidates."""
    unseen = split.candidates.sum() - np.asarray(split.seen.sum(axis=1)).ravel()
    users = split.test.user.to_numpy()
    candidate = split.candidates[split.test.item.to_numpy()]
    return float(np.mean(np.where(candidate, np.minimum(k / unseen[users], 1.0), 0.0)))


def test_train_end_to_end(trained_run):
    metrics, k = trained_run.metrics, TRAIN_K
    for key in ("protocol", "k", "exclude_seen", f"recall@{k}", f"recall@{k}_user_mean",
                f"hit@{k}", f"ndcg@{k}", "n_test_users", "n_test_items", "train_seconds",
                "epochs_run", "loss", "negative_sampler", "embedding_dim", "history_length",
                f"popularity/recall@{k}", f"itemcf/recall@{k}", f"seed_protocol/recall@{k}"):
        assert key in metrics, key
    assert (metrics["protocol"], metrics["k"], metrics["exclude_seen"]) == ("time_split", k,
                                                                           True)
    assert metrics["loss"] == "bce" and metrics["history_length"] == 5
    # The defaults: asked at an unknown request time (moot: not a timed tower), the mean of 3
    # tie-shuffled passes (it has a history); an untimed export gets no other request times.
    assert (metrics["request_time"], metrics["tie_shuffles"]) == ("none", 3)
    assert not [key for key in metrics if key.startswith("request_time=")]
    for key in (f"recall@{k}", f"recall@{k}_user_mean", f"hit@{k}", f"ndcg@{k}"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 1 <= metrics["epochs_run"] <= 6 and metrics["train_seconds"] > 0
    test_ratings = [r for r in trained_run.data.ratings if r[3] >= synthetic.CUTOFF]
    assert metrics["n_test_items"] == len(test_ratings)

    ml = load_ml(trained_run.data.folder)
    split = make_split(ml, TIME_SPLIT)
    random = _random_recall(split, k)
    recall, popularity = metrics[f"recall@{k}"], metrics[f"popularity/recall@{k}"]
    assert recall > 3 * random, (recall, random)
    assert recall > popularity + 0.1, (recall, popularity)
    assert metrics[f"hit@{k}"] > metrics[f"popularity/hit@{k}"]
    assert metrics[f"ndcg@{k}"] > metrics[f"popularity/ndcg@{k}"]

    model_dir = trained_run.model_dir
    for name in ("user_tower/saved_model.pb", "item_tower/saved_model.pb", "metadata.json"):
        assert os.path.isfile(os.path.join(trained_run.export_dir, name)), name
    entries = os.listdir(model_dir)
    assert {"export", "logs", "metrics.json", "config.json"} <= set(entries)
    # No temporary leftovers; the lock file stays (the kernel's lock dies with the process).
    assert [e for e in entries if e.startswith(".")] == [".lock"], entries
    assert os.listdir(trained_run.export_root) == [str(metrics["export_version"])]
    backup = os.path.join(model_dir, "backup")
    assert not any(files for _, _, files in os.walk(backup))  # no checkpoint left to resume
    assert any(files for _, _, files in os.walk(os.path.join(model_dir, "logs")))
    assert f"recall@{k}" in trained_run.proc.stdout and "popularity" in trained_run.proc.stdout


# --- resuming an interrupted run ---------------------------------------------------------------

EPOCH_LINE = re.compile(r"^Epoch (\d+)/(\d+)$", re.M)
LOSS_LINE = re.compile(r"^\d+/\d+ - .*? - loss: ([\d.]+)", re.M)


def test_killed_run_resumes_from_backup(tmp_path):
    folder = synthetic.make_dataset(tmp_path / "data", n_users=150, n_movies=90, seed=1).folder
    model_dir = tmp_path / "model"
    args = [sys.executable, "-m", "dssm_tf.train", f"--data_dir={folder}",
            f"--model_dir={model_dir}", "--batch_size=8", "--embedding_dim=8",
            "--hidden_units=8", "--validation_share=0", "--k=10", "--verbose=false"]
    proc = subprocess.Popen(args + ["--epochs=40"], cwd=REPO_ROOT, env=command_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = model_dir / "backup" / "chief" / "checkpoint"  # written last, after the data
    deadline = time.monotonic() + 240
    try:
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        killed_output = proc.communicate()[0]
    assert marker.exists(), killed_output[-3000:]
    assert not (model_dir / "metrics.json").exists() and not (model_dir / "export").exists()
    epochs = [int(e) for e, _ in EPOCH_LINE.findall(killed_output)]
    assert epochs and max(epochs) < 40
    first_loss = float(LOSS_LINE.findall(killed_output)[0])

    # The backup is of this run only: another protocol, other data or other settings are
    # refused before TensorFlow starts (exit 2, one line saying what differs), and change
    # nothing in the model folder.
    other = synthetic.make_dataset(tmp_path / "other", n_users=150, n_movies=90, seed=2).folder
    before = sorted(p.name for p in model_dir.iterdir())
    for change, words in (("--protocol=leave_last_one_out",
                           "split.protocol 'time_split' -> 'leave_last_one_out'"),
                          (f"--data_dir={other}", "checksums.ratings.dat"),
                          ("--embedding_dim=16", "tower.embedding_dim 8 -> 16")):
        refused = subprocess.run(args + [change, "--epochs=4"], cwd=REPO_ROOT,
                                 env=command_env(tmp_path), capture_output=True, text=True,
                                 timeout=120)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-2000:]
        assert lines[0].startswith(f"error: --model_dir: {model_dir} holds a killed run")
        assert words in lines[0] and "--overwrite" in lines[0], lines[0]
        assert sorted(p.name for p in model_dir.iterdir()) == before

    resumed = subprocess.run(args + ["--epochs=4"], cwd=REPO_ROOT, env=command_env(tmp_path),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    started = [(int(e), int(n)) for e, n in EPOCH_LINE.findall(resumed.stdout)]
    assert started[0][0] >= 2 and started[-1] == (4, 4), started  # continued, not restarted
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert len(started) == 4 - started[0][0] + 1
    # epochs_run counts from the start of training, not from the resume.
    assert metrics["epochs_run"] == 4
    # Restored weights: the first resumed epoch already beats the killed run's first epoch.
    resumed_losses = LOSS_LINE.findall(resumed.stdout)
    assert float(resumed_losses[0]) < first_loss - 0.005
    assert not any(files for _, _, files in os.walk(model_dir / "backup"))

    # The resumed epochs are those of an uninterrupted run: same weights, optimizer state,
    # shuffles and negatives (the stream skips the steps already trained).
    whole = subprocess.run(
        [a.replace(str(model_dir), str(tmp_path / "whole")) for a in args] + ["--epochs=4"],
        cwd=REPO_ROOT, env=command_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert LOSS_LINE.findall(whole.stdout)[started[0][0] - 1:] == resumed_losses


# --- every loss scheme trains (in process) -----------------------------------------------------

@pytest.fixture(scope="module")
def small_split(synthetic_session):
    ml = load_ml(synthetic_session.folder)
    return ml, make_split(ml, TIME_SPLIT)


@pytest.fixture
def float32_after():
    yield
    import tf_keras  # noqa: PLC0415  (TensorFlow, after dssm_tf)
    tf_keras.mixed_precision.set_global_policy("float32")  # a mixed-precision run sets it


SCHEMES = {
    "bce": dict(loss="bce"),
    "triplet_frequency": dict(loss="triplet", negative_sampler="frequency",
                              frequent_min_count=3),
    "softmax_features": dict(loss="softmax", history_length=3, user_features=True,
                             item_features=True, early_stopping_metric="recall"),
    "inbatch_pure": dict(loss="inbatch", negative_sampler="inbatch", num_negatives=0,
                         temperature=0.2),
    "inbatch_mixed": dict(loss="inbatch", negative_sampler="uniform", num_negatives=4,
                          temperature=0.2, history_length=3, similarity="dot"),
    "bce_mixed_precision": dict(loss="bce", mixed_precision=True, history_length=3),
    "inbatch_mixed_precision": dict(loss="inbatch", negative_sampler="inbatch",
                                    num_negatives=0, temperature=0.2, mixed_precision=True),
}


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_each_loss_trains_without_nan(float32_after, small_split, tmp_path, scheme):
    from dssm_tf.training import trainer  # noqa: PLC0415  (TensorFlow)

    ml, split = small_split
    settings = dict(epochs=2, batch_size=32, embedding_dim=8, hidden_units=(8,),
                    feature_dim=4, learning_rate=0.01, verbose=False, seed=0)
    settings.update(SCHEMES[scheme])
    run = run_config(**settings)
    run.validate()
    result = trainer.fit(run, ml, split, str(tmp_path))
    model = result.model
    history = model.history.history
    assert result.epochs_run == 2 and result.seconds > 0
    by_recall = SCHEMES[scheme].get("early_stopping_metric") == "recall"
    # Early stopping on recall skips the validation loss's pass (trainer.fit).
    assert ("val_loss" in history) != by_recall
    assert all(math.isfinite(v) for v in history["loss"] + history.get("val_loss", []))
    assert history["loss"][1] < history["loss"][0], history["loss"]
    if by_recall:
        assert all(0.0 <= v <= 1.0 for v in history["val_recall@50"])
        for at50, at10, ndcg in zip(history["val_recall@50"], history["val_recall@10"],
                                    history["val_ndcg@10"]):
            assert at10 <= at50 and at10 / np.log2(11) <= ndcg <= at10
    if scheme == "bce":
        assert "auc" in history and "val_auc" in history
    embeddings = model.item_tower({"movie_id": ml.items.movie_id.to_numpy()[:5],
                                   "genres": ml.items.genres.to_numpy(str)[:5]}).numpy()
    assert np.all(np.isfinite(embeddings))
    assert embeddings.dtype == np.float32  # float32 out even when computing in float16
    policy = model.item_tower.head.mlp[0].compute_dtype
    assert policy == ("float16" if SCHEMES[scheme].get("mixed_precision") else "float32")
