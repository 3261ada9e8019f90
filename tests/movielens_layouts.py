"""Small MovieLens folders in each GroupLens release's exact file layout, for tests.

- `write_ml100k`: ``u.data`` (tab-separated), ``u.user``, ``u.item`` (one 0/1 flag per genre)
  and ``u.genre`` (``|``-separated, latin-1), as in ``ml-100k.zip``;
- `write_ml10m`: ``ratings.dat`` and ``movies.dat`` (``::``-separated), as in ``ml-10m.zip``;
- `write_csv_release`: ``ratings.csv`` and ``movies.csv`` with GroupLens' header rows (titles
  quoted when they hold a comma or a quote), as in ``ml-20m.zip``, ``ml-25m.zip`` and
  ``ml-32m.zip``;
- `zip_folder`: a release zip (files under a top folder) to download from a ``file://`` URL.

Rows are tuples (written in the layout) or ready-made strings (written verbatim, which is how
tests plant malformed lines).

Usage::

    folder = write_csv_release(tmp_path / "ml-25m", CSV_RATINGS, CSV_MOVIES)
    dataset = load_dataset(DataConfig(dataset="movielens-25m", data_dir=folder))
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from typing import Sequence

Row = Sequence[object] | str

# ML-100K's u.genre, in index order.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
                 "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")

# ML-100K: (user, item, rating, timestamp); (user, age, gender, occupation, zip);
# (movie, title, release date, video release date, IMDb URL, genres set).
ML100K_RATINGS: list[Row] = [
    (196, 242, 3, 881250949),
    (186, 302, 3, 891717742),
    (22, 377, 1, 878887116),
    (196, 267, 2, 881250949),   # same second as line 1: file order breaks the tie
    (22, 242, 5, 878887000),
]
ML100K_USERS: list[Row] = [
    (22, 25, "M", "writer", "40206"),
    (186, 39, "F", "executive", "00000"),
    (196, 49, "M", "writer", "55105"),
]
ML100K_MOVIES: list[Row] = [
    (242, "Kolya (1996)", "24-Jan-1997", "", "http://us.imdb.com/M/title-exact?Kolya%20(1996)",
     ("Comedy",)),
    (267, "unknown", "", "", "", ("unknown",)),
    (302, "L.A. Confidential (1997)", "01-Jan-1997", "", "http://us.imdb.com/x",
     ("Crime", "Film-Noir", "Mystery", "Thriller")),
    (377, "Cité des enfants perdus, La (1995)", "01-Jan-1995", "", "", ()),
]

# ML-10M: (user, movie, rating as written, timestamp); (movie, title, genres).
ML10M_RATINGS: list[Row] = [
    (1, 122, "5", 838985046),
    (1, 185, "4.5", 838983525),
    (7, 122, "0.5", 1230000000),
    (7, 8606, "3", 838983525),
]
ML10M_MOVIES: list[Row] = [
    (122, "Boomerang (1992)", "Comedy|Romance"),
    (185, "Net, The (1995)", "Action|Crime|Thriller"),
    (8606, "Pull My Daisy (1958)", "(no genres listed)"),
    (26, "Othello (1995)", "Drama"),
]

# ML-20M/25M/32M: (userId, movieId, rating as written, timestamp); (movieId, title, genres).
CSV_RATINGS: list[Row] = [
    (1, 296, "5.0", 1147880044),
    (1, 11, "3.5", 1147868817),
    (3, 209163, "0.5", 1574327512),
    (2, 296, "4.0", 1147880044),
    (3, 11, "5", 1574327513),
]
CSV_MOVIES: list[Row] = [
    (11, "American President, The (1995)", "Comedy|Drama|Romance"),
    (296, "Pulp Fiction (1994)", "Comedy|Crime|Drama|Thriller"),
    (209163, "Bad Poems (2018)", "(no genres listed)"),
    (4, "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "Comedy|Romance"),
    (5, 'Dr. Strangelove or: How I Learned to Stop Worrying, "Bomb" (1964)', "Comedy|War"),
    (6, "千と千尋の神隠し (2001)", "Animation"),
]
CSV_RATINGS_HEADER = "userId,movieId,rating,timestamp"
CSV_MOVIES_HEADER = "movieId,title,genres"


def _write(path: str, lines: list[str], encoding: str, after: str = "") -> str:
    """Each line ended by a newline (Unix, as GroupLens ships them), then `after`."""
    with open(path, "w", encoding=encoding, newline="") as f:
        f.write("".join(line + "\n" for line in lines) + after)
    return path


def _joined(rows: list[Row], sep: str) -> list[str]:
    return [row if isinstance(row, str) else sep.join(str(v) for v in row) for row in rows]


def ml100k_item_line(movie: Row, genres: Sequence[str] = ML100K_GENRES) -> str:
    """One u.item line: five fields, then a 0/1 flag per genre of u.genre."""
    if isinstance(movie, str):
        return movie
    *fields, chosen = movie
    flags = ["1" if name in chosen else "0" for name in genres]
    return "|".join([str(v) for v in fields] + flags)


def write_ml100k(folder, ratings: list[Row] = ML100K_RATINGS, users: list[Row] = ML100K_USERS,
                 movies: list[Row] = ML100K_MOVIES, genres: Sequence[str] = ML100K_GENRES,
                 genre_lines: list[str] | None = None, trailing_blank_line: bool = True) -> str:
    """u.data, u.user, u.item, u.genre (latin-1), like ml-100k.zip (whose u.genre ends in a
    blank line)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, "u.data"), _joined(ratings, "\t"), "latin-1")
    _write(os.path.join(folder, "u.user"), _joined(users, "|"), "latin-1")
    _write(os.path.join(folder, "u.item"), [ml100k_item_line(m, genres) for m in movies],
           "latin-1")
    lines = genre_lines if genre_lines is not None else [f"{name}|{index}" for index, name
                                                         in enumerate(genres)]
    _write(os.path.join(folder, "u.genre"), lines, "latin-1",
           after="\n" if trailing_blank_line else "")
    return folder


