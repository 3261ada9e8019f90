"""The serving contract, owned in one place (no TensorFlow): export layout, signature inputs,
``metadata.json``, and the raw inputs a data set feeds the towers. `docs/CONTRACT.md` is the
user-facing description; `dssm_tf.serving.export` writes what this module specifies and
`dssm_tf.serving.loaded` reads it.

Layout: an export root holds numbered versions (`versions`; the highest is the latest), each
a folder of ``user_tower/`` and ``item_tower/`` (SavedModels, each with a ``serving_default``
signature returning ``{"embedding": float32 [n, D]}``) and ``metadata.json``; a numbered folder
lacking one of them is no version (`missing` says what it lacks). A root that holds those
three itself is an export of dssm_tf 0.1 (one version, unnumbered), still read. The signature
inputs follow the data set's schema (`Schema.user_inputs`, `Schema.item_inputs`) and are
recorded in ``metadata.json`` under ``signatures``; exports without that record (dssm_tf 0.1)
serve the MovieLens-1M inputs in `LEGACY_INPUTS`.

Usage::

    version_dir = resolve_export("runs/bce/export")       # its latest complete version
    metadata = check_export(version_dir)                  # layout + metadata.json, checked
    inputs = signature_inputs(metadata, USER_TOWER)       # {"user_id": ("int64", 1), ...}
    feed = user_inputs(dataset, split, users, history_length=10)   # numpy arrays by name
    feed = user_inputs(dataset, split, users, 10, timed=True, request_time="last")
"""

from __future__ import annotations

import json
import os

import numpy as np

from dssm_tf.config import PROTOCOLS, SIMILARITIES, DataConfig, RunConfig, from_dict
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.schema import (HISTORY, HISTORY_TIMESTAMPS, REQUEST_TIME, RETRIEVAL_INPUTS,
                                 Schema, as_dtype)
from dssm_tf.data.splits import Split
from dssm_tf.errors import InputError, one_line
from dssm_tf.io import numbered

USER_TOWER, ITEM_TOWER, METADATA = "user_tower", "item_tower", "metadata.json"
TOWERS = (USER_TOWER, ITEM_TOWER)
RETRIEVAL = "retrieval"  # the one-piece model (`dssm_tf.serving.retrieval`); optional
SIGNATURE, EMBEDDING = "serving_default", "embedding"
K, EXCLUDE = RETRIEVAL_INPUTS
ITEM_KEYS, SCORES = "item_keys", "scores"
LEGACY_INPUTS = {
    USER_TOWER: {"user_id": ("int64", 1), "gender": ("string", 1), "age": ("int64", 1),
                 "occupation": ("int64", 1), "history": ("int64", 2)},
    ITEM_TOWER: {"movie_id": ("int64", 1), "genres": ("string", 1)},
}


def _specs(inputs: dict) -> list[dict]:
    return [{"name": name, "dtype": dtype, "rank": rank} for name, (dtype, rank) in inputs.items()]


def signatures(schema: Schema, timed: bool = False) -> dict:
    """What ``metadata.json`` records of the signatures: inputs by name (dtype, rank) in
    order, and the outputs. The retrieval model takes the user tower's inputs and `k`,
    `exclude_history`, and returns the top-k `item_keys` and their `scores`. A `timed` user
    tower (``--history_time``) also takes `history_timestamps` and `request_time`."""
    embedding = [{"name": EMBEDDING, "dtype": "float32", "rank": 2}]
    user_inputs = schema.user_inputs(timed)
    retrieval = user_inputs | {K: ("int32", 0), EXCLUDE: ("bool", 0)}
    return {USER_TOWER: {"inputs": _specs(user_inputs), "outputs": embedding},
            ITEM_TOWER: {"inputs": _specs(schema.item_inputs()), "outputs": embedding},
            RETRIEVAL: {"inputs": _specs(retrieval), "outputs": [
                {"name": ITEM_KEYS, "dtype": schema.item_key_dtype, "rank": 2},
                {"name": SCORES, "dtype": "float32", "rank": 2}]}}


def signature_inputs(metadata: dict, tower: str) -> dict[str, tuple[str, int]]:
    """The inputs of `tower`'s ``serving_default``, name -> (dtype, rank), as the metadata
    records them (the legacy MovieLens-1M contract when it does not)."""
    recorded = metadata.get("signatures")
    if not recorded:
        return dict(LEGACY_INPUTS[tower])
    if tower not in recorded:
        raise InputError(f"metadata.json records no {tower} signature")
    return {entry["name"]: (entry["dtype"], int(entry["rank"]))
            for entry in recorded[tower]["inputs"]}


