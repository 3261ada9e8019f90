"""`python -m dssm_tf.synthetic` and `dssm_tf.data.synthetic`: exact sizes, the MovieLens-25M
layout, reproducible bytes, long tails, the planted clusters and walks, atomic writing, and
the `make run` fallback that uses it."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dssm_tf.config import DataConfig
from dssm_tf.data import synthetic
from dssm_tf.data.sources import load_dataset
from dssm_tf.errors import ConfigError
from tests.conftest import REPO_ROOT, command_env, run_command
from tests.synthetic import write_movielens

SMALL = synthetic.Spec(users=400, items=800, interactions=20_000, seed=0)   # 8 clusters


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The SMALL data set, written once (read-only)."""
    folder = str(tmp_path_factory.mktemp("small") / "data")
    summary = synthetic.write_dataset(folder, SMALL, command="test")
    return summary


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _load(folder):
    """load_dataset of the CSV layout, and the warnings it logged."""
    handler = _Records()
    logger = logging.getLogger("dssm_tf")
    logger.addHandler(handler)
    try:
        dataset = load_dataset(DataConfig(dataset="movielens-25m", data_dir=str(folder)))
    finally:
        logger.removeHandler(handler)
    return dataset, [r.getMessage() for r in handler.records]


def _read(folder, name):
    with open(os.path.join(folder, name), "rb") as f:
        return f.read()


# --- the data ---------------------------------------------------------------------------------

def test_layout_exact_sizes_and_loads_without_warnings(small):
    folder = small.folder
    assert sorted(os.listdir(folder)) == ["README.txt", "movies.csv", "ratings.csv"]
    assert _read(folder, "ratings.csv").startswith(b"userId,movieId,rating,timestamp\n")
    assert _read(folder, "movies.csv").startswith(b"movieId,title,genres\n")
    assert b'"Synthetic Film ' in _read(folder, "movies.csv")   # titles with commas quoted
    dataset, warnings = _load(folder)
    assert warnings == []
    assert (dataset.num_users, dataset.num_items, len(dataset.interactions)) == (
        SMALL.users, SMALL.items, SMALL.interactions)
    assert (small.users, small.items, small.interactions) == (400, 800, 20_000)
    readme = _read(folder, "README.txt").decode()
    assert readme.startswith(synthetic.MARKER) and "NOT MovieLens" in readme
    assert "Seed:     0" in readme and "Made by:  test" in readme


def test_no_duplicates_times_ratings_and_file_order(small):
    dataset, _ = _load(small.folder)
    frame = dataset.interactions
    assert not frame.duplicated(["user", "item"]).any()      # so no exact repeats either
    stamps = frame.timestamp.to_numpy()
    assert SMALL.start <= stamps.min() and stamps.max() <= SMALL.end <= time.time()
    assert stamps.max() - stamps.min() > 10 * 365 * 86400    # spread over years
    ratings = frame.rating.to_numpy()
    assert set(np.unique(ratings)) <= {r / 2 for r in range(1, 11)}
    assert {0.5, 1.0, 4.5, 5.0} <= set(np.unique(ratings))
    # Within a user, times are distinct (so "the last one" is well defined).
    assert not frame.duplicated(["user", "timestamp"]).any()
    # GroupLens' order: by user, then movie.
    keys = dataset.user_keys[frame.user] * 10**7 + dataset.item_keys[frame.item]
    assert (np.diff(keys) > 0).all()


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = synthetic.write_dataset(str(tmp_path / "again"), SMALL, command="test")
    for name in synthetic.FILES:
        assert _read(again.folder, name) == _read(small.folder, name), name
    other = synthetic.write_dataset(str(tmp_path / "other"),
                                    dataclasses.replace(SMALL, seed=1), command="test")
    assert _read(other.folder, "ratings.csv") != _read(small.folder, "ratings.csv")


def test_blocks_do_not_change_the_data(small, tmp_path, monkeypatch):
    """Streaming in small blocks writes a valid data set of the same shape (the block
    boundaries are part of the seed's stream, so bytes may differ from one block size to
    another, but never from one run to the next)."""
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 1000)
    summary = synthetic.write_dataset(str(tmp_path / "blocks"), SMALL)
    assert len(synthetic.user_blocks(synthetic.make_plan(SMALL).counts, 1000)) > 10
    dataset, warnings = _load(summary.folder)
    assert warnings == [] and len(dataset.interactions) == SMALL.interactions
    assert not dataset.interactions.duplicated(["user", "item"]).any()


