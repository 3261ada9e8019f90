"""Evaluation protocols: the seed's global time split and leave-last-one-out.

Both predict a user's *later* ratings from earlier ones. Training rows are sorted by user, then
time, then file order, so a user's history is a contiguous, chronological slice.

Usage::

    split = make_split(ml, "leave_last_one_out")
    split.train, split.test          # DataFrames with `user` / `movie` index columns
    split.histories(split.test_users, 50)   # last 50 training movies (+1, 0 = padding)
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pandas as pd
import scipy.sparse as sp

from dssm_tf.data import MovieLens
from dssm_tf.errors import InputError

TIME_SPLIT = "time_split"
LEAVE_LAST_ONE_OUT = "leave_last_one_out"
PROTOCOLS = (TIME_SPLIT, LEAVE_LAST_ONE_OUT)
DEFAULT_CUTOFF = 1041379200  # 2003-01-01 00:00:00 UTC, the seed's split


@dataclasses.dataclass(frozen=True)
class Split:
    """Train/test ratings of one protocol; every test user has at least one training rating."""

    protocol: str
    train: pd.DataFrame  # sorted by (user, timestamp, file order)
    test: pd.DataFrame   # file order
    num_users: int
    num_movies: int
    cutoff: int | None = None

    @functools.cached_property
    def test_users(self) -> np.ndarray:
        return np.unique(self.test.user.to_numpy())

    @functools.cached_property
    def user_offsets(self) -> np.ndarray:
        """`train` rows of user u are `user_offsets[u]:user_offsets[u + 1]`."""
        counts = np.bincount(self.train.user.to_numpy(), minlength=self.num_users)
        return np.concatenate([[0], np.cumsum(counts)])

    @functools.cached_property
    def seen(self) -> sp.csr_matrix:
        """Binary users x movies matrix of training ratings."""
        return self.seen_rows(np.arange(len(self.train)))

    def seen_rows(self, rows: np.ndarray) -> sp.csr_matrix:
        """Binary users x movies matrix of the training ratings at positions `rows`."""
        users = self.train.user.to_numpy()[rows]
        movies = self.train.movie.to_numpy()[rows]
        matrix = sp.csr_matrix((np.ones(len(users), np.float32), (users, movies)),
                               shape=(self.num_users, self.num_movies))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    @functools.cached_property
    def movie_counts(self) -> np.ndarray:
        return np.bincount(self.train.movie.to_numpy(), minlength=self.num_movies)

    @property
    def candidates(self) -> np.ndarray:
        """Movies that can be recommended: those with at least one training rating."""
        return self.movie_counts > 0

    def histories(self, users: np.ndarray, length: int) -> np.ndarray:
        """The last `length` training movies of each user, as movie index + 1, right-aligned."""
        ends = self.user_offsets[np.asarray(users) + 1]
        return history_window(self.train.movie.to_numpy(), self.user_offsets[users], ends,
                              length)


def history_window(movies: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   length: int) -> np.ndarray:
    """`movies[max(start, end - length):end] + 1` per row, right-aligned in a zero-padded array."""
    positions = np.asarray(ends)[:, None] - length + np.arange(length)[None, :]
    valid = positions >= np.asarray(starts)[:, None]
    window = np.where(valid, movies[np.clip(positions, 0, max(len(movies) - 1, 0))] + 1, 0)
    return window.astype(np.int64)


def make_split(ml: MovieLens, protocol: str, cutoff: int = DEFAULT_CUTOFF) -> Split:
    """Split `ml.ratings` by `protocol`; test ratings of users with no training rating are dropped."""
    ratings = ml.ratings
    user, stamp = ratings.user.to_numpy(), ratings.timestamp.to_numpy()
    order = np.lexsort((np.arange(len(ratings)), stamp, user))  # user, time, file order
    if protocol == TIME_SPLIT:
        is_test = stamp >= cutoff
    elif protocol == LEAVE_LAST_ONE_OUT:
        is_test = np.zeros(len(ratings), bool)
        last = np.r_[user[order][1:] != user[order][:-1], True]
        is_test[order[last]] = True
    else:
        raise InputError(f"--protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    train = ratings.iloc[order[~is_test[order]]].reset_index(drop=True)
    test = ratings[is_test]
    test = test[np.isin(test.user.to_numpy(), train.user.to_numpy())].reset_index(drop=True)
    if test.empty:
        raise InputError(f"{ml.data_dir}: no test ratings under --protocol={protocol}"
                         + (f" (no rating at or after --cutoff={cutoff})"
                            if protocol == TIME_SPLIT else ""))
    return Split(protocol=protocol, train=train, test=test, num_users=ml.num_users,
                 num_movies=ml.num_movies, cutoff=cutoff if protocol == TIME_SPLIT else None)
