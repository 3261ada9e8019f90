"""`python -m dssm_tf.recommend`: one user's top K from a fake export, seen items excluded,
shown with titles and decoded feature values."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests import fake_export  # imports dssm_tf (TF_USE_LEGACY_KERAS), then TensorFlow

from dssm_tf.cli import recommend
from dssm_tf.config import LEAVE_LAST_ONE_OUT
from dssm_tf.serving import contract, loaded
from tests.conftest import load_ml, make_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("recommend")
    data_dir = fake_export.write_tiny_movielens(root / "ml-1m")
    ml = load_ml(data_dir)
    model = fake_export.build_fake_export(root / "export", ml, dim=8, history_length=3,
                                          protocol=LEAVE_LAST_ONE_OUT, seed=3)
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    return {"root": root, "data_dir": data_dir, "export_dir": str(root / "export"), "ml": ml,
            "model": model, "split": split}


def expected_top(world, user, k, split=None):
    """Brute force: numpy embeddings, candidates minus the user's training movies (histories
    from `split`, default the source-order split)."""
    ml, model = world["ml"], world["model"]
    split = world["split"] if split is None else split
    inputs = contract.user_inputs(ml, split, np.array([user]), 3)
    u = model.user_embeddings(inputs["user_id"], inputs["gender"], inputs["age"],
                              inputs["occupation"], inputs["history"])[0]
    seen = set(split.train[split.train.user == user].item.tolist())
    candidates = [m for m in np.unique(split.train.item.to_numpy()) if m not in seen]
    rows = ml.items.iloc[candidates]
    scores = model.item_embeddings(rows.movie_id.to_numpy(), rows.genres.tolist()) @ u
    order = np.argsort(-scores, kind="stable")[:k]
    return np.array(candidates)[order], scores[order]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "dssm_tf.recommend", *args],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)


def test_recommend_function_matches_brute_force(world):
    export = loaded.load_export(world["export_dir"])
    for user, k in ((5, 10), (0, 10)):  # user 0 has seen all but 3 candidates
        movies, scores = recommend.recommend(export, world["ml"], world["split"], user, k)
        want, want_scores = expected_top(world, user, k)
        np.testing.assert_array_equal(movies, want)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    assert len(movies) == 3


def test_cli_prints_k_unseen_titles(world):
    ml, split = world["ml"], world["split"]
    user = 5  # raw id 17
    raw_id = int(ml.users.user_id[user])
    proc = _run(f"--export_dir={world['export_dir']}", f"--data_dir={world['data_dir']}",
                f"--user_id={raw_id}", "--k=4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    person = ml.users.iloc[user]
    age = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55",
           56: "56+"}[person.age]
    assert lines[0].startswith(f"Top 4 for user {raw_id} (gender {person.gender}, age {age}, "
                               f"occupation ")  # ML-1M's codes, decoded
    header, rows = lines[1], lines[2:]
    assert header.split() == ["rank", "score", "movie_id", "title", "genres"]
    assert len(rows) == 4
    title_column = header.index("title")
    printed_ids = []
    for rank, row in enumerate(rows, start=1):
        fields = row.split()
        assert fields[0] == str(rank)
        printed_ids.append(int(fields[2]))
        movie = ml.items.iloc[ml.item_index([int(fields[2])])[0]]
        assert row[title_column:].startswith(movie.title)  # columns are aligned
        assert row.endswith(movie.genres)
    seen_ids = set(ml.item_keys[split.train[split.train.user == user].item].tolist())
    assert not seen_ids & set(printed_ids)
    # The export has a history: same-second items in the order of tie shuffle seed 0, as
    # evaluation's first pass (--tie_shuffles defaults to 3).
    want, _ = expected_top(world, user, 4, split.with_shuffled_ties(0))
    assert printed_ids == ml.items.movie_id.to_numpy()[want].tolist()


def test_cli_tie_shuffles_zero_keeps_the_source_order(world):
    """A user whose last 3 items are in another order after tie shuffle 0: the list follows
    the source order with --tie_shuffles=0, seed 0's otherwise."""
    ml, split = world["ml"], world["split"]
    shuffled = split.with_shuffled_ties(0)
    users = split.test_users
    differ = np.flatnonzero((split.histories(users, 3) != shuffled.histories(users, 3))
                            .any(axis=1))
    found = [user for user in users[differ] if not np.array_equal(
        expected_top(world, user, 4)[0], expected_top(world, user, 4, shuffled)[0])]
    assert found, "no user whose list depends on the order of their ties"
    user = found[0]
    raw_id = int(ml.users.user_id[user])
    for shuffles, chosen in (("0", split), ("1", shuffled)):
        proc = _run(f"--export_dir={world['export_dir']}", f"--data_dir={world['data_dir']}",
                    f"--user_id={raw_id}", "--k=4", f"--tie_shuffles={shuffles}")
        assert proc.returncode == 0, proc.stderr
        printed = [int(row.split()[2]) for row in proc.stdout.strip().splitlines()[2:]]
        want, _ = expected_top(world, user, 4, chosen)
        assert printed == ml.items.movie_id.to_numpy()[want].tolist(), shuffles


@pytest.mark.parametrize("args,message", [
    (["--user_id=4"], "--user_id: 4: no such user"),  # raw ids are 3i + 2
    (["--user_id=x"], "--user_id: x: no such user"),
    ([], "--user_id: required"),
])
def test_cli_bad_user_exits_2_with_one_line(world, args, message):
    proc = _run(f"--export_dir={world['export_dir']}", f"--data_dir={world['data_dir']}", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {lines[0][7:]}" and message in lines[0]


def test_format_table_aligns_columns(world):
    ml = world["ml"]
    table = recommend.format_table(ml, np.array([1, 12]), np.array([0.5, -0.25]))
    header, first, second = table.splitlines()
    assert first.index("Café") == second.index("Movie") == header.index("title")
    assert first.split()[:2] == ["1", "0.5000"] and second.split()[:2] == ["2", "-0.2500"]
    assert first.index("0.5000") + 6 == second.index("-0.2500") + 7  # right-aligned
