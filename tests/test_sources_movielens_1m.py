"""The movielens-1m source (`dssm_tf.data.sources.movielens`): parsing, key maps, validation
errors, locating and downloading the release."""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np
import pytest

from dssm_tf.data.sources import movielens
from dssm_tf.errors import InputError
from dssm_tf.io import md5
from tests.conftest import load_ml
from tests.synthetic import TINY_MOVIES, TINY_RATINGS, TINY_USERS, write_movielens

ML1M = movielens.RELEASES["movielens-1m"]
FILES = movielens.ML1M_FILES
# GroupLens' ML-1M files (the zip's md5 is ML1M.zip_md5).
ML1M_FILE_MD5 = {"ratings.dat": "a89aa3591bc97d6d4e0c89459ff39362",
                 "users.dat": "681c0711d0d4548cd3d4718a49c2dcd8",
                 "movies.dat": "ef9fd9ff8d1b33faf73e2122c371e910"}


def raw_interactions(ml):
    """(UserID, MovieID, rating, timestamp) of every interaction, in file order."""
    frame = ml.interactions
    return list(zip(ml.user_keys[frame.user].tolist(), ml.item_keys[frame.item].tolist(),
                    frame.rating.tolist(), frame.timestamp.tolist()))


# --------------------------------------------------------------------------- parsing


def test_round_trip_tiny(tiny_ml):
    ml = tiny_ml
    assert ml.num_users == 3 and ml.num_items == 4
    assert [tuple(r) for r in ml.users[["user_id", "gender", "age", "occupation", "zip"]]
            .itertuples(index=False)] == TINY_USERS
    assert [tuple(r) for r in ml.items[["movie_id", "title", "genres"]]
            .itertuples(index=False)] == TINY_MOVIES
    # Interactions keep file order, as contiguous indices into the user and item tables.
    assert raw_interactions(ml) == TINY_RATINGS
    assert ml.interactions.user.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 1]
    assert ml.interactions.item.tolist() == [0, 2, 1, 1, 3, 0, 3, 0, 2]
    for column in ("user", "item", "rating", "timestamp"):
        assert np.issubdtype(ml.interactions[column].dtype, np.integer), column
    # The schema is the historic serving contract.
    schema = ml.schema
    assert (schema.user_key, schema.item_key, schema.item_title) == ("user_id", "movie_id",
                                                                     "title")
    assert list(schema.user_inputs()) == ["user_id", "gender", "age", "occupation", "history"]
    assert list(schema.item_inputs()) == ["movie_id", "genres"]


def test_round_trip_synthetic(synthetic_data):
    ml = load_ml(synthetic_data.folder)
    assert ml.num_users == len(synthetic_data.users)
    assert ml.num_items == len(synthetic_data.movies)
    assert raw_interactions(ml) == synthetic_data.ratings
    assert ml.items.title.tolist() == [m[1] for m in synthetic_data.movies]


def test_id_maps_both_ways(tiny_ml):
    ml = tiny_ml
    np.testing.assert_array_equal(ml.user_index([1, 2, 5, 3, 0, 6041]), [0, 1, 2, -1, -1, -1])
    np.testing.assert_array_equal(ml.item_index([32, 10, 2, 1, 3, 0]), [3, 2, 1, 0, -1, -1])
    np.testing.assert_array_equal(ml.user_keys[ml.user_index([5, 1])], [5, 1])
    np.testing.assert_array_equal(ml.item_keys[ml.item_index([10, 32])], [10, 32])
    assert ml.user_index(np.array([], np.int64)).shape == (0,)


def test_vocabularies(tiny_ml):
    assert tiny_ml.vocabulary("item", "genres") == ["Adventure", "Animation", "Children's",
                                                    "Comedy", "Drama", "Fantasy", "Sci-Fi"]
    assert tiny_ml.vocabulary("user", "gender") == ["F", "M"]
    assert tiny_ml.vocabulary("user", "age") == [1, 25, 56]


def test_an_empty_genre_field_is_no_genre(tmp_path):
    movies = list(TINY_MOVIES[:3]) + ["32::Twelve Monkeys (1995)::"]
    ml = load_ml(write_movielens(tmp_path, movies=movies))
    assert ml.items.genres.tolist()[-1] == ""
    assert "" not in ml.vocabulary("item", "genres")


