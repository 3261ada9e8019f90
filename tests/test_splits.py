"""dssm_tf.data.splits: time_split and leave_last_one_out, cutoffs, histories."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from dssm_tf.config import LEAVE_LAST_ONE_OUT, PROTOCOLS, TIME_SPLIT, SplitConfig
from dssm_tf.data import splits
from dssm_tf.data.splits import history_window
from dssm_tf.errors import ConfigError
from tests.conftest import load_ml, make_split
from tests.synthetic import CUTOFF, TINY_RATINGS, write_movielens


def raw(frame, dataset):
    """`frame` (user/item indices) with the raw keys beside: user_id, movie_id."""
    return frame.assign(user_id=dataset.user_keys[frame.user.to_numpy()],
                        movie_id=dataset.item_keys[frame.item.to_numpy()])

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


def _lines(frame, dataset):
    """The ratings.dat line numbers (1-based) of a frame's rows, via (user, movie, time)."""
    index = {(u, m, t): i + 1 for i, (u, m, _, t) in enumerate(TINY_RATINGS)}
    return [index[(u, m, t)] for u, m, t in raw(frame, dataset)[
        ["user_id", "movie_id", "timestamp"]].itertuples(index=False, name=None)]


def test_time_split_hand_example(tiny_ml):
    split = make_split(tiny_ml, TIME_SPLIT)
    assert split.protocol == TIME_SPLIT and split.cutoff == CUTOFF
    # Test: lines 3 and 9 (at/after the cutoff); user 5 (lines 7, 8) has no training rating.
    assert _lines(split.test, tiny_ml) == [3, 9]
    # Train: sorted by user, then time, then file order (line 5 before line 6).
    assert _lines(split.train, tiny_ml) == [1, 2, 4, 5, 6]
    np.testing.assert_array_equal(split.test_users, [0, 1])
    assert split.test.item.tolist() == [1, 2]
    assert (split.num_users, split.num_items) == (3, 4)
    np.testing.assert_array_equal(split.user_offsets, [0, 2, 5, 5])
    np.testing.assert_array_equal(split.item_counts, [2, 1, 1, 1])
    assert split.seen.toarray().tolist() == [[1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0]]


def test_leave_last_one_out_hand_example(tiny_ml):
    split = make_split(tiny_ml, LEAVE_LAST_ONE_OUT)
    assert split.protocol == LEAVE_LAST_ONE_OUT and split.cutoff is None
    # Each user's latest rating: user 1 line 3, user 5 line 8, user 2 line 9 (file order kept).
    assert _lines(split.test, tiny_ml) == [3, 8, 9]
    assert _lines(split.train, tiny_ml) == [1, 2, 4, 5, 6, 7]
    np.testing.assert_array_equal(split.test_users, [0, 1, 2])
    np.testing.assert_array_equal(split.item_counts, [2, 1, 1, 2])


def test_custom_cutoff_and_candidates(tiny_ml):
    # Only lines 4-6 (user 2) are before 978300501; users 1 and 5 have no training rating.
    split = make_split(tiny_ml, TIME_SPLIT, cutoff=978300501)
    assert _lines(split.train, tiny_ml) == [4, 5, 6]
    assert _lines(split.test, tiny_ml) == [9]
    # Movie 10 (index 2) has no training rating: not a candidate.
    np.testing.assert_array_equal(split.candidates, [True, True, False, True])


@pytest.mark.parametrize("reverse", [False, True])
def test_leave_last_one_out_tie_broken_by_file_order(tmp_path, reverse):
    late = [(1, 2, 3, 500), (1, 10, 4, 500)]
    if reverse:
        late.reverse()
    ratings = [(1, 1, 5, 100)] + late + [(2, 1, 5, 600), (2, 2, 4, 50)]
    ml = load_ml(write_movielens(tmp_path, ratings=ratings))
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    test, train = raw(split.test, ml), raw(split.train, ml)
    test = dict(zip(test.user_id, test.movie_id))
    assert test[1] == late[1][1]  # the later line of the two at t=500
    assert test[2] == 1
    # The earlier tied line is the newest training rating of user 1.
    history = train[train.user_id == 1].movie_id.tolist()
    assert history == [1, late[0][1]]


