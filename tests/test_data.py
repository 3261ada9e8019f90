"""dssm_tf.data: parsing, id maps, validation errors, locating and downloading ML-1M."""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pytest

from dssm_tf import data
from dssm_tf.errors import InputError
from tests import synthetic
from tests.synthetic import TINY_MOVIES, TINY_RATINGS, TINY_USERS, write_movielens


# --------------------------------------------------------------------------- parsing


def test_round_trip_tiny(tiny_ml):
    ml = tiny_ml
    assert ml.num_users == 3 and ml.num_movies == 4
    assert [tuple(r) for r in ml.users[["user_id", "gender", "age", "occupation", "zip"]]
            .itertuples(index=False)] == TINY_USERS
    assert [tuple(r) for r in ml.movies[["movie_id", "title", "genres"]]
            .itertuples(index=False)] == TINY_MOVIES
    # Ratings keep file order, with raw ids beside contiguous indices.
    assert [tuple(r) for r in ml.ratings[["user_id", "movie_id", "rating", "timestamp"]]
            .itertuples(index=False)] == TINY_RATINGS
    assert ml.ratings.user.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 1]
    assert ml.ratings.movie.tolist() == [0, 2, 1, 1, 3, 0, 3, 0, 2]
    for column in ("user_id", "movie_id", "rating", "timestamp", "user", "movie"):
        assert np.issubdtype(ml.ratings[column].dtype, np.integer), column


def test_round_trip_synthetic(synthetic_data):
    ml = data.load_movielens(synthetic_data.folder)
    assert ml.num_users == len(synthetic_data.users)
    assert ml.num_movies == len(synthetic_data.movies)
    got = list(ml.ratings[["user_id", "movie_id", "rating", "timestamp"]]
               .itertuples(index=False, name=None))
    assert got == synthetic_data.ratings
    assert ml.movies.title.tolist() == [m[1] for m in synthetic_data.movies]
    # Index columns agree with the raw ids.
    np.testing.assert_array_equal(ml.users.user_id.to_numpy()[ml.ratings.user],
                                  ml.ratings.user_id)
    np.testing.assert_array_equal(ml.movies.movie_id.to_numpy()[ml.ratings.movie],
                                  ml.ratings.movie_id)


def test_id_maps_both_ways(tiny_ml):
    ml = tiny_ml
    np.testing.assert_array_equal(ml.user_index([1, 2, 5, 3, 0, 6041]), [0, 1, 2, -1, -1, -1])
    np.testing.assert_array_equal(ml.movie_index([32, 10, 2, 1, 3, 0]), [3, 2, 1, 0, -1, -1])
    np.testing.assert_array_equal(ml.users.user_id.to_numpy()[ml.user_index([5, 1])], [5, 1])
    np.testing.assert_array_equal(ml.movies.movie_id.to_numpy()[ml.movie_index([10, 32])],
                                  [10, 32])
    assert ml.user_index(np.array([], np.int64)).shape == (0,)


def test_genre_vocabulary(tiny_ml):
    assert tiny_ml.genre_vocabulary == ["Adventure", "Animation", "Children's", "Comedy",
                                        "Drama", "Fantasy", "Sci-Fi"]


def test_latin1_titles_and_string_fields(tmp_path):
    users = list(TINY_USERS) + [(7, "F", 18, 3, "02134"), (9, "M", 35, 0, "98107-4702")]
    folder = write_movielens(tmp_path, users=users)
    with open(os.path.join(folder, "movies.dat"), "rb") as f:
        assert b"Cit\xe9 des enfants" in f.read()  # really latin-1 on disk, not utf-8
    ml = data.load_movielens(folder)
    assert ml.movies.title.iloc[2] == "Cité des enfants perdus, La (1995)"
    # Zip codes stay strings: leading zeros and ZIP+4 survive.
    assert ml.users.zip.tolist()[-2:] == ["02134", "98107-4702"]
    assert ml.users.gender.tolist() == ["F", "M", "M", "F", "M"]


