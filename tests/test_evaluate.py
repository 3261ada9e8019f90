"""Evaluating an export (`dssm_tf.serving.loaded`, `dssm_tf.evaluation.exports`, the `evaluate`
command) on a fake contract-true export: brute-force numpy equality, errors, CLI."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import fake_export  # imports dssm_tf (TF_USE_LEGACY_KERAS), then TensorFlow

from dssm_tf.config import LEAVE_LAST_ONE_OUT, PROTOCOLS, TIME_SPLIT, IndexConfig
from dssm_tf.errors import InputError
from dssm_tf.evaluation import scoring
from dssm_tf.evaluation.exports import evaluate_export, split_for_export
from dssm_tf.serving import contract, loaded
from tests.conftest import load_ml, make_split

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 10
CONTRACT_KEYS = ("protocol", "k", "exclude_seen", f"recall@{K}", f"recall@{K}_user_mean",
                 f"hit@{K}", f"ndcg@{K}", "n_test_users", "n_test_items")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny ML-1M folder plus two fake exports: dot/L=5/time_split and cosine/L=0/LOO."""
    root = tmp_path_factory.mktemp("evaluate")
    ml = load_ml(fake_export.write_tiny_movielens(root / "ml-1m"))
    dot = fake_export.build_fake_export(root / "dot", ml, dim=8, history_length=5,
                                        protocol=TIME_SPLIT, seed=1)
    cosine = fake_export.build_fake_export(root / "cosine", ml, dim=8, history_length=0,
                                           protocol=LEAVE_LAST_ONE_OUT,
                                           similarity="cosine", seed=2)
    return {"root": root, "ml": ml, "dot": (str(root / "dot"), dot),
            "cosine": (str(root / "cosine"), cosine)}


def brute_force(ml, split, model, history_length, k, exclude_seen):
    """Independent per-user evaluation: numpy embeddings, sort, count hits."""
    train, test = split.train, split.test
    candidates = np.unique(train.item.to_numpy())
    movies = ml.items.iloc[candidates]
    item_vectors = model.item_embeddings(movies.movie_id.to_numpy(), movies.genres.tolist())
    top, recall_hits, user_recalls, user_hits, ndcgs = {}, 0, [], [], []
    for user in np.unique(test.user.to_numpy()):
        row = ml.users.iloc[user]
        mine = train[train.user == user]  # chronological (ties by file order)
        raw = ml.item_keys[mine.item.to_numpy()][-history_length:] if history_length else []
        history = np.zeros((1, history_length), np.int64)
        history[0, history_length - len(raw):] = raw
        u = model.user_embeddings([row.user_id], [row.gender], [row.age], [row.occupation],
                                  history)[0]
        scores = item_vectors @ u
        seen = set(mine.item.tolist()) if exclude_seen else set()
        ranked = [int(candidates[j]) for j in np.argsort(-scores, kind="stable")
                  if candidates[j] not in seen][:k]
        top[user] = ranked + [-1] * (k - len(ranked))
        wanted = test[test.user == user].item.tolist()
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
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("exclude_seen", [True, False])
def test_evaluate_export_equals_brute_force(world, which, protocol, exclude_seen):
    ml = world["ml"]
    export_dir, model = world[which]
    split = make_split(ml, protocol)
    export = loaded.load_export(export_dir)
    result, top = evaluate_export(export, ml, split, K, exclude_seen, max_k=K + 5)
    expected, expected_top = brute_force(ml, split, model, export.history_length, K,
                                         exclude_seen)
    assert top.shape == (len(split.test_users), 50)  # deep enough for hit@50 as well
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
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    exact, top = evaluate_export(world["dot"][0], ml, split, K, True)
    full = (top >= 0).sum(axis=1)
    for kind in ("ivf", "hnsw"):
        result, approx = evaluate_export(world["dot"][0], ml, split, K, True,
                                         IndexConfig(index=kind))
        assert result["index"] == kind
        np.testing.assert_array_equal((approx >= 0).sum(axis=1), full)  # never short lists
        if kind == "hnsw":
            overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(top, approx)])
            assert overlap > 0.9
    # IVF probing every list is exact.
    result, approx = evaluate_export(world["dot"][0], ml, split, K, True,
                                     IndexConfig(index="ivf", nlist=3, nprobe=3))
    np.testing.assert_array_equal(approx, top)
    assert result[f"recall@{K}"] == exact[f"recall@{K}"]


