"""SavedModel export of both towers with raw-input `serving_default` signatures.

The signatures' inputs are those `metadata["signatures"]` records (`contract.signatures` of
the data set's schema), so a client calls the towers with raw keys and feature values by name.
The whole folder is written beside the target under a temporary name and renamed into place,
so a failure or kill mid-export leaves the previous export untouched.

Usage::

    export_towers(user_tower, item_tower, "runs/bce/export", metadata)
    tower = tf.saved_model.load("runs/bce/export/user_tower")     # no dssm_tf import needed
    tower.signatures["serving_default"](user_id=..., gender=..., age=..., occupation=...,
                                        history=...)["embedding"]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import tensorflow as tf
import tf_keras as keras

from dssm_tf.serving import contract


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


def export_towers(user_tower: keras.Model, item_tower: keras.Model, export_dir: str,
                  metadata: dict) -> str:
    """Save both towers and `metadata` to `export_dir` atomically; returns `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}-tmp-")
    try:
        for name, tower in ((contract.USER_TOWER, user_tower),
                            (contract.ITEM_TOWER, item_tower)):
            module = _Serving(tower, contract.signature_inputs(metadata, name))
            tf.saved_model.save(module, os.path.join(staging, name),
                                signatures={contract.SIGNATURE: module.serve})
        with open(os.path.join(staging, contract.METADATA), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)  # the folder is renamed as a whole
        if os.path.exists(export_dir):
            retired = staging + "-old"
            os.replace(export_dir, retired)
            os.replace(staging, export_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, export_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return export_dir
