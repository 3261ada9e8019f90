"""tf.distribute: the global-batch in-batch softmax, `mirrored` on two logical CPUs, and real
two-worker `multi_worker` clusters on loopback (127.0.0.1, free ports, bounded in time)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests import synthetic
from tests.conftest import REPO_ROOT, command_env

TIMEOUT = 300
TRAIN = ("--loss=inbatch", "--negative_sampler=inbatch", "--num_negatives=0",
         "--temperature=0.1", "--history_length=5", "--embedding_dim=16", "--hidden_units=16",
         "--batch_size=64", "--learning_rate=0.01", "--epochs=3", "--k=10",
         "--protocol=leave_last_one_out", "--verbose=false", "--nobaselines")

TWO_CPUS = """
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return synthetic.make_dataset(tmp_path_factory.mktemp("data"), n_users=240, n_movies=90,
                                  seed=4).folder


GATHERED_LOSS = textwrap.dedent("""
    import numpy as np
    import dssm_tf
    """) + textwrap.dedent(TWO_CPUS) + textwrap.dedent("""
    from dssm_tf.models.losses import InBatchSoftmax
    rng = np.random.default_rng(0)
    b, d = 8, 6
    user = rng.normal(size=(2 * b, d)).astype(np.float32)
    item = rng.normal(size=(2 * b, d)).astype(np.float32)
    ids = rng.integers(0, 5, size=2 * b)           # repeats: accidental hits across replicas
    p = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    scheme = InBatchSoftmax(p, temperature=0.5, batch_size=2 * b)
    whole = float(scheme(tf.constant(user), tf.constant(item), None, tf.constant(ids), None,
                         None))
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    halves = strategy.experimental_distribute_values_from_function(
        lambda context: [tf.constant(x[context.replica_id_in_sync_group * b:
                                       (context.replica_id_in_sync_group + 1) * b])
                         for x in (user, item, ids)])
    per_replica = strategy.run(lambda u, i, k: scheme(u, i, None, k, None, None),
                               args=tuple(halves))
    local = [float(v) for v in strategy.experimental_local_results(per_replica)]
    alone = float(scheme(tf.constant(user[:b]), tf.constant(item[:b]), None,
                         tf.constant(ids[:b]), None, None))
    print(whole, sum(local) / 2, alone)
""")


def test_the_gathered_in_batch_loss_on_two_replicas_is_the_whole_batch_loss(tmp_path):
    """Two replicas, each scoring its half of the users against the whole batch's items:
    their mean loss is the one-replica loss on the whole batch (and not the loss of each half
    scored against its own items only, which is what TFRS' per-replica Retrieval gives)."""
    proc = subprocess.run([sys.executable, "-c", GATHERED_LOSS], cwd=REPO_ROOT,
                          env=command_env(tmp_path), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    whole, gathered, alone = map(float, proc.stdout.split()[-3:])
    assert gathered == pytest.approx(whole, rel=1e-5)
    assert abs(alone - whole) > 1e-3


def _train(tmp_path, data_dir, model_dir, *extra, prelude="", env=None):
    code = textwrap.dedent(prelude) + textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["dssm_tf.train", *{[f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                                        *TRAIN, *extra]!r}]
        runpy.run_module("dssm_tf.train", run_name="__main__", alter_sys=True)
    """)
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO_ROOT,
                            env=dict(command_env(tmp_path), **(env or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc):
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err[-3000:]
    return out


def _metrics(model_dir) -> dict:
    with open(os.path.join(model_dir, "metrics.json")) as f:
        return json.load(f)


def run_two_workers(tmp_path, data_dir, model_dir, *extra) -> list[str]:
    """Train on a 2-worker `multi_worker` cluster on loopback (free ports); the standard
    outputs of worker 1 and of the chief (worker 0), in that order."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    workers = [_train(tmp_path, data_dir, model_dir, "--distribution=multi_worker", *extra,
                      env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                    "task": {"type": "worker", "index": i}})})
               for i in (1, 0)]
    try:
        return [_finish(worker) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()


@pytest.fixture(scope="module")
def single(tmp_path_factory, data_dir) -> dict:
    """The same job on one replica, for comparison (popularity reported too)."""
    root = tmp_path_factory.mktemp("single")
    _finish(_train(root, data_dir, root / "model", "--baselines"))
    return _metrics(root / "model")


def test_mirrored_on_two_logical_cpus(tmp_path, data_dir, single):
    model_dir = tmp_path / "model"
    prelude = ("import dssm_tf.runtime as runtime\nreal = runtime.start_tensorflow\n"
               "def start(show_logs=False):\n    real(show_logs)\n"
               + textwrap.indent(textwrap.dedent(TWO_CPUS), "    ")
               + "runtime.start_tensorflow = start\n")
    _finish(_train(tmp_path, data_dir, model_dir, "--distribution=mirrored", prelude=prelude))
    got = _metrics(model_dir)
    assert got["distribution"] == "mirrored"
    assert got["hit@10"] > 2 * single["popularity/hit@10"]
    assert abs(got["hit@10"] - single["hit@10"]) < 0.15


def test_two_workers_on_loopback_train_and_the_chief_exports(tmp_path, data_dir, single):
    model_dir = tmp_path / "model"
    outputs = run_two_workers(tmp_path, data_dir, model_dir)
    # Only the chief (worker 0) reports and writes; worker 1 leaves nothing of its own.
    assert "test users" in outputs[1] and "test users" not in outputs[0]
    assert sorted(os.listdir(model_dir)) == [".lock", "backup", "config.json", "export", "logs",
                                             "metrics.json"]
    got = _metrics(model_dir)
    assert got["distribution"] == "multi_worker"
    # Clearly above popularity, and comparable with one worker at the same global batch.
    assert got["hit@10"] > 2 * single["popularity/hit@10"], (got["hit@10"], single)
    assert abs(got["hit@10"] - single["hit@10"]) < 0.15
    # The chief's export loads and evaluates without the training code.
    proc = subprocess.run([sys.executable, "-m", "dssm_tf.evaluate",
                           f"--export_dir={model_dir / 'export'}", "--k=10"], cwd=REPO_ROOT,
                          env=command_env(tmp_path), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["hit@10"] == pytest.approx(got["hit@10"])


def test_multi_worker_needs_tf_config(tmp_path, data_dir):
    proc = _train(tmp_path, data_dir, tmp_path / "model", "--distribution=multi_worker",
                  env={"TF_CONFIG": ""})
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "error: --distribution: multi_worker needs $TF_CONFIG (the cluster and this "
        "process's task in it)"]


@pytest.mark.parametrize("cluster,task,chief", [
    ({"worker": ["a", "b"]}, ("worker", 0), True),
    ({"worker": ["a", "b"]}, ("worker", 1), False),
    ({"chief": ["c"], "worker": ["a"]}, ("worker", 0), False),
    ({"chief": ["c"], "worker": ["a"]}, ("chief", 0), True),
])
def test_which_process_writes(monkeypatch, cluster, task, chief):
    """Worker 0 writes unless the cluster names a chief; other kinds always write."""
    from dssm_tf.errors import ConfigError
    from dssm_tf.training import distribute

    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}))
    assert distribute.task() == task
    assert distribute.is_chief("multi_worker") is chief
    assert distribute.is_chief("mirrored") is True
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}, "task": {"type": "worker"}}')
    with pytest.raises(ConfigError, match="task.index"):
        distribute.is_chief("multi_worker")