def test_checksums_recorded(tiny_data_dir, tiny_ml):
    assert tiny_ml.checksums == {name: data.md5(os.path.join(tiny_data_dir, name))
                                 for name in data.FILES}
    assert tiny_ml.data_dir == tiny_data_dir


# --------------------------------------------------------------------------- bad input


def _replace(rows, line, new):
    """`rows` with 1-based `line` replaced by `new` (None deletes it)."""
    rows = list(rows)
    if new is None:
        del rows[line - 1]
    else:
        rows[line - 1] = new
    return rows


def _insert(rows, line, new):
    rows = list(rows)
    rows.insert(line - 1, new)
    return rows


BAD_INPUTS = {
    # id: (file, rows, bad line, words the message must hold)
    "ratings_too_few_fields": ("ratings.dat", _replace(TINY_RATINGS, 4, "2::2::4"), 4,
                               ["fields"]),
    "ratings_too_many_fields": ("ratings.dat",
                                _replace(TINY_RATINGS, 3, "1::2::4::1041379300::7"), 3,
                                ["fields", "saw 5"]),
    "ratings_too_many_fields_line1": ("ratings.dat",
                                      _replace(TINY_RATINGS, 1, "1::1::5::978300760::0"), 1,
                                      ["fields", "saw 5"]),
    "ratings_too_many_fields_last": ("ratings.dat",
                                     _replace(TINY_RATINGS, 9, "2::10::5::1041379200::1::2"),
                                     9, ["fields", "saw 6"]),
    "ratings_blank_line": ("ratings.dat", _insert(TINY_RATINGS, 5, ""), 5, ["fields"]),
    "ratings_empty_field": ("ratings.dat", _replace(TINY_RATINGS, 2, "1::::3::978302109"), 2,
                            ["fields"]),
    "ratings_non_integer_movie": ("ratings.dat", _replace(TINY_RATINGS, 6, "2::one::1::9"), 6,
                                  ["integer", "movie_id", "'one'"]),
    "ratings_fractional_rating": ("ratings.dat", _replace(TINY_RATINGS, 5, "2::32::2.5::9"),
                                  5, ["integer", "rating", "'2.5'"]),
    "ratings_float_looking_rating": ("ratings.dat", _replace(TINY_RATINGS, 7, "5::32::5.0::9"),
                                     7, ["integer", "rating", "'5.0'"]),
    "ratings_huge_timestamp": ("ratings.dat",
                               _replace(TINY_RATINGS, 8, "5::1::3::123456789012345678901234"),
                               8, ["integer", "timestamp"]),
    "ratings_rating_too_high": ("ratings.dat", _replace(TINY_RATINGS, 8, "5::1::6::9"), 8,
                                ["1..5", "'6'"]),
    "ratings_rating_zero": ("ratings.dat", _replace(TINY_RATINGS, 2, "1::10::0::978302109"), 2,
                            ["1..5", "'0'"]),
    "ratings_unknown_user": ("ratings.dat", _replace(TINY_RATINGS, 3, "3::2::4::978302109"), 3,
                             ["UserID", "users.dat", "'3'"]),
    "ratings_unknown_movie": ("ratings.dat", _replace(TINY_RATINGS, 6, "2::3::1::978300500"), 6,
                              ["MovieID", "movies.dat", "'3'"]),
    "users_bad_gender": ("users.dat", _replace(TINY_USERS, 2, "2::X::56::16::70072"), 2,
                         ["gender", "'X'"]),
    "users_lowercase_gender": ("users.dat", _replace(TINY_USERS, 3, "5::m::25::15::55117"), 3,
                               ["gender", "'m'"]),
    "users_too_few_fields": ("users.dat", _replace(TINY_USERS, 2, "2::M::56::16"), 2,
                             ["5", "fields"]),
    "users_too_many_fields": ("users.dat", _replace(TINY_USERS, 3, "5::M::25::15::55117::1"),
                              3, ["5", "fields", "saw 6"]),
    "users_non_integer_age": ("users.dat", _replace(TINY_USERS, 3, "5::M::adult::15::55117"),
                              3, ["integer", "age"]),
    "users_duplicate_id": ("users.dat", _replace(TINY_USERS, 3, "1::M::25::15::55117"), 3,
                           ["duplicate", "UserID", "'1'"]),
    "movies_duplicate_id": ("movies.dat", _replace(TINY_MOVIES, 4, "2::Again (1990)::Drama"),
                            4, ["duplicate", "MovieID", "'2'"]),
    "movies_too_few_fields": ("movies.dat", _replace(TINY_MOVIES, 2, "2::Jumanji (1995)"), 2,
                              ["3", "fields"]),
    "movies_too_many_fields": ("movies.dat", _replace(TINY_MOVIES, 1, "1::Toy::Story::Comedy"),
                               1, ["3", "fields", "saw 4"]),
    "movies_non_integer_id": ("movies.dat", _replace(TINY_MOVIES, 3, "x10::Cité::Drama"), 3,
                              ["integer", "movie_id", "'x10'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_line(tmp_path, case):
    name, rows, line, words = BAD_INPUTS[case]
    files = {"users": TINY_USERS, "movies": TINY_MOVIES, "ratings": TINY_RATINGS}
    files[name.split(".")[0]] = rows
    folder = write_movielens(tmp_path, **files)
    with pytest.raises(InputError) as info:
        data.load_movielens(folder)
    message = str(info.value)
    path = os.path.join(folder, name)
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("name", data.FILES)
@pytest.mark.parametrize("content", ["", "\n \n"])
def test_empty_file(tmp_path, name, content):
    folder = write_movielens(tmp_path)
    with open(os.path.join(folder, name), "w") as f:
        f.write(content)
    with pytest.raises(InputError, match=re.escape(os.path.join(folder, name)) + ": .*empty"):
        data.load_movielens(folder)


@pytest.mark.parametrize("name", data.FILES)
def test_missing_file(tmp_path, name):
    folder = write_movielens(tmp_path)
    os.remove(os.path.join(folder, name))
    path = re.escape(os.path.join(folder, name))
    with pytest.raises(InputError, match=path + ": file not found"):
        data.load_movielens(folder)
    # An explicit --data_dir is checked up front, and never triggers a download.
    with pytest.raises(InputError, match=path + ": file not found"):
        data.resolve_data_dir(folder, url="file:///nonexistent/ml-1m.zip")


def test_explicit_data_dir_is_returned(tiny_data_dir, monkeypatch):
    monkeypatch.setattr(data, "download", _no_download)
    assert data.resolve_data_dir(tiny_data_dir) == tiny_data_dir


# --------------------------------------------------------------------------- download


def _no_download(*args, **kwargs):
    raise AssertionError("download must not be called")


def _zip_of(folder, zip_path, names=data.FILES, prefix="ml-1m/"):
    """A GroupLens-like archive: the files under `ml-1m/`, plus a README."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(prefix + "README", "MovieLens 1M\n")
        for name in names:
            zf.write(os.path.join(folder, name), prefix + name)
    return str(zip_path)


@pytest.fixture
def archive(tmp_path, tiny_data_dir):
    """(file:// URL of a zip of the tiny data, md5 of each file)."""
    path = _zip_of(tiny_data_dir, tmp_path / "ml-1m.zip")
    sums = {name: data.md5(os.path.join(tiny_data_dir, name)) for name in data.FILES}
    return "file://" + os.path.abspath(path), sums


def _leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_with_matching_checksums(tmp_path, archive, tiny_data_dir):
    url, sums = archive
    target = str(tmp_path / "cache" / "ml-1m")
    data.download(target, url, checksums=sums)
    assert _leftovers(target) == sorted(data.FILES)  # no temp folder, no README, no zip
    for name in data.FILES:
        with open(os.path.join(target, name), "rb") as got, \
                open(os.path.join(tiny_data_dir, name), "rb") as want:
            assert got.read() == want.read()
    assert data.load_movielens(target).num_users == 3


def test_download_checksum_mismatch_leaves_target_empty(tmp_path, archive):
    url, _ = archive
    target = str(tmp_path / "cache")
    os.makedirs(target)
    with open(os.path.join(target, "keep.txt"), "w") as f:
        f.write("x")
    with pytest.raises(InputError) as info:
        data.download(target, url)  # the real ML-1M checksums: the tiny files cannot match
    message = str(info.value)
    assert "md5" in message and target in message and "\n" not in message
    assert _leftovers(target) == ["keep.txt"]


def test_download_one_wrong_checksum(tmp_path, archive):
    url, sums = archive
    target = str(tmp_path / "cache")
    with pytest.raises(InputError, match=r"users\.dat has md5"):
        data.download(target, url, checksums=dict(sums, **{"users.dat": "0" * 32}))
    assert _leftovers(target) == []


def test_download_unreachable_url(tmp_path):
    target = str(tmp_path / "cache")
    url = "file://" + str(tmp_path / "no" / "such" / "ml-1m.zip")
    with pytest.raises(InputError) as info:
        data.download(target, url)
    message = str(info.value)
    assert url in message and target in message  # says what to put where
    assert "ratings.dat" in message and "--data_dir" in message
    assert _leftovers(target) == []


def test_download_archive_missing_a_file(tmp_path, tiny_data_dir):
    path = _zip_of(tiny_data_dir, tmp_path / "partial.zip", names=("ratings.dat", "users.dat"))
    target = str(tmp_path / "cache")
    with pytest.raises(InputError, match="archive has no movies.dat"):
        data.download(target, "file://" + path, checksums={})
    assert _leftovers(target) == []


def test_download_not_a_zip(tmp_path):
    path = tmp_path / "ml-1m.zip"
    path.write_text("<html>Service unavailable</html>")
    target = str(tmp_path / "cache")
    with pytest.raises(InputError, match="could not download"):
        data.download(target, "file://" + str(path))
    assert _leftovers(target) == []


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert data.default_data_dir() == str(tmp_path / "elsewhere")
    monkeypatch.delenv(data.DATA_DIR_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_data_dir() == str(tmp_path / "home" / ".cache" / "dssm_tf" / "ml-1m")


def test_resolve_default_downloads_only_when_missing(monkeypatch, tmp_path, archive):
    url, sums = archive
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(data.DATA_DIR_ENV, cache)
    calls = []
    real_download = data.download

    def counting_download(*args, **kwargs):
        calls.append(args)
        return real_download(*args, **kwargs)

    monkeypatch.setattr(data, "download", counting_download)
    assert data.resolve_data_dir(None, url, sums) == cache
    assert len(calls) == 1 and calls[0][0] == cache
    assert data.load_movielens(cache).num_movies == 4
    # Files present: no second download, even from an unreachable URL.
    assert data.resolve_data_dir(None, "file:///nonexistent/ml-1m.zip") == cache
    assert data.resolve_data_dir("", "file:///nonexistent/ml-1m.zip") == cache
    assert len(calls) == 1
    # One file gone: downloaded again.
    os.remove(os.path.join(cache, "movies.dat"))
    assert data.resolve_data_dir(None, url, sums) == cache
    assert len(calls) == 2 and os.path.isfile(os.path.join(cache, "movies.dat"))


def test_resolve_default_offline_fails_clearly(monkeypatch, tmp_path):
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(data.DATA_DIR_ENV, cache)
    with pytest.raises(InputError, match=re.escape(cache)):
        data.resolve_data_dir(None, "file://" + str(tmp_path / "missing.zip"))
    assert not any(os.path.isfile(os.path.join(cache, n)) for n in data.FILES)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_ml1m(real_ml):
    ml = real_ml
    assert ml.checksums == data.ML1M_MD5
    assert (ml.num_users, ml.num_movies, len(ml.ratings)) == (6040, 3883, 1_000_209)
    assert len(ml.genre_vocabulary) == 18
    assert ml.users.user_id.is_monotonic_increasing
    assert ml.ratings.rating.between(1, 5).all()
    assert ml.movie_index([1])[0] == 0 and ml.movie_index([4])[0] == 3
    assert ml.movies.title.iloc[ml.movie_index([1])[0]] == "Toy Story (1995)"
    # latin-1 titles decode to real accented characters.
    assert ml.movies.title.str.contains("é").any()
