"""SavedModel export of both towers, as numbered versions TF Serving-style.

Layout of an export root (``<model_dir>/export/``)::

    export/
      1764354000/               a version: user_tower/, item_tower/ (SavedModels), metadata.json
      1764357600/               the next one (the highest number is the latest)

Each version is written complete under a hidden staging name inside the root and then renamed
to its number in one step, so at every moment the latest version is a complete one: a kill or
a full disk mid-export leaves the previous versions as they were. Staging folders of exports
that died are cleared by the next export; only the newest `keep_versions` versions are kept.

The signatures' inputs are those `metadata["signatures"]` records (`contract.signatures` of the
data set's schema), so a client calls the towers with raw keys and feature values by name.

Usage::

    version_dir = export_towers(user_tower, item_tower, "runs/bce/export", metadata)
    tower = tf.saved_model.load(version_dir + "/user_tower")     # no dssm_tf import needed
    tower.signatures["serving_default"](user_id=..., gender=..., age=..., occupation=...,
                                        history=...)["embedding"]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dssm_tf.errors import ConfigError
from dssm_tf.io import process_alive
from dssm_tf.serving import contract
from dssm_tf.serving.retrieval import RetrievalModule


class _Serving(tf.Module):
    """A tower behind one tf.function taking the contract's raw inputs by name and returning
    {"embedding": float32 [n, D]}."""

    def __init__(self, tower: keras.Model, inputs: dict[str, tuple[str, int]]):
        super().__init__()
        self.tower = tower
        names = list(inputs)
        specs = [tf.TensorSpec([None] * rank, dtype, name=name)
                 for name, (dtype, rank) in inputs.items()]

        @tf.function(input_signature=specs)
        def serve(*tensors):
            features = dict(zip(names, tensors))
            return {contract.EMBEDDING: tf.cast(self.tower(features, training=False),
                                                tf.float32)}

        self.serve = serve


def clear_stale_staging(export_root: str) -> list[str]:
    """Remove staging folders whose writing process is gone; returns their names."""
    removed = []
    for name in os.listdir(export_root):
        pid = contract.staging_pid(name)
        if pid is not None and not process_alive(pid):
            shutil.rmtree(os.path.join(export_root, name), ignore_errors=True)
            removed.append(name)
    return removed


def _publish(staging: str, export_root: str) -> str:
    """Rename `staging` to the next version number (seconds since 1970, above the latest)."""
    latest = max(contract.versions(export_root), default=0)
    version = max(int(time.time()), latest + 1)
    while True:
        target = os.path.join(export_root, str(version))
        try:
            os.rename(staging, target)   # fails if `target` exists: never replaces a version
            return target
        except OSError:
            if not os.path.exists(target):
                raise
            version += 1


def _embed(tower: keras.Model, inputs: dict[str, np.ndarray], batch: int = 4096) -> np.ndarray:
    rows = len(next(iter(inputs.values())))
    return np.concatenate([
        tower({name: tf.constant(value[start:start + batch]) for name, value in inputs.items()},
              training=False).numpy() for start in range(0, rows, batch)]).astype(np.float32)


def export_towers(user_tower: keras.Model, item_tower: keras.Model, export_root: str,
                  metadata: dict, keep_versions: int = 3,
                  candidates: dict[str, np.ndarray] | None = None) -> str:
    """Save both towers and `metadata` as a new version under `export_root`; returns the
    version's folder. Older versions beyond the newest `keep_versions` are removed.

    With `candidates` (the item tower's raw inputs of the items to retrieve from), the
    version also holds the one-piece retrieval model (`dssm_tf.serving.retrieval`).
    """
    if keep_versions < 1:
        raise ConfigError("keep_versions", f"expected at least 1, got {keep_versions}")
    export_root = os.path.abspath(export_root)
    os.makedirs(export_root, exist_ok=True)
    clear_stale_staging(export_root)
    staging = tempfile.mkdtemp(dir=export_root, prefix=contract.staging_prefix())
    try:
        for name, tower in ((contract.USER_TOWER, user_tower),
                            (contract.ITEM_TOWER, item_tower)):
            module = _Serving(tower, contract.signature_inputs(metadata, name))
            tf.saved_model.save(module, os.path.join(staging, name),
                                signatures={contract.SIGNATURE: module.serve})
        if candidates is not None:
            key = next(iter(contract.signature_inputs(metadata, contract.ITEM_TOWER)))
            module = RetrievalModule(
                user_tower, candidates[key], _embed(item_tower, candidates),
                contract.signature_inputs(metadata, contract.USER_TOWER))
            tf.saved_model.save(module, os.path.join(staging, contract.RETRIEVAL),
                                signatures={contract.SIGNATURE: module.serve})
        with open(os.path.join(staging, contract.METADATA), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)  # published with the rest
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 is for the staging name only
        version_dir = _publish(staging, export_root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for old in contract.versions(export_root)[:-keep_versions]:
        shutil.rmtree(os.path.join(export_root, str(old)), ignore_errors=True)
    return version_dir
