"""dssm_tf.data.sources.movielens, releases other than 1m: parsing each GroupLens layout, errors
that name the file and line, downloading from a zip and the offline default.

Every folder is written by `tests.movielens_layouts` in its release's exact layout; nothing
here touches the network.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from dssm_tf.config import MOVIELENS, DataConfig
from dssm_tf.data.sources import load_dataset, movielens
from dssm_tf.errors import InputError
from dssm_tf.io import md5
from tests import movielens_layouts as layouts
from tests.movielens_layouts import (CSV_MOVIES, CSV_RATINGS, ML10M_MOVIES, ML10M_RATINGS,
                                     ML100K_MOVIES, ML100K_RATINGS, ML100K_USERS)

CSV_RELEASES = ("movielens-20m", "movielens-25m", "movielens-32m")
WRITERS = {"movielens-100k": layouts.write_ml100k, "movielens-10m": layouts.write_ml10m,
           **{name: layouts.write_csv_release for name in CSV_RELEASES}}


def load(dataset: str, folder: str):
    return load_dataset(DataConfig(dataset=dataset, data_dir=str(folder)))


def interactions(dataset) -> list[tuple]:
    """(raw user, raw movie, rating, timestamp) in the order the dataset holds them."""
    frame = dataset.interactions
    return list(zip(dataset.user_keys[frame.user].tolist(),
                    dataset.item_keys[frame.item].tolist(),
                    frame.rating.tolist(), frame.timestamp.tolist()))


def items(dataset) -> list[tuple]:
    return list(dataset.items[["movie_id", "title", "genres"]].itertuples(index=False,
                                                                            name=None))


def raises_input_error(pattern: str, load_it) -> str:
    with pytest.raises(InputError) as caught:
        load_it()
    message = str(caught.value)
    assert "\n" not in message
    assert re.search(pattern, message), message
    return message


# --------------------------------------------------------------------------- the registry


def test_every_movielens_choice_has_a_release():
    assert set(movielens.RELEASES) == set(MOVIELENS)
    expected = {
        "movielens-100k": ("ml-100k.zip", "ml-100k", "0e33842e24a9c977be4e0107933c0723"),
        "movielens-10m": ("ml-10m.zip", "ml-10M100K", "ce571fd55effeba0271552578f2648bd"),
        "movielens-20m": ("ml-20m.zip", "ml-20m", "cd245b17a1ae2cc31bb14903e1204af3"),
        "movielens-25m": ("ml-25m.zip", "ml-25m", "6b51fb2759a8657d3bfcbfc42b592ada"),
        "movielens-32m": ("ml-32m.zip", "ml-32m", None),
    }
    for name, (zip_name, folder, zip_md5) in expected.items():
        release = movielens.RELEASES[name]
        assert (release.zip_name, release.folder, release.zip_md5) == (zip_name, folder, zip_md5)
        assert release.url == "https://files.grouplens.org/datasets/movielens/" + zip_name
        assert release.default_cutoff is None


# --------------------------------------------------------------------------- movielens-100k


def test_ml100k_round_trip(tmp_path):
    folder = layouts.write_ml100k(tmp_path / "ml-100k")
    with open(os.path.join(folder, "u.item"), "rb") as f:
        assert b"Cit\xe9 des enfants" in f.read()  # latin-1 on disk, as GroupLens wrote it
    with open(os.path.join(folder, "u.genre"), "rb") as f:
        assert f.read().endswith(b"Western|18\n\n")
    dataset = load("movielens-100k", folder)

    assert interactions(dataset) == [tuple(r) for r in ML100K_RATINGS]  # file order
    assert dataset.interactions.rating.dtype == np.int64
    assert dataset.interactions.timestamp.dtype == np.int64
    assert items(dataset) == [
        (242, "Kolya (1996)", "Comedy"),
        (267, "unknown", "unknown"),
        (302, "L.A. Confidential (1997)", "Crime|Film-Noir|Mystery|Thriller"),  # index order
        (377, "Cité des enfants perdus, La (1995)", ""),                       # no flag set
    ]
    assert dataset.items.movie_id.dtype == np.int64
    users = dataset.users[["user_id", "gender", "age", "occupation", "zip"]]
    assert list(users.itertuples(index=False, name=None)) == [
        (22, "M", 25, "writer", "40206"), (186, "F", 39, "executive", "00000"),
        (196, "M", 49, "writer", "55105")]
    assert dataset.users.age.dtype == np.int64
    schema = dataset.schema
    assert (schema.user_key, schema.item_key, schema.item_title) == ("user_id", "movie_id",
                                                                       "title")
    assert [(f.name, f.kind, f.dtype) for f in schema.user_features] == [
        ("gender", "categorical", "string"), ("age", "categorical", "int64"),
        ("occupation", "categorical", "string")]
    assert [(f.name, f.kind, f.dtype) for f in schema.item_features] == [
        ("genres", "multi", "string")]
    assert dataset.vocabulary("user", "occupation") == ["executive", "writer"]
    assert dataset.vocabulary("item", "genres") == ["Comedy", "Crime", "Film-Noir", "Mystery",
                                                    "Thriller", "unknown"]
    assert dataset.labels == {}
    assert dataset.default_cutoff is None


def test_ml100k_genre_file_without_trailing_blank_line(tmp_path):
    folder = layouts.write_ml100k(tmp_path, trailing_blank_line=False)
    assert items(load("movielens-100k", folder))[2][2] == "Crime|Film-Noir|Mystery|Thriller"


def test_ml100k_genres_follow_the_index_not_the_line_order(tmp_path):
    # Two genres, listed in reverse: u.item's first flag is still genre 0.
    lines = ["Drama|1", "Comedy|0"]
    movies = ["242|Kolya (1996)|24-Jan-1997|||1|0", "267|unknown||||0|1",
              "302|L.A. Confidential (1997)||||1|1", "377|Cité (1995)||||0|0"]
    folder = layouts.write_ml100k(tmp_path, movies=movies, genres=("Comedy", "Drama"),
                                  genre_lines=lines)
    assert [g for _, _, g in items(load("movielens-100k", folder))] == [
        "Comedy", "Drama", "Comedy|Drama", ""]


def _u_data(*rows) -> list:
    return list(ML100K_RATINGS[:1]) + list(rows)


ML100K_BAD = {
    "non-numeric rating": (dict(ratings=_u_data("186\t302\tx\t891717742")),
                           r"/u\.data:2: expected an integer rating, got 'x'$"),
    "rating out of range": (dict(ratings=_u_data("186\t302\t3\t891717742", "22\t377\t6\t1")),
                            r"/u\.data:3: expected a rating in 1\.\.5, got '6'$"),
    "fractional rating": (dict(ratings=_u_data("186\t302\t3.5\t891717742")),
                          r"/u\.data:2: expected an integer rating, got '3\.5'$"),
    # pandas alone would read these as 186 (white space around a number; found by test_fuzz).
    "padded user": (dict(ratings=_u_data("\v186\t302\t3\t891717742")),
                    r"/u\.data:2: expected an integer user_id, got '\\x0b186'$"),
    "padded time": (dict(ratings=_u_data("186\t302\t3\t891717742 ")),
                    r"/u\.data:2: expected an integer timestamp, got '891717742 '$"),
    "short line": (dict(ratings=_u_data("186\t302\t3")),
                   r"/u\.data:2: expected 4 '\\t'-separated fields .*, saw 3$"),
    "long line": (dict(ratings=_u_data("186\t302\t3\t891717742\t1")),
                  r"/u\.data:2: expected 4 '\\t'-separated fields .*, saw 5$"),
    "unknown movie": (dict(ratings=_u_data("186\t999\t3\t891717742")),
                      r"/u\.data:2: movie_id not in .*/u\.item "),
    "unknown user": (dict(ratings=_u_data("7\t242\t3\t891717742")),
                     r"/u\.data:2: user_id not in .*/u\.user "),
    "missing genre flag": (dict(movies=[ML100K_MOVIES[0],
                                        layouts.ml100k_item_line(ML100K_MOVIES[1])[:-2]]),
                           r"/u\.item:2: expected 24 '\|'-separated fields .*, saw 23$"),
    "extra genre flag": (dict(movies=[ML100K_MOVIES[0],
                                      layouts.ml100k_item_line(ML100K_MOVIES[1]) + "|0"]),
                         r"/u\.item:2: expected 24 '\|'-separated fields .*, saw 25$"),
    "bad genre flag": (dict(movies=[ML100K_MOVIES[0],
                                    layouts.ml100k_item_line(ML100K_MOVIES[1])[:-1] + "2"]),
                       r"/u\.item:2: expected a 0/1 flag for genre Western, got '2'$"),
    "duplicate movie": (dict(movies=list(ML100K_MOVIES) + [ML100K_MOVIES[0]]),
                        r"/u\.item:5: duplicate item key movie_id, got '242'$"),
    "bad gender": (dict(users=[ML100K_USERS[0], "186|39|X|executive|00000",
                               ML100K_USERS[2]]),
                   r"/u\.user:2: expected gender F or M, got 'X'$"),
    "bad age": (dict(users=["22|old|M|writer|40206"] + list(ML100K_USERS[1:])),
                r"/u\.user:1: expected an integer age, got 'old'$"),
    "duplicate user": (dict(users=list(ML100K_USERS) + [ML100K_USERS[1]]),
                       r"/u\.user:4: duplicate user key user_id, got '186'$"),
    "bad genre index": (dict(genre_lines=["unknown|0", "Action|one"]),
                        r"/u\.genre:2: expected an integer index, got 'one'$"),
    "repeated genre index": (dict(genre_lines=["unknown|0", "Action|0"]),
                             r"/u\.genre:2: expected a distinct genre index in 0\.\.1, "
                             r"got '0'$"),
    "blank line inside u.genre": (dict(genre_lines=["unknown|0", "", "Action|1"]),
                                  r"/u\.genre:2: expected 2 '\|'-separated fields .*, saw 1$"),
}


@pytest.mark.parametrize("case", sorted(ML100K_BAD))
def test_ml100k_bad_input_names_file_and_line(tmp_path, case):
    overrides, pattern = ML100K_BAD[case]
    folder = layouts.write_ml100k(tmp_path, **overrides)
    raises_input_error(pattern, lambda: load("movielens-100k", folder))


# --------------------------------------------------------------------------- movielens-10m


def test_ml10m_round_trip_utf8_movies(tmp_path):
    movies = list(ML10M_MOVIES) + [(4, "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)",
                                    "Comedy|Romance")]
    folder = layouts.write_ml10m(tmp_path / "ml-10M100K", movies=movies)
    assert movielens.text_encoding(os.path.join(folder, "movies.dat")) == "utf-8"
    dataset = load("movielens-10m", folder)
    assert interactions(dataset) == [(1, 122, 5.0, 838985046), (1, 185, 4.5, 838983525),
                                     (7, 122, 0.5, 1230000000), (7, 8606, 3.0, 838983525)]
    assert [tuple(r)[:2] for r in interactions(dataset)] == [r[:2] for r in ML10M_RATINGS]
    assert dataset.interactions.rating.dtype == np.float64
    assert items(dataset) == movies
    assert "(no genres listed)" in dataset.vocabulary("item", "genres")
    # No user table: the users are the distinct keys of the ratings, sorted.
    assert dataset.users.columns.tolist() == ["user_id"]
    assert dataset.user_keys.tolist() == [1, 7]
    assert dataset.schema.user_features == ()
    assert dataset.schema.item_title == "title"
    assert [(f.name, f.kind, f.dtype) for f in dataset.schema.item_features] == [
        ("genres", "multi", "string")]


def test_ml10m_whole_star_ratings_are_floats_too(tmp_path):
    folder = layouts.write_ml10m(tmp_path, ratings=[(1, 122, "5", 1), (7, 185, "3", 2)])
    dataset = load("movielens-10m", folder)
    assert dataset.interactions.rating.dtype == np.float64
    assert dataset.interactions.rating.tolist() == [5.0, 3.0]


def test_ml10m_latin1_movies_fall_back(tmp_path):
    movies = list(ML10M_MOVIES) + [(10, "Cité des enfants perdus, La (1995)", "Fantasy")]
    folder = layouts.write_ml10m(tmp_path, movies=movies, movies_encoding="latin-1")
    with open(os.path.join(folder, "movies.dat"), "rb") as f:
        assert b"Cit\xe9 des" in f.read()
    assert movielens.text_encoding(os.path.join(folder, "movies.dat")) == "latin-1"
    assert items(load("movielens-10m", folder)) == movies


ML10M_BAD = {
    "non-numeric rating": (dict(ratings=list(ML10M_RATINGS[:1]) + ["1::185::four::838983525"]),
                           r"/ratings\.dat:2: expected a number in column rating, got 'four'$"),
    "rating below half a star": (dict(ratings=list(ML10M_RATINGS[:2]) + ["7::122::0::1"]),
                                 r"/ratings\.dat:3: expected a rating in 0\.5\.\.5, "
                                 r"got '0\.0'$"),
    "rating above five": (dict(ratings=["1::122::5.5::1"]),
                          r"/ratings\.dat:1: expected a rating in 0\.5\.\.5, got '5\.5'$"),
    "padded rating": (dict(ratings=list(ML10M_RATINGS[:1]) + ["1::185:: 4.5::838983525"]),
                      r"/ratings\.dat:2: expected a number in column rating, got ' 4\.5'$"),
    "bad timestamp": (dict(ratings=list(ML10M_RATINGS[:2]) + ["7::122::3::soon"]),
                      r"/ratings\.dat:3: expected an integer timestamp, got 'soon'$"),
    "extra field": (dict(movies=list(ML10M_MOVIES[:1]) + ["185::Net, The::1995::Action"]),
                    r"/movies\.dat:2: expected 3 '::'-separated fields .*, saw 4$"),
    "duplicate movie": (dict(movies=list(ML10M_MOVIES) + [ML10M_MOVIES[1]]),
                        r"/movies\.dat:5: duplicate item key movie_id, got '185'$"),
    "unknown movie": (dict(movies=[ML10M_MOVIES[0], ML10M_MOVIES[1], ML10M_MOVIES[3]]),
                      r"/ratings\.dat:4: movie_id not in .*/movies\.dat "),
}


@pytest.mark.parametrize("case", sorted(ML10M_BAD))
def test_ml10m_bad_input_names_file_and_line(tmp_path, case):
    overrides, pattern = ML10M_BAD[case]
    folder = layouts.write_ml10m(tmp_path, **overrides)
    raises_input_error(pattern, lambda: load("movielens-10m", folder))


def test_ml10m_movie_line_without_genres_is_an_error(tmp_path):
    folder = layouts.write_ml10m(tmp_path, movies=list(ML10M_MOVIES[:3]) + ["26::Othello (1995)"])
    raises_input_error(r"/movies\.dat:4: expected 3 ", lambda: load("movielens-10m", folder))


# --------------------------------------------------------------------------- 20m, 25m, 32m


@pytest.mark.parametrize("release", CSV_RELEASES)
def test_csv_release_round_trip(tmp_path, release):
    folder = layouts.write_csv_release(tmp_path / release)
    with open(os.path.join(folder, "movies.csv"), encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("movieId,title,genres\n")
    assert '"Dr. Strangelove or: How I Learned to Stop Worrying, ""Bomb"" (1964)"' in text
    with open(os.path.join(folder, "ratings.csv"), encoding="utf-8") as f:
        assert f.readline() == "userId,movieId,rating,timestamp\n"
    dataset = load(release, folder)
    assert interactions(dataset) == [(u, m, float(r), t) for u, m, r, t in CSV_RATINGS]
    frame = dataset.interactions
    assert [frame[c].dtype for c in ("user", "item", "timestamp", "rating")] == [
        np.int64, np.int64, np.int64, np.float64]
    assert items(dataset) == CSV_MOVIES  # quoted commas and quotes, UTF-8, no-genre token
    assert dataset.items.columns.tolist() == ["movie_id", "title", "genres"]
    assert dataset.items.movie_id.dtype == np.int64
    assert dataset.user_keys.tolist() == [1, 2, 3]
    assert dataset.schema.user_features == ()
    assert (dataset.schema.user_key, dataset.schema.item_key) == ("user_id", "movie_id")
    assert dataset.checksums == {name: md5(os.path.join(folder, name))
                                 for name in ("ratings.csv", "movies.csv")}


def test_csv_ratings_types(tmp_path):
    ratings = list(CSV_RATINGS) + [(9, 11, "4.5", 0), (10, 4, "1", 2**40)]
    path = os.path.join(layouts.write_csv_release(tmp_path, ratings=ratings), "ratings.csv")
    table = movielens.read_csv_ratings(path)
    assert table.frame.columns.tolist() == ["user_id", "movie_id", "rating", "timestamp"]
    assert table.frame.dtypes.tolist() == [np.int64, np.int64, np.float64, np.int64]
    assert table.frame.timestamp.tolist()[-1] == 2**40
    assert (table.path, table.first_line) == (path, 2)


def _ratings(*rows) -> list:
    return list(CSV_RATINGS[:1]) + list(rows)


CSV_BAD = {
    "non-numeric rating": (dict(ratings=_ratings("1,11,3.5,1", "3,209163,x,1574327512")),
                           r"/ratings\.csv:4: expected a number in column rating, got 'x'$"),
    "nan rating": (dict(ratings=_ratings("1,11,nan,1147868817")),
                   r"/ratings\.csv:3: expected a number in column rating"),
    "fractional user": (dict(ratings=_ratings("1.5,11,3.5,1147868817")),
                        r"/ratings\.csv:3: expected an integer userId, got '1\.5'$"),
    "bad timestamp": (dict(ratings=_ratings("1,11,3.5,1147868817", "2,296,4.0,soon")),
                      r"/ratings\.csv:4: expected an integer timestamp, got 'soon'$"),
    "rating out of range": (dict(ratings=_ratings("1,11,5.5,1147868817")),
                            r"/ratings\.csv:3: expected a rating in 0\.5\.\.5, got '5\.5'$"),
    "too many fields": (dict(ratings=_ratings("1,11,3.5,1147868817,extra")),
                        r"/ratings\.csv:3: expected 4 fields \(as the header\), saw 5$"),
    "too few fields": (dict(ratings=_ratings("1,11,3.5")),
                       r"/ratings\.csv:3: expected 4 fields \(as the header\), saw 3$"),
    "missing ratings column": (dict(ratings_header="userId,movieId,score,timestamp"),
                               r"/ratings\.csv: no column 'rating' \(columns: userId, "
                               r"movieId, score, timestamp\)$"),
    "repeated ratings column": (dict(ratings_header="userId,movieId,rating,rating"),
                                r"/ratings\.csv: no column 'timestamp' \(columns: userId, "
                                r"movieId, rating, rating\)$"),
    "header only": (dict(ratings=[]), r"/ratings\.csv: no rows below the header$"),
    "missing movies column": (dict(movies_header="movieId,name,genres"),
                              r"/movies\.csv: no column 'title'"),
    "bad movie id": (dict(movies=list(CSV_MOVIES[:2]) + ["x,Heat (1995),Action"]),
                     r"/movies\.csv:4: expected an integer movieId, got 'x'$"),
    "duplicate movie": (dict(movies=list(CSV_MOVIES) + [CSV_MOVIES[0]]),
                        r"/movies\.csv:8: duplicate item key movie_id, got '11'$"),
    "unknown movie": (dict(ratings=_ratings("2,77,4.0,1147880044")),
                      r"/ratings\.csv:3: movie_id not in .*/movies\.csv "),
}


@pytest.mark.parametrize("case", sorted(CSV_BAD))
def test_csv_bad_input_names_file_and_line(tmp_path, case):
    overrides, pattern = CSV_BAD[case]
    folder = layouts.write_csv_release(tmp_path, **overrides)
    raises_input_error(pattern, lambda: load("movielens-25m", folder))


def test_csv_lines_are_physical_lines(tmp_path):
    # A blank line in ratings.csv and a quoted line break in movies.csv: errors still name
    # the line an editor shows.
    ratings = _ratings("", "1,11,9.0,1147868817")
    movies = list(CSV_MOVIES[:2]) + ['209163,"Bad Poems\n(2018)",Drama', "4,Heat,Action",
                                     "5,Balto,Animation", "6,Up,Animation", "296,Copy,Drama"]
    folder = layouts.write_csv_release(tmp_path, ratings=ratings)
    raises_input_error(r"/ratings\.csv:4: expected a rating in 0\.5\.\.5, got '9\.0'$",
                       lambda: load("movielens-25m", folder))
    folder = layouts.write_csv_release(tmp_path, movies=movies)
    raises_input_error(r"/movies\.csv:9: duplicate item key movie_id, got '296'$",
                       lambda: load("movielens-25m", folder))


def test_csv_movies_must_be_utf8(tmp_path):
    folder = layouts.write_csv_release(tmp_path)
    with open(os.path.join(folder, "movies.csv"), "ab") as f:
        f.write(b"7,Cit\xe9 (1995),Drama\n")
    raises_input_error(r"/movies\.csv:8: not utf-8 text \(byte 0xe9",
                       lambda: load("movielens-20m", folder))


@pytest.mark.parametrize("release, name", [
    ("movielens-100k", "u.data"), ("movielens-100k", "u.genre"),
    ("movielens-10m", "movies.dat"), ("movielens-10m", "ratings.dat"),
    ("movielens-32m", "ratings.csv"), ("movielens-32m", "movies.csv")])
def test_empty_file(tmp_path, release, name):
    folder = WRITERS[release](tmp_path)
    open(os.path.join(folder, name), "w").close()
    raises_input_error(rf"/{re.escape(name)}: file is empty$", lambda: load(release, folder))


@pytest.mark.parametrize("release", sorted(WRITERS))
def test_explicit_data_dir_must_hold_every_file(tmp_path, release):
    folder = WRITERS[release](tmp_path)
    last = movielens.RELEASES[release].files[-1]
    os.remove(os.path.join(folder, last))
    raises_input_error(rf"/{re.escape(last)}: file not found \(--data_dir must hold "
                       rf"{re.escape(', '.join(movielens.RELEASES[release].files))}\)$",
                       lambda: load(release, folder))


# --------------------------------------------------------------------------- downloading


def _release_zip(tmp_path, top: str, writer, extra: dict[str, str] | None = None) -> str:
    source = writer(tmp_path / "source")
    for name, text in (extra or {}).items():  # GroupLens zips hold more than we read
        with open(os.path.join(source, name), "w") as f:
            f.write(text)
    return layouts.zip_folder(source, tmp_path / "release.zip", top)


def test_download_from_a_zip(tmp_path):
    release = movielens.RELEASES["movielens-10m"]
    archive = _release_zip(tmp_path, "ml-10M100K", layouts.write_ml10m,
                           {"tags.dat": "15::4973::excellent!::1215184630\n",
                            "README.html": "<html></html>\n"})
    target = str(tmp_path / "cache" / release.folder)
    movielens.download(release, target, url="file://" + archive, zip_md5=md5(archive))
    assert sorted(os.listdir(target)) == sorted(release.files)
    for name in release.files:
        assert md5(os.path.join(target, name)) == md5(os.path.join(tmp_path, "source", name))
    dataset = load("movielens-10m", target)
    assert items(dataset) == ML10M_MOVIES


def test_download_with_wrong_md5_leaves_no_files(tmp_path):
    release = movielens.RELEASES["movielens-100k"]
    archive = _release_zip(tmp_path, "ml-100k", layouts.write_ml100k)
    target = str(tmp_path / "cache" / release.folder)
    message = raises_input_error(
        rf"zip has md5 {md5(archive)}, expected 0{{32}}; download file://",
        lambda: movielens.download(release, target, url="file://" + archive,
                                   zip_md5="0" * 32))
    assert target in message
    assert os.listdir(target) == []


def test_default_folder_is_downloaded_into(tmp_path, monkeypatch):
    # movielens-32m has no published md5, so any zip of the right layout is taken.
    monkeypatch.setenv(movielens.CACHE_ENV, str(tmp_path / "cache"))
    archive = _release_zip(tmp_path, "ml-32m", layouts.write_csv_release,
                           {"links.csv": "movieId,imdbId,tmdbId\n"})
    dataset = load_dataset(DataConfig(dataset="movielens-32m",
                                      download_url="file://" + archive))
    target = str(tmp_path / "cache" / "ml-32m")
    assert dataset.data_dir == target
    assert sorted(os.listdir(target)) == ["movies.csv", "ratings.csv"]
    assert items(dataset) == CSV_MOVIES


@pytest.mark.parametrize("release", sorted(WRITERS))
def test_offline_default_says_what_to_put_where(tmp_path, monkeypatch, release):
    monkeypatch.setenv(movielens.CACHE_ENV, str(tmp_path))
    spec = movielens.RELEASES[release]
    target = os.path.join(str(tmp_path), spec.folder)
    message = raises_input_error(
        rf"^could not download {release} from file:///nonexistent\.zip \(.*\); download "
        rf"file:///nonexistent\.zip, unzip it and put {re.escape(', '.join(spec.files))} in "
        rf"{re.escape(target)} \(or pass --data_dir=DIR pointing at a folder holding them\)$",
        lambda: movielens.resolve_data_dir(spec, None, "file:///nonexistent.zip"))
    assert message.count(target) == 1
    assert os.listdir(target) == []
    with pytest.raises(InputError, match="could not download"):
        load_dataset(DataConfig(dataset=release, download_url="file:///nonexistent.zip"))
