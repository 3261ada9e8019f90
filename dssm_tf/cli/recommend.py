"""Top-K items for one user from an exported two-tower model, seen items excluded.

Only the SavedModels are read (as `evaluate` does): the export's one-piece retrieval model
(`export/<version>/retrieval`), or for exports without one (or with `--index=ivf|hnsw`) the
two towers and a faiss index. The user's history and seen items come
from the training part of the split the export was trained under (`metadata.json`'s protocol
and cutoff; `--protocol`/`--cutoff` override); the data is the one `metadata.json` records.
Candidates are the items with at least one training interaction, as in evaluation. As in
evaluation, a timed export (``--history_time``) is asked at `--request_time` (default none:
unknown, -1; a server passes the time of its call), and an export with a history sees the
user's same-second training interactions in the order of tie shuffle seed 0 when
`--tie_shuffles` is above 0 (one list, not a mean; 0: the data's source order).

Usage::

    python -m dssm_tf.recommend --export_dir=runs/bce/export --user_id=42 --k=10

prints::

    Top 10 for user 42 (gender M, age 25-34, occupation executive/managerial): 180 training
    interactions (time_split), seen items excluded
    rank   score  movie_id  title                       genres
       1  0.8123      2571  Matrix, The (1999)          Action|Sci-Fi|Thriller
    ...
"""

from __future__ import annotations

import numpy as np

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.cli.evaluate import checked_index
from dssm_tf.config import IndexConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import Split
from dssm_tf.errors import ConfigError
from dssm_tf.evaluation.exports import split_for_export
from dssm_tf.serving import contract
from dssm_tf.serving.loaded import Export, load_export, load_retrieval, retrieve

FLAGS = cli.FLAGS
DEFAULT_K = 10  # --k is shared with evaluate (default 50); recommend lists 10 unless told
_TEXT_WIDTH = 50


def recommend(export: Export, dataset: Dataset, split: Split, user: int, k: int,
              index: IndexConfig = IndexConfig(), request_time: str = "none"):
    """(item indices, scores) of the `k` best unseen candidates for user index `user`, from
    the two towers and a faiss index (a timed export asked at `request_time`)."""
    top, scores = retrieve(export, dataset, split, np.array([user]), k, exclude_seen=True,
                           index=index, return_scores=True, request_time=request_time)
    keep = top[0] >= 0
    return top[0][keep], scores[0][keep]


def recommend_in_one_piece(retrieval, dataset: Dataset, split: Split, user: int, k: int,
                           timed: bool = False, request_time: str = "none"):
    """The same from the export's one-piece retrieval model: the user's whole training
    history goes in (the tower encodes its last L items; all of them are excluded); `timed`
    (an export trained with ``--history_time``): with its times, and the request's
    (`Split.request_times` of mode `request_time`)."""
    import tensorflow as tf  # noqa: PLC0415

    seen = int(split.user_offsets[user + 1] - split.user_offsets[user])
    inputs = contract.user_inputs(dataset, split, np.array([user]), seen, timed, request_time)
    out = retrieval(**{name: tf.constant(value) for name, value in inputs.items()},
                    k=tf.constant(k, tf.int32), exclude_history=tf.constant(True))
    keys = out[contract.ITEM_KEYS].numpy()[0]
    if keys.dtype == object:  # string keys come back as bytes
        keys = np.array([key.decode() for key in keys])
    return dataset.item_index(keys), out[contract.SCORES].numpy()[0]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def _shown(dataset: Dataset, feature: str, value) -> str:
    """A feature value as a person reads it (ML-1M's age and occupation codes decoded)."""
    labels = dataset.labels.get(feature, {})
    return str(labels.get(value.item() if isinstance(value, np.generic) else value, value))


def describe_user(dataset: Dataset, user: int) -> str:
    """`gender M, age 25-34, ...`: the user's declared features, decoded."""
    row = dataset.users.iloc[user]
    return ", ".join(f"{f.name} {_shown(dataset, f.name, row[f.name])}"
                     for f in dataset.schema.user_features)


def format_table(dataset: Dataset, items: np.ndarray, scores: np.ndarray) -> str:
    """An aligned text table: rank, score, item key, title (if any), item features."""
    schema = dataset.schema
    columns = [schema.item_key] + ([schema.item_title] if schema.item_title else [])
    columns += [f.name for f in schema.item_features]
    rows = dataset.items.iloc[items]
    cells = [(str(rank), f"{score:.4f}",
              *(_clip(_shown(dataset, name, row[name]), _TEXT_WIDTH) for name in columns))
             for rank, (score, (_, row)) in enumerate(zip(scores, rows.iterrows()), start=1)]
    header = ("rank", "score", *columns)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    right = (True, True, True) + (False,) * (len(columns) - 1)

    def line(row):
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)]
        return "  ".join(parts).rstrip()

    return "\n".join(line(row) for row in [header, *cells])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.user_id is None:
        raise ConfigError("user_id", "required (a user key of the data, e.g. a MovieLens "
                                     "UserID)")
    export_dir = contract.resolve_export(FLAGS.export_dir, FLAGS.version)
    metadata = contract.check_export(export_dir)  # fail fast, before TensorFlow starts
    dataset = cli.data_for_export(metadata)
    try:
        user = int(dataset.user_index([dataset.parse_user_key(FLAGS.user_id)])[0])
    except ValueError:
        user = -1
    if user < 0:
        raise ConfigError("user_id", f"{FLAGS.user_id}: no such user in the data "
                                     f"({dataset.name}, {dataset.data_dir})")
    split = split_for_export(dataset, metadata, *cli.protocol_override())
    if int(metadata["history_length"]) > 0 and FLAGS.tie_shuffles > 0:
        split = split.with_shuffled_ties(0)  # evaluation's first pass: one list, not a mean
    index = checked_index(split)
    app.start_tensorflow()
    k = FLAGS.k if FLAGS["k"].present else DEFAULT_K
    one_piece = load_retrieval(export_dir) if index.index == "flat" else None
    if one_piece is not None:
        items, scores = recommend_in_one_piece(one_piece[0], dataset, split, user, k,
                                               contract.is_timed(metadata), FLAGS.request_time)
    else:  # an export without the one-piece model, or an approximate index asked for
        items, scores = recommend(load_export(export_dir), dataset, split, user, k, index,
                                  FLAGS.request_time)
    n_seen = int(split.user_offsets[user + 1] - split.user_offsets[user])
    about = describe_user(dataset, user)
    print(f"Top {len(items)} for user {FLAGS.user_id}{f' ({about})' if about else ''}: "
          f"{n_seen} training interactions ({split.protocol}), seen items excluded")
    print(format_table(dataset, items, scores))


if __name__ == "__main__":
    app.run(main)
