"""Shared fixtures: hand-made and synthetic ML-1M folders, and the real data when available.

Real-data tests take `real_data_dir` (or `real_ml`), which skips unless `DSSM_TF_DATA_DIR`
points at a folder holding the GroupLens ML-1M files.
"""

from __future__ import annotations

import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:  # `from tests.synthetic import ...` under any import mode
    sys.path.insert(0, REPO_ROOT)

from dssm_tf import data  # noqa: E402
from tests import synthetic  # noqa: E402


@pytest.fixture
def tiny_data_dir(tmp_path) -> str:
    """A folder with the hand-made TINY_* data set of tests/synthetic.py."""
    return synthetic.write_movielens(tmp_path / "tiny")


@pytest.fixture
def tiny_ml(tiny_data_dir) -> data.MovieLens:
    return data.load_movielens(tiny_data_dir)


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
def real_data_dir() -> str:
    """`$DSSM_TF_DATA_DIR` holding the real ML-1M files; skips the test when it is unset."""
    folder = os.environ.get(data.DATA_DIR_ENV)
    if not folder:
        pytest.skip("DSSM_TF_DATA_DIR is not set: real ML-1M tests skipped")
    missing = [n for n in data.FILES if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        pytest.fail(f"DSSM_TF_DATA_DIR={folder} lacks {', '.join(missing)}")
    return folder


@pytest.fixture(scope="session")
def real_ml(real_data_dir) -> data.MovieLens:
    """The real ML-1M, parsed once per session."""
    return data.load_movielens(real_data_dir)
