"""SavedModel export (`dssm_tf.serving`): raw-input round trips without dssm_tf (MovieLens and a
string-keyed schema), metadata, atomicity, `evaluate` CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import TIME_SPLIT
from dssm_tf.errors import InputError
from dssm_tf.data.sources.movielens import ML1M_FILES
from dssm_tf.evaluation.exports import evaluate_export
from dssm_tf.serving import contract, export
from tests import synthetic
from tests.conftest import TRAIN_K, load_ml, make_split, run_command, tiny_towers
from tests.synthetic import string_keyed_dataset

L = 4


@pytest.fixture(scope="module")
def ml(synthetic_ml):
    return synthetic_ml


def _towers(ml, **overrides):
    return tiny_towers(ml, seed=1, **{"hidden_units": (12, 6), "history_length": L,
                                      "similarity": "dot", **overrides})


def _user_inputs(ml, history):
    n = len(history)
    users = ml.users.iloc[np.arange(n) % ml.num_users]
    user_ids = users.user_id.to_numpy(np.int64).copy()
    user_ids[-1] = 987_654  # an unknown user
    return {"user_id": user_ids, "gender": users.gender.to_numpy(str).astype(object),
            "age": users.age.to_numpy(np.int64),
            "occupation": users.occupation.to_numpy(np.int64), "history": history}


ROUND_TRIP = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    inputs = np.load(sys.argv[1], allow_pickle=True)
    user = tf.saved_model.load(sys.argv[2] + "/user_tower").signatures["serving_default"]
    item = tf.saved_model.load(sys.argv[2] + "/item_tower").signatures["serving_default"]
    out = {}
    for width in (0, 2, 4, 7):
        out[f"user_{width}"] = user(
            user_id=tf.constant(inputs["user_id"]), gender=tf.constant(inputs["gender"]),
            age=tf.constant(inputs["age"]), occupation=tf.constant(inputs["occupation"]),
            history=tf.constant(inputs[f"history_{width}"]))["embedding"].numpy()
    out["item"] = item(movie_id=tf.constant(inputs["movie_id"]),
                       genres=tf.constant(inputs["genres"]))["embedding"].numpy()
    np.savez(sys.argv[3], **out)
    assert not [m for m in sys.modules if m.split(".")[0] == "dssm_tf"], "dssm_tf imported"
    print(sorted(user.structured_input_signature[1]), sorted(item.structured_input_signature[1]))
""")


def test_export_round_trip_without_dssm_tf(ml, tmp_path):
    user_tower, item_tower = _towers(ml)
    export_dir = export.export_towers(user_tower, item_tower, str(tmp_path / "export"),
                                      {"similarity": "dot", "embedding_dim": 6,
                                       "history_length": L,
                                       "signatures": contract.signatures(ml.schema)})
    rng = np.random.default_rng(0)
    movie_ids = ml.items.movie_id.to_numpy(np.int64)
    n = 6
    widest = rng.choice(movie_ids, size=(n, 7)).astype(np.int64)
    widest[0, :5] = 0           # short history, zero-padded
    widest[1, :] = 0            # no history
    widest[2, -1] = 999_999     # an unknown movie in the history
    histories = {0: widest[:, :0], 2: widest[:, -2:], 4: widest[:, -4:], 7: widest}
    users = _user_inputs(ml, widest)
    items = {"movie_id": np.append(movie_ids[:7], 888_888),
             "genres": np.append(ml.items.genres.to_numpy(str)[:7],
                                 "Unheard-of|Drama").astype(object)}
    npz = tmp_path / "inputs.npz"
    np.savez(npz, **{k: v for k, v in users.items() if k != "history"}, **items,
             **{f"history_{w}": h for w, h in histories.items()})

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["TF_USE_LEGACY_KERAS"] = "1"
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(npz), export_dir,
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "['age', 'gender', 'history', 'occupation', 'user_id'] ['genres', 'movie_id']" \
        in proc.stdout
    loaded = np.load(tmp_path / "out.npz")

    for width, history in histories.items():
        features = {k: tf.constant(v) for k, v in dict(users, history=history).items()}
        expected = user_tower(features).numpy()
        assert np.all(np.isfinite(expected))
        np.testing.assert_allclose(loaded[f"user_{width}"], expected, rtol=1e-5, atol=1e-6)
    # Right-aligned with zero padding: every width that holds a user's whole history agrees.
    np.testing.assert_allclose(loaded["user_7"][:2], loaded["user_2"][:2], rtol=1e-5)
    np.testing.assert_allclose(loaded["user_7"], loaded["user_4"], rtol=1e-5, atol=1e-6)
    expected = item_tower({k: tf.constant(v) for k, v in items.items()}).numpy()
    assert loaded["item"].shape == (8, 6) and loaded["item"].dtype == np.float32
    np.testing.assert_allclose(loaded["item"], expected, rtol=1e-5, atol=1e-6)


