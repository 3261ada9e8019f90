"""`dssm_tf.evaluate` on a fake contract-true export: brute-force numpy equality, errors, CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import fake_export  # imports dssm_tf (TF_USE_LEGACY_KERAS), then TensorFlow

from dssm_tf import data, evaluate, evaluation, protocols
from dssm_tf.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10
CONTRACT_KEYS = ("protocol", "k", "exclude_seen", f"recall@{K}", f"recall@{K}_user_mean",
                 f"hit@{K}", f"ndcg@{K}", "n_test_users", "n_test_items")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny ML-1M folder plus two fake exports: dot/L=5/time_split and cosine/L=0/LOO."""
    root = tmp_path_factory.mktemp("evaluate")
    ml = data.load_movielens(fake_export.write_tiny_movielens(root / "ml-1m"))
    dot = fake_export.build_fake_export(root / "dot", ml, dim=8, history_length=5,
                                        protocol=protocols.TIME_SPLIT, seed=1)
    cosine = fake_export.build_fake_export(root / "cosine", ml, dim=8, history_length=0,
                                           protocol=protocols.LEAVE_LAST_ONE_OUT,
                                           similarity="cosine", seed=2)
    return {"root": root, "ml": ml, "dot": (str(root / "dot"), dot),
            "cosine": (str(root / "cosine"), cosine)}


def brute_force(ml, split, model, history_length, k, exclude_seen):
    """Independent per-user evaluation: numpy embeddings, sort, count hits."""
    train, test = split.train, split.test
    candidates = np.unique(train.movie.to_numpy())
    movies = ml.movies.iloc[candidates]
    item_vectors = model.item_embeddings(movies.movie_id.to_numpy(), movies.genres.tolist())
    top, recall_hits, user_recalls, user_hits, ndcgs = {}, 0, [], [], []
    for user in np.unique(test.user.to_numpy()):
        row = ml.users.iloc[user]
        mine = train[train.user == user]  # chronological (ties by file order)
        raw = mine.movie_id.to_numpy()[-history_length:] if history_length else []
        history = np.zeros((1, history_length), np.int64)
        history[0, history_length - len(raw):] = raw
        u = model.user_embeddings([row.user_id], [row.gender], [row.age], [row.occupation],
                                  history)[0]
        scores = item_vectors @ u
        seen = set(mine.movie.tolist()) if exclude_seen else set()
        ranked = [int(candidates[j]) for j in np.argsort(-scores, kind="stable")
                  if candidates[j] not in seen][:k]
        top[user] = ranked + [-1] * (k - len(ranked))
        wanted = test[test.user == user].movie.tolist()
        hits = [ranked.index(m) for m in wanted if m in ranked]
        recall_hits += len(hits)
        user_recalls.append(len(hits) / len(wanted))
        user_hits.append(bool(hits))
        idcg = sum(1 / np.log2(i + 2) for i in range(min(len(wanted), k)))
        ndcgs.append(sum(1 / np.log2(r + 2) for r in hits) / idcg)
    metrics = {f"recall@{k}": recall_hits / len(test),
               f"recall@{k}_user_mean": float(np.mean(user_recalls)),
               f"hit@{k}": float(np.mean(user_hits)), f"ndcg@{k}": float(np.mean(ndcgs)),
               "n_test_users": len(top), "n_test_items": len(test)}
    return metrics, np.array([top[u] for u in sorted(top)])


@pytest.mark.parametrize("which", ["dot", "cosine"])
@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_evaluate_export_equals_brute_force(world, which, protocol, exclude_seen):
    ml = world["ml"]
    export_dir, model = world[which]
    split = protocols.make_split(ml, protocol)
    export = evaluate.load_export(export_dir)
    result, top = evaluate.evaluate_export(export, ml, split, K, exclude_seen, max_k=K + 5)
    expected, expected_top = brute_force(ml, split, model, export.history_length, K,
                                         exclude_seen)
    assert top.shape == (len(split.test_users), K + 5)
    np.testing.assert_array_equal(top[:, :K], expected_top)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
    assert result["protocol"] == protocol and result["exclude_seen"] is exclude_seen
    assert result["model"] == "two_tower" and result["export_dir"] == export_dir
    if exclude_seen:  # some users have seen far more than K movies, and some nearly all
        assert (split.seen[split.test_users].sum(axis=1) > K).sum() >= 2
    assert set(CONTRACT_KEYS) <= set(result)


