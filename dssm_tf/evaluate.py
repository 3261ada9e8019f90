"""Evaluate an exported two-tower model from its SavedModels alone (no training code path).

Reads ``DIR/user_tower`` and ``DIR/item_tower`` with ``tf.saved_model.load`` and calls their
``serving_default`` signatures with raw MovieLens fields (CONTRACT.md), then retrieves each test
user's top K among the split's candidate movies with faiss, seen movies excluded by default, and
scores the lists with `evaluation.evaluate_lists`, the same code every baseline uses.

History tensor: ``history`` is int64 ``[n, L]`` with ``L = metadata["history_length"]``: the
user's last L training MovieIDs (raw ids), oldest to newest, right-aligned, 0 = padding. ``L = 0``
is allowed and then the tensor has shape ``[n, 0]`` (no columns, not a column of zeros): a
tower without a history feature still accepts it, since the signature's spec is
``int64[None, None]``, and nothing pretends a padding-only history is data. The fake export in
``tests/fake_export.py`` accepts both ``[n, 0]`` and ``[n, L]``; the real export must too.

Protocol: the split defaults to the one recorded in ``metadata.json`` (``protocol`` and
``cutoff``/``train_cutoff``), so test ratings are never training ratings of the model; an
explicit ``--protocol``/``--cutoff`` overrides it with a warning on stderr when they differ.

Usage::

    python -m dssm_tf.evaluate --export_dir=runs/bce/export --data_dir=DIR --k=50

    metrics, top = evaluate_export("runs/bce/export", ml, split, k=50, exclude_seen=True)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable

import numpy as np

from dssm_tf import data, errors, evaluation, protocols, retrieval
from dssm_tf import flags as cli
from dssm_tf.data import MovieLens
from dssm_tf.errors import InputError
from dssm_tf.protocols import Split


FLAGS = cli.FLAGS
USER_TOWER, ITEM_TOWER, METADATA = "user_tower", "item_tower", "metadata.json"
SIGNATURE = "serving_default"
# The contract's serving inputs, name -> (dtype, rank); export.py builds its TensorSpecs from these.
USER_INPUTS = {"user_id": ("int64", 1), "gender": ("string", 1), "age": ("int64", 1),
               "occupation": ("int64", 1), "history": ("int64", 2)}
ITEM_INPUTS = {"movie_id": ("int64", 1), "genres": ("string", 1)}
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
    def similarity(self) -> str:
        return str(self.metadata["similarity"])

    @property
    def protocol(self) -> str | None:
        return self.metadata.get("protocol")

    @property
    def cutoff(self) -> int | None:
        cutoff = self.metadata.get("cutoff", self.metadata.get("train_cutoff"))
        return None if cutoff is None else int(cutoff)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def read_metadata(export_dir: str) -> dict:
    """`metadata.json` of an export, checked for the fields evaluation needs."""
    path = os.path.join(export_dir, METADATA)
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found (is --export_dir an export folder?)")
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
    except json.JSONDecodeError as error:
        raise InputError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read ({_one_line(error)})") from None
    if not isinstance(metadata, dict):
        raise InputError(f"{path}: expected a JSON object")
    for field in ("similarity", "embedding_dim", "history_length"):
        if field not in metadata:
            raise InputError(f"{path}: missing field {field!r}")
    if metadata["similarity"] not in ("cosine", "dot"):
        raise InputError(f"{path}: similarity must be \"cosine\" or \"dot\", "
                         f"got {metadata['similarity']!r}")
    for field, low in (("embedding_dim", 1), ("history_length", 0)):
        value = metadata[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{path}: {field} must be an integer >= {low}, got {value!r}")
    protocol = metadata.get("protocol")
    if protocol is not None and protocol not in protocols.PROTOCOLS:
        raise InputError(f"{path}: protocol must be one of {', '.join(protocols.PROTOCOLS)}, "
                         f"got {protocol!r}")
    cutoff = metadata.get("cutoff", metadata.get("train_cutoff"))
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int)):
        raise InputError(f"{path}: cutoff must be an integer Unix time, got {cutoff!r}")
    return metadata


def _tf():
    """TensorFlow, imported on first use: bad flags and paths fail fast, before TF's start-up
    chatter on stderr (dssm_tf has set TF_USE_LEGACY_KERAS by now)."""
    import tensorflow as tf  # noqa: PLC0415

    return tf


def check_export(export_dir: str) -> dict:
    """Check an export folder's layout without TensorFlow; return its metadata."""
    if not export_dir:
        raise InputError("--export_dir: required (a folder holding user_tower/, item_tower/ "
                         "and metadata.json)")
    if not os.path.isdir(export_dir):
        raise InputError(f"{export_dir}: export folder not found (--export_dir)")
    metadata = read_metadata(export_dir)
    for name in (USER_TOWER, ITEM_TOWER):
        path = os.path.join(export_dir, name)
        if not os.path.isfile(os.path.join(path, "saved_model.pb")):
            raise InputError(f"{path}: no SavedModel (saved_model.pb) found")
    return metadata