def test_export_logs_no_serialization_warning(ml, tmp_path):
    """The towers report their architecture (get_config), so saving does not warn about
    non-serializable __init__ arguments."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        user_tower, item_tower = _towers(ml)
        export.export_towers(user_tower, item_tower, str(tmp_path / "export"),
                             {"similarity": "dot", "embedding_dim": 6, "history_length": L})
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records if "serializ" in r.getMessage()]
    assert user_tower.get_config()["history_length"] == L
    assert item_tower.get_config()["hidden_units"] == (12, 6)


def test_trained_export_metadata(trained_run):
    export_dir = trained_run.export_dir
    with open(os.path.join(export_dir, "metadata.json")) as f:
        metadata = json.load(f)
    assert metadata["similarity"] == "cosine"
    assert metadata["embedding_dim"] == 16 and metadata["history_length"] == 5
    assert metadata["protocol"] == "time_split"
    assert metadata["train_cutoff"] == synthetic.CUTOFF
    flags_used = metadata["flags"]
    assert flags_used["loss"] == "bce" and flags_used["user_features"] is True
    assert flags_used["hidden_units"] == [16] and flags_used["epochs"] == 6
    folder = trained_run.data.folder
    checksums = {name: hashlib.md5(open(os.path.join(folder, name), "rb").read()).hexdigest()
                 for name in ML1M_FILES}
    assert metadata["checksums"] == metadata["data"]["checksums"] == checksums
    # The data source, the resolved configs, the schema and the signatures are recorded.
    assert metadata["config"]["data"]["dataset"] == "movielens-1m"
    assert metadata["config"]["data"]["data_dir"] == os.path.abspath(folder)
    assert metadata["config"]["split"] == {"protocol": "time_split", "cutoff": synthetic.CUTOFF}
    assert metadata["config"]["tower"]["history_length"] == 5
    assert metadata["schema"]["item_key"] == "movie_id"
    assert [i["name"] for i in metadata["signatures"]["user_tower"]["inputs"]] == [
        "user_id", "gender", "age", "occupation", "history"]
    assert metadata["signatures"]["item_tower"]["inputs"] == [
        {"name": "movie_id", "dtype": "int64", "rank": 1},
        {"name": "genres", "dtype": "string", "rank": 1}]
    # The exported towers produce what the metadata promises.
    user = tf.saved_model.load(os.path.join(export_dir, "user_tower"))
    out = user.signatures["serving_default"](
        user_id=tf.constant([1, 424242], tf.int64), gender=tf.constant(["F", "M"]),
        age=tf.constant([25, 99], tf.int64), occupation=tf.constant([3, 3], tf.int64),
        history=tf.constant([[0, 0, 0, 1, 3], [0, 0, 0, 0, 0]], tf.int64))["embedding"]
    assert out.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)  # cosine


def _snapshot(folder) -> dict[str, bytes]:
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


class _FailOnCall:
    """Stands in for tf.saved_model.save: works `ok` times, then raises."""

    def __init__(self, real, ok):
        self.real, self.ok, self.calls = real, ok, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls > self.ok:
            raise RuntimeError("disk full (simulated)")
        return self.real(*args, **kwargs)


def test_versions_are_published_whole_and_pruned(ml, tmp_path, monkeypatch):
    """A version appears under its number complete or not at all: a failing export leaves
    the versions as they were (and no staging folder); only the newest `keep_versions`
    stay; the latest is the highest number."""
    user_tower, item_tower = _towers(ml, hidden_units=(4,), user_features=False,
                                     item_features=False, history_length=0)
    root = str(tmp_path / "export")
    first = export.export_towers(user_tower, item_tower, root, {"version": 1})
    assert os.path.dirname(first) == root and os.path.basename(first).isdigit()
    assert contract.versions(root) == [int(os.path.basename(first))]
    assert contract.resolve_export(root) == first
    before = _snapshot(root)
    assert {f"{os.path.basename(first)}/{name}" for name in (
        "user_tower/saved_model.pb", "item_tower/saved_model.pb", "metadata.json")} <= set(before)
    mode = os.stat(first).st_mode & 0o777
    assert mode == 0o777 & ~_umask()  # not mkdtemp's 0700: a serving user can read it

    real_save = tf.saved_model.save
    failing = _FailOnCall(real_save, ok=1)  # user tower saved, item tower fails
    monkeypatch.setattr(tf.saved_model, "save", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        export.export_towers(user_tower, item_tower, root, {"version": 2})
    assert failing.calls == 2
    assert _snapshot(root) == before            # the previous version is untouched
    assert os.listdir(root) == [os.path.basename(first)]   # no staging folder left

    # No previous export: a failure leaves no version.
    monkeypatch.setattr(tf.saved_model, "save", _FailOnCall(real_save, ok=1))
    with pytest.raises(RuntimeError):
        export.export_towers(user_tower, item_tower, str(tmp_path / "fresh"), {})
    assert os.listdir(tmp_path / "fresh") == []

    monkeypatch.setattr(tf.saved_model, "save", real_save)
    made = [first] + [export.export_towers(user_tower, item_tower, root, {"version": v},
                                           keep_versions=3) for v in (3, 4, 5)]
    numbers = [int(os.path.basename(p)) for p in made]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4   # always a higher number
    assert contract.versions(root) == numbers[1:]                  # the oldest pruned
    with open(os.path.join(contract.resolve_export(root), "metadata.json")) as f:
        assert json.load(f) == {"version": 5}
    assert contract.resolve_export(root, numbers[1]) == made[1]
    with pytest.raises(InputError, match=r"no complete version 7 \(--version; versions: "):
        contract.resolve_export(root, 7)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@pytest.mark.parametrize("data_flag", [True, False])
def test_evaluate_cli_reproduces_train_metrics(trained_run, tmp_path, data_flag):
    """With --data_dir, and without: the export's metadata says where its data is."""
    output = tmp_path / "evaluate.json"
    data_args = [f"--data_dir={trained_run.data.folder}"] if data_flag else []
    proc = run_command("evaluate", f"--export_dir={trained_run.export_root}", *data_args,
                       f"--k={TRAIN_K}", f"--output={output}", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning" not in proc.stderr
    with open(output) as f:
        evaluated = json.load(f)
    k, trained = TRAIN_K, trained_run.metrics
    assert (evaluated["protocol"], evaluated["k"], evaluated["exclude_seen"]) == (
        trained["protocol"], trained["k"], trained["exclude_seen"])
    for key in (f"recall@{k}", f"recall@{k}_user_mean", f"hit@{k}", f"ndcg@{k}",
                "n_test_users", "n_test_items"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-9, abs=1e-12), key
    # In process, the seed's protocol (seen movies kept) matches the train run's figures too.
    ml = load_ml(trained_run.data.folder)
    split = make_split(ml, TIME_SPLIT)
    assert evaluated["n_test_items"] == len(split.test)
    seed, _ = evaluate_export(trained_run.export_dir, ml, split, k, exclude_seen=False)
    for key in (f"recall@{k}", f"hit@{k}", f"ndcg@{k}"):
        assert seed[key] == pytest.approx(trained[f"seed_protocol/{key}"], rel=1e-9), key


STRING_ROUND_TRIP = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    export_dir = sys.argv[1]
    with open(export_dir + "/metadata.json") as f:
        signatures = json.load(f)["signatures"]
    user = tf.saved_model.load(export_dir + "/user_tower").signatures["serving_default"]
    item = tf.saved_model.load(export_dir + "/item_tower").signatures["serving_default"]
    dtypes = {"int64": tf.int64, "string": tf.string, "float32": tf.float32}
    inputs = np.load(sys.argv[2], allow_pickle=True)
    def call(signature, spec):
        return signature(**{i["name"]: tf.constant(inputs[i["name"]], dtypes[i["dtype"]])
                            for i in spec["inputs"]})["embedding"].numpy()
    retrieval = tf.saved_model.load(export_dir + "/retrieval").signatures["serving_default"]
    top = retrieval(**{i["name"]: tf.constant(inputs[i["name"]], dtypes[i["dtype"]])
                       for i in signatures["retrieval"]["inputs"] if i["rank"] > 0},
                    k=tf.constant(2), exclude_history=tf.constant(True))
    np.savez(sys.argv[3], user=call(user, signatures["user_tower"]),
             item=call(item, signatures["item_tower"]), top=top["item_keys"].numpy())
    assert not [m for m in sys.modules if m.split(".")[0] == "dssm_tf"], "dssm_tf imported"
""")


def test_string_keyed_schema_exports_serve_without_dssm_tf(tmp_path):
    """Signatures follow the schema: string keys and history, a float feature; metadata.json
    says how to call them, and a fresh process without dssm_tf does."""
    shop = string_keyed_dataset()
    user_tower, item_tower = tiny_towers(shop, seed=2, history_length=3)
    metadata = {"similarity": "cosine", "embedding_dim": 6, "history_length": 3,
                "signatures": contract.signatures(shop.schema)}
    export_dir = export.export_towers(user_tower, item_tower, str(tmp_path / "export"),
                                      metadata, candidates=contract.item_inputs(
                                          shop, np.arange(shop.num_items)))
    assert [(i["name"], i["dtype"], i["rank"]) for i in
            metadata["signatures"]["user_tower"]["inputs"]] == [
        ("customer", "string", 1), ("segment", "string", 1), ("spend", "float32", 1),
        ("history", "string", 2)]
    inputs = {"customer": np.array(["ann", "bob", "nobody"], object),
              "segment": np.array(["gold", "new", "unheard-of"], object),
              "spend": np.array([120.0, 3.5, -1.0], np.float32),
              "history": np.array([["", "a", "b"], ["", "", ""], ["c", "zzz", "e"]], object),
              "sku": np.array(["a", "e", "unknown-sku"], object),
              "tags": np.array(["red|big", "", "green"], object)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    proc = subprocess.run([sys.executable, "-c", STRING_ROUND_TRIP, export_dir,
                           str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = np.load(tmp_path / "out.npz", allow_pickle=True)
    user = {k: tf.constant(inputs[k]) for k in ("customer", "segment", "spend", "history")}
    item = {k: tf.constant(inputs[k]) for k in ("sku", "tags")}
    np.testing.assert_allclose(loaded["user"], user_tower(user).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded["item"], item_tower(item).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(loaded["user"], axis=1), 1.0, rtol=1e-5)
    # The one-piece model answers with string keys, never an item of the history.
    items = item_tower({"sku": tf.constant(shop.items.sku.to_numpy(str)),
                        "tags": tf.constant(shop.items.tags.to_numpy(str))}).numpy()
    scores = loaded["user"] @ items.T
    history = inputs["history"]
    for row, keys in enumerate(loaded["top"]):
        allowed = [j for j in np.argsort(-scores[row], kind="stable")
                   if shop.items.sku[j] not in set(history[row])]
        assert [k.decode() for k in keys] == shop.items.sku.to_numpy()[allowed[:2]].tolist()


RETRIEVE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    inputs = dict(np.load(sys.argv[2], allow_pickle=True))
    model = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = {}
    for k in (3, 12):
        for exclude in (True, False):
            got = model(**{name: tf.constant(value) for name, value in inputs.items()},
                        k=tf.constant(k), exclude_history=tf.constant(exclude))
            out[f"keys_{k}_{exclude}"] = got["item_keys"].numpy()
            out[f"scores_{k}_{exclude}"] = got["scores"].numpy()
    np.savez(sys.argv[3], **out)
    assert not [m for m in sys.modules if m.split(".")[0] == "dssm_tf"], "dssm_tf imported"
""")