def read_metadata(export_dir: str) -> dict:
    """`metadata.json` of an export, checked for the fields evaluation and serving need."""
    path = os.path.join(export_dir, METADATA)
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found (is --export_dir an export folder?)")
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({one_line(error)})") from None
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: expected a JSON object")
    for field in ("similarity", "embedding_dim", "history_length"):
        if field not in metadata:
            raise InputError(f"{path}: missing field {field!r}")
    if metadata["similarity"] not in SIMILARITIES:
        raise InputError(f"{path}: similarity must be one of {', '.join(SIMILARITIES)}, "
                         f"got {metadata['similarity']!r}")
    for field, low in (("embedding_dim", 1), ("history_length", 0)):
        value = metadata[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{path}: {field} must be an integer >= {low}, got {value!r}")
    protocol = metadata.get("protocol")
    if protocol is not None and protocol not in PROTOCOLS:
        raise InputError(f"{path}: protocol must be one of {', '.join(PROTOCOLS)}, "
                         f"got {protocol!r}")
    cutoff = trained_cutoff(metadata)
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int)):
        raise InputError(f"{path}: cutoff must be an integer Unix time, got {cutoff!r}")
    try:
        for tower in TOWERS:
            signature_inputs(metadata, tower)
        if metadata.get("schema"):
            Schema.from_dict(metadata["schema"])
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: malformed signatures or schema ({one_line(error)})") \
            from None
    return metadata


def trained_cutoff(metadata: dict) -> int | None:
    """The time split cutoff the export was trained with (None for leave-last-one-out)."""
    return metadata.get("cutoff", metadata.get("train_cutoff"))


def missing(folder: str) -> str | None:
    """What version folder `folder` lacks to be complete (``user_tower/saved_model.pb``, ...),
    or None when both SavedModels and the metadata are there."""
    for part in (*(os.path.join(tower, "saved_model.pb") for tower in TOWERS), METADATA):
        if not os.path.isfile(os.path.join(folder, part)):
            return part
    return None


def is_complete(folder: str) -> bool:
    """Both SavedModels and the metadata are there."""
    return missing(folder) is None


def versions(export_root: str) -> list[int]:
    """The numbered versions under an export root, complete ones only, ascending. Staging
    folders (hidden names, `dssm_tf.io.staging`) are never versions."""
    return [n for n in numbered(export_root) if is_complete(os.path.join(export_root, str(n)))]


def _incomplete(export_root: str, version: int) -> str:
    folder = os.path.join(export_root, str(version))
    return f"{folder}: incomplete version (no {missing(folder)})"


def resolve_export(export_dir: str | None, version: int | None = None) -> str:
    """The folder of one version of an export: `version` under the root `export_dir`, else its
    highest complete version; a folder holding an export itself (a version folder, or a
    dssm_tf 0.1 export) is returned as it is. A root whose numbered folders are all incomplete
    is an InputError naming the latest and what it lacks."""
    if not export_dir:
        raise InputError("--export_dir: required (an export folder: <model_dir>/export)")
    if not os.path.isdir(export_dir):
        raise InputError(f"{export_dir}: export folder not found (--export_dir)")
    complete = versions(export_dir)
    listed = ", ".join(map(str, complete)) or "none"
    if version is not None:
        if version in complete:
            return os.path.join(export_dir, str(version))
        if version in numbered(export_dir):
            raise InputError(f"{_incomplete(export_dir, version)} (--version; complete "
                             f"versions: {listed})")
        raise InputError(f"{export_dir}: no complete version {version} (--version; "
                         f"versions: {listed})")
    if complete:
        return os.path.join(export_dir, str(complete[-1]))
    folders = numbered(export_dir)
    if folders and not os.path.isfile(os.path.join(export_dir, METADATA)):
        raise InputError(f"{_incomplete(export_dir, folders[-1])}; {export_dir} holds no "
                         f"complete version (--export_dir)")
    return export_dir  # one export, unnumbered: checked as such by `check_export`


def check_export(export_dir: str | None) -> dict:
    """Check an export folder's layout without TensorFlow; return its metadata."""
    if not export_dir:
        raise InputError("--export_dir: required (an export folder: <model_dir>/export)")
    if not os.path.isdir(export_dir):
        raise InputError(f"{export_dir}: export folder not found (--export_dir)")
    metadata = read_metadata(export_dir)
    for name in TOWERS:
        path = os.path.join(export_dir, name)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path}: no SavedModel (saved_model.pb) found")
    return metadata