def _load_signature(export_dir: str, name: str, inputs: dict[str, tuple[str, int]]):
    """(serving_default signature, loaded object) of SavedModel `export_dir/name`."""
    tf = _tf()
    path = os.path.join(export_dir, name)
    try:
        loaded = tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001  (TF raises many types for a corrupt model)
        raise InputError(f"{path}: cannot load SavedModel ({_one_line(error)})") from None
    signature = loaded.signatures.get(SIGNATURE)
    if signature is None:
        raise InputError(f"{path}: SavedModel has no {SIGNATURE!r} signature")
    expected = set(inputs)
    got = set(signature.structured_input_signature[1])
    if got != expected:
        raise InputError(f"{path}: {SIGNATURE} inputs are {sorted(got)}, "
                         f"the contract says {sorted(expected)}")
    return signature, loaded


def load_export(export_dir: str) -> Export:
    """Load `user_tower/`, `item_tower/` and `metadata.json` of an export folder."""
    metadata = check_export(export_dir)
    user_tower, user_loaded = _load_signature(export_dir, USER_TOWER, USER_INPUTS)
    item_tower, item_loaded = _load_signature(export_dir, ITEM_TOWER, ITEM_INPUTS)
    return Export(export_dir=export_dir, user_tower=user_tower, item_tower=item_tower,
                  metadata=metadata, loaded=(user_loaded, item_loaded))


def _serving(tower) -> Callable:
    """A loaded SavedModel's serving_default, or `tower` itself if it is already callable."""
    signatures = getattr(tower, "signatures", None)
    if signatures is not None and SIGNATURE in signatures:
        return signatures[SIGNATURE]
    return tower


def _embed(tower, inputs: dict[str, np.ndarray], n: int, name: str,
           batch_size: int, dim: int | None) -> np.ndarray:
    """Call a tower's signature over `inputs` in batches; check the [n, D] float output."""
    tf = _tf()
    serve = _serving(tower)
    blocks = []
    for start in range(0, n, batch_size):
        batch = {key: tf.constant(value[start:start + batch_size])
                 for key, value in inputs.items()}
        try:
            out = serve(**batch)
        except (TypeError, ValueError, tf.errors.OpError) as error:
            raise InputError(f"{name}: {SIGNATURE} failed on contract inputs "
                             f"({_one_line(error)})") from None
        out = out["embedding"] if isinstance(out, dict) else out
        blocks.append(np.asarray(out, dtype=np.float32))
    if not blocks:
        return np.zeros((0, dim or 0), np.float32)
    embeddings = np.concatenate(blocks)
    if embeddings.ndim != 2 or len(embeddings) != n:
        raise InputError(f"{name}: expected embeddings of shape [{n}, D], "
                         f"got {list(embeddings.shape)}")
    if dim is not None and embeddings.shape[1] != dim:
        raise InputError(f"{name}: embeddings have dimension {embeddings.shape[1]}, "
                         f"metadata.json says embedding_dim={dim}")
    if not np.all(np.isfinite(embeddings)):
        raise InputError(f"{name}: embeddings contain NaN or infinite values")
    return embeddings