def test_user_inputs_raw_right_aligned_history(world):
    ml = world["ml"]
    split = make_split(ml, TIME_SPLIT)
    users = split.test_users[:6]
    inputs = contract.user_inputs(ml, split, users, 4)
    assert inputs["history"].shape == (6, 4) and inputs["history"].dtype == np.int64
    for row, user in zip(inputs["history"], users):
        raw = ml.item_keys[split.train[split.train.user == user].item.to_numpy()][-4:]
        np.testing.assert_array_equal(row[4 - len(raw):], raw)
        assert (row[:4 - len(raw)] == 0).all()
    np.testing.assert_array_equal(inputs["user_id"], ml.users.user_id.to_numpy()[users])
    assert set(inputs["gender"]) <= {"F", "M"}
    assert contract.user_inputs(ml, split, users, 0)["history"].shape == (6, 0)
    movies = contract.item_inputs(ml, np.array([1, 0]))
    assert movies["genres"][0] == ml.items.genres[1] and movies["movie_id"][1] == 3
    assert list(movies) == ["movie_id", "genres"]
    assert list(inputs) == ["user_id", "gender", "age", "occupation", "history"]


def test_embed_functions_accept_loaded_savedmodels(world):
    import tensorflow as tf

    ml = world["ml"]
    export_dir, model = world["dot"]
    split = make_split(ml, TIME_SPLIT)
    item_tower = tf.saved_model.load(os.path.join(export_dir, "item_tower"))
    got = loaded.embed_items(item_tower, ml, np.arange(5), batch_size=2)
    np.testing.assert_allclose(got, model.item_embeddings(ml.items.movie_id[:5],
                                                          ml.items.genres[:5]), atol=1e-5)
    user_tower = tf.saved_model.load(os.path.join(export_dir, "user_tower"))
    users = split.test_users[:3]
    inputs = contract.user_inputs(ml, split, users, 5)
    got = loaded.embed_users(user_tower, ml, split, users, 5)
    np.testing.assert_allclose(got, model.user_embeddings(
        inputs["user_id"], inputs["gender"], inputs["age"], inputs["occupation"],
        inputs["history"]), atol=1e-5)


def test_split_follows_metadata_and_warns_on_override(world, caplog):
    ml = world["ml"]
    metadata = loaded.load_export(world["cosine"][0]).metadata
    assert split_for_export(ml, metadata).protocol == LEAVE_LAST_ONE_OUT
    assert not caplog.records
    split = split_for_export(ml, metadata, TIME_SPLIT)
    assert split.protocol == TIME_SPLIT
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "leave_last_one_out" in caplog.records[0].getMessage()


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
        loaded.load_export(path)
    with pytest.raises(InputError, match="export folder not found"):
        loaded.load_export(str(world["root"] / "nowhere"))


def test_wrong_dimension_and_swapped_towers_are_input_errors(world):
    ml = world["ml"]
    split = make_split(ml, TIME_SPLIT)
    path = _broken_copy(world, "dim", lambda p: _write_metadata(p, embedding_dim=9))
    with pytest.raises(InputError, match="embedding_dim=9"):
        evaluate_export(path, ml, split, K, True)

    def swap(p):
        os.rename(os.path.join(p, "user_tower"), os.path.join(p, "tmp"))
        os.rename(os.path.join(p, "item_tower"), os.path.join(p, "user_tower"))
        os.rename(os.path.join(p, "tmp"), os.path.join(p, "item_tower"))

    with pytest.raises(InputError, match="inputs are"):
        loaded.load_export(_broken_copy(world, "swapped", swap))


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
    assert printed["protocol"] == LEAVE_LAST_ONE_OUT  # from metadata.json
    with open(output) as f:
        assert json.load(f) == printed
    ml = world["ml"]
    expected, _ = evaluate_export(world["cosine"][0], ml, make_split(ml, LEAVE_LAST_ONE_OUT),
                                  K, True)
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
                                  protocol=LEAVE_LAST_ONE_OUT, similarity="cosine")
    export = loaded.load_export(str(tmp_path / "export"))
    split = split_for_export(ml, export.metadata)
    result, top = evaluate_export(export, ml, split, 50, True)
    assert result["n_test_users"] == ml.num_users == 6040
    items = loaded.embed_items(export.item_tower, ml, np.arange(ml.num_items))
    users = loaded.embed_users(export.user_tower, ml, split, np.arange(ml.num_users), 20)
    dense = scoring.evaluate_scorer(split, lambda batch: users[batch] @ items.T, 50, True)
    for key in ("recall@50", "recall@50_user_mean", "hit@50", "ndcg@50"):
        assert result[key] == pytest.approx(dense[key], abs=2 / result["n_test_items"]), key


