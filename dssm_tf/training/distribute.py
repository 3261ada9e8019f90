"""Training on several devices or machines with TensorFlow's own engine, `tf.distribute`.

``--distribution``:

- ``none``: the default strategy (one device);
- ``mirrored``: `MirroredStrategy` over this machine's devices (GPUs, or logical CPUs);
- ``multi_worker``: `MultiWorkerMirroredStrategy`, one process per machine, configured by the
  standard ``TF_CONFIG`` environment variable (``{"cluster": {"worker": ["host:port", ...]},
  "task": {"type": "worker", "index": i}}``); every worker runs the same command.

Synchronous data parallelism: every replica holds all variables, computes gradients on its
share of the global batch (`--batch_size`), and the gradients are all-reduced (summed) before
each update; the losses are divided by the number of replicas, so the update is that of the
mean over the global batch. The input pipeline gives each replica a disjoint slice of every
global batch of the same seeded permutation (`dssm_tf.data.pipeline`), and the in-batch
softmax scores every replica's users against the whole global batch
(`dssm_tf.models.losses.InBatchSoftmax`). With ``--examples=sequences`` a global batch is one
packed batch of users, split evenly over the replicas (`dssm_tf.data.sequences`), whose
replicas draw the same shared negatives; the sequence softmax scores every replica's target
positions against the distinct items of the whole global batch and weighs the replicas by
their positions, so the update is that of the mean over the global batch's positions
(`dssm_tf.models.losses.CandidateSoftmax`); it runs one step per call (shapes change from
step to step, see `TwoTowerModel.compile`). The chief (worker 0, or the task of type "chief")
alone writes the export, metrics.json, config.json and the TensorBoard logs; the others write
what Keras makes them write into scratch folders it removes.

Usage::

    strategy = make_strategy("multi_worker")
    with strategy.scope():
        model = build_model(...)
"""

from __future__ import annotations

import json
import os

from dssm_tf.errors import ConfigError

TF_CONFIG = "TF_CONFIG"


def _tf_config() -> dict | None:
    """`TF_CONFIG` parsed (None without one), its task checked: a `ConfigError` if it is not
    JSON with task.type and task.index."""
    raw = os.environ.get(TF_CONFIG)
    if not raw:
        return None
    try:
        config = json.loads(raw)
        config["task"] = {"type": str(config["task"]["type"]),
                          "index": int(config["task"]["index"])}
        return config
    except (ValueError, KeyError, TypeError):
        raise ConfigError("distribution", f"${TF_CONFIG} is not valid: expected JSON with "
                                          f"task.type and task.index, got {raw[:80]!r}") from None


def task() -> tuple[str, int] | None:
    """(task type, index) of this process in `TF_CONFIG` (None without one), read without
    TensorFlow, so the command can decide what this process may write before TF starts."""
    config = _tf_config()
    return None if config is None else (config["task"]["type"], config["task"]["index"])


def is_chief(kind: str) -> bool:
    """Whether this process writes the run's outputs (always, unless multi_worker)."""
    if kind != "multi_worker":
        return True
    config = _tf_config()
    if config is None:
        raise ConfigError("distribution", f"multi_worker needs ${TF_CONFIG} (the cluster and "
                                          f"this process's task in it)")
    task_type, index = config["task"]["type"], config["task"]["index"]
    return task_type == "chief" or (task_type == "worker" and index == 0
                                     and "chief" not in config.get("cluster", {}))


def make_strategy(kind: str):
    """The `tf.distribute.Strategy` `kind` names (see the module docstring)."""
    import tensorflow as tf  # noqa: PLC0415

    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        is_chief(kind)  # checks TF_CONFIG
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()
