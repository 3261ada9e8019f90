"""MovieLens-1M: locate (or download and verify), parse and validate the three ``.dat`` files.

Raw MovieLens ids are kept beside contiguous indices: ``users.user_id[i]`` is the raw id of
user index ``i`` and ``ratings.user`` holds indices (likewise for movies). Parsing runs in
pandas' C engine, so the 1,000,209 ratings load in a fraction of a second.

Usage::

    ml = load_movielens(resolve_data_dir("path/to/ml-1m"))
    ml.ratings.head()      # user_id, movie_id, rating, timestamp, user, movie  (file order)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
import tempfile
import urllib.request
import zipfile

import numpy as np
import pandas as pd

from dssm_tf.errors import InputError

RATINGS, USERS, MOVIES = "ratings.dat", "users.dat", "movies.dat"
FILES = (RATINGS, USERS, MOVIES)
DOWNLOAD_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = {
    RATINGS: "a89aa3591bc97d6d4e0c89459ff39362",
    USERS: "681c0711d0d4548cd3d4718a49c2dcd8",
    MOVIES: "ef9fd9ff8d1b33faf73e2122c371e910",
}
DATA_DIR_ENV = "DSSM_TF_DATA_DIR"


def default_data_dir() -> str:
    """`$DSSM_TF_DATA_DIR`, else the per-user cache folder `~/.cache/dssm_tf/ml-1m`."""
    return os.environ.get(DATA_DIR_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "dssm_tf", "ml-1m")


def md5(path: str) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _how_to_fix(target: str, url: str) -> str:
    return (f"download {url}, unzip it and put {', '.join(FILES)} in {target} "
            f"(or pass --data_dir=DIR pointing at a folder holding them)")


def download(target: str, url: str = DOWNLOAD_URL,
             checksums: dict[str, str] | None = None) -> None:
    """Fetch `ml-1m.zip`, check each file's md5, then move the files into `target`.

    Everything is unpacked in a temporary folder first: a failed or corrupt download leaves
    `target` as it was.
    """
    checksums = ML1M_MD5 if checksums is None else checksums
    os.makedirs(target, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        archive = os.path.join(tmp, "ml-1m.zip")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
            with zipfile.ZipFile(archive) as zf:
                members = {os.path.basename(n): n for n in zf.namelist()}
                for name in FILES:
                    if name not in members:
                        raise InputError(f"{url}: archive has no {name}; {_how_to_fix(target, url)}")
                    with zf.open(members[name]) as src, open(os.path.join(tmp, name), "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (OSError, zipfile.BadZipFile) as error:
            raise InputError(f"could not download ML-1M from {url} ({error}); "
                             f"{_how_to_fix(target, url)}") from None
        for name in FILES:
            got = md5(os.path.join(tmp, name))
            if name in checksums and got != checksums[name]:
                raise InputError(f"{url}: {name} has md5 {got}, expected {checksums[name]}; "
                                 f"{_how_to_fix(target, url)}")
        for name in FILES:
            os.replace(os.path.join(tmp, name), os.path.join(target, name))


def resolve_data_dir(data_dir: str | None = None, url: str = DOWNLOAD_URL,
                     checksums: dict[str, str] | None = None) -> str:
    """The folder to read. An explicit `data_dir` must hold the files; the default is downloaded."""
    if data_dir:
        missing = [n for n in FILES if not os.path.isfile(os.path.join(data_dir, n))]
        if missing:
            raise InputError(f"{os.path.join(data_dir, missing[0])}: file not found "
                             f"(--data_dir must hold {', '.join(FILES)})")
        return data_dir
    target = default_data_dir()
    if not all(os.path.isfile(os.path.join(target, n)) for n in FILES):
        download(target, url, checksums)
    return target


def _read_dat(path: str, columns: dict[str, str]) -> pd.DataFrame:
    """Parse a `::`-separated file; `columns` maps each name to "int" or "str".

    Every malformed line is reported as ``file:line: what was expected``.
    """
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise InputError(f"{path}: file is empty")
    names = list(columns)
    fields = raw.split(b"\n", 1)[0].count(b"::") + 1
    if fields > len(names):  # pandas would drop line 1's extra fields with index_col=False
        raise InputError(f"{path}:1: expected {len(names)} '::'-separated fields "
                         f"({'::'.join(names)}), saw {fields}")

    def parse(dtype) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(raw.replace(b"::", b"\x1f")), sep="\x1f", header=None, names=names,
            index_col=False, dtype=dtype, quoting=csv.QUOTE_NONE, encoding="latin-1",
            skip_blank_lines=False, keep_default_na=False, na_values=[""], engine="c")

    try:
        frame = parse({n: str for n, kind in columns.items() if kind == "str"})
    except pd.errors.ParserError as error:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(error))
        where = f"{path}:{found.group(2)}" if found else path
        saw = f", saw {found.group(3)}" if found else f" ({error})"
        raise InputError(f"{where}: expected {len(names)} '::'-separated fields "
                         f"({'::'.join(names)}){saw}") from None
    incomplete = frame.isna().to_numpy().any(axis=1)
    if incomplete.any():
        line = int(np.argmax(incomplete)) + 1
        raise InputError(f"{path}:{line}: expected {len(names)} '::'-separated fields "
                         f"({'::'.join(names)})")
    for name, kind in columns.items():
        if kind == "int" and not pd.api.types.is_integer_dtype(frame[name]):
            text = parse(str)[name]  # the fields as written ("4.0" must not pass as 4)
            bad = np.array([not _is_int64(value) for value in text])
            if not bad.any():
                raise InputError(f"{path}: expected an integer {name} on every line")
            line = int(np.argmax(bad)) + 1
            raise InputError(f"{path}:{line}: expected an integer {name}, "
                             f"got {text.iloc[line - 1]!r}")
    return frame


def _is_int64(text: str) -> bool:
    return (re.fullmatch(r"[+-]?[0-9]+", text) is not None
            and -2**63 <= int(text) < 2**63)


def _check(path: str, bad: np.ndarray, message: str, values: pd.Series) -> None:
    """Raise for the first True in `bad`, naming its 1-based line."""
    if bad.any():
        row = int(np.argmax(bad))
        raise InputError(f"{path}:{row + 1}: {message}, got {str(values.iloc[row])!r}")


@dataclasses.dataclass(frozen=True)
class MovieLens:
    """The parsed data set; row `i` of `users`/`movies` is index `i`."""

    users: pd.DataFrame    # user_id, gender, age, occupation, zip
    movies: pd.DataFrame   # movie_id, title, genres ("A|B|C")
    ratings: pd.DataFrame  # user_id, movie_id, rating, timestamp, user, movie; file order
    data_dir: str
    checksums: dict[str, str]

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_movies(self) -> int:
        return len(self.movies)

    def user_index(self, user_ids) -> np.ndarray:
        """Raw UserIDs to indices (-1 for unknown ids)."""
        return pd.Index(self.users.user_id).get_indexer(np.asarray(user_ids))

    def movie_index(self, movie_ids) -> np.ndarray:
        """Raw MovieIDs to indices (-1 for unknown ids)."""
        return pd.Index(self.movies.movie_id).get_indexer(np.asarray(movie_ids))

    @property
    def genre_vocabulary(self) -> list[str]:
        return sorted({g for gs in self.movies.genres for g in gs.split("|") if g})


def load_movielens(data_dir: str) -> MovieLens:
    """Parse and validate `users.dat`, `movies.dat` and `ratings.dat` in `data_dir`."""
    paths = {name: os.path.join(data_dir, name) for name in FILES}
    users = _read_dat(paths[USERS], {"user_id": "int", "gender": "str", "age": "int",
                                     "occupation": "int", "zip": "str"})
    movies = _read_dat(paths[MOVIES], {"movie_id": "int", "title": "str", "genres": "str"})
    ratings = _read_dat(paths[RATINGS], {"user_id": "int", "movie_id": "int",
                                         "rating": "int", "timestamp": "int"})
    _check(paths[USERS], users.user_id.duplicated().to_numpy(), "duplicate UserID",
           users.user_id)
    _check(paths[USERS], ~users.gender.isin(["F", "M"]).to_numpy(), "expected gender F or M",
           users.gender)
    _check(paths[MOVIES], movies.movie_id.duplicated().to_numpy(), "duplicate MovieID",
           movies.movie_id)
    _check(paths[RATINGS], ~ratings.rating.between(1, 5).to_numpy(),
           "expected a rating in 1..5", ratings.rating)
    user = pd.Index(users.user_id).get_indexer(ratings.user_id)
    movie = pd.Index(movies.movie_id).get_indexer(ratings.movie_id)
    _check(paths[RATINGS], user < 0, f"UserID not in {USERS}", ratings.user_id)
    _check(paths[RATINGS], movie < 0, f"MovieID not in {MOVIES}", ratings.movie_id)
    ratings = ratings.assign(user=user.astype(np.int64), movie=movie.astype(np.int64))
    checksums = {name: md5(path) for name, path in paths.items()}
    return MovieLens(users=users, movies=movies, ratings=ratings, data_dir=data_dir,
                     checksums=checksums)