def movie_inputs(ml: MovieLens, movies: np.ndarray) -> dict[str, np.ndarray]:
    """Item-tower inputs (raw MovieID and `A|B|C` genres) of movie indices `movies`."""
    rows = ml.movies.iloc[np.asarray(movies, np.int64)]
    return {"movie_id": rows.movie_id.to_numpy(np.int64),
            "genres": rows.genres.to_numpy(dtype=object).astype(str).astype(object)}


def user_inputs(ml: MovieLens, split: Split, users: np.ndarray,
                history_length: int) -> dict[str, np.ndarray]:
    """User-tower inputs of user indices `users`: raw fields and an int64 [n, L] raw history."""
    users = np.asarray(users, np.int64)
    rows = ml.users.iloc[users]
    history = split.histories(users, int(history_length))  # movie index + 1, 0 = padding
    movie_ids = ml.movies.movie_id.to_numpy(np.int64)
    raw = np.where(history > 0, movie_ids[np.maximum(history - 1, 0)], 0).astype(np.int64)
    return {"user_id": rows.user_id.to_numpy(np.int64),
            "gender": rows.gender.to_numpy(dtype=object).astype(str).astype(object),
            "age": rows.age.to_numpy(np.int64),
            "occupation": rows.occupation.to_numpy(np.int64),
            "history": raw.reshape(len(users), int(history_length))}


def embed_movies(item_tower, ml: MovieLens, movies: np.ndarray,
                 batch_size: int = DEFAULT_BATCH_SIZE, dim: int | None = None) -> np.ndarray:
    """[len(movies), D] float32 item embeddings of movie indices `movies`."""
    return _embed(item_tower, movie_inputs(ml, movies), len(movies), ITEM_TOWER, batch_size,
                  dim)


def embed_users(user_tower, ml: MovieLens, split: Split, users: np.ndarray,
                history_length: int, batch_size: int = DEFAULT_BATCH_SIZE,
                dim: int | None = None) -> np.ndarray:
    """[len(users), D] float32 user embeddings of user indices `users` (histories from `split`)."""
    return _embed(user_tower, user_inputs(ml, split, users, history_length), len(users),
                  USER_TOWER, batch_size, dim)


def retrieve(export: Export, ml: MovieLens, split: Split, users: np.ndarray, k: int,
             exclude_seen: bool, index: str = "flat", index_params: dict | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, return_scores: bool = False):
    """Top-`k` candidate movie indices ([n, k], -1 pads) of `users`; optionally their scores."""
    candidates = np.flatnonzero(split.candidates)
    items = embed_movies(export.item_tower, ml, candidates, batch_size, export.embedding_dim)
    queries = embed_users(export.user_tower, ml, split, users, export.history_length,
                          batch_size, export.embedding_dim)
    faiss_index = retrieval.build_index(items, index, **(index_params or {}))
    exclude = split.seen[np.asarray(users, np.int64)] if exclude_seen else None
    return retrieval.search(faiss_index, queries, k, exclude=exclude, item_ids=candidates,
                            return_scores=return_scores)


