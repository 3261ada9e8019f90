"""Top-K movie titles for one user from an exported two-tower model, seen movies excluded.

Only the SavedModels are read (as `evaluate` does). The user's history and seen movies come
from the training part of the split the export was trained under (`metadata.json`'s protocol
and cutoff; `--protocol`/`--cutoff` override). Candidates are the movies with at least one
training rating, as in evaluation.

Usage::

    python -m dssm_tf.recommend --export_dir=runs/bce/export --user_id=42 --k=10

prints::

    Top 10 for user 42 (M, age 25, occupation 7): 180 training ratings, seen movies excluded
    rank   score  MovieID  title                       genres
       1  0.8123     2571  Matrix, The (1999)          Action|Sci-Fi|Thriller
    ...
"""

from __future__ import annotations

import os

import numpy as np

from dssm_tf import data, errors, evaluate
from dssm_tf import flags as cli
from dssm_tf.data import MovieLens
from dssm_tf.errors import InputError
from dssm_tf.protocols import Split

FLAGS = cli.FLAGS
DEFAULT_K = 10  # --k is shared with evaluate (default 50); recommend lists 10 unless told
_TITLE_WIDTH = 50


def recommend(export: evaluate.Export, ml: MovieLens, split: Split, user: int, k: int,
              index: str = "flat", index_params: dict | None = None):
    """(movie indices, scores) of the `k` best unseen candidates for user index `user`."""
    top, scores = evaluate.retrieve(export, ml, split, np.array([user]), k, exclude_seen=True,
                                    index=index, index_params=index_params, return_scores=True)
    keep = top[0] >= 0
    return top[0][keep], scores[0][keep]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def format_table(ml: MovieLens, movies: np.ndarray, scores: np.ndarray) -> str:
    """An aligned text table: rank, score, MovieID, title, genres."""
    rows = ml.movies.iloc[movies]
    cells = [(str(rank), f"{score:.4f}", str(movie_id), _clip(title, _TITLE_WIDTH), genres)
             for rank, (score, movie_id, title, genres)
             in enumerate(zip(scores, rows.movie_id, rows.title, rows.genres), start=1)]
    header = ("rank", "score", "MovieID", "title", "genres")
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    right = (True, True, True, False, False)

    def line(row):
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)]
        return "  ".join(parts).rstrip()

    return "\n".join(line(row) for row in [header, *cells])


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.user_id is None:
        raise InputError("--user_id: required (a UserID from users.dat)")
    metadata = evaluate.check_export(FLAGS.export_dir)  # fail fast, before TensorFlow starts
    ml = data.load_movielens(data.resolve_data_dir(FLAGS.data_dir, FLAGS.download_url))
    user = int(ml.user_index([FLAGS.user_id])[0])
    if user < 0:
        raise InputError(f"--user_id={FLAGS.user_id}: no such UserID in "
                         f"{os.path.join(ml.data_dir, data.USERS)}")
    split = evaluate.split_for_export(ml, metadata, *evaluate.protocol_override())
    params = evaluate.index_params_from_flags(split)
    export = evaluate.load_export(FLAGS.export_dir)
    k = FLAGS.k if FLAGS["k"].present else DEFAULT_K
    movies, scores = recommend(export, ml, split, user, k, FLAGS.index, params)
    person = ml.users.iloc[user]
    n_seen = int(split.user_offsets[user + 1] - split.user_offsets[user])
    print(f"Top {len(movies)} for user {FLAGS.user_id} ({person.gender}, age {person.age}, "
          f"occupation {person.occupation}): {n_seen} training ratings "
          f"({split.protocol}), seen movies excluded")
    print(format_table(ml, movies, scores))


if __name__ == "__main__":
    errors.run(main)
