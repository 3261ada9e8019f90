"""A loaded export: its two ``serving_default`` signatures, called with raw inputs, and top-K
retrieval over them with faiss. Only the SavedModels are read, never the training code.

History tensor: ``history`` is ``[n, L]`` with ``L = metadata["history_length"]``: the user's
last L training item keys, oldest to newest, right-aligned, padded with 0 (integer keys) or ""
(string keys). ``L = 0`` is allowed and then the tensor has shape ``[n, 0]`` (no columns, not a
column of padding): a tower without a history feature still accepts it, since the signature's
spec is ``[None, None]``. A timed user tower (``--history_time``) also gets the history's
times and `request_time`, by `contract.user_inputs`: -1 ("unknown") under the default mode
``none``, else the last history item's time (``last``) or the held-out interaction's
(``next``).

Usage::

    export = load_export("runs/bce/export")     # the latest version
    top = retrieve(export, dataset, split, users, k=50, exclude_seen=True)   # item indices
    top = retrieve(export, dataset, split, users, 50, True, request_time="last")  # timed towers
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import numpy as np

from dssm_tf.config import IndexConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import Split
from dssm_tf.errors import InputError, one_line
from dssm_tf.progress import progress
from dssm_tf.retrieval import index as faiss_index
from dssm_tf.serving import contract

DEFAULT_BATCH_SIZE = 4096


@dataclasses.dataclass(frozen=True)
class Export:
    """A loaded export: the two serving signatures and `metadata.json`."""

    export_dir: str
    user_tower: Callable[..., Any]  # serving_default of user_tower/
    item_tower: Callable[..., Any]  # serving_default of item_tower/
    metadata: dict
    loaded: tuple = ()  # the tf.saved_model.load objects: keep their resources (tables) alive

    @property
    def history_length(self) -> int:
        return int(self.metadata["history_length"])

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["embedding_dim"])

    @property
    def timed(self) -> bool:
        """The user tower takes the history's and the request's times."""
        return contract.is_timed(self.metadata)

    @property
    def reads_request_time(self) -> bool:
        """The user tower's output depends on `request_time` (``--request_gap``); other timed
        towers take it and ignore it, so every `--request_time` gives them the same figure."""
        tower = (self.metadata.get("config") or {}).get("tower") or {}
        return self.timed and bool(tower.get("request_gap"))

    @property
    def similarity(self) -> str:
        return str(self.metadata["similarity"])


def _tf():
    """TensorFlow, imported on first use: bad flags and paths fail fast, before TF's start-up
    (dssm_tf has set TF_USE_LEGACY_KERAS by now)."""
    import tensorflow as tf  # noqa: PLC0415

    return tf


def _load_signature(export_dir: str, name: str, inputs: dict[str, tuple[str, int]]):
    """(serving_default signature, loaded object) of SavedModel `export_dir/name`."""
    tf = _tf()
    path = os.path.join(export_dir, name)
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001  (TF raises many types for a corrupt model)
        raise InputError(f"{path}: cannot load SavedModel ({one_line(error)})") from None
    signature = loaded.signatures.get(contract.SIGNATURE)
    if signature is None:
        raise InputError(f"{path}: SavedModel has no {contract.SIGNATURE!r} signature")
    expected = set(inputs)
    got = set(signature.structured_input_signature[1])
    if got != expected:
        raise InputError(f"{path}: {contract.SIGNATURE} inputs are {sorted(got)}, "
                         f"metadata.json says {sorted(expected)}")
    return signature, loaded


def load_export(export_dir: str, version: int | None = None) -> Export:
    """Load `user_tower/`, `item_tower/` and `metadata.json` of an export: its latest complete
    version (or `version`), or the folder itself if it holds one (`contract.resolve_export`)."""
    export_dir = contract.resolve_export(export_dir, version)
    metadata = contract.check_export(export_dir)
    user_tower, user_loaded = _load_signature(
        export_dir, contract.USER_TOWER, contract.signature_inputs(metadata, contract.USER_TOWER))
    item_tower, item_loaded = _load_signature(
        export_dir, contract.ITEM_TOWER, contract.signature_inputs(metadata, contract.ITEM_TOWER))
    return Export(export_dir=export_dir, user_tower=user_tower, item_tower=item_tower,
                  metadata=metadata, loaded=(user_loaded, item_loaded))


def load_retrieval(export_dir: str):
    """(serving_default, loaded object) of the version's one-piece retrieval model, or None
    for exports without one (dssm_tf before it had them)."""
    path = os.path.join(export_dir, contract.RETRIEVAL)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        return None
    metadata = contract.read_metadata(export_dir)
    return _load_signature(export_dir, contract.RETRIEVAL,
                           contract.signature_inputs(metadata, contract.RETRIEVAL))


def _serving(tower) -> Callable:
    """A loaded SavedModel's serving_default, or `tower` itself if it is already callable."""
    signatures = getattr(tower, "signatures", None)
    if signatures is not None and contract.SIGNATURE in signatures:
        return signatures[contract.SIGNATURE]
    return tower