def test_path_string_and_approximate_indexes(world):
    ml = world["ml"]
    split = protocols.make_split(ml, protocols.LEAVE_LAST_ONE_OUT)
    exact, top = evaluate.evaluate_export(world["dot"][0], ml, split, K, True)
    full = (top >= 0).sum(axis=1)
    for kind in ("ivf", "hnsw"):
        result, approx = evaluate.evaluate_export(world["dot"][0], ml, split, K, True, kind)
        assert result["index"] == kind
        np.testing.assert_array_equal((approx >= 0).sum(axis=1), full)  # never short lists
        if kind == "hnsw":
            overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(top, approx)])
            assert overlap > 0.9
    # IVF probing every list is exact.
    result, approx = evaluate.evaluate_export(world["dot"][0], ml, split, K, True, "ivf",
                                              index_params={"nlist": 3, "nprobe": 3})
    np.testing.assert_array_equal(approx, top)
    assert result[f"recall@{K}"] == exact[f"recall@{K}"]


def test_user_inputs_raw_right_aligned_history(world):
    ml = world["ml"]
    split = protocols.make_split(ml, protocols.TIME_SPLIT)
    users = split.test_users[:6]
    inputs = evaluate.user_inputs(ml, split, users, 4)
    assert inputs["history"].shape == (6, 4) and inputs["history"].dtype == np.int64
    for row, user in zip(inputs["history"], users):
        raw = split.train[split.train.user == user].movie_id.to_numpy()[-4:]
        np.testing.assert_array_equal(row[4 - len(raw):], raw)
        assert (row[:4 - len(raw)] == 0).all()
    np.testing.assert_array_equal(inputs["user_id"], ml.users.user_id.to_numpy()[users])
    assert set(inputs["gender"]) <= {"F", "M"}
    assert evaluate.user_inputs(ml, split, users, 0)["history"].shape == (6, 0)
    movies = evaluate.movie_inputs(ml, np.array([1, 0]))
    assert movies["genres"][0] == ml.movies.genres[1] and movies["movie_id"][1] == 3


def test_embed_functions_accept_loaded_savedmodels(world):
    import tensorflow as tf

    ml = world["ml"]
    export_dir, model = world["dot"]
    split = protocols.make_split(ml, protocols.TIME_SPLIT)
    item_tower = tf.saved_model.load(os.path.join(export_dir, "item_tower"))
    got = evaluate.embed_movies(item_tower, ml, np.arange(5), batch_size=2)
    np.testing.assert_allclose(got, model.item_embeddings(ml.movies.movie_id[:5],
                                                          ml.movies.genres[:5]), atol=1e-5)
    user_tower = tf.saved_model.load(os.path.join(export_dir, "user_tower"))
    users = split.test_users[:3]
    inputs = evaluate.user_inputs(ml, split, users, 5)
    got = evaluate.embed_users(user_tower, ml, split, users, 5)
    np.testing.assert_allclose(got, model.user_embeddings(
        inputs["user_id"], inputs["gender"], inputs["age"], inputs["occupation"],
        inputs["history"]), atol=1e-5)


def test_split_follows_metadata_and_warns_on_override(world):
    ml = world["ml"]
    export = evaluate.load_export(world["cosine"][0])
    warnings = []
    assert evaluate.split_for_export(ml, export, warn=warnings.append).protocol == \
        protocols.LEAVE_LAST_ONE_OUT
    assert not warnings
    split = evaluate.split_for_export(ml, export, protocols.TIME_SPLIT, warn=warnings.append)
    assert split.protocol == protocols.TIME_SPLIT and "leave_last_one_out" in warnings[0]


def _broken_copy(world, name, edit):
    target = world["root"] / name
    if not target.exists():
        shutil.copytree(world["dot"][0], target)
        edit(str(target))
    return str(target)