def test_seen_is_binary_with_repeated_ratings(tmp_path):
    # User 1 rated movie 2 twice before the cutoff: seen stays 1, the count is 2.
    ratings = [(1, 2, 3, 100), (1, 2, 5, 200), (1, 1, 4, CUTOFF), (2, 2, 4, 300)]
    split = make_split(load_ml(write_movielens(tmp_path, ratings=ratings)), TIME_SPLIT)
    assert split.seen.toarray().tolist() == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    np.testing.assert_array_equal(split.item_counts, [0, 3, 0, 0])


def test_time_split_with_an_empty_side_says_which(tiny_ml):
    with pytest.raises(ConfigError, match=r"4000000000 \(2096-10-02.*leaves no test") as error:
        make_split(tiny_ml, TIME_SPLIT, cutoff=4_000_000_000)
    assert error.value.parameter == "cutoff"
    # Everything after the cutoff: the training set is empty, and the error says so.
    with pytest.raises(ConfigError, match=r"leaves no training interaction: the earliest is "
                                          r"at 2000-12-31") as error:
        make_split(tiny_ml, TIME_SPLIT, cutoff=0)
    assert error.value.parameter == "cutoff"


def test_unknown_protocol(tiny_ml):
    with pytest.raises(ConfigError, match="expected one of.*'random'") as error:
        make_split(tiny_ml, "random")
    assert error.value.parameter == "protocol"


def test_default_cutoff_is_the_data_sets_or_the_last_tenth(tiny_ml, tmp_path):
    # movielens-1m keeps the seed's 2003-01-01.
    assert make_split(tiny_ml, TIME_SPLIT).cutoff == CUTOFF == splits.default_cutoff(tiny_ml)
    # Without a data set default: the first time of the last 10% of interactions.
    stamps = [1000 * i for i in range(1, 21)]  # 20 interactions of 4 users, in time order
    ratings = [((i % 4) + 1, (i % 3) + 1, 4, t) for i, t in enumerate(stamps)]
    folder = write_movielens(tmp_path, users=[(u, "F", 1, 1, "0") for u in range(1, 5)],
                             movies=[(m, f"M{m}", "Drama") for m in range(1, 4)],
                             ratings=ratings)
    dataset = dataclasses.replace(load_ml(folder), default_cutoff=None)
    assert splits.default_cutoff(dataset) == 19000  # 18 before it, the last 2 (10%) after
    split = make_split(dataset, TIME_SPLIT)
    assert split.cutoff == 19000 and len(split.test) == 2 and len(split.train) == 18
    # The resolved config records the cutoff the split used; leave-last-one-out has none.
    assert splits.resolve(dataset, SplitConfig()).cutoff == 19000
    assert splits.resolve(dataset, SplitConfig(LEAVE_LAST_ONE_OUT, 5)).cutoff is None


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
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_split_invariants_on_random_data(tmp_path, seed, protocol):
    rng = np.random.default_rng(seed)
    n_users, n_movies = 25, 30
    ratings = _random_ratings(rng, n_users, n_movies, 300)
    folder = write_movielens(
        tmp_path, users=[(u, "MF"[u % 2], 25, 1, "00000") for u in range(1, n_users + 1)],
        movies=[(m, f"M{m} (2000)", "Drama") for m in range(1, n_movies + 1)], ratings=ratings)
    ml = load_ml(folder)
    split = make_split(ml, protocol)
    _check_invariants(split, ratings, ml)

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
    got = list(raw(split.test, ml)[["user_id", "movie_id", "rating", "timestamp"]]
               .itertuples(index=False, name=None))
    assert got == want


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_split_invariants_on_synthetic(synthetic_data, protocol):
    ml = load_ml(synthetic_data.folder)
    split = make_split(ml, protocol)
    _check_invariants(split, synthetic_data.ratings, ml)
    if protocol == TIME_SPLIT:
        assert len(split.train) == synthetic_data.n_train_time_split
        assert 0 < len(split.test_users) < ml.num_users
    else:
        assert len(split.test) == len(split.test_users) == ml.num_users


def _check_invariants(split, ratings, dataset):
    train, test = raw(split.train, dataset), raw(split.test, dataset)
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
    ml = load_ml(synthetic_data.folder)
    split = make_split(ml, TIME_SPLIT)
    length = 5
    hist = split.histories(split.test_users, length)
    for row, user in zip(hist, split.test_users):
        uid = int(ml.users.user_id[user])
        mine = sorted((t, line, m) for line, (u, m, _, t) in enumerate(synthetic_data.ratings)
                      if u == uid and t < CUTOFF)
        want = [int(ml.item_index([m])[0]) + 1 for _, _, m in mine][-length:]
        assert row.tolist() == [0] * (length - len(want)) + want


