"""dssm_tf.protocols: time_split and leave_last_one_out, histories."""

from __future__ import annotations

import numpy as np
import pytest

from dssm_tf import data, protocols
from dssm_tf.errors import InputError
from dssm_tf.protocols import LEAVE_LAST_ONE_OUT, TIME_SPLIT, history_window, make_split
from tests.synthetic import CUTOFF, TINY_RATINGS, make_dataset, write_movielens

# The TINY data set (tests/synthetic.py), by line of ratings.dat:
#   line  user(index)  movie(index)  timestamp
#   1     1 (0)        1  (0)        978300760
#   2     1 (0)        10 (2)        978302109
#   3     1 (0)        2  (1)        CUTOFF+100
#   4     2 (1)        2  (1)        978300000
#   5     2 (1)        32 (3)        978300500
#   6     2 (1)        1  (0)        978300500   (ties with line 5)
#   7     5 (2)        32 (3)        CUTOFF+5
#   8     5 (2)        1  (0)        CUTOFF+7
#   9     2 (1)        10 (2)        CUTOFF      (exactly at the cutoff)


def _lines(frame):
    """The ratings.dat line numbers (1-based) of a frame's rows, via (user, movie, time)."""
    index = {(u, m, t): i + 1 for i, (u, m, _, t) in enumerate(TINY_RATINGS)}
    return [index[(u, m, t)] for u, m, t in
            frame[["user_id", "movie_id", "timestamp"]].itertuples(index=False, name=None)]


def test_time_split_hand_example(tiny_ml):
    split = make_split(tiny_ml, TIME_SPLIT)
    assert split.protocol == TIME_SPLIT and split.cutoff == CUTOFF
    # Test: lines 3 and 9 (at/after the cutoff); user 5 (lines 7, 8) has no training rating.
    assert _lines(split.test) == [3, 9]
    # Train: sorted by user, then time, then file order (line 5 before line 6).
    assert _lines(split.train) == [1, 2, 4, 5, 6]
    np.testing.assert_array_equal(split.test_users, [0, 1])
    assert split.test.movie.tolist() == [1, 2]
    assert (split.num_users, split.num_movies) == (3, 4)
    np.testing.assert_array_equal(split.user_offsets, [0, 2, 5, 5])
    np.testing.assert_array_equal(split.movie_counts, [2, 1, 1, 1])
    assert split.seen.toarray().tolist() == [[1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0]]


def test_leave_last_one_out_hand_example(tiny_ml):
    split = make_split(tiny_ml, LEAVE_LAST_ONE_OUT)
    assert split.protocol == LEAVE_LAST_ONE_OUT and split.cutoff is None
    # Each user's latest rating: user 1 line 3, user 5 line 8, user 2 line 9 (file order kept).
    assert _lines(split.test) == [3, 8, 9]
    assert _lines(split.train) == [1, 2, 4, 5, 6, 7]
    np.testing.assert_array_equal(split.test_users, [0, 1, 2])
    np.testing.assert_array_equal(split.movie_counts, [2, 1, 1, 2])


def test_custom_cutoff_and_candidates(tiny_ml):
    # Only lines 4-6 (user 2) are before 978300501; users 1 and 5 have no training rating.
    split = make_split(tiny_ml, TIME_SPLIT, cutoff=978300501)
    assert _lines(split.train) == [4, 5, 6]
    assert _lines(split.test) == [9]
    # Movie 10 (index 2) has no training rating: not a candidate.
    np.testing.assert_array_equal(split.candidates, [True, True, False, True])


@pytest.mark.parametrize("reverse", [False, True])
def test_leave_last_one_out_tie_broken_by_file_order(tmp_path, reverse):
    late = [(1, 2, 3, 500), (1, 10, 4, 500)]
    if reverse:
        late.reverse()
    ratings = [(1, 1, 5, 100)] + late + [(2, 1, 5, 600), (2, 2, 4, 50)]
    ml = data.load_movielens(write_movielens(tmp_path, ratings=ratings))
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    test = dict(zip(split.test.user_id, split.test.movie_id))
    assert test[1] == late[1][1]  # the later line of the two at t=500
    assert test[2] == 1
    # The earlier tied line is the newest training rating of user 1.
    history = split.train[split.train.user_id == 1].movie_id.tolist()
    assert history == [1, late[0][1]]


def test_seen_is_binary_with_repeated_ratings(tmp_path):
    # User 1 rated movie 2 twice before the cutoff: seen stays 1, the count is 2.
    ratings = [(1, 2, 3, 100), (1, 2, 5, 200), (1, 1, 4, CUTOFF), (2, 2, 4, 300)]
    split = make_split(data.load_movielens(write_movielens(tmp_path, ratings=ratings)),
                       TIME_SPLIT)
    assert split.seen.toarray().tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(split.movie_counts, [0, 3, 0, 0])


def test_time_split_without_test_ratings_fails(tiny_ml):
    with pytest.raises(InputError, match=r"no test ratings.*--cutoff=4000000000"):
        make_split(tiny_ml, TIME_SPLIT, cutoff=4_000_000_000)
    # Everything after the cutoff: no user has training ratings, so no test user either.
    with pytest.raises(InputError, match="no test ratings"):
        make_split(tiny_ml, TIME_SPLIT, cutoff=0)


def test_unknown_protocol(tiny_ml):
    with pytest.raises(InputError, match="--protocol.*'random'"):
        make_split(tiny_ml, "random")


