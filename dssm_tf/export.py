"""SavedModel export of both towers with raw-id `serving_default` signatures (see CONTRACT.md).

Layout of `<model_dir>/export/`: `user_tower/`, `item_tower/`, `metadata.json`. The whole
folder is written beside the target under a temporary name and renamed into place, so a
failure or kill mid-export leaves the previous export untouched.

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

from dssm_tf.evaluate import ITEM_TOWER, METADATA, USER_TOWER  # the layout, defined once

USER_SIGNATURE = [
    tf.TensorSpec([None], tf.int64, name="user_id"),
    tf.TensorSpec([None], tf.string, name="gender"),
    tf.TensorSpec([None], tf.int64, name="age"),
    tf.TensorSpec([None], tf.int64, name="occupation"),
    tf.TensorSpec([None, None], tf.int64, name="history"),
]
ITEM_SIGNATURE = [
    tf.TensorSpec([None], tf.int64, name="movie_id"),
    tf.TensorSpec([None], tf.string, name="genres"),
]


class _UserServing(tf.Module):
    def __init__(self, tower: keras.Model):
        super().__init__()
        self.tower = tower

    @tf.function(input_signature=USER_SIGNATURE)
    def serve(self, user_id, gender, age, occupation, history):
        features = {"user_id": user_id, "gender": gender, "age": age,
                    "occupation": occupation, "history": history}
        return {"embedding": tf.cast(self.tower(features, training=False), tf.float32)}


class _ItemServing(tf.Module):
    def __init__(self, tower: keras.Model):
        super().__init__()
        self.tower = tower

    @tf.function(input_signature=ITEM_SIGNATURE)
    def serve(self, movie_id, genres):
        features = {"movie_id": movie_id, "genres": genres}
        return {"embedding": tf.cast(self.tower(features, training=False), tf.float32)}


def export_towers(user_tower: keras.Model, item_tower: keras.Model, export_dir: str,
                  metadata: dict) -> str:
    """Save both towers and `metadata` to `export_dir` atomically; returns `export_dir`."""
    export_dir = os.path.abspath(export_dir)
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(export_dir)}-tmp-")
    try:
        for name, module in ((USER_TOWER, _UserServing(user_tower)),
                             (ITEM_TOWER, _ItemServing(item_tower))):
            tf.saved_model.save(module, os.path.join(staging, name),
                                signatures={"serving_default": module.serve})
        with open(os.path.join(staging, METADATA), "w") as f:
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