def test_one_piece_retrieval_model_equals_exact_search_over_the_towers(trained_run, tmp_path):
    """`export/<v>/retrieval`: raw user inputs + k in (k changes per call), top-k keys and
    scores out, the history excluded on request; loads without dssm_tf; the same lists as an
    exact faiss search over the two towers with seen items excluded."""
    from dssm_tf.serving.loaded import load_export, retrieve

    ml = load_ml(trained_run.data.folder)
    split = make_split(ml, TIME_SPLIT)
    users = split.test_users[:25]
    seen = int(np.diff(split.user_offsets)[users].max())
    inputs = contract.user_inputs(ml, split, users, seen)  # whole histories (all excluded)
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    path = os.path.join(trained_run.export_dir, "retrieval")
    proc = subprocess.run([sys.executable, "-c", RETRIEVE, path, str(tmp_path / "inputs.npz"),
                           str(tmp_path / "out.npz")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    export = load_export(trained_run.export_root)
    for exclude in (True, False):
        top, scores = retrieve(export, ml, split, users, 12, exclude_seen=exclude,
                               return_scores=True)
        keys = ml.item_keys[top]
        for k in (3, 12):
            assert got[f"keys_{k}_{exclude}"].shape == (len(users), k)
            np.testing.assert_allclose(got[f"scores_{k}_{exclude}"], scores[:, :k], rtol=1e-5,
                                       atol=1e-5)
            np.testing.assert_array_equal(got[f"keys_{k}_{exclude}"], keys[:, :k])
    # Seen items are left out only when asked.
    with_seen = got["keys_12_False"]
    history = inputs["history"]
    assert any(set(row) & set(h[h > 0]) for row, h in zip(with_seen, history))
    assert not any(set(row) & set(h[h > 0]) for row, h in zip(got["keys_12_True"], history))
    # saved_model_cli shows the signature, k and exclude_history among its inputs.
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "exclude_history" in shown.stdout and "item_keys" in shown.stdout


def test_recommend_uses_the_one_piece_model(trained_run, tmp_path):
    """The command reads export/<v>/retrieval and prints what the towers + faiss give."""
    from dssm_tf.cli import recommend as command
    from dssm_tf.serving.loaded import load_export, load_retrieval

    ml = load_ml(trained_run.data.folder)
    split = make_split(ml, TIME_SPLIT)
    user = int(split.test_users[3])
    one_piece, _ = load_retrieval(trained_run.export_dir)
    items, scores = command.recommend_in_one_piece(one_piece, ml, split, user, 7)
    want, want_scores = command.recommend(load_export(trained_run.export_root), ml, split,
                                          user, 7)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
    proc = run_command("recommend", f"--export_dir={trained_run.export_root}",
                       f"--user_id={ml.user_keys[user]}", "--k=7", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = [int(line.split()[2]) for line in proc.stdout.strip().splitlines()[2:]]
    assert printed == ml.item_keys[want].tolist()


def test_a_timed_export_serves_times_in_one_piece_as_the_towers_do(ml, tmp_path):
    """``--history_time --request_gap``: both the user tower and the one-piece model take
    `history_timestamps` and `request_time`; a fresh process without dssm_tf gets the same
    lists as an exact faiss search over the towers with the same times, and a later request
    time changes them."""
    from dssm_tf.config import LEAVE_LAST_ONE_OUT
    from dssm_tf.serving.loaded import load_export, retrieve

    user_tower, item_tower = tiny_towers(ml, seed=3, history_length=L, history_time=True,
                                         request_gap=True,
                                         user_encoder="attention", similarity="dot",
                                         hidden_units=(), share_item_embeddings=True,
                                         user_features=False, item_features=False,
                                         user_key_embedding=False)
    user_tower(contract.user_inputs(ml, make_split(ml, LEAVE_LAST_ONE_OUT), np.arange(2), L,
                                    timed=True))
    table = user_tower.request_gap.embeddings   # starts at 0: give it values, as training would
    table.assign(tf.random.stateless_normal(table.shape, [3, 4]))
    metadata = {"similarity": "dot", "embedding_dim": 8, "history_length": L,
                "signatures": contract.signatures(ml.schema, timed=True)}
    export.export_towers(user_tower, item_tower, str(tmp_path / "export"), metadata,
                         candidates=contract.item_inputs(ml, np.arange(ml.num_items)))
    loaded = load_export(str(tmp_path / "export"))
    assert loaded.timed
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    users = split.test_users[:20]
    seen = int(np.diff(split.user_offsets)[users].max())
    inputs = contract.user_inputs(ml, split, users, seen, timed=True)
    answers = {}
    for name, shift in (("now", 0), ("later", 86_400 * 400)):
        shifted = dict(inputs, request_time=inputs["request_time"] + shift)
        np.savez(tmp_path / f"{name}.npz", **shifted)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TF_USE_LEGACY_KERAS"] = "1"
        proc = subprocess.run([sys.executable, "-c", RETRIEVE,
                               os.path.join(loaded.export_dir, "retrieval"),
                               str(tmp_path / f"{name}.npz"), str(tmp_path / f"{name}_out.npz")],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        answers[name] = np.load(tmp_path / f"{name}_out.npz")
    top, scores = retrieve(loaded, ml, split, users, 12, exclude_seen=True, return_scores=True)
    np.testing.assert_array_equal(answers["now"]["keys_12_True"], ml.item_keys[top])
    np.testing.assert_allclose(answers["now"]["scores_12_True"], scores, rtol=1e-5, atol=1e-5)
    assert not np.allclose(answers["later"]["scores_12_True"], scores, atol=1e-5)
    # `recommend` feeds the times too: its one-piece answer is the towers' + faiss answer.
    from dssm_tf.cli import recommend as command
    from dssm_tf.serving.loaded import load_retrieval

    one_piece, _ = load_retrieval(loaded.export_dir)
    user = int(users[2])
    items, got_scores = command.recommend_in_one_piece(one_piece, ml, split, user, 7,
                                                       timed=True)
    want, want_scores = command.recommend(loaded, ml, split, user, 7)
    np.testing.assert_array_equal(items, want)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