def evaluate_export(export_dir: str | Export, ml: MovieLens, split: Split, k: int,
                    exclude_seen: bool, index: str = "flat", max_k: int | None = None,
                    index_params: dict | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[dict, np.ndarray]:
    """Contract metrics at `k` of an export on `split`, and the top lists behind them.

    The lists have `max(k, max_k)` columns (longer lists serve recall curves) and one row per
    `split.test_users`. `export_dir` may also be an already loaded `Export`.
    """
    export = export_dir if isinstance(export_dir, Export) else load_export(export_dir)
    start = time.perf_counter()
    depth = max(k, max_k or k)
    top = retrieve(export, ml, split, split.test_users, depth, exclude_seen, index,
                   index_params, batch_size)
    result = evaluation.evaluate_lists(split, top, k, exclude_seen)
    result.update(model="two_tower", export_dir=export.export_dir, index=index,
                  similarity=export.similarity, embedding_dim=export.embedding_dim,
                  history_length=export.history_length,
                  seconds=round(time.perf_counter() - start, 3))
    flags_used = export.metadata.get("flags")
    if isinstance(flags_used, dict):
        for key, value in flags_used.items():
            result.setdefault(key, value)
    return result, top


def split_for_export(ml: MovieLens, export: Export | dict, protocol: str | None = None,
                     cutoff: int | None = None, warn=None) -> Split:
    """The split the export was trained under, unless `protocol`/`cutoff` override it.

    `export` is a loaded `Export` or its metadata dict (`check_export`). `warn(message)` is
    called when an override differs from `metadata.json` (test ratings of one protocol can be
    training ratings of the other: the metrics would be optimistic).
    """
    warn = warn or (lambda message: sys.stderr.write(f"warning: {message}\n"))
    metadata = export.metadata if isinstance(export, Export) else export
    trained_protocol = metadata.get("protocol")
    trained_cutoff = metadata.get("cutoff", metadata.get("train_cutoff"))
    chosen = protocol or trained_protocol or protocols.TIME_SPLIT
    chosen_cutoff = cutoff if cutoff is not None else (trained_cutoff or
                                                       protocols.DEFAULT_CUTOFF)
    if trained_protocol is not None and chosen != trained_protocol:
        warn(f"the export was trained under --protocol={trained_protocol}; evaluating under "
             f"{chosen} can count training ratings as test ratings")
    elif (chosen == protocols.TIME_SPLIT and trained_cutoff is not None
          and chosen_cutoff != trained_cutoff):
        warn(f"the export was trained with --cutoff={trained_cutoff}; evaluating with "
             f"{chosen_cutoff} can count training ratings as test ratings")
    checksums = metadata.get("checksums")
    if isinstance(checksums, dict) and checksums:
        differ = sorted(n for n, s in checksums.items() if n in ml.checksums
                        and ml.checksums[n] != s)
        if differ:
            warn(f"{', '.join(differ)} in {ml.data_dir} differ from the data the export was "
                 f"trained on (metadata.json checksums)")
    return protocols.make_split(ml, chosen, chosen_cutoff)


def index_params_from_flags(split: Split) -> dict:
    """faiss index parameters from --nlist, --nprobe, --hnsw_m and --ef_search, checked against
    the split's number of candidate movies (InputError naming the flag)."""
    given = {}
    if FLAGS.index == "ivf":
        given = {"nlist": FLAGS.nlist, "nprobe": FLAGS.nprobe}
    elif FLAGS.index == "hnsw":
        given = {"hnsw_m": FLAGS.hnsw_m, "ef_search": FLAGS.ef_search}
    with index_errors_as_input_errors():
        return retrieval.index_params(FLAGS.index, int(split.candidates.sum()), **given)


@contextlib.contextmanager
def index_errors_as_input_errors():
    """Turn retrieval's ValueErrors about index parameters into flag errors (exit 2)."""
    try:
        yield
    except InputError:
        raise
    except ValueError as error:
        message = _one_line(error)
        name = message.split(":", 1)[0]
        if name in ("nlist", "nprobe", "hnsw_m", "ef_search"):
            raise InputError(f"--{message}") from None
        raise


def protocol_override() -> tuple[str | None, int | None]:
    """--protocol/--cutoff when given on the command line (or a flagfile), else None."""
    return (FLAGS.protocol if FLAGS["protocol"].present else None,
            FLAGS.cutoff if FLAGS["cutoff"].present else None)


def main(argv: list[str]) -> None:
    del argv
    # Everything that can be checked without TensorFlow is, first: bad input fails fast, in
    # one line, before TensorFlow's start-up messages.
    metadata = check_export(FLAGS.export_dir)
    ml = data.load_movielens(data.resolve_data_dir(FLAGS.data_dir, FLAGS.download_url))
    split = split_for_export(ml, metadata, *protocol_override())
    params = index_params_from_flags(split)
    export = load_export(FLAGS.export_dir)
    result, _ = evaluate_export(export, ml, split, FLAGS.k, FLAGS.exclude_seen, FLAGS.index,
                                index_params=params, batch_size=FLAGS.embed_batch_size)
    evaluation.report(result, FLAGS.output)


if __name__ == "__main__":
    errors.run(main)