# --- the fast paths at scale: identical to the straightforward definitions ----------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_chronological_order_equals_the_three_key_lexsort(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    user = rng.integers(0, 40, size=n)
    stamp = rng.integers(-50, 50, size=n) * 1000 + 978300000  # many ties within a user
    want = np.lexsort((np.arange(n), stamp, user))
    np.testing.assert_array_equal(splits.chronological_order(user, stamp), want)
    # Negative times, the int64 extremes (no room for the combined key: the lexsort path),
    # float times, and nothing at all.
    stamp[:3] = [-(2**62), 2**62, -5]
    np.testing.assert_array_equal(splits.chronological_order(user, stamp),
                                  np.lexsort((np.arange(n), stamp, user)))
    floats = stamp[3:].astype(np.float64) + 0.5
    np.testing.assert_array_equal(splits.chronological_order(user[3:], floats),
                                  np.lexsort((np.arange(n - 3), floats, user[3:])))
    assert len(splits.chronological_order(np.zeros(0, np.int64), np.zeros(0, np.int64))) == 0


@pytest.mark.parametrize("grouped", [True, False])
def test_binary_matrix_equals_the_coo_construction(grouped):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 50, size=2000)
    items = rng.integers(0, 70, size=2000)   # many repeats of a (user, item) pair
    if grouped:
        users = np.sort(users)
    got = splits.binary_matrix(users, items, (60, 80))
    want = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(60, 80))
    want.sum_duplicates()
    want.data[:] = 1.0
    assert got.shape == want.shape and got.dtype == np.float32 and got.has_canonical_format
    for name in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert getattr(got, name).dtype == getattr(want, name).dtype, name
    empty = splits.binary_matrix(np.zeros(0, np.int64), np.zeros(0, np.int64), (3, 4))
    assert empty.shape == (3, 4) and empty.nnz == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_split_train_order_and_seen_match_the_definitions(synthetic_data, protocol):
    ml = load_ml(synthetic_data.folder)
    split = make_split(ml, protocol)
    frame = ml.interactions
    order = np.lexsort((np.arange(len(frame)), frame.timestamp.to_numpy(),
                        frame.user.to_numpy()))
    kept = frame.iloc[order]
    kept = kept[kept.index.isin(np.setdiff1d(frame.index, _test_positions(frame, split)))]
    np.testing.assert_array_equal(split.train.user, kept.user)
    np.testing.assert_array_equal(split.train.item, kept.item)
    np.testing.assert_array_equal(split.train.timestamp, kept.timestamp)
    want = sp.csr_matrix((np.ones(len(split.train)), (split.train.user, split.train.item)),
                         shape=(ml.num_users, ml.num_items))
    assert (split.seen != (want > 0)).nnz == 0
    rows = np.arange(0, len(split.train), 2)   # grouped by user, and not (the COO path)
    np.testing.assert_array_equal(split.seen_rows(rows).toarray(),
                                  split.seen_rows(rows[::-1]).toarray())


def _test_positions(frame, split):
    """Positions of `frame` that are test interactions or dropped (not training ones)."""
    train_keys = set(zip(split.train.user, split.train.item, split.train.timestamp))
    return np.array([i for i, key in enumerate(zip(frame.user, frame.item, frame.timestamp))
                     if key not in train_keys], dtype=np.int64)


# --- request times and same-second ties ---------------------------------------------------------