def _embed(tower, inputs_of: Callable[[np.ndarray], dict[str, np.ndarray]], ids: np.ndarray,
           name: str, batch_size: int, dim: int | None, unit: str) -> np.ndarray:
    """Call a tower's signature on `inputs_of(batch)` for batches of `ids`; check the [n, D]
    float output. Inputs are built a batch at a time (not the histories of all 162k users of
    ML-25M at once), with a progress bar (on a terminal only)."""
    tf = _tf()
    serve = _serving(tower)
    ids = np.asarray(ids)
    n = len(ids)
    embeddings = None
    with progress(total=n, what=f"embedding {unit}", unit=unit) as bar:
        for start in range(0, n, batch_size):
            batch = {key: tf.constant(value)
                     for key, value in inputs_of(ids[start:start + batch_size]).items()}
            try:
                out = serve(**batch)
            except (TypeError, ValueError, tf.errors.OpError) as error:
                raise InputError(f"{name}: {contract.SIGNATURE} failed on contract inputs "
                                 f"({one_line(error)})") from None
            out = out[contract.EMBEDDING] if isinstance(out, dict) else out
            block = np.asarray(out, dtype=np.float32)
            rows = min(batch_size, n - start)
            if block.ndim != 2 or len(block) != rows:
                raise InputError(f"{name}: expected embeddings of shape [{n}, D], got "
                                 f"{list(block.shape)} for a batch of {rows}")
            if embeddings is None:
                embeddings = np.empty((n, block.shape[1]), np.float32)
            elif block.shape[1] != embeddings.shape[1]:
                raise InputError(f"{name}: embedding dimension {block.shape[1]} in one batch, "
                                 f"{embeddings.shape[1]} in another")
            if dim is not None and block.shape[1] != dim:
                raise InputError(f"{name}: embeddings have dimension {block.shape[1]}, "
                                 f"metadata.json says embedding_dim={dim}")
            if not np.all(np.isfinite(block)):
                raise InputError(f"{name}: embeddings contain NaN or infinite values")
            embeddings[start:start + rows] = block
            bar.update(rows)
    if embeddings is None:
        return np.zeros((0, dim or 0), np.float32)
    return embeddings


def embed_items(item_tower, dataset: Dataset, items: np.ndarray,
                batch_size: int = DEFAULT_BATCH_SIZE, dim: int | None = None) -> np.ndarray:
    """[len(items), D] float32 item embeddings of item indices `items`."""
    return _embed(item_tower, lambda batch: contract.item_inputs(dataset, batch),
                  np.asarray(items, np.int64), contract.ITEM_TOWER, batch_size, dim, "items")


def embed_users(user_tower, dataset: Dataset, split: Split, users: np.ndarray,
                history_length: int, batch_size: int = DEFAULT_BATCH_SIZE,
                dim: int | None = None, timed: bool = False,
                request_time: str = "none") -> np.ndarray:
    """[len(users), D] float32 user embeddings of user indices `users` (histories from `split`;
    `timed`: with their times and the request's, of mode `request_time`,
    `contract.user_inputs`)."""
    return _embed(user_tower,
                  lambda batch: contract.user_inputs(dataset, split, batch, history_length,
                                                     timed, request_time),
                  np.asarray(users, np.int64), contract.USER_TOWER,
                  contract.users_per_call(history_length, batch_size), dim, "users")


def seen_of(split: Split, users: np.ndarray):
    """`split.seen` rows of `users`: the matrix itself (no copy) when `users` are all users in
    order, as under leave-last-one-out at scale (25M interactions: 200 MB saved)."""
    users = np.asarray(users, np.int64)
    if len(users) == split.num_users and np.array_equal(users, np.arange(split.num_users)):
        return split.seen
    return split.seen[users]


def retrieve(export: Export, dataset: Dataset, split: Split, users: np.ndarray, k: int,
             exclude_seen: bool, index: IndexConfig = IndexConfig(),
             batch_size: int = DEFAULT_BATCH_SIZE, return_scores: bool = False,
             request_time: str = "none"):
    """Top-`k` candidate item indices ([n, k], -1 pads) of `users`; optionally their scores.
    A timed export is asked at `request_time` (`Split.request_times`: none, last, next)."""
    candidates = np.flatnonzero(split.candidates)
    items = embed_items(export.item_tower, dataset, candidates, batch_size, export.embedding_dim)
    queries = embed_users(export.user_tower, dataset, split, users, export.history_length,
                          batch_size, export.embedding_dim, export.timed, request_time)
    searcher = faiss_index.build_index(items, index.index, **faiss_index.config_params(index))
    exclude = seen_of(split, users) if exclude_seen else None
    return faiss_index.search(searcher, queries, k, exclude=exclude, item_ids=candidates,
                              return_scores=return_scores)