def test_latin1_titles_and_string_fields(tmp_path):
    users = list(TINY_USERS) + [(7, "F", 18, 3, "02134"), (9, "M", 35, 0, "98107-4702")]
    folder = write_movielens(tmp_path, users=users)
    with open(os.path.join(folder, "movies.dat"), "rb") as f:
        assert b"Cit\xe9 des enfants" in f.read()  # really latin-1 on disk, not utf-8
    ml = load_ml(folder)
    assert ml.items.title.iloc[2] == "Cité des enfants perdus, La (1995)"
    # Zip codes stay strings: leading zeros and ZIP+4 survive.
    assert ml.users.zip.tolist()[-2:] == ["02134", "98107-4702"]
    assert ml.users.gender.tolist() == ["F", "M", "M", "F", "M"]


def test_checksums_recorded(tiny_data_dir, tiny_ml):
    assert tiny_ml.checksums == {name: md5(os.path.join(tiny_data_dir, name))
                                 for name in FILES}
    assert tiny_ml.data_dir == os.path.abspath(tiny_data_dir)
    assert tiny_ml.config.data_dir == os.path.abspath(tiny_data_dir)


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
                            ["integer", "movie_id", "''"]),
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
                             ["user_id", "users.dat", "'3'"]),
    "ratings_unknown_movie": ("ratings.dat", _replace(TINY_RATINGS, 6, "2::3::1::978300500"), 6,
                              ["movie_id", "movies.dat", "'3'"]),
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
                           ["duplicate", "user_id", "'1'"]),
    "movies_duplicate_id": ("movies.dat", _replace(TINY_MOVIES, 4, "2::Again (1990)::Drama"),
                            4, ["duplicate", "movie_id", "'2'"]),
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
        load_ml(folder)
    message = str(info.value)
    path = os.path.join(folder, name)
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("content", ["", "\n \n"])
def test_empty_file(tmp_path, name, content):
    folder = write_movielens(tmp_path)
    with open(os.path.join(folder, name), "w") as f:
        f.write(content)
    with pytest.raises(InputError, match=re.escape(os.path.join(folder, name)) + ": .*empty"):
        load_ml(folder)


@pytest.mark.parametrize("name", FILES)
def test_missing_file(tmp_path, name):
    folder = write_movielens(tmp_path)
    os.remove(os.path.join(folder, name))
    path = re.escape(os.path.join(folder, name))
    with pytest.raises(InputError, match=path + ": file not found"):
        load_ml(folder)
    # An explicit --data_dir is checked up front, and never triggers a download.
    with pytest.raises(InputError, match=path + ": file not found"):
        movielens.resolve_data_dir(ML1M, folder, url="file:///nonexistent/ml-1m.zip")


def test_explicit_data_dir_is_returned(tiny_data_dir, monkeypatch):
    monkeypatch.setattr(movielens, "download", _no_download)
    assert movielens.resolve_data_dir(ML1M, tiny_data_dir) == tiny_data_dir


# --------------------------------------------------------------------------- download


def _no_download(*args, **kwargs):
    raise AssertionError("download must not be called")