def test_long_tailed_popularity_and_varied_activity(small):
    dataset, _ = _load(small.folder)
    counts = np.sort(np.bincount(dataset.interactions.item, minlength=dataset.num_items))[::-1]
    assert counts[:len(counts) // 10].sum() > 0.4 * counts.sum()
    assert abs(small.top10_share - counts[:len(counts) // 10].sum() / counts.sum()) < 1e-9
    activity = np.bincount(dataset.interactions.user)
    assert activity.min() >= 20
    assert activity.max() > 4 * np.median(activity)


def test_planted_clusters_and_genres(small):
    """A user's interactions concentrate in their home cluster far above chance, and a
    cluster's movies share its signature genre."""
    plan = synthetic.make_plan(SMALL)
    dataset, _ = _load(small.folder)
    frame = dataset.interactions
    clusters = plan.cluster_of(dataset.item_keys[frame.item])
    home = plan.home[dataset.user_keys[frame.user] - 1]
    in_home = np.bincount(frame.user, weights=clusters == home) / np.bincount(frame.user)
    chance = plan.sizes[plan.home[dataset.user_keys - 1]] / SMALL.items
    assert len(plan.sizes) == 8
    assert np.median(in_home) > 0.7 and np.median(in_home / chance) > 1.8
    items = dataset.items
    cluster_of_item = plan.cluster_of(items.movie_id.to_numpy())
    signature = np.array(synthetic.GENRES)[plan.signature[cluster_of_item, 0]]
    carries = np.array([s in g.split("|") for s, g in zip(signature, items.genres)])
    assert carries.mean() > 0.85
    for cluster in range(len(plan.sizes)):   # far above that genre's share elsewhere
        genre = synthetic.GENRES[plan.signature[cluster, 0]]
        elsewhere = np.array([genre in g.split("|") for g in
                              items.genres[cluster_of_item != cluster]]).mean()
        assert carries[cluster_of_item == cluster].mean() > elsewhere + 0.3


def test_planted_forward_walks(small):
    """In time order, a user's next item in a cluster lies after their previous one there, a
    few places on: much nearer than a random item of that cluster."""
    plan = synthetic.make_plan(SMALL)
    dataset, _ = _load(small.folder)
    frame = dataset.interactions.sort_values(["user", "timestamp"])
    movies = dataset.item_keys[frame.item.to_numpy()]
    cluster, place = plan.cluster_of(movies), plan.position_of(movies)
    users = frame.user.to_numpy()
    steps, spans = [], []
    for key in np.unique(users * 1000 + cluster):
        rows = np.flatnonzero(users * 1000 + cluster == key)
        if len(rows) > 1:
            steps.append(np.diff(place[rows]))
            spans.append(plan.sizes[cluster[rows[0]]])
    steps = np.concatenate(steps)
    assert (steps > 0).all()                   # forward, never the same item twice
    assert np.median(steps) <= 3 and np.median(steps) < np.median(spans) / 20


def test_user_blocks_cover_every_user_once():
    counts = np.array([5, 1, 7, 3, 3, 9, 1])
    blocks = synthetic.user_blocks(counts, rows=6)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    assert all(end > first for first, end in blocks)


def test_presets_have_the_real_shapes():
    assert dataclasses.astuple(synthetic.PRESETS["movielens-25m"])[:3] == (
        162_541, 59_047, 25_000_095)
    assert dataclasses.astuple(synthetic.PRESETS["movielens-1m-size"])[:3] == (
        6_040, 3_706, 1_000_209)
    for spec in synthetic.PRESETS.values():
        spec.validate()
        plan = synthetic.make_plan(spec)
        assert plan.counts.sum() == spec.interactions and plan.counts.min() >= 20
        assert plan.sizes.sum() == spec.items


@pytest.mark.parametrize("fields, parameter", [
    (dict(users=0), "users"), (dict(interactions=SMALL.users - 1), "interactions"),
    (dict(interactions=SMALL.users * SMALL.items + 1), "interactions"),
    (dict(clusters=SMALL.items + 1), "clusters")])
def test_impossible_sizes_name_their_parameter(fields, parameter):
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(SMALL, **fields).validate()
    assert caught.value.parameter == parameter


# --- writing: atomic, never over foreign files --------------------------------------------------

def test_failure_leaves_nothing_and_keeps_the_previous_data_set(tmp_path, monkeypatch):
    tiny = dataclasses.replace(SMALL, users=50, interactions=2_000)
    out = tmp_path / "out"
    real_write = synthetic._write_block
    calls = []

    def failing(f, arrays):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(f, arrays)

    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 300)
    monkeypatch.setattr(synthetic, "_write_block", failing)
    with pytest.raises(OSError):
        synthetic.write_dataset(str(out), tiny)
    assert os.listdir(tmp_path) == []                       # no half data set, no temp folder

    monkeypatch.setattr(synthetic, "_write_block", real_write)
    synthetic.write_dataset(str(out), tiny)
    before = {name: _read(out, name) for name in synthetic.FILES}
    calls.clear()
    monkeypatch.setattr(synthetic, "_write_block", failing)
    with pytest.raises(OSError):
        synthetic.write_dataset(str(out), dataclasses.replace(tiny, seed=5))
    assert {name: _read(out, name) for name in synthetic.FILES} == before
    assert os.listdir(tmp_path) == ["out"]


def test_cli_writes_replaces_and_refuses_foreign_out(tmp_path):
    out = tmp_path / "data"
    args = ("--users=40", "--items=30", "--interactions=900", "--seed=3", "--verbose=false")
    proc = run_command("synthetic", f"--out={out}", *args, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and len(proc.stdout.strip().splitlines()) == 1
    assert "900 ratings" in proc.stdout and "--dataset=movielens-25m" in proc.stdout
    readme = _read(out, "README.txt").decode()
    assert f"python -m dssm_tf.synthetic --out={out} --users=40" in readme
    first = _read(out, "ratings.csv")
    # A data set it wrote is replaced (here by the same bytes: same flags and seed).
    proc = run_command("synthetic", f"--out={out}", *args, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _read(out, "ratings.csv") == first
    assert sorted(os.listdir(tmp_path)) == ["data"]          # nothing left beside it

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    a_file = tmp_path / "file.csv"
    a_file.write_text("x\n")
    for bad, says in ((foreign, "holding other files"), (a_file, "is a file")):
        proc = run_command("synthetic", f"--out={bad}", *args, tmp_path=tmp_path)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --out: ") and says in lines[0]
    assert os.listdir(foreign) == ["notes.txt"] and a_file.read_text() == "x\n"
    proc = run_command("synthetic", f"--out={tmp_path / 'x'}", "--users=40", tmp_path=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --items: give --preset")


def test_killed_run_leaves_nothing_under_out(tmp_path):
    """SIGKILL mid-generation (the 25M preset, which cannot finish in time): `out` does not
    exist; the next run removes the dead run's temporary folder."""
    out = tmp_path / "big"
    proc = subprocess.Popen([sys.executable, "-m", "dssm_tf.synthetic", f"--out={out}",
                             "--preset=movielens-25m", "--verbose=false"], cwd=REPO_ROOT,
                            env=command_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not any(n.startswith(".big.partial-") for n in os.listdir(tmp_path)):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert [n for n in os.listdir(tmp_path) if n.startswith(".big.partial-")]
    done = run_command("synthetic", f"--out={out}", "--users=20", "--items=30",
                       "--interactions=400", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".big.")]
    assert sorted(os.listdir(out)) == sorted(synthetic.FILES)


# --- make run: the synthetic fallback, only when MovieLens-1M is missing -----------------------

def make_run(tmp_path, args: str, synthetic_size: str | None = None, **env):
    """`make run` (without re-installing) with HOME, the caches and the model folder in
    tmp_path; a CompletedProcess."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    command = ["make", "--no-print-directory", "-o", ".venv/.installed", "run",
               f"PY={sys.executable}", f"MODEL_DIR={tmp_path / 'runs' / 'bce'}", f"ARGS={args}"]
    if synthetic_size:
        command.append(f"SYNTHETIC_FLAGS={synthetic_size}")
    environment = command_env(tmp_path, **env)
    environment.pop("MAKEFLAGS", None)
    return subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True,
                          text=True, timeout=300)


def test_make_run_does_not_fall_back_when_real_data_fails(tmp_path):
    """ML-1M is there but broken: train's own error, no synthetic data, no banner."""
    folder = write_movielens(tmp_path / "default-data")     # command_env's DSSM_TF_DATA_DIR
    with open(os.path.join(folder, "ratings.dat"), "a", encoding="latin-1") as f:
        f.write("1::1::five::978300760\n")
    proc = make_run(tmp_path, "--download_url=file:///nonexistent")
    assert proc.returncode != 0
    assert "ratings.dat:10:" in proc.stderr and "make run:" not in proc.stderr
    assert "SYNTHETIC" not in proc.stdout
    assert not (tmp_path / "cache" / "synthetic-1m").exists()


def test_make_run_does_not_substitute_data_the_user_named(tmp_path):
    proc = make_run(tmp_path, f"--data_dir={tmp_path / 'nowhere'}")
    assert proc.returncode != 0
    assert "nowhere/ratings.dat: file not found" in proc.stderr
    assert "make run:" not in proc.stderr and "SYNTHETIC" not in proc.stdout
    assert not (tmp_path / "cache" / "synthetic-1m").exists()


@pytest.mark.slow
def test_make_run_offline_falls_back_to_synthetic_data(tmp_path):
    """No ML-1M and no network (a file:///nonexistent URL fails at once): one line says so,
    the same job runs on synthetic data (small here) and a banner labels the figures."""
    proc = make_run(tmp_path, "--download_url=file:///nonexistent --epochs=1 --batch_size=128 "
                              "--embedding_dim=8 --hidden_units=8 --k=10 --verbose=false",
                    synthetic_size="--users=150 --items=120 --interactions=6000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("make run:")]
    assert len(notes) == 1
    assert "file:///nonexistent" in notes[0] and str(tmp_path / "default-data") in notes[0]
    data = tmp_path / "cache" / "synthetic-1m"
    assert sorted(os.listdir(data)) == sorted(synthetic.FILES)
    table = proc.stdout[proc.stdout.index("movielens-25m, time_split"):]
    assert table.index("itemcf") < table.index("SYNTHETIC DATA")
    assert str(tmp_path / "default-data") in proc.stdout[proc.stdout.index("SYNTHETIC DATA"):]
    assert (tmp_path / "runs" / "bce-synthetic" / "metrics.json").is_file()
    assert not (tmp_path / "runs" / "bce").exists()