def _write_metadata(path, **changes):
    meta_path = os.path.join(path, "metadata.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta.update(changes)
    with open(meta_path, "w") as f:
        json.dump({k: v for k, v in meta.items() if v is not None}, f)


@pytest.mark.parametrize("name,edit,message", [
    ("no_meta", lambda p: os.remove(os.path.join(p, "metadata.json")), "metadata.json: file not"),
    ("bad_json", lambda p: open(os.path.join(p, "metadata.json"), "a").write("}"),
     r"metadata.json:\d+: invalid JSON"),
    ("no_field", lambda p: _write_metadata(p, history_length=None), "'history_length'"),
    ("bad_sim", lambda p: _write_metadata(p, similarity="l2"), "similarity"),
    ("no_user", lambda p: shutil.rmtree(os.path.join(p, "user_tower")), "user_tower: no Saved"),
])
def test_bad_exports_are_input_errors(world, name, edit, message):
    path = _broken_copy(world, name, edit)
    with pytest.raises(InputError, match=message):
        evaluate.load_export(path)
    with pytest.raises(InputError, match="export folder not found"):
        evaluate.load_export(str(world["root"] / "nowhere"))


def test_wrong_dimension_and_swapped_towers_are_input_errors(world):
    ml = world["ml"]
    split = protocols.make_split(ml, protocols.TIME_SPLIT)
    path = _broken_copy(world, "dim", lambda p: _write_metadata(p, embedding_dim=9))
    with pytest.raises(InputError, match="embedding_dim=9"):
        evaluate.evaluate_export(path, ml, split, K, True)

    def swap(p):
        os.rename(os.path.join(p, "user_tower"), os.path.join(p, "tmp"))
        os.rename(os.path.join(p, "item_tower"), os.path.join(p, "user_tower"))
        os.rename(os.path.join(p, "tmp"), os.path.join(p, "item_tower"))

    with pytest.raises(InputError, match="inputs are"):
        evaluate.load_export(_broken_copy(world, "swapped", swap))


def _run(module, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


def test_cli_evaluate(world):
    output = world["root"] / "out" / "metrics.json"
    proc = _run("dssm_tf.evaluate", f"--export_dir={world['cosine'][0]}",
                f"--data_dir={world['root'] / 'ml-1m'}", f"--k={K}", f"--output={output}")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert set(CONTRACT_KEYS) <= set(printed)
    assert printed["protocol"] == protocols.LEAVE_LAST_ONE_OUT  # from metadata.json
    with open(output) as f:
        assert json.load(f) == printed
    ml = world["ml"]
    expected, _ = evaluate.evaluate_export(world["cosine"][0], ml, protocols.make_split(
        ml, protocols.LEAVE_LAST_ONE_OUT), K, True)
    for key in CONTRACT_KEYS:
        assert printed[key] == pytest.approx(expected[key]), key


def test_cli_missing_export_dir_exits_2_with_one_line(world):
    missing = world["root"] / "nowhere"
    proc = _run("dssm_tf.evaluate", f"--export_dir={missing}",
                f"--data_dir={world['root'] / 'ml-1m'}")
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]


def test_cli_bad_index_parameter_exits_2(world):
    proc = _run("dssm_tf.evaluate", f"--export_dir={world['dot'][0]}",
                f"--data_dir={world['root'] / 'ml-1m'}", "--index=ivf", "--nlist=100000")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()  # checked before TensorFlow starts: one line
    assert len(lines) == 1 and lines[0].startswith("error: --nlist: expected 1.."), \
        proc.stderr


@pytest.mark.slow
def test_real_ml1m_matches_dense_scoring(tmp_path, real_ml):
    """Full ML-1M, dim-64 fake export: faiss lists give the metrics of dense numpy scoring."""
    ml = real_ml
    fake_export.build_fake_export(tmp_path / "export", ml, dim=64, history_length=20,
                                  protocol=protocols.LEAVE_LAST_ONE_OUT, similarity="cosine")
    export = evaluate.load_export(str(tmp_path / "export"))
    split = evaluate.split_for_export(ml, export)
    result, top = evaluate.evaluate_export(export, ml, split, 50, True)
    assert result["n_test_users"] == ml.num_users == 6040
    items = evaluate.embed_movies(export.item_tower, ml, np.arange(ml.num_movies))
    users = evaluate.embed_users(export.user_tower, ml, split, np.arange(ml.num_users), 20)
    dense = evaluation.evaluate_scorer(split, lambda batch: users[batch] @ items.T, 50, True)
    for key in ("recall@50", "recall@50_user_mean", "hit@50", "ndcg@50"):
        assert result[key] == pytest.approx(dense[key], abs=2 / result["n_test_items"]), key
