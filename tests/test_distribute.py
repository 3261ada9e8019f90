"""tf.distribute: the global-batch in-batch softmax (of pairs and of sequences), `mirrored` on
two logical CPUs, and real two-worker `multi_worker` clusters on loopback (127.0.0.1, free
ports, bounded in time), with interactions and with sequences as examples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
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


SEQUENCE_LOSS = textwrap.dedent("""
    import sys
    import numpy as np
    import dssm_tf
    """) + textwrap.dedent(TWO_CPUS) + textwrap.dedent("""
    from dssm_tf.config import LEAVE_LAST_ONE_OUT
    from dssm_tf.training import trainer
    from tests.conftest import load_ml, make_split, run_config
    ml = load_ml(sys.argv[1])
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    SUM = tf.distribute.ReduceOp.SUM
    for sampler, negatives in (("inbatch", 6), ("uniform", 6)):
        run = run_config(examples="sequences", user_encoder="attention", history_length=8,
                         loss="inbatch", negative_sampler=sampler, num_negatives=negatives,
                         exclude_user_items=True, temperature=0.2, batch_size=16,
                         embedding_dim=8, hidden_units=(8,), validation="last", verbose=False)
        pipeline = trainer.make_pipeline(run, ml, split, replicas=2)
        with strategy.scope():
            model = trainer.build_model(run, ml, split, pipeline)
            model(pipeline.first_batch())
        reference = trainer.build_model(run, ml, split, pipeline)  # one replica, same weights
        reference(pipeline.first_batch())
        reference.set_weights(model.get_weights())
        step = pipeline.steps_per_epoch + 2
        whole = next(iter(pipeline.training(step)))      # the global batch, on one replica
        with tf.GradientTape() as tape:
            loss = reference.batch_loss(whole)
        grads = [tf.convert_to_tensor(g).numpy() for g in
                 tape.gradient(loss, reference.trainable_variables)]
        # Replica 0's share scored against its own items only, as a per-replica loss would.
        alone = reference.batch_loss(next(iter(pipeline.training(
            step, tf.distribute.InputContext(1, 0, 2)))))

        def replica_step(batch):
            with tf.GradientTape() as tape:
                local = model.batch_loss(batch)
                scaled = local / 2                        # as TwoTowerModel.train_step does
            return local, [tf.convert_to_tensor(g)
                           for g in tape.gradient(scaled, model.trainable_variables)]

        @tf.function
        def distributed(batch):
            local, g = strategy.run(replica_step, args=(batch,))
            return (strategy.reduce(SUM, local, axis=None) / 2,
                    [strategy.reduce(SUM, x, axis=None) for x in g])

        shares = next(iter(strategy.distribute_datasets_from_function(
            lambda context: pipeline.training(step, context))))
        positions = [int(tf.reduce_sum(tf.cast(t, tf.int32))) for t in
                     strategy.experimental_local_results(shares["target_mask"])]
        gathered, gathered_grads = distributed(shares)
        error = max(float(np.max(np.abs(a - b.numpy()))) for a, b in zip(grads, gathered_grads))
        scale = max(float(np.max(np.abs(a))) for a in grads)
        print(sampler, float(loss), float(gathered), float(alone), error / scale, *positions)
        if sampler == "inbatch":  # Keras' fit, compiled with 64 steps a call, runs one a call
            fitted = model.fit(strategy.distribute_datasets_from_function(
                lambda context: pipeline.training(0, context)), epochs=1, steps_per_epoch=4,
                verbose=0).history["loss"]
            print("fit", run.training.steps_per_execution,
                  model._steps_per_execution.numpy(), *fitted)
""")


def test_the_gathered_sequence_loss_on_two_replicas_is_the_global_batch_loss(tmp_path,
                                                                             data_dir):
    """`--examples=sequences` on two replicas, each with its share of a packed global batch
    (and every position's window's other targets excluded): the mean of the replicas' losses
    and the sum of their gradients (each loss divided by the replicas, as the model does) are
    the one-replica loss and gradient of the whole global batch, in the in-batch form (the
    replicas' distinct targets gathered, with extra shared negatives) and the sampled one,
    though the two replicas hold unequal numbers of target positions. Keras' `fit` then
    trains on the two, one step a call whatever `steps_per_execution` says."""
    proc = subprocess.run([sys.executable, "-c", SEQUENCE_LOSS, data_dir], cwd=REPO_ROOT,
                          env=command_env(tmp_path), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split() for line in proc.stdout.splitlines()[-3:]]
    fit = lines.pop(1)
    assert fit[:3] == ["fit", "64", "1"] and all(np.isfinite(float(v)) for v in fit[3:]), fit
    assert [line[0] for line in lines] == ["inbatch", "uniform"]
    for name, whole, gathered, alone, error, *positions in lines:
        assert float(gathered) == pytest.approx(float(whole), rel=1e-5), name
        assert float(error) < 1e-5, name
        assert abs(float(alone) - float(whole)) > 1e-3, name
    assert lines[0][5] != lines[0][6], lines      # the replicas held unequal positions


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


@pytest.mark.bench  # two TensorFlow processes for minutes: `make bench`; the sequence
# examples' two-worker run and the gathered-loss test stay in `make test`
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


@pytest.mark.bench  # two TensorFlow processes for minutes: `make bench`; the sequence
# examples' two-worker run and the gathered-loss test stay in `make test`
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


SEQUENCES = ("--examples=sequences", "--user_encoder=attention", "--history_length=8",
             "--embedding_dim=8", "--hidden_units=8", "--batch_size=16", "--epochs=2",
             "--num_negatives=4", "--exclude_user_items", "--temperature=0.2")


def test_sequences_on_two_workers_on_loopback(tmp_path, data_dir):
    """`--examples=sequences` (packed global batches split over the workers, the global-batch
    softmax across them, validation on whole global batches) trains on a 2-worker cluster,
    and the chief alone writes the export and metrics.json."""
    model_dir = tmp_path / "model"
    outputs = run_two_workers(tmp_path, data_dir, model_dir, *SEQUENCES)
    assert "test users" in outputs[1] and "test users" not in outputs[0]
    assert outputs[1].count("val_loss") == 2          # validated after each epoch
    got = _metrics(model_dir)
    assert (got["distribution"], got["examples"], got["epochs_run"]) == \
        ("multi_worker", "sequences", 2)
    assert 0 < got["hit@10"] <= 1 and got["n_test_users"] > 0


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
