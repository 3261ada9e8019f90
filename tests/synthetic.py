"""Small MovieLens-1M-shaped data sets for tests.

`write_movielens` writes `users.dat`, `movies.dat` (latin-1) and `ratings.dat` in GroupLens'
exact `::` formats. Rows are tuples (joined with `::`) or ready-made strings (written verbatim,
which is how tests plant malformed lines).

`make_dataset` builds a random but valid data set with planted structure: users and movies fall
into `n_groups` groups, a user rates mostly movies of their own group (popular ones more often),
their ratings are spread over time in a random order within ratings.dat, and part of the users
keep rating after the 2003-01-01 cutoff, so both protocols have test ratings. A model that
learns "users like their group's movies" beats popularity on it.

Usage::

    from tests.synthetic import make_dataset, write_movielens
    synth = make_dataset(tmp_path, n_users=60, n_movies=80, seed=0)
    ml = data.load_movielens(synth.folder)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterable, Sequence

import numpy as np

CUTOFF = 1041379200  # 2003-01-01 00:00:00 UTC
DAY = 86400

Row = Sequence[object] | str

# A hand-made data set: 3 users, 4 movies (gaps in the MovieIDs, a latin-1 title), 9 ratings.
TINY_USERS: list[Row] = [
    (1, "F", 1, 10, "48067"),
    (2, "M", 56, 16, "70072"),
    (5, "M", 25, 15, "55117"),
]
TINY_MOVIES: list[Row] = [
    (1, "Toy Story (1995)", "Animation|Children's|Comedy"),
    (2, "Jumanji (1995)", "Adventure|Children's|Fantasy"),
    (10, "Cité des enfants perdus, La (1995)", "Adventure|Sci-Fi"),
    (32, "Twelve Monkeys (1995)", "Drama|Sci-Fi"),
]
TINY_RATINGS: list[Row] = [
    (1, 1, 5, 978300760),
    (1, 10, 3, 978302109),
    (1, 2, 4, CUTOFF + 100),
    (2, 2, 4, 978300000),
    (2, 32, 2, 978300500),
    (2, 1, 1, 978300500),   # same second as the line above: file order breaks the tie
    (5, 32, 5, CUTOFF + 5),  # user 5 rates only after the cutoff
    (5, 1, 3, CUTOFF + 7),
    (2, 10, 5, CUTOFF),      # exactly at the cutoff: a time_split test rating
]

GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western")
AGES = (1, 18, 25, 35, 45, 50, 56)


def _line(row: Row) -> str:
    return row if isinstance(row, str) else "::".join(str(field) for field in row)


def write_lines(path: str, rows: Iterable[Row], encoding: str = "latin-1") -> str:
    """Write one `::` line per row (newline-terminated) and return `path`."""
    with open(path, "w", encoding=encoding, newline="\n") as f:
        for row in rows:
            f.write(_line(row) + "\n")
    return path


def write_movielens(folder, users: Iterable[Row] = TINY_USERS,
                    movies: Iterable[Row] = TINY_MOVIES,
                    ratings: Iterable[Row] = TINY_RATINGS) -> str:
    """Write the three ML-1M files into `folder` (created if needed); return the folder."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    write_lines(os.path.join(folder, "users.dat"), users)
    write_lines(os.path.join(folder, "movies.dat"), movies)
    write_lines(os.path.join(folder, "ratings.dat"), ratings)
    return folder


@dataclasses.dataclass
class Synthetic:
    """What `make_dataset` wrote, plus the planted structure."""

    folder: str
    users: list[tuple]      # (UserID, Gender, Age, Occupation, Zip), file order
    movies: list[tuple]     # (MovieID, Title, Genres), file order
    ratings: list[tuple]    # (UserID, MovieID, Rating, Timestamp), file order
    user_group: dict[int, int]   # UserID -> group
    movie_group: dict[int, int]  # MovieID -> group
    cutoff: int = CUTOFF

    @property
    def n_train_time_split(self) -> int:
        return sum(r[3] < self.cutoff for r in self.ratings)


