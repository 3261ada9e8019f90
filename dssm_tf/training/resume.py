"""What a killed run resumes from, and the check that it is the same run.

`fit` keeps a `BackupAndRestore` checkpoint in ``<model_dir>/backup/`` while it trains; a rerun
with the same `model_dir` continues from it. Resuming under other settings would be wrong in
quiet ways (weights that saw another protocol's test interactions give optimistic metrics) or
loud ones (another data set's vocabularies do not fit the saved tables). So every run records
its configs and data checksums in ``<model_dir>/config.json`` (serialised beside the model, as
TF Model Garden does), and a backup is only resumed when its record matches: `check` raises a
ConfigError naming what differs otherwise.

No TensorFlow here except in `backed_up_steps`: the check runs before TensorFlow starts.

Usage::

    record = run_record(run, dataset)
    check(model_dir, record)          # ConfigError("model_dir", ...) on a mismatch
    write(model_dir, record)
"""

from __future__ import annotations

import json
import os
import shutil

from dssm_tf.config import NOT_FINGERPRINTED, RunConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.errors import ConfigError
from dssm_tf.io import write_json

BACKUP = "backup"
RECORD = "config.json"
# Where the data lives may change between a kill and a rerun; what it holds may not.
_PATHS = {"data": ("data_dir", "download_url", "interactions", "users", "items")}


def run_record(run: RunConfig, dataset: Dataset) -> dict:
    """What ``config.json`` holds: the resolved configs and the data checksums, as JSON reads
    them back (tuples are lists), so a record compares equal to its own file."""
    return json.loads(json.dumps({"config": run.to_dict(), "checksums": dataset.checksums}))


def fingerprint(record: dict) -> dict:
    """The parts of a record a resumed run must share with the killed one."""
    config = {part: dict(fields) for part, fields in record.get("config", {}).items()}
    for part, names in list(NOT_FINGERPRINTED.items()) + list(_PATHS.items()):
        for name in names:
            config.get(part, {}).pop(name, None)
    return {"config": config, "checksums": record.get("checksums", {})}


def has_backup(model_dir: str) -> bool:
    """Whether a killed run left a `BackupAndRestore` checkpoint in `model_dir`."""
    return os.path.isfile(os.path.join(model_dir, BACKUP, "chief", "checkpoint"))


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} {a!r} -> {b!r}")
    return found


def check(model_dir: str, record: dict) -> None:
    """ConfigError("model_dir") when `model_dir` holds a backup of a run with other settings."""
    if not has_backup(model_dir):
        return
    path = os.path.join(model_dir, RECORD)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        differences = [f"{path} is missing or unreadable"]
    else:
        differences = _differences(fingerprint(recorded), fingerprint(record))
    if differences:
        shown = "; ".join(d.removeprefix("config.") for d in differences[:3])
        more = f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""
        raise ConfigError("model_dir", f"{model_dir} holds a killed run with other settings "
                                       f"({shown}{more}); pass --overwrite to start afresh, or "
                                       f"use a new --model_dir")


def clear(model_dir: str) -> None:
    """Forget a killed run (`--overwrite`): its backup and its record."""
    shutil.rmtree(os.path.join(model_dir, BACKUP), ignore_errors=True)
    if os.path.exists(os.path.join(model_dir, RECORD)):
        os.remove(os.path.join(model_dir, RECORD))


def write(model_dir: str, record: dict) -> None:
    write_json(os.path.join(model_dir, RECORD), record)


def backed_up_steps(backup_dir: str) -> int:
    """Training steps saved in `BackupAndRestore`'s checkpoint (0 when there is none), so a
    resumed run continues the killed run's shuffles and negatives instead of replaying them.

    Reads tf_keras' checkpoint key for the optimizer's step counter (pinned by tf-keras 2.21
    and covered by the resume test)."""
    import tensorflow as tf  # noqa: PLC0415

    path = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if path is None:
        return 0
    return int(tf.train.load_variable(path, "model/optimizer/_iterations/.ATTRIBUTES/"
                                            "VARIABLE_VALUE"))