def build_metadata(run: RunConfig, dataset: Dataset, split: Split, versions: dict) -> dict:
    """``metadata.json`` of an export of a model trained under `run` (with its data and split
    resolved: absolute paths, the cutoff used) on `split` of `dataset`.

    Besides what serving needs, it records the data source (configs, checksums), so `evaluate`
    and `recommend` find the data again without being told where it is. ``flags`` (a flat
    view of the configs), ``train_cutoff`` and ``checksums`` are the dssm_tf 0.1 keys, kept.
    """
    return {
        "similarity": run.tower.similarity,
        "embedding_dim": run.tower.output_dim,
        "history_length": run.tower.history_length,
        "protocol": split.protocol,
        "train_cutoff": split.cutoff,
        "schema": dataset.schema.to_dict(),
        "signatures": signatures(dataset.schema, run.tower.history_time),
        "config": run.to_dict(),
        "flags": run.flat(),
        "data": {"dataset": dataset.name, "data_dir": dataset.data_dir,
                 "checksums": dataset.checksums},
        "checksums": dataset.checksums,
        "versions": versions,
    }


def recorded_data_config(metadata: dict) -> DataConfig | None:
    """The data source an export was trained on, if its metadata records it (else None: a
    dssm_tf 0.1 export, trained on MovieLens-1M)."""
    recorded = (metadata.get("config") or {}).get("data")
    return from_dict(DataConfig, recorded) if isinstance(recorded, dict) else None


def item_inputs(dataset: Dataset, items: np.ndarray) -> dict[str, np.ndarray]:
    """Item-tower inputs (raw key and features) of item indices `items`."""
    schema = dataset.schema
    rows = dataset.items.iloc[np.asarray(items, np.int64)]
    inputs = {schema.item_key: as_dtype(rows[schema.item_key], schema.item_key_dtype)}
    inputs.update({f.name: as_dtype(rows[f.name], f.dtype) for f in schema.item_features})
    return inputs


PAIRS_PER_CALL = 1 << 22  # (query, key) pairs a user-tower call may hold: [B, W, W] bounded


def users_per_call(history_length: int, batch_size: int) -> int:
    """How many users to embed per call of a user tower with a history of `history_length`:
    at most `batch_size`, and few enough that the attention's `[B, W, W]` tensors stay within
    `PAIRS_PER_CALL` pairs (4,096 users of 200 items would otherwise hold 164M pairs, 655 MB
    for each float32 tensor of them, and a call makes several).

    >>> users_per_call(200, 4096), users_per_call(10, 4096), users_per_call(0, 512)
    (104, 4096, 512)
    """
    return max(1, min(batch_size, PAIRS_PER_CALL // max(history_length, 1) ** 2))


def is_timed(metadata: dict) -> bool:
    """Whether the export's user tower takes times (trained with ``--history_time``)."""
    return REQUEST_TIME in signature_inputs(metadata, USER_TOWER)


def user_inputs(dataset: Dataset, split: Split, users: np.ndarray,
                history_length: int, timed: bool = False,
                request_time: str = "none") -> dict[str, np.ndarray]:
    """User-tower inputs of user indices `users`: raw key, features, and the `[n, L]` history of
    their last L training item keys, oldest to newest, right-aligned, padded with the schema's
    padding (0 or ""). `timed` adds the `[n, L]` times of those items (0 where padded) and
    each user's request time, `Split.request_times(users, request_time)`: ``"none"`` (-1 for
    all, "unknown": nothing depends on the held-out interaction), ``"last"`` (the last history
    item's time) or ``"next"`` (the held-out interaction's own time, HSTU's setting). At
    serving a client passes the time of its call."""
    schema = dataset.schema
    users = np.asarray(users, np.int64)
    rows = dataset.users.iloc[users]
    inputs = {schema.user_key: as_dtype(rows[schema.user_key], schema.user_key_dtype)}
    inputs.update({f.name: as_dtype(rows[f.name], f.dtype) for f in schema.user_features})
    history = split.histories(users, int(history_length))  # item index + 1, 0 = padding
    keys = as_dtype(dataset.items[schema.item_key], schema.item_key_dtype)
    padding = np.asarray(schema.history_padding, dtype=keys.dtype)
    raw = np.where(history > 0, keys[np.maximum(history - 1, 0)], padding)
    inputs[HISTORY] = raw.reshape(len(users), int(history_length))
    if timed:
        inputs[HISTORY_TIMESTAMPS] = split.history_timestamps(users, int(history_length))
        inputs[REQUEST_TIME] = split.request_times(users, request_time)
    return inputs