def _random_ratings(rng, n_users, n_movies, n_ratings):
    """Random rows with many timestamp ties and users in shuffled file order."""
    rows = {}
    while len(rows) < n_ratings:
        u, m = int(rng.integers(1, n_users + 1)), int(rng.integers(1, n_movies + 1))
        rows[(u, m)] = (u, m, int(rng.integers(1, 6)),
                        CUTOFF + int(rng.integers(-6, 3)) * 1000)
    rows = list(rows.values())
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
def test_split_invariants_on_random_data(tmp_path, seed, protocol):
    rng = np.random.default_rng(seed)
    n_users, n_movies = 25, 30
    ratings = _random_ratings(rng, n_users, n_movies, 300)
    folder = write_movielens(
        tmp_path, users=[(u, "MF"[u % 2], 25, 1, "00000") for u in range(1, n_users + 1)],
        movies=[(m, f"M{m} (2000)", "Drama") for m in range(1, n_movies + 1)], ratings=ratings)
    ml = data.load_movielens(folder)
    split = make_split(ml, protocol)
    _check_invariants(split, ratings)

    # Brute force, straight from the definition of each protocol.
    if protocol == TIME_SPLIT:
        trained = {r[0] for r in ratings if r[3] < CUTOFF}
        want = [r for r in ratings if r[3] >= CUTOFF and r[0] in trained]
    else:
        latest = {}
        for line, r in enumerate(ratings):
            if r[0] not in latest or r[3] >= ratings[latest[r[0]]][3]:
                latest[r[0]] = line  # >=: a tie goes to the later line
        counts = np.bincount([r[0] for r in ratings])
        want = [ratings[i] for i in sorted(latest.values()) if counts[ratings[i][0]] > 1]
    got = list(split.test[["user_id", "movie_id", "rating", "timestamp"]]
               .itertuples(index=False, name=None))
    assert got == want


@pytest.mark.parametrize("protocol", protocols.PROTOCOLS)
def test_split_invariants_on_synthetic(synthetic_data, protocol):
    ml = data.load_movielens(synthetic_data.folder)
    split = make_split(ml, protocol)
    _check_invariants(split, synthetic_data.ratings)
    if protocol == TIME_SPLIT:
        assert len(split.train) == synthetic_data.n_train_time_split
        assert 0 < len(split.test_users) < ml.num_users
    else:
        assert len(split.test) == len(split.test_users) == ml.num_users


def _check_invariants(split, ratings):
    train, test = split.train, split.test
    key = ["user_id", "movie_id", "timestamp"]
    train_rows = set(train[key].itertuples(index=False, name=None))
    test_rows = list(test[key].itertuples(index=False, name=None))
    assert not train_rows & set(test_rows)  # no test rating leaks into training
    assert len(train_rows) == len(train)
    assert len(train) + len(test) <= len(ratings)
    # Every test user has training ratings.
    assert set(test.user) <= set(train.user)
    assert np.all(split.user_offsets[split.test_users + 1] > split.user_offsets[split.test_users])
    # Train sorted by (user, time); histories are contiguous and chronological.
    order = list(zip(train.user, train.timestamp))
    assert order == sorted(order)
    if split.protocol == TIME_SPLIT:
        assert (train.timestamp < split.cutoff).all() and (test.timestamp >= split.cutoff).all()
        # Dropped test ratings are exactly those of users without training ratings.
        dropped = [r for r in ratings if r[3] >= split.cutoff
                   and (r[0], r[1], r[3]) not in set(test_rows)]
        assert not {r[0] for r in dropped} & set(train.user_id)
    else:
        assert test.user.is_unique
        last_train = train.groupby("user").timestamp.max()
        assert (test.timestamp.to_numpy() >= last_train[test.user].to_numpy()).all()
        # Only the single rating of one-rating users is dropped.
        singles = (np.bincount([r[0] for r in ratings]) == 1).sum()
        assert len(train) + len(test) + singles == len(ratings)
    # Index columns still match the raw ids.
    assert (train.groupby("user").user_id.nunique() == 1).all()


def test_histories_hand_example(tiny_ml):
    split = make_split(tiny_ml, TIME_SPLIT)
    # Training movies (index + 1): user 0 -> [1, 3]; user 1 -> [2, 4, 1] (line 5 before 6);
    # user 2 has none.
    np.testing.assert_array_equal(split.histories(np.array([0, 1, 2]), 4),
                                  [[0, 0, 1, 3], [0, 2, 4, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(split.histories(np.array([1, 0]), 2), [[4, 1], [1, 3]])
    np.testing.assert_array_equal(split.histories(np.array([1]), 1), [[1]])
    assert split.histories(np.array([0, 1]), 3).dtype == np.int64
    loo = make_split(tiny_ml, LEAVE_LAST_ONE_OUT)
    np.testing.assert_array_equal(loo.histories(loo.test_users, 3),
                                  [[0, 1, 3], [2, 4, 1], [0, 0, 4]])


def test_history_window():
    movies = np.array([5, 6, 7, 8, 9])
    got = history_window(movies, np.array([0, 2, 5, 0]), np.array([2, 5, 5, 5]), 3)
    np.testing.assert_array_equal(got, [[0, 6, 7], [8, 9, 10], [0, 0, 0], [8, 9, 10]])
    got = history_window(movies, np.array([1]), np.array([4]), 6)
    np.testing.assert_array_equal(got, [[0, 0, 0, 7, 8, 9]])
    assert got.dtype == np.int64


def test_histories_on_synthetic_are_chronological(synthetic_data):
    ml = data.load_movielens(synthetic_data.folder)
    split = make_split(ml, TIME_SPLIT)
    length = 5
    hist = split.histories(split.test_users, length)
    for row, user in zip(hist, split.test_users):
        uid = int(ml.users.user_id[user])
        mine = sorted((t, line, m) for line, (u, m, _, t) in enumerate(synthetic_data.ratings)
                      if u == uid and t < CUTOFF)
        want = [int(ml.movie_index([m])[0]) + 1 for _, _, m in mine][-length:]
        assert row.tolist() == [0] * (length - len(want)) + want
