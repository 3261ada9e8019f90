"""Shared fixtures: hand-made and synthetic ML-1M folders, and the real data when available.

Real-data tests take `real_data_dir` (or `real_ml`), which skips unless `DSSM_TF_DATA_DIR`
points at a folder holding the GroupLens ML-1M files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `from tests.synthetic import ...` under any import mode
    sys.path.insert(0, REPO_ROOT)

from dssm_tf.config import DataConfig, SplitConfig  # noqa: E402
from dssm_tf.data import splits  # noqa: E402
from dssm_tf.data.dataset import Dataset  # noqa: E402
from dssm_tf.data.sources import load_dataset, movielens  # noqa: E402
from tests import synthetic  # noqa: E402


def load_ml(folder) -> Dataset:
    """The MovieLens-1M-format data set in `folder`."""
    return load_dataset(DataConfig(data_dir=os.fspath(folder)))


def run_config(**fields):
    """A RunConfig whose parts take the given fields by name (as the flags would)."""
    import dataclasses as dc  # noqa: PLC0415

    from dssm_tf.config import RunConfig  # noqa: PLC0415

    parts = {}
    for part in dc.fields(RunConfig):
        cls = part.type if isinstance(part.type, type) else type(part.default)
        names = {f.name for f in dc.fields(cls)}
        parts[part.name] = dc.replace(part.default, **{k: v for k, v in fields.items()
                                                       if k in names})
    unknown = set(fields) - {f.name for p in parts.values() for f in dc.fields(p)}
    assert not unknown, unknown
    return RunConfig(**parts)


def make_split(dataset: Dataset, protocol: str, cutoff: int | None = None) -> splits.Split:
    """`splits.make_split` of `protocol` (and `cutoff`)."""
    return splits.make_split(dataset, SplitConfig(protocol=protocol, cutoff=cutoff))


@pytest.fixture
def tiny_data_dir(tmp_path) -> str:
    """A folder with the hand-made TINY_* data set of tests/synthetic.py."""
    return synthetic.write_movielens(tmp_path / "tiny")


@pytest.fixture
def tiny_ml(tiny_data_dir) -> Dataset:
    return load_ml(tiny_data_dir)


@pytest.fixture
def synthetic_data(tmp_path) -> synthetic.Synthetic:
    """A fresh structured random data set (60 users, 90 movies, 3 groups) in tmp_path."""
    return synthetic.make_dataset(tmp_path / "synthetic", n_users=60, n_movies=90, seed=0)


@pytest.fixture
def synthetic_data_dir(synthetic_data) -> str:
    return synthetic_data.folder


@pytest.fixture(scope="session")
def synthetic_session(tmp_path_factory) -> synthetic.Synthetic:
    """Like `synthetic_data`, built once per session: treat it as read-only."""
    return synthetic.make_dataset(tmp_path_factory.mktemp("synthetic"), n_users=60,
                                  n_movies=90, seed=0)


@pytest.fixture(scope="session")
def synthetic_ml(synthetic_session) -> Dataset:
    """The session's synthetic data set, parsed (read-only)."""
    return load_ml(synthetic_session.folder)


def tiny_towers(ml: Dataset, seed: int = 0, **overrides):
    """Small user/item towers with every feature on, for tower and export tests."""
    import tf_keras  # noqa: PLC0415  (TensorFlow, after dssm_tf)

    from dssm_tf.config import TowerConfig  # noqa: PLC0415
    from dssm_tf.models.towers import build_towers  # noqa: PLC0415

    tf_keras.utils.set_random_seed(seed)
    config = dict(embedding_dim=8, hidden_units=(16, 6), feature_dim=4, history_length=5,
                  user_features=True, item_features=True)
    config.update(overrides)
    return build_towers(TowerConfig(**config), ml)


@pytest.fixture(scope="session")
def real_data_dir() -> str:
    """`$DSSM_TF_DATA_DIR` holding the real ML-1M files; skips the test when it is unset."""
    folder = os.environ.get(movielens.DATA_DIR_ENV)
    if not folder:
        pytest.skip("DSSM_TF_DATA_DIR is not set: real ML-1M tests skipped")
    missing = [n for n in movielens.ML1M_FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        pytest.fail(f"DSSM_TF_DATA_DIR={folder} lacks {', '.join(missing)}")
    return folder


@pytest.fixture(scope="session")
def real_ml(real_data_dir) -> Dataset:
    """The real ML-1M, parsed once per session."""
    return load_ml(real_data_dir)


# --- Subprocess runs of the commands, and one trained model shared by the training tests ------

def command_env(tmp_path, **extra) -> dict:
    """Environment for `python -m dssm_tf.<command>`: repo on PYTHONPATH, unbuffered output,
    and an offline-safe HOME / default data folder inside `tmp_path`."""
    return dict(os.environ, PYTHONPATH=REPO_ROOT, PYTHONUNBUFFERED="1",
                HOME=str(tmp_path / "home"), DSSM_TF_DATA_DIR=str(tmp_path / "default-data"),
                DSSM_TF_CACHE=str(tmp_path / "cache"), **extra)


def run_module(module: str, *args: str, tmp_path, timeout: float = 600, cwd: str = REPO_ROOT,
               pythonpath: str = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python -m <module> args...` from `cwd`, in `command_env(tmp_path)` with `pythonpath`
    (the measurement harness `benchmarks.*`, or a command of a copied package)."""
    env = dict(command_env(tmp_path), PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_command(command: str, *args: str, tmp_path, timeout: float = 300):
    """Run `python -m dssm_tf.<command> args...` from the repo root; a CompletedProcess."""
    return run_module(f"dssm_tf.{command}", *args, tmp_path=tmp_path, timeout=timeout)


# A small structured data set a tiny two-tower model learns in seconds (see trained_run).
TRAIN_DATA = dict(n_users=200, n_movies=120, seed=0)
TRAIN_K = 10
TRAIN_ARGS = ("--loss=bce", "--epochs=6", "--batch_size=64", "--embedding_dim=16",
              "--hidden_units=16", "--feature_dim=4", "--history_length=5", "--user_features",
              "--item_features", f"--k={TRAIN_K}", "--seed=0", "--verbose=false")


@dataclasses.dataclass
class TrainedRun:
    """What `python -m dssm_tf.train` left behind (read-only for tests)."""

    data: synthetic.Synthetic
    model_dir: str
    proc: subprocess.CompletedProcess
    metrics: dict

    @property
    def export_root(self) -> str:
        return os.path.join(self.model_dir, "export")

    @property
    def export_dir(self) -> str:
        """The export version the run wrote (export/<version>)."""
        return self.metrics["export_dir"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One end-to-end `train` run (subprocess, ~20 s) on planted-structure synthetic data,
    with history and user/item features, k=TRAIN_K. Shared by test_train and test_export."""
    root = tmp_path_factory.mktemp("trained")
    synth = synthetic.make_dataset(root / "data", **TRAIN_DATA)
    model_dir = str(root / "model")
    proc = run_command("train", f"--data_dir={synth.folder}", f"--model_dir={model_dir}",
                       *TRAIN_ARGS, tmp_path=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(model_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return TrainedRun(data=synth, model_dir=model_dir, proc=proc, metrics=metrics)