def test_cli_finds_the_data_metadata_records_and_warns_when_it_is_gone(world, tmp_path):
    """No data flag: the data folder comes from metadata.json; when that folder is gone, the
    release's default folder is read, with one warning; a gone tabular file is an error."""
    ml_dir = str(world["root"] / "ml-1m")
    export_dir = str(tmp_path / "export")
    for name, data_dir in (("here", ml_dir), ("gone", str(tmp_path / "moved-away"))):
        shutil.rmtree(export_dir, ignore_errors=True)
        shutil.copytree(world["cosine"][0], export_dir)
        _write_metadata(export_dir, config={"data": {"dataset": "movielens-1m",
                                                     "data_dir": data_dir}})
        env = dict(os.environ, PYTHONPATH=REPO, DSSM_TF_DATA_DIR=ml_dir)  # the default folder
        proc = subprocess.run([sys.executable, "-m", "dssm_tf.evaluate",
                               f"--export_dir={export_dir}", f"--k={K}"], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["n_test_users"] == len(
            make_split(world["ml"], LEAVE_LAST_ONE_OUT).test_users)
        warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: ")]
        if name == "here":
            assert not warnings, proc.stderr
        else:
            assert len(warnings) == 1 and data_dir in warnings[0] and "gone" in warnings[0]
    _write_metadata(export_dir, config={"data": {"dataset": "tabular",
                                                 "interactions": "/nowhere/events.csv"}})
    proc = _run("dssm_tf.evaluate", f"--export_dir={export_dir}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: /nowhere/events.csv: file not found") \
        and "--interactions" in lines[0]


def test_batches_and_chunks_do_not_change_the_lists(world, monkeypatch):
    """Inputs built a batch at a time (odd sizes), search chunks of a few users: the same
    lists and metrics as one batch."""
    from dssm_tf.retrieval import index as retrieval

    ml = world["ml"]
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    export = loaded.load_export(world["dot"][0])
    want, want_top = evaluate_export(export, ml, split, K, True)
    monkeypatch.setattr(retrieval, "_CHUNK_ROWS", 3)
    monkeypatch.setattr(retrieval, "_CHUNK_CELLS", 40)
    got, top = evaluate_export(export, ml, split, K, True, batch_size=3)
    np.testing.assert_array_equal(top, want_top)
    for key in CONTRACT_KEYS:
        assert got[key] == want[key], key
    users = split.test_users
    np.testing.assert_allclose(
        loaded.embed_users(export.user_tower, ml, split, users, 5, batch_size=4),
        loaded.embed_users(export.user_tower, ml, split, users, 5), atol=1e-6)
    assert loaded.embed_items(export.item_tower, ml, np.zeros(0, np.int64), dim=8).shape == (0, 8)


def test_seen_rows_of_all_users_are_not_copied(world):
    ml = world["ml"]
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    assert loaded.seen_of(split, np.arange(split.num_users)) is split.seen
    some = np.array([2, 0])
    np.testing.assert_array_equal(loaded.seen_of(split, some).toarray(),
                                  split.seen.toarray()[some])


class _Terminal:
    """A stderr that says it is a terminal and keeps what is written."""

    def __init__(self):
        self.text = []

    def isatty(self):
        return True

    def write(self, text):
        self.text.append(text)

    def flush(self):
        pass


def test_progress_bars_on_a_terminal_only(world, monkeypatch, capsys):
    from dssm_tf import progress

    ml = world["ml"]
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    export = loaded.load_export(world["dot"][0])
    monkeypatch.setattr(progress, "_enabled", True)
    evaluate_export(export, ml, split, K, True)
    assert capsys.readouterr().err == ""          # not a terminal: no bar characters
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate_export(export, ml, split, K, True)
    shown = "".join(terminal.text)
    for what in ("embedding items", "embedding users", "searching"):
        assert what in shown, shown


def test_loading_bars_on_a_terminal_only(world, monkeypatch, capsys, tmp_path):
    from dssm_tf import progress
    from dssm_tf.config import DataConfig
    from dssm_tf.data.sources import load_dataset

    monkeypatch.setattr(progress, "_enabled", True)
    events = tmp_path / "events.csv"
    events.write_text("user,item,time\nu1,i1,10\nu1,i2,20\nu2,i1,30\n")
    tabular = DataConfig(dataset="tabular", interactions=str(events), user_column="user",
                         item_column="item", time_column="time")
    movielens = DataConfig(data_dir=str(world["root"] / "ml-1m"))
    quiet = [load_dataset(config) for config in (movielens, tabular)]
    assert capsys.readouterr().err == ""
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = [load_dataset(config) for config in (movielens, tabular)]
    text = "".join(terminal.text)
    assert "loading movielens-1m" in text and "loading tabular" in text, text
    for before, after in zip(quiet, shown):   # the same data either way
        assert before.interactions.equals(after.interactions)


# --- request times and same-second ties --------------------------------------------------------

class _OrderedExport:
    """A python-function `loaded.Export` whose user embedding depends on the history's order
    (position-weighted item vectors); `timed`: it also takes the times and records the
    request times it was fed."""

    def __init__(self, ml, history_length=5, timed=False, dim=8):
        rng = np.random.default_rng(7)
        self.ml, self.timed, self.dim = ml, timed, dim
        self.vectors = rng.standard_normal((ml.num_items + 1, dim)).astype(np.float32)
        self.fed = []
        inputs = {"user_id": ("int64", 1), "history": ("int64", 2)}
        if timed:
            inputs |= {"history_timestamps": ("int64", 2), "request_time": ("int64", 1)}
        metadata = {"similarity": "dot", "embedding_dim": dim,
                    "history_length": history_length,
                    "signatures": {"user_tower": {"inputs": [
                        {"name": n, "dtype": d, "rank": r} for n, (d, r) in inputs.items()]},
                        "item_tower": {"inputs": [{"name": "movie_id", "dtype": "int64",
                                                   "rank": 1}]}}}
        self.export = loaded.Export("fake-ordered", self.user_tower, self.item_tower, metadata)

    def _rows(self, keys):
        keys = np.asarray(keys)
        rows = np.zeros(keys.shape, np.int64)
        known = keys != 0
        rows[known] = self.ml.item_index(keys[known]) + 1
        return rows

    def item_tower(self, movie_id, **_):
        return {"embedding": self.vectors[self._rows(movie_id.numpy())]}

    def user_tower(self, user_id, history, **timed):
        if self.timed:
            self.fed.append({name: value.numpy() for name, value in timed.items()})
        history = history.numpy()
        weights = np.arange(1, history.shape[1] + 1, dtype=np.float32) ** 2
        return {"embedding": np.einsum("nl,nld->nd", np.broadcast_to(
            weights, history.shape), self.vectors[self._rows(history)])}


@pytest.mark.parametrize("mode", ["none", "last", "next"])
def test_each_request_time_mode_is_fed_to_a_timed_export(world, mode):
    ml = world["ml"]
    split = make_split(ml, TIME_SPLIT)
    fake = _OrderedExport(ml, timed=True)
    result, _ = evaluate_export(fake.export, ml, split, K, True, request_time=mode,
                                batch_size=7)
    assert result["request_time"] == mode and result["tie_shuffles"] == 0
    fed = np.concatenate([call["request_time"] for call in fake.fed])
    stamps = np.concatenate([call["history_timestamps"] for call in fake.fed])
    users = split.test_users
    assert len(fed) == len(users)
    np.testing.assert_array_equal(stamps, split.history_timestamps(users, 5))
    if mode == "none":  # nothing depends on the held-out interaction: "unknown"
        assert (fed == -1).all()
    elif mode == "last":  # the last history item's time
        np.testing.assert_array_equal(fed, stamps[:, -1])
    else:  # the held-out interaction's own time (HSTU's setting)
        first = split.test.groupby("user").timestamp.min()
        np.testing.assert_array_equal(fed, first.loc[users].to_numpy())
    assert (fed == split.request_times(users, mode)).all()
    with pytest.raises(InputError, match="request_time"):
        evaluate_export(fake.export, ml, split, K, True, request_time="later")


def test_tie_shuffles_average_the_passes_of_shuffled_splits(world, monkeypatch):
    """A history export: N passes, on split.with_shuffled_ties(0..N-1), mean metrics, the
    counts kept; without a history, or N = 0: one pass on the split as it is."""
    from dssm_tf.data.splits import Split
    from dssm_tf.evaluation import exports

    ml = world["ml"]
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    fake = _OrderedExport(ml)
    singles = [evaluate_export(fake.export, ml, split.with_shuffled_ties(seed), K, True)[0]
               for seed in range(3)]
    assert len({one[f"recall@{K}_user_mean"] for one in singles}
               | {one[f"ndcg@{K}"] for one in singles}) > 2  # ties do move the lists here
    seeds, shuffled = [], Split.with_shuffled_ties

    def spy(self, seed):
        seeds.append(seed)
        return shuffled(self, seed)

    monkeypatch.setattr(Split, "with_shuffled_ties", spy)
    result, top = evaluate_export(fake.export, ml, split, K, True, tie_shuffles=3)
    assert seeds == [0, 1, 2] and result["tie_shuffles"] == 3
    for key in singles[0]:
        if "@" in key:
            assert result[key] == pytest.approx(np.mean([one[key] for one in singles]),
                                                abs=1e-12), key
        elif key not in ("seconds", "tie_shuffles"):
            assert result[key] == singles[0][key], key
    _, first_top = evaluate_export(fake.export, ml, split.with_shuffled_ties(0), K, True)
    np.testing.assert_array_equal(top, first_top)  # the lists: the first pass's
    _, tops = exports.evaluate_export_passes(fake.export, ml, split, K, True, tie_shuffles=2)
    assert len(tops) == 2

    seeds.clear()
    plain, _ = evaluate_export(fake.export, ml, split, K, True, tie_shuffles=0)
    assert seeds == [] and plain["tie_shuffles"] == 0
    assert plain[f"ndcg@{K}"] == evaluate_export(fake.export, ml, split, K, True)[0][f"ndcg@{K}"]
    no_history = _OrderedExport(ml, history_length=0)
    result, _ = evaluate_export(no_history.export, ml, split, K, True, tie_shuffles=3)
    assert seeds == [] and result["tie_shuffles"] == 0  # order is moot: one pass
    assert exports.mean_of_passes([{"hit@1": 0.5, "n_test_users": 4, "k": 1},
                                   {"hit@1": 1.0, "n_test_users": 4, "k": 1}]) == {
        "hit@1": 0.75, "n_test_users": 4, "k": 1}


def test_cli_evaluate_reports_request_time_and_tie_shuffles(world, tmp_path):
    """The dot export has a history: --tie_shuffles=2 is the mean of two passes."""
    output = tmp_path / "metrics.json"
    proc = _run("dssm_tf.evaluate", f"--export_dir={world['dot'][0]}",
                f"--data_dir={world['root'] / 'ml-1m'}", f"--k={K}", "--tie_shuffles=2",
                "--request_time=last", f"--output={output}")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert (printed["request_time"], printed["tie_shuffles"]) == ("last", 2)
    ml = world["ml"]
    expected, _ = evaluate_export(world["dot"][0], ml, make_split(ml, TIME_SPLIT), K, True,
                                  request_time="last", tie_shuffles=2)
    for key in CONTRACT_KEYS:
        assert printed[key] == pytest.approx(expected[key], abs=1e-12), key
