"""SavedModel export of both towers, as numbered versions TF Serving-style.

Layout of an export root (``<model_dir>/export/``)::

    export/
      1764354000/               a version: user_tower/, item_tower/ (SavedModels), metadata.json
      1764357600/               the next one (the highest number is the latest)

Each version is written complete under a hidden staging name inside the root and then renamed
to its number in one step, so at every moment the latest version is a complete one: a kill or
a full disk mid-export leaves the previous versions as they were. Old versions beyond the
newest `keep_versions` are renamed out of the numbered names before they are deleted, so a kill
while pruning never leaves half a version under a number. The hidden folders a killed export
leaves are cleared by the next one (`dssm_tf.io.publish_version`).

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

import numpy as np
import tensorflow as tf
import tf_keras as keras

from dssm_tf.errors import ConfigError
from dssm_tf.io import as_input_error, os_error_in, publish_version
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


def _save(module: tf.Module, path: str) -> None:
    """`tf.saved_model.save` with its ``serving_default``; an operating-system error that
    TensorFlow reports in its own words (a full disk) is raised as the OSError it is."""
    try:
        tf.saved_model.save(module, path, signatures={contract.SIGNATURE: module.serve})
    except tf.errors.OpError as error:
        cause = os_error_in(error.message)
        if cause is None:
            raise
        raise cause from None


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

    def write(staging: str) -> None:
        for name, tower in ((contract.USER_TOWER, user_tower),
                            (contract.ITEM_TOWER, item_tower)):
            _save(_Serving(tower, contract.signature_inputs(metadata, name)),
                  os.path.join(staging, name))
        if candidates is not None:
            key = next(iter(contract.signature_inputs(metadata, contract.ITEM_TOWER)))
            _save(RetrievalModule(user_tower, candidates[key], _embed(item_tower, candidates),
                                  contract.signature_inputs(metadata, contract.USER_TOWER)),
                  os.path.join(staging, contract.RETRIEVAL))
        with open(os.path.join(staging, contract.METADATA), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)  # published with the rest

    try:
        return publish_version(export_root, write, keep_versions, contract.is_complete)
    except OSError as error:  # named by the export root: the staging folder is gone by now
        raise as_input_error(error, export_root) from None