def _zip_of(folder, zip_path, names=FILES, prefix="ml-1m/"):
    """A GroupLens-like archive: the files under `ml-1m/`, plus a README."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr(prefix + "README", "MovieLens 1M\n")
        for name in names:
            zf.write(os.path.join(folder, name), prefix + name)
    return str(zip_path)


@pytest.fixture
def archive(tmp_path, tiny_data_dir):
    """(file:// URL of a zip of the tiny data, md5 of the zip)."""
    path = _zip_of(tiny_data_dir, tmp_path / "ml-1m.zip")
    return "file://" + os.path.abspath(path), md5(path)


def _leftovers(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_download_with_a_matching_checksum(tmp_path, archive, tiny_data_dir):
    url, zip_md5 = archive
    target = str(tmp_path / "cache" / "ml-1m")
    movielens.download(ML1M, target, url, zip_md5=zip_md5)
    assert _leftovers(target) == sorted(FILES)  # no temp folder, no README, no zip
    for name in FILES:
        with open(os.path.join(target, name), "rb") as got, \
                open(os.path.join(tiny_data_dir, name), "rb") as want:
            assert got.read() == want.read()
    assert load_ml(target).num_users == 3


def test_download_checksum_mismatch_leaves_target_as_it_was(tmp_path, archive):
    url, _ = archive
    target = str(tmp_path / "cache")
    os.makedirs(target)
    with open(os.path.join(target, "keep.txt"), "w") as f:
        f.write("x")
    with pytest.raises(InputError) as info:
        movielens.download(ML1M, target, url)  # GroupLens' md5: the tiny zip cannot match
    message = str(info.value)
    assert f"expected {ML1M.zip_md5}" in message and target in message and "\n" not in message
    assert _leftovers(target) == ["keep.txt"]


def test_download_unreachable_url(tmp_path):
    target = str(tmp_path / "cache")
    url = "file://" + str(tmp_path / "no" / "such" / "ml-1m.zip")
    with pytest.raises(InputError) as info:
        movielens.download(ML1M, target, url)
    message = str(info.value)
    assert url in message and target in message  # says what to put where
    assert "ratings.dat" in message and "--data_dir" in message
    assert _leftovers(target) == []


def test_download_archive_missing_a_file(tmp_path, tiny_data_dir):
    path = _zip_of(tiny_data_dir, tmp_path / "partial.zip", names=("ratings.dat", "users.dat"))
    target = str(tmp_path / "cache")
    with pytest.raises(InputError, match="archive has no movies.dat"):
        movielens.download(ML1M, target, "file://" + path, zip_md5="")
    assert _leftovers(target) == []


def test_download_not_a_zip(tmp_path):
    path = tmp_path / "ml-1m.zip"
    path.write_text("<html>Service unavailable</html>")
    target = str(tmp_path / "cache")
    with pytest.raises(InputError, match="could not download"):
        movielens.download(ML1M, target, "file://" + str(path), zip_md5="")
    assert _leftovers(target) == []


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(movielens.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert movielens.default_data_dir(ML1M) == str(tmp_path / "elsewhere")
    monkeypatch.delenv(movielens.DATA_DIR_ENV)
    monkeypatch.delenv(movielens.CACHE_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert movielens.default_data_dir(ML1M) == str(
        tmp_path / "home" / ".cache" / "dssm_tf" / "ml-1m")
    monkeypatch.setenv(movielens.CACHE_ENV, str(tmp_path / "cache"))
    assert movielens.default_data_dir(ML1M) == str(tmp_path / "cache" / "ml-1m")


def test_resolve_default_downloads_only_when_missing(monkeypatch, tmp_path, archive):
    url, zip_md5 = archive
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(movielens.DATA_DIR_ENV, cache)
    calls = []
    real_download = movielens.download

    def counting_download(release, target, url=None):  # with the tiny zip's md5
        calls.append(target)
        return real_download(release, target, url, zip_md5=zip_md5)

    monkeypatch.setattr(movielens, "download", counting_download)
    assert movielens.resolve_data_dir(ML1M, None, url) == cache
    assert calls == [cache]
    assert load_ml(cache).num_items == 4
    # Files present: no second download, even from an unreachable URL.
    assert movielens.resolve_data_dir(ML1M, None, "file:///nonexistent/ml-1m.zip") == cache
    assert movielens.resolve_data_dir(ML1M, "", "file:///nonexistent/ml-1m.zip") == cache
    assert len(calls) == 1
    # One file gone: downloaded again.
    os.remove(os.path.join(cache, "movies.dat"))
    assert movielens.resolve_data_dir(ML1M, None, url) == cache
    assert len(calls) == 2 and os.path.isfile(os.path.join(cache, "movies.dat"))


def test_resolve_default_offline_fails_clearly(monkeypatch, tmp_path):
    cache = str(tmp_path / "cache")
    monkeypatch.setenv(movielens.DATA_DIR_ENV, cache)
    with pytest.raises(InputError, match=re.escape(cache)):
        movielens.resolve_data_dir(ML1M, None, "file://" + str(tmp_path / "missing.zip"))
    assert not any(os.path.isfile(os.path.join(cache, n)) for n in FILES)


# --------------------------------------------------------------------------- real data


@pytest.mark.slow
def test_real_ml1m(real_ml):
    ml = real_ml
    assert ml.checksums == ML1M_FILE_MD5
    assert (ml.num_users, ml.num_items, len(ml.interactions)) == (6040, 3883, 1_000_209)
    assert len(ml.vocabulary("item", "genres")) == 18
    assert ml.users.user_id.is_monotonic_increasing
    assert ml.interactions.rating.between(1, 5).all()
    assert ml.item_index([1])[0] == 0 and ml.item_index([4])[0] == 3
    assert ml.items.title.iloc[ml.item_index([1])[0]] == "Toy Story (1995)"
    # latin-1 titles decode to real accented characters.
    assert ml.items.title.str.contains("é").any()
    assert ml.default_cutoff == movielens.ML1M_CUTOFF == 1041379200