def make_dataset(folder, n_users: int = 60, n_movies: int = 90, seed: int = 0,
                 n_groups: int = 3, ratings_per_user: tuple[int, int] = (8, 20),
                 in_group: float = 0.9, late_users: float = 0.3,
                 late_ratings: tuple[int, int] = (2, 5)) -> Synthetic:
    """Write a random, valid, structured ML-1M-like data set into `folder`.

    User `u` (UserIDs 1..n_users) is in group `(u - 1) % n_groups`; movie `m` (the i-th movie,
    MovieIDs with gaps: 1, 3, 5, ...) in group `i % n_groups`, with that group's genre and
    demographic quirks. Each user rates between `ratings_per_user` movies, a share `in_group`
    of them from their group, chosen with Zipf-like popularity and without repeats. All ratings
    lie before `CUTOFF`, except that a share `late_users` of the users rate `late_ratings` more
    movies on or after it. Within a user, lines are shuffled (ratings.dat is not in time order).
    """
    rng = np.random.default_rng(seed)
    folder = os.fspath(folder)
    movie_ids = [2 * i + 1 for i in range(n_movies)]
    movie_group = {mid: i % n_groups for i, mid in enumerate(movie_ids)}
    group_genres = [GENRES[(3 * g) % len(GENRES)] for g in range(n_groups)]
    movies = []
    for i, mid in enumerate(movie_ids):
        g = movie_group[mid]
        genres = [group_genres[g]] + ([GENRES[(i * 7) % len(GENRES)]] if i % 2 else [])
        genres = list(dict.fromkeys(genres))  # no repeated genre
        year = 1950 + i % 50
        title = f"Été {mid} ({year})" if i % 5 == 0 else f"Film {mid} ({year})"  # some latin-1
        movies.append((mid, title, "|".join(genres)))

    user_group = {}
    users = []
    for uid in range(1, n_users + 1):
        g = (uid - 1) % n_groups
        user_group[uid] = g
        gender = "F" if (g % 2 == 0) == (rng.random() < 0.8) else "M"
        users.append((uid, gender, AGES[(g + int(rng.integers(2))) % len(AGES)],
                      int((g * 5 + rng.integers(3)) % 21), f"{int(rng.integers(10000, 99999))}"))

    by_group = {g: [m for m in movie_ids if movie_group[m] == g] for g in range(n_groups)}
    weights = {g: 1.0 / np.arange(1, len(ms) + 1) ** 0.8 for g, ms in by_group.items()}
    ratings = []
    for uid, g in user_group.items():
        n = int(rng.integers(ratings_per_user[0], ratings_per_user[1] + 1))
        late = rng.random() < late_users
        if late:
            n += int(rng.integers(late_ratings[0], late_ratings[1] + 1))
        n_in = min(len(by_group[g]), int(round(n * in_group)))
        own = rng.choice(by_group[g], n_in, replace=False, p=weights[g] / weights[g].sum())
        others = [m for m in movie_ids if movie_group[m] != g]
        other = rng.choice(others, min(len(others), n - n_in), replace=False)
        chosen = list(own) + list(other)
        rng.shuffle(chosen)
        n_late = int(rng.integers(late_ratings[0], late_ratings[1] + 1)) if late else 0
        n_late = min(n_late, len(chosen) - 1)
        start = CUTOFF - int(rng.integers(30, 900)) * DAY
        early = np.sort(rng.integers(start, CUTOFF - DAY, len(chosen) - n_late))
        after = np.sort(rng.integers(CUTOFF, CUTOFF + 200 * DAY, n_late))
        stamps = np.concatenate([early, after])
        rows = [(uid, int(m), int(rng.integers(3, 6)) if movie_group[int(m)] == g
                 else int(rng.integers(1, 4)), int(t)) for m, t in zip(chosen, stamps)]
        rng.shuffle(rows)
        ratings.extend(rows)

    write_movielens(folder, users, movies, ratings)
    return Synthetic(folder=folder, users=users, movies=movies, ratings=ratings,
                     user_group=user_group, movie_group=movie_group)


def string_keyed_dataset():
    """A small data set of another shape, built without files: string user keys ("customer")
    and item keys ("sku"), a categorical and a numeric user feature ("segment", "spend"), a
    multi-valued item feature ("tags") and a title ("name")."""
    import pandas as pd  # noqa: PLC0415

    from dssm_tf.config import DataConfig  # noqa: PLC0415
    from dssm_tf.data.dataset import Table, build_dataset  # noqa: PLC0415
    from dssm_tf.data.schema import (CATEGORICAL, FLOAT32, MULTI, NUMERIC, STRING,  # noqa
                                     Feature, Schema)

    schema = Schema(user_key="customer", item_key="sku", user_key_dtype=STRING,
                    item_key_dtype=STRING,
                    user_features=(Feature("segment", CATEGORICAL, STRING),
                                   Feature("spend", NUMERIC, FLOAT32)),
                    item_features=(Feature("tags", MULTI, STRING),), item_title="name")
    users = pd.DataFrame({"customer": ["ann", "bob", "cy", "dee"],
                          "segment": ["gold", "new", "gold", ""],
                          "spend": [120.0, 3.5, 48.0, 0.0]})
    items = pd.DataFrame({"sku": ["a", "b", "c", "d", "e"],
                          "tags": ["red|big", "blue", "", "red", "blue|small"],
                          "name": ["Apple", "Blueberry", "Cherry", "Date", "Elderberry"]})
    rng = np.random.default_rng(0)
    rows = [(u, i, int(t)) for t, (u, i) in enumerate(
        (users.customer[rng.integers(4)], items.sku[rng.integers(5)]) for _ in range(60))]
    interactions = pd.DataFrame(rows, columns=["customer", "sku", "timestamp"])
    return build_dataset(schema, Table(interactions, "events.csv", 2),
                         DataConfig(dataset="tabular", interactions="events.csv"),
                         users=Table(users, "users.csv", 2), items=Table(items, "items.csv", 2))