def write_ml10m(folder, ratings: list[Row] = ML10M_RATINGS, movies: list[Row] = ML10M_MOVIES,
                movies_encoding: str = "utf-8") -> str:
    """ratings.dat and movies.dat, ``::``-separated, like ml-10m.zip's ml-10M100K folder."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, "ratings.dat"), _joined(ratings, "::"), "ascii")
    _write(os.path.join(folder, "movies.dat"), _joined(movies, "::"), movies_encoding)
    return folder


def _csv_lines(header: str, rows: list[Row]) -> list[str]:
    lines = [header]
    for row in rows:
        if isinstance(row, str):
            lines.append(row)
        else:
            text = io.StringIO()
            csv.writer(text, lineterminator="").writerow(row)  # quotes "a, b" as GroupLens does
            lines.append(text.getvalue())
    return lines


def write_csv_release(folder, ratings: list[Row] = CSV_RATINGS, movies: list[Row] = CSV_MOVIES,
                      ratings_header: str = CSV_RATINGS_HEADER,
                      movies_header: str = CSV_MOVIES_HEADER) -> str:
    """ratings.csv and movies.csv (UTF-8, header rows), like ml-20m/25m/32m.zip."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    _write(os.path.join(folder, "ratings.csv"), _csv_lines(ratings_header, ratings), "utf-8")
    _write(os.path.join(folder, "movies.csv"), _csv_lines(movies_header, movies), "utf-8")
    return folder


def zip_folder(folder, zip_path, top: str) -> str:
    """Zip every file of `folder` under ``top/`` (GroupLens zips hold one top folder)."""
    zip_path = str(zip_path)
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(f"{top}/", "")
        for name in sorted(os.listdir(folder)):
            zf.write(os.path.join(folder, name), f"{top}/{name}")
    return zip_path