def test_docstring_examples():
    import doctest

    assert doctest.testmod(splits, raise_on_error=False).failed == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_request_times_of_each_mode(tiny_ml, protocol):
    """TINY: user 0 trains on lines 1, 2 and tests on line 3, user 1 trains up to lines 5/6
    (978300500) and tests on line 9, under both protocols; user 2 (UserID 5) has no training
    rating under the time split, and trains on line 7, tests on line 8 under LOO."""
    from dssm_tf.config import NO_REQUEST_TIME, REQUEST_TIMES

    split = make_split(tiny_ml, protocol)
    users = np.arange(split.num_users)
    got = {mode: split.request_times(users, mode).tolist() for mode in REQUEST_TIMES}
    assert got["none"] == [NO_REQUEST_TIME] * 3 == [-1] * 3
    if protocol == TIME_SPLIT:
        assert got["last"] == [978302109, 978300500, -1]
        assert got["next"] == [CUTOFF + 100, CUTOFF, -1]
    else:
        assert got["last"] == [978302109, 978300500, CUTOFF + 5]
        assert got["next"] == [CUTOFF + 100, CUTOFF, CUTOFF + 7]
    # "last" is the time of the last history item, whatever the window.
    has = split.user_offsets[1:] > split.user_offsets[:-1]
    last_item_time = split.history_timestamps(users, 3)[:, -1]
    np.testing.assert_array_equal(np.asarray(got["last"])[has], last_item_time[has])
    assert split.request_times(users).tolist() == got["none"]   # the default: unknown
    with pytest.raises(ValueError, match="none, last, next"):
        split.request_times(users, "first")


def _tied_split(seed=0, n_users=50):
    """A split whose users have many same-second training rows (bursts of 1..6)."""
    rng = np.random.default_rng(seed)
    users, stamps = [], []
    for user in range(n_users):
        t = 1_000_000 + int(rng.integers(1000))
        for _ in range(int(rng.integers(2, 8))):
            burst = int(rng.integers(1, 7))
            users += [user] * burst
            stamps += [t] * burst
            t += int(rng.integers(1, 100))
    train = pd.DataFrame({"user": users, "item": rng.integers(0, 40, len(users)),
                          "timestamp": stamps, "rating": np.arange(len(users))})
    test = pd.DataFrame({"user": [0, 3], "item": [1, 2], "timestamp": [2_000_000] * 2})
    return splits.Split("leave_last_one_out", train, test, n_users, 40)


def test_shuffled_ties_permute_each_same_second_group_only():
    split = _tied_split()
    before = split.train
    _ = (split.user_offsets, split.seen)  # cached before: carried over, and still right
    shuffled = split.with_shuffled_ties(0)
    after = shuffled.train
    key = ["user", "timestamp"]
    # The same rows (whole rows move: "rating" is a row id), the same (user, time) sequence.
    assert sorted(after.rating) == sorted(before.rating)
    pd.testing.assert_frame_equal(after[key], before[key])
    for (_, group_before), (_, group_after) in zip(before.groupby(key, sort=False),
                                                   after.groupby(key, sort=False)):
        assert sorted(group_after.rating) == sorted(group_before.rating)
    assert (after.rating.to_numpy() != before.rating.to_numpy()).mean() > 0.2  # permuted
    # Rows of distinct timestamps keep their order: a row id changes only within its group.
    single = before.groupby(key).rating.transform("size").to_numpy() == 1
    np.testing.assert_array_equal(after.rating.to_numpy()[single],
                                  before.rating.to_numpy()[single])
    # Deterministic per seed, different across seeds; test rows, counts, offsets unchanged.
    pd.testing.assert_frame_equal(split.with_shuffled_ties(0).train, after)
    assert not split.with_shuffled_ties(1).train.rating.equals(after.rating)
    assert shuffled.test is split.test
    fresh = splits.Split(split.protocol, after, split.test, split.num_users, split.num_items)
    np.testing.assert_array_equal(shuffled.user_offsets, fresh.user_offsets)
    np.testing.assert_array_equal(shuffled.item_counts, fresh.item_counts)
    assert (shuffled.seen != fresh.seen).nnz == 0
    for mode in ("last", "next"):
        np.testing.assert_array_equal(shuffled.request_times(np.arange(50), mode),
                                      fresh.request_times(np.arange(50), mode))
    assert before.rating.is_monotonic_increasing  # the original is untouched


def test_shuffled_ties_on_real_sorted_splits(synthetic_data):
    """On a split of `make_split` (sorted by user, time, source order), shuffling ties keeps
    the chronological order, so histories only differ within a second."""
    ml = load_ml(synthetic_data.folder)
    split = make_split(ml, LEAVE_LAST_ONE_OUT)
    shuffled = split.with_shuffled_ties(3)
    train = shuffled.train
    order = splits.chronological_order(train.user.to_numpy(), train.timestamp.to_numpy())
    np.testing.assert_array_equal(order, np.arange(len(train)))
    users = split.test_users
    np.testing.assert_array_equal(shuffled.history_timestamps(users, 5),
                                  split.history_timestamps(users, 5))
