"""The MovieLens releases: locate (or download and verify), parse and validate them.

Each release (`RELEASES`) knows its GroupLens zip, the zip's md5 where GroupLens publishes one,
the files it needs and how to read them into the common `Dataset`. Every release has the user
key ``user_id``, the item key ``movie_id``, the multi-valued item feature ``genres``
(``"A|B|C"``) and the display column ``title``; interactions are ``user_id, movie_id, rating,
timestamp`` (Unix seconds) in file order. Per release:

- movielens-100k: ``u.data`` (tab-separated), ``u.user``, ``u.item``, ``u.genre``
  (``|``-separated, latin-1). ``u.item`` carries one 0/1 flag per genre of ``u.genre``; the
  set flags become ``genres``. User features ``gender``, ``age`` (raw years) and
  ``occupation`` (a name);
- movielens-1m: ``ratings.dat``, ``users.dat``, ``movies.dat`` (``::``-separated, latin-1).
  User features ``gender``, ``age`` and ``occupation`` (codes, labelled from the README).
  This is exactly the historic serving contract (`docs/CONTRACT.md`);
- movielens-10m: ``ratings.dat`` (half-star ratings) and ``movies.dat`` (``::``-separated;
  ``movies.dat`` is read as UTF-8 when it decodes as such, else latin-1). No user table;
- movielens-20m, -25m, -32m: ``ratings.csv`` and ``movies.csv`` (header rows, UTF-8, quoted
  titles), columns renamed to the names above. No user table.

Usage::

    dataset = load(DataConfig(dataset="movielens-1m", data_dir="path/to/ml-1m"))
    dataset.items.head()       # movie_id, title, genres
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import urllib.request
import zipfile
from typing import Callable

import numpy as np
import pandas as pd

from dssm_tf.config import DataConfig
from dssm_tf.data.dataset import Dataset, Table, build_dataset
from dssm_tf.data.schema import CATEGORICAL, INT64, MULTI, STRING, Feature, Schema
from dssm_tf.data.sources import files
from dssm_tf.errors import InputError
from dssm_tf.io import md5
from dssm_tf.progress import progress

DATA_DIR_ENV = "DSSM_TF_DATA_DIR"   # default folder of movielens-1m (the contract's)
CACHE_ENV = "DSSM_TF_CACHE"         # root of the per-release cache folders
BASE_URL = "https://files.grouplens.org/datasets/movielens/"
USER_KEY, ITEM_KEY = "user_id", "movie_id"
GENRES, TITLE = "genres", "title"
ML1M_CUTOFF = 1041379200  # 2003-01-01 00:00:00 UTC: the seed's time split

# ML-1M's README: what the age and occupation codes of users.dat mean (shown by `recommend`).
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55",
             56: "56+"}
ML1M_OCCUPATIONS = dict(enumerate([
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer"]))

USER_FEATURES = (Feature("gender", CATEGORICAL, STRING), Feature("age", CATEGORICAL, INT64),
                 Feature("occupation", CATEGORICAL, INT64))
# ML-100K's u.user names the occupation ("technician") where ML-1M has a code.
ML100K_USER_FEATURES = USER_FEATURES[:2] + (Feature("occupation", CATEGORICAL, STRING),)
ITEM_FEATURES = (Feature(GENRES, MULTI, STRING),)


@dataclasses.dataclass(frozen=True)
class Parsed:
    """What a release reader returns: the schema and the three tables (users may be None)."""

    schema: Schema
    interactions: Table   # columns user_id, movie_id, timestamp, rating
    users: Table | None
    items: Table
    labels: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Release:
    """One GroupLens release."""

    name: str                 # --dataset value
    zip_name: str             # GroupLens' file name, e.g. ml-1m.zip
    folder: str               # the cache folder's name
    files: tuple[str, ...]    # what must be in the data folder
    read: Callable[[str], Parsed]
    zip_md5: str | None = None
    default_cutoff: int | None = None

    @property
    def url(self) -> str:
        return BASE_URL + self.zip_name


# --- movielens-100k ------------------------------------------------------------------------------

ML100K_FILES = ("u.data", "u.user", "u.item", "u.genre")
ML100K_ITEM_FIELDS = {ITEM_KEY: "int", TITLE: "str", "release_date": "str",
                      "video_release_date": "str", "imdb_url": "str"}  # then a flag per genre


def _read_genre_names(path: str) -> list[str]:
    """`u.genre`: ``name|index`` lines -> the names, by index."""
    table = files.read_delimited(path, {"name": "str", "index": "str"}, sep="|")
    names = table.frame["name"]
    table.fail((names == "").to_numpy(), "expected a genre name", "name")
    table.fail(names.duplicated().to_numpy(), "genre named twice", "name")
    indices = files.integers(table, "index")
    repeated = pd.Series(indices).duplicated().to_numpy()
    table.fail((indices < 0) | (indices >= len(indices)) | repeated,
               f"expected a distinct genre index in 0..{len(indices) - 1}", "index")
    ordered = [""] * len(indices)
    for name, index in zip(names, indices):
        ordered[index] = str(name)
    return ordered


def read_ml100k(folder: str) -> Parsed:
    """`u.data` (tab-separated), `u.user`, `u.item` and `u.genre` (``|``-separated, latin-1)."""
    paths = {name: os.path.join(folder, name) for name in ML100K_FILES}
    genre_names = _read_genre_names(paths["u.genre"])
    clash = sorted(set(genre_names) & set(ML100K_ITEM_FIELDS))
    if clash:
        raise InputError(f"{paths['u.genre']}: genre name {clash[0]!r} is also a u.item field")
    movies = files.read_delimited(paths["u.item"], {
        **ML100K_ITEM_FIELDS, **{name: "int" for name in genre_names}}, sep="|")
    for name in genre_names:
        movies.fail(~movies.frame[name].isin([0, 1]).to_numpy(),
                    f"expected a 0/1 flag for genre {name}", name)
    flags = movies.frame[genre_names].to_numpy(bool)
    names = np.array(genre_names, dtype=object)
    genres = ["|".join(names[row]) for row in flags]
    movies = dataclasses.replace(movies, frame=pd.DataFrame({
        ITEM_KEY: movies.frame[ITEM_KEY], TITLE: movies.frame[TITLE], GENRES: genres}))
    users = files.read_delimited(paths["u.user"], {
        USER_KEY: "int", "age": "int", "gender": "str", "occupation": "str", "zip": "str"},
        sep="|")
    users = dataclasses.replace(users, frame=users.frame[[USER_KEY, "gender", "age",
                                                          "occupation", "zip"]])
    users.fail(~users.frame.gender.isin(["F", "M"]).to_numpy(), "expected gender F or M",
               "gender")
    ratings = files.read_delimited(paths["u.data"], {
        USER_KEY: "int", ITEM_KEY: "int", "rating": "int", "timestamp": "int"}, sep="\t")
    _check_ratings(ratings, 1, 5)
    schema = Schema(user_key=USER_KEY, item_key=ITEM_KEY, user_features=ML100K_USER_FEATURES,
                    item_features=ITEM_FEATURES, item_title=TITLE)
    return Parsed(schema, ratings, users, movies)


def _check_ratings(ratings: Table, low: float, high: float) -> None:
    ratings.fail(~ratings.frame.rating.between(low, high).to_numpy(),
                 f"expected a rating in {low:g}..{high:g}", "rating")


# --- movielens-1m --------------------------------------------------------------------------------

def read_ml1m(folder: str) -> Parsed:
    """`users.dat`, `movies.dat` (latin-1) and `ratings.dat`, ``::``-separated."""
    paths = {name: os.path.join(folder, name) for name in ML1M_FILES}
    users = files.read_delimited(paths["users.dat"], {
        USER_KEY: "int", "gender": "str", "age": "int", "occupation": "int", "zip": "str"})
    movies = files.read_delimited(paths["movies.dat"], {
        ITEM_KEY: "int", TITLE: "str", GENRES: "str"})
    ratings = files.read_delimited(paths["ratings.dat"], {
        USER_KEY: "int", ITEM_KEY: "int", "rating": "int", "timestamp": "int"})
    users.fail(~users.frame.gender.isin(["F", "M"]).to_numpy(), "expected gender F or M",
               "gender")
    _check_ratings(ratings, 1, 5)
    schema = Schema(user_key=USER_KEY, item_key=ITEM_KEY, user_features=USER_FEATURES,
                    item_features=ITEM_FEATURES, item_title=TITLE)
    return Parsed(schema, ratings, users, movies,
                  labels={"age": ML1M_AGES, "occupation": ML1M_OCCUPATIONS})


ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")

# --- movielens-10m -------------------------------------------------------------------------------

ML10M_FILES = ("ratings.dat", "movies.dat")
ITEMS_ONLY = Schema(user_key=USER_KEY, item_key=ITEM_KEY, item_features=ITEM_FEATURES,
                    item_title=TITLE)


def text_encoding(path: str) -> str:
    """UTF-8 if the file decodes as UTF-8, else latin-1 (which decodes any bytes).

    GroupLens wrote ML-1M's titles in latin-1; a latin-1 file with accented titles is almost
    never valid UTF-8, and an ASCII file reads the same either way.
    """
    try:
        files.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def read_ml10m(folder: str) -> Parsed:
    """`ratings.dat` (half stars) and `movies.dat`, ``::``-separated; no user table."""
    paths = {name: os.path.join(folder, name) for name in ML10M_FILES}
    movies = files.read_delimited(paths["movies.dat"], {
        ITEM_KEY: "int", TITLE: "str", GENRES: "str"},
        encoding=text_encoding(paths["movies.dat"]))
    ratings = files.read_delimited(paths["ratings.dat"], {
        USER_KEY: "int", ITEM_KEY: "int", "rating": "float", "timestamp": "int"})
    # Whole stars are written "5", half stars "4.5": float64 either way.
    ratings = dataclasses.replace(ratings, frame=ratings.frame.astype({"rating": np.float64}))
    _check_ratings(ratings, 0.5, 5)
    return Parsed(ITEMS_ONLY, ratings, None, movies)


# --- movielens-20m, -25m, -32m -------------------------------------------------------------------

CSV_FILES = ("ratings.csv", "movies.csv")
CSV_RATINGS = {"userId": USER_KEY, "movieId": ITEM_KEY, "rating": "rating",
               "timestamp": "timestamp"}
CSV_MOVIES = {"movieId": ITEM_KEY, "title": TITLE, "genres": GENRES}


def read_csv_ratings(path: str) -> Table:
    """`ratings.csv` (``userId,movieId,rating,timestamp``) as a Table with canonical names."""
    table = files.read_table(path, columns=list(CSV_RATINGS))
    return dataclasses.replace(table, frame=pd.DataFrame({
        USER_KEY: files.integers(table, "userId"), ITEM_KEY: files.integers(table, "movieId"),
        "rating": files.numbers(table, "rating"),
        "timestamp": files.integers(table, "timestamp")}, copy=False))


def read_csv_movies(path: str) -> Table:
    """`movies.csv` (``movieId,title,genres``, UTF-8, quoted titles) with canonical names."""
    table = files.read_table(path)
    files.require_columns(table, CSV_MOVIES)
    return dataclasses.replace(table, frame=pd.DataFrame({
        ITEM_KEY: files.integers(table, "movieId"), TITLE: files.strings(table, "title"),
        GENRES: files.strings(table, "genres")}))


def read_csv_release(folder: str) -> Parsed:
    """`ratings.csv` and `movies.csv` of ML-20M/25M/32M; no user table."""
    movies = read_csv_movies(os.path.join(folder, "movies.csv"))
    ratings = read_csv_ratings(os.path.join(folder, "ratings.csv"))
    _check_ratings(ratings, 0.5, 5)
    return Parsed(ITEMS_ONLY, ratings, None, movies)


RELEASES: dict[str, Release] = {release.name: release for release in (
    Release("movielens-100k", "ml-100k.zip", "ml-100k", ML100K_FILES, read_ml100k,
            zip_md5="0e33842e24a9c977be4e0107933c0723"),
    Release("movielens-1m", "ml-1m.zip", "ml-1m", ML1M_FILES, read_ml1m,
            zip_md5="c4d9eecfca2ab87c1945afe126590906", default_cutoff=ML1M_CUTOFF),
    Release("movielens-10m", "ml-10m.zip", "ml-10M100K", ML10M_FILES, read_ml10m,
            zip_md5="ce571fd55effeba0271552578f2648bd"),
    Release("movielens-20m", "ml-20m.zip", "ml-20m", CSV_FILES, read_csv_release,
            zip_md5="cd245b17a1ae2cc31bb14903e1204af3"),
    Release("movielens-25m", "ml-25m.zip", "ml-25m", CSV_FILES, read_csv_release,
            zip_md5="6b51fb2759a8657d3bfcbfc42b592ada"),
    Release("movielens-32m", "ml-32m.zip", "ml-32m", CSV_FILES, read_csv_release),
)}


# --- locating and downloading ------------------------------------------------------------------

def default_data_dir(release: Release) -> str:
    """movielens-1m: `$DSSM_TF_DATA_DIR` if set; otherwise `$DSSM_TF_CACHE/<folder>` or
    `~/.cache/dssm_tf/<folder>`."""
    if release.name == "movielens-1m" and os.environ.get(DATA_DIR_ENV):
        return os.environ[DATA_DIR_ENV]
    root = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                     "dssm_tf")
    return os.path.join(root, release.folder)


def _how_to_fix(release: Release, target: str, url: str) -> str:
    return (f"download {url}, unzip it and put {', '.join(release.files)} in {target} "
            f"(or pass --data_dir=DIR pointing at a folder holding them)")


def download(release: Release, target: str, url: str | None = None,
             zip_md5: str | None = None) -> None:
    """Fetch the release's zip, check its md5 (`zip_md5`, default the release's), then move
    the files it needs into `target`.

    Everything is unpacked in a temporary folder first: a failed or corrupt download leaves
    `target` as it was.
    """
    url = url or release.url
    expected = zip_md5 if zip_md5 is not None else release.zip_md5
    os.makedirs(target, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        archive = os.path.join(tmp, "release.zip")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, \
                    open(archive, "wb") as f:
                shutil.copyfileobj(response, f)
            got = md5(archive)
            if expected and got != expected:
                raise InputError(f"{url}: zip has md5 {got}, expected {expected}; "
                                 f"{_how_to_fix(release, target, url)}")
            with zipfile.ZipFile(archive) as zf:
                members = {os.path.basename(n): n for n in zf.namelist() if not n.endswith("/")}
                for name in release.files:
                    if name not in members:
                        raise InputError(f"{url}: archive has no {name}; "
                                         f"{_how_to_fix(release, target, url)}")
                    with zf.open(members[name]) as src, \
                            open(os.path.join(tmp, name), "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (OSError, zipfile.BadZipFile) as error:
            raise InputError(f"could not download {release.name} from {url} ({error}); "
                             f"{_how_to_fix(release, target, url)}") from None
        for name in release.files:
            os.replace(os.path.join(tmp, name), os.path.join(target, name))


def resolve_data_dir(release: Release, data_dir: str | None = None,
                     url: str | None = None) -> str:
    """The folder to read. An explicit `data_dir` must hold the files; the default folder is
    downloaded into when they are missing."""
    if data_dir:
        missing = [n for n in release.files if not os.path.isfile(os.path.join(data_dir, n))]
        if missing:
            raise InputError(f"{os.path.join(data_dir, missing[0])}: file not found "
                             f"(--data_dir must hold {', '.join(release.files)})")
        return data_dir
    target = default_data_dir(release)
    if not all(os.path.isfile(os.path.join(target, n)) for n in release.files):
        download(release, target, url)
    return target


def load(config: DataConfig) -> Dataset:
    """Read the release `config.dataset` from `config.data_dir` (default: cache/download)."""
    release = RELEASES[config.dataset]
    folder = os.path.abspath(resolve_data_dir(release, config.data_dir, config.download_url))
    # A bar over the three stages (ML-25M: ~70% reading, ~10% checksums, ~20% indexing), on a
    # terminal only: the stage it is in, and the time it has taken.
    with progress(total=3, what=f"loading {release.name}", unit="stage") as bar:
        bar.set_postfix_str(f"reading {', '.join(release.files)}")
        parsed = release.read(folder)
        bar.update()
        bar.set_postfix_str("checksums")
        checksums = {name: md5(os.path.join(folder, name)) for name in release.files}
        bar.update()
        bar.set_postfix_str("indexing")
        dataset = build_dataset(parsed.schema, parsed.interactions,
                                dataclasses.replace(config, data_dir=folder),
                                users=parsed.users, items=parsed.items, checksums=checksums,
                                default_cutoff=release.default_cutoff, labels=parsed.labels)
        bar.update()
    return dataset
