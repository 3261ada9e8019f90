"""A loaded data set: interactions between users and items, and their feature tables.

Every source (`dssm_tf.data.sources`) ends in `build_dataset`, which turns raw keys into
contiguous indices: row ``i`` of `Dataset.users` is user index ``i`` (likewise items) and
`Dataset.interactions` holds those indices, in the source's order (which breaks timestamp ties
in the protocols). Without a user (item) table, the users (items) are the distinct keys of the
interactions, sorted.

Usage::

    dataset = load_dataset(DataConfig(dataset="movielens-1m", data_dir="ml-1m"))
    dataset.interactions.head()        # user, item, timestamp, rating   (source order)
    dataset.users[dataset.schema.user_key][dataset.interactions.user]   # raw user keys
    dataset.user_index([1, 42])        # raw keys -> indices (-1 = unknown)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Callable

import numpy as np
import pandas as pd

from dssm_tf.config import DataConfig
from dssm_tf.data.schema import INT64, MULTI, MULTI_SEPARATOR, Schema
from dssm_tf.errors import ConfigError, InputError

log = logging.getLogger("dssm_tf")


@dataclasses.dataclass(frozen=True)
class Table:
    """A parsed file and where its rows came from, so errors can name the line.

    `first_line` is the file line of row 0 (1 without a header, 2 with one); None for files
    without lines (Parquet), whose rows are named by number instead. `line_of`, when set,
    maps a row to its file line instead (files whose blank lines or quoted line breaks make
    rows and lines differ; it may read the file, so it is only called to report an error).
    `source_rows`, when set, says which row of the file each row of `frame` is (a table
    derived from some of a file's rows).
    """

    frame: pd.DataFrame
    path: str
    first_line: int | None = 1
    line_of: Callable[[int], int] | None = dataclasses.field(default=None, compare=False,
                                                             repr=False)
    source_rows: np.ndarray | None = dataclasses.field(default=None, compare=False,
                                                       repr=False)

    def line(self, row: int) -> str:
        """Where row `row` is in its file: "line N", or "row N" for files without lines."""
        if self.source_rows is not None:
            row = int(self.source_rows[row])
        if self.line_of is not None:
            return f"line {self.line_of(row)}"
        if self.first_line is None:
            return f"row {row + 1}"
        return f"line {row + self.first_line}"

    def where(self, row: int) -> str:
        """``path:line`` (``path: row N`` for files without lines), for error messages."""
        line = self.line(row)
        if line.startswith("line "):
            return f"{self.path}:{line[5:]}"
        return f"{self.path}: {line}"

    def subset(self, rows: np.ndarray, frame: pd.DataFrame) -> "Table":
        """The table of `frame`, whose row i is row `rows[i]` of this one (errors still name
        the file's lines)."""
        rows = np.asarray(rows, np.int64)
        if self.source_rows is not None:
            rows = self.source_rows[rows]
        return dataclasses.replace(self, frame=frame, source_rows=rows)

    def fail(self, bad: np.ndarray, message: str, column: str | None = None) -> None:
        """Raise InputError for the first True in `bad`, quoting the value of `column`."""
        bad = np.asarray(bad, bool)
        if bad.any():
            row = int(np.argmax(bad))
            raise InputError(f"{self.where(row)}: {message}{self.quote(row, column)}")

    def quote(self, row: int, column: str | None) -> str:
        """``, got 'value'`` (``, got an empty field`` for a missing value); "" without a
        column."""
        if column is None:
            return ""
        value = self.frame[column].iloc[row]
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return ", got an empty field"
        return f", got {str(value)!r}"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Interactions with contiguous user/item indices, and the user and item tables."""

    schema: Schema
    users: pd.DataFrame         # row = user index: the key column, features, display columns
    items: pd.DataFrame         # row = item index: the key column, features, title
    interactions: pd.DataFrame  # user, item (indices), timestamp (Unix s), rating; source order
    #                             (timestamp is an order only unless config.real_times)
    config: DataConfig          # how it was loaded (data_dir resolved to an absolute path)
    checksums: dict[str, str]   # file name -> md5 of every file read
    default_cutoff: int | None = None  # the time split's default cutoff, if the source has one
    labels: dict = dataclasses.field(default_factory=dict)  # feature -> {value: readable text}

    @property
    def name(self) -> str:
        return self.config.dataset

    @property
    def data_dir(self) -> str:
        return self.config.data_dir or os.path.dirname(self.config.interactions or "")

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def user_keys(self) -> np.ndarray:
        return self.users[self.schema.user_key].to_numpy()

    @property
    def item_keys(self) -> np.ndarray:
        return self.items[self.schema.item_key].to_numpy()

    def user_index(self, keys) -> np.ndarray:
        """Raw user keys to indices (-1 for unknown keys)."""
        return pd.Index(self.user_keys).get_indexer(np.asarray(keys, dtype=self.user_keys.dtype))

    def item_index(self, keys) -> np.ndarray:
        """Raw item keys to indices (-1 for unknown keys)."""
        return pd.Index(self.item_keys).get_indexer(np.asarray(keys, dtype=self.item_keys.dtype))

    def parse_user_key(self, text: str):
        """A user key typed on a command line, in the key's dtype (ValueError if it cannot be)."""
        return int(text) if self.schema.user_key_dtype == INT64 else str(text)

    def table(self, side: str) -> pd.DataFrame:
        return self.users if side == "user" else self.items

    def vocabulary(self, side: str, feature: str) -> list:
        """Sorted distinct values of a categorical feature, or tokens of a multi-valued one."""
        spec = next(f for f in self._features(side) if f.name == feature)
        column = self.table(side)[feature]
        if spec.kind == MULTI:
            tokens = {t for text in column.astype(str) for t in text.split(MULTI_SEPARATOR)}
            return sorted(tokens - {""})
        values = column.unique()
        return sorted(v.item() if isinstance(v, np.generic) else v for v in values)

    def numeric_stats(self, side: str, feature: str) -> tuple[float, float]:
        """(mean, standard deviation, 1 when it is 0) of a numeric feature over its table."""
        values = self.table(side)[feature].to_numpy(np.float64)
        std = float(values.std())
        return float(values.mean()), std if std > 0 else 1.0

    def _features(self, side: str):
        return self.schema.user_features if side == "user" else self.schema.item_features


def _key_indices(table: Table | None, key: str, keys, side: str,
                 interactions: Table) -> tuple[pd.Index, np.ndarray]:
    """The index of users (items) and each interaction's position in it (-1: not in `table`).

    The index is the table's keys in file order, else the sorted keys seen. Keys are
    factorised first, so the lookups cost one per distinct key, not one per interaction.
    """
    codes, uniques = pd.factorize(keys)
    interactions.fail(codes < 0, f"missing {side} key {key}", key)
    if table is None:
        index = pd.Index(uniques).sort_values()
    else:
        column = table.frame[key]
        table.fail(column.duplicated().to_numpy(), f"duplicate {side} key {key}", key)
        table.fail(column.isna().to_numpy(), f"missing {side} key {key}", key)
        index = pd.Index(column.to_numpy())
    return index, index.get_indexer(pd.Index(uniques)).astype(np.int64)[codes]


def _exact_repeats(table: pd.DataFrame) -> np.ndarray:
    """True for each row that repeats an earlier row exactly. A 64-bit hash of (user, item,
    time), sorted, finds the candidates (25M rows in well under a second, where a 4-column
    `duplicated` takes 13 s); only rows whose hash occurs twice are compared in full."""
    mixed = (table.user.to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             ^ table.item.to_numpy().astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
             ^ table.timestamp.to_numpy().astype(np.uint64))
    ordered = np.sort(mixed)
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    repeated = np.zeros(len(table), bool)
    if len(twice):
        candidates = np.flatnonzero(np.isin(mixed, twice))
        repeated[candidates] = table.iloc[candidates].duplicated().to_numpy()
    return repeated


def build_dataset(schema: Schema, interactions: Table, config: DataConfig,
                  users: Table | None = None, items: Table | None = None,
                  checksums: dict[str, str] | None = None, default_cutoff: int | None = None,
                  labels: dict | None = None) -> Dataset:
    """Check keys and build a `Dataset` from parsed tables.

    `interactions.frame` has the columns ``schema.user_key``, ``schema.item_key``,
    ``timestamp`` (int64 Unix seconds, or integers that only order the interactions when
    ``config.real_times`` is false) and, optionally, ``rating``. An interaction whose key a
    given feature table lacks is an error naming its line, or, with
    ``config.missing_keys == "drop"``, dropped (the count is logged). With `config.min_rating`,
    only interactions rated at least that much are kept. A time before 1970 is an error (a
    logged interaction cannot be that old: a placeholder such as -1, more likely); times in
    the future are kept, with a warning (neither applies to an order). Exact repeats of an
    interaction (same user, item, time and rating: a file appended twice, say) are dropped,
    and counted in a warning.
    """
    frame = interactions.frame
    stamps = frame["timestamp"].to_numpy(np.int64)
    if config.real_times:  # an order (--time_column=COLUMN:order) may hold any integers
        interactions.fail(stamps < 0, "expected a time at or after 1970-01-01 (Unix seconds "
                                      ">= 0)", "timestamp")
    future = int((stamps > time.time()).sum()) if config.real_times else 0
    if future:
        log.warning("%d interaction(s) of %s are dated in the future (the latest: %s UTC); "
                    "kept", future, interactions.path,
                    pd.Timestamp(int(stamps.max()), unit="s").strftime("%Y-%m-%d %H:%M:%S"))
    user_index, user = _key_indices(users, schema.user_key, frame[schema.user_key], "user",
                                    interactions)
    item_index, item = _key_indices(items, schema.item_key, frame[schema.item_key], "item",
                                    interactions)
    keep = np.ones(len(frame), bool)
    for index, table, key in ((user, users, schema.user_key), (item, items, schema.item_key)):
        missing = index < 0
        if table is None or not missing.any():
            continue
        if config.missing_keys == "error":
            interactions.fail(missing, f"{key} not in {table.path} (--missing_keys=drop "
                                       f"drops such interactions)", key)
        log.warning("dropped %d interaction(s) of %s whose %s is not in %s",
                    int(missing.sum()), interactions.path, key, table.path)
        keep &= ~missing
    if config.min_rating is not None:
        if "rating" not in frame:
            raise ConfigError("min_rating", f"{interactions.path} has no rating column "
                                            f"(--rating_column)")
        keep &= frame["rating"].to_numpy(np.float64) >= config.min_rating
    columns = {"user": user, "item": item, "timestamp": stamps}
    if "rating" in frame:
        columns["rating"] = frame["rating"].to_numpy()
    del frame, user, item
    table = pd.DataFrame(columns, copy=False)
    repeated = _exact_repeats(table)
    if repeated.any():
        log.warning("dropped %d exact repeat(s) of an interaction (same user, item, time and "
                    "rating) in %s, the first at %s", int(repeated.sum()), interactions.path,
                    interactions.where(int(np.argmax(repeated))))
        keep &= ~repeated
    if not keep.all():
        table = table[keep].reset_index(drop=True)
    if table.empty:
        reason = (f" at or above --min_rating={config.min_rating:g}"
                  if config.min_rating is not None else "")
        raise InputError(f"{interactions.path}: no interactions{reason}")
    users_frame = (users.frame.reset_index(drop=True) if users is not None
                   else pd.DataFrame({schema.user_key: user_index.to_numpy()}))
    items_frame = (items.frame.reset_index(drop=True) if items is not None
                   else pd.DataFrame({schema.item_key: item_index.to_numpy()}))
    return Dataset(schema=schema, users=users_frame, items=items_frame, interactions=table,
                   config=config, checksums=dict(checksums or {}),
                   default_cutoff=default_cutoff, labels=dict(labels or {}))
