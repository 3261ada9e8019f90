"""``--dataset=tabular``: train on your own interaction file (CSV, TSV or Parquet).

Anything that logs who interacted with what, and when (or only in which order), can train a
two-tower model: this source reads such a file, and optional user and item feature tables,
into the same `Dataset` the MovieLens releases give, checking every value on the way so a bad
file fails at load time with one line naming the file and line (``row N`` for Parquet), not deep
inside training.

Usage (the command line takes the same settings as flags of the same names)::

    dataset = load(DataConfig(dataset="tabular", interactions="events.csv",
                              user_column="customer", item_column="sku", time_column="time",
                              rating_column="stars", items="products.parquet",
                              item_feature_columns=("brand", "tags:multi", "price:numeric"),
                              title_column="name"))
    # item lists with an order and no times: a per-user step, or the file's order
    dataset = load(DataConfig(dataset="tabular", interactions="sessions.csv",
                              time_column="step:order"))          # or time_column=""

Rules:

- Files: ``.csv``/``.tsv`` with a header row (text in `encoding`, default UTF-8) or
  ``.parquet``. An empty field is a missing value. `users`/`items` are keyed by the same column
  names as the interactions; their other columns are ignored unless declared. Their rows are
  the users/items, in file order (keys must be unique); without them, the keys seen, sorted.
  Interactions whose key a given table lacks are an error or, with ``missing_keys="drop"``,
  dropped and counted in the log; `min_rating` keeps interactions rated at least that much.
- Keys: int64 when the key column holds integers, with no missing value, in every file that
  has it; otherwise text as written in all of them (``007`` and ``7`` then differ). A missing
  key is an error. The key column names are the serving input names.
- Item key 0: integer item keys pad serving histories with 0, so an integer item key 0 is
  refused (number the items from 1, or give them keys that are not integers, e.g. ``i0``).
  Text keys pad with "", which no key can be (an empty field is missing).
- Time (`time_column`): ``COLUMN`` holds Unix seconds (numbers; fractions floored; above
  10^11, milliseconds probably, refused) or ISO dates/times (``2003-01-01``,
  ``2003-01-01T10:00:00+02:00``; UTC when unzoned). Many data sets have an order but no times:
  ``COLUMN:order`` holds integers that only order the interactions (0, 1, 2... per user, or a
  global counter), kept as they are (a value that is not an integer is an error); an empty
  `time_column` takes the file's row order (row number 0, 1, 2...). Either way the
  interactions sort by (user, timestamp, source order) as with real times, but
  `DataConfig.real_times` is false: ``--protocol=time_split`` and ``--history_time`` are
  refused (`RunConfig.validate`), ``leave_last_one_out`` works.
- Features (``COLUMN``, ``COLUMN:multi``, ``COLUMN:numeric``): categorical is int64 when the
  column holds integers with no missing value, else text as written with missing values as
  ""; multi is text of ``|``-separated values (missing: "", no value); numeric is a finite
  number, kept as float64 (a missing or non-numeric value is an error). Without a users
  (items) file, the user (item) features and the title come from the interactions file and
  must have one value per key.
- `title_column`: an item column shown by ``recommend``, text (missing: ""), not a feature.
"""

from __future__ import annotations

import codecs
import dataclasses
import logging
import os

import numpy as np
import pandas as pd

from dssm_tf.config import DataConfig
from dssm_tf.data.dataset import Dataset, Table, build_dataset
from dssm_tf.data.schema import (CATEGORICAL, FLOAT32, INT64, MULTI, NUMERIC, STRING, Feature,
                                 Schema, parse_feature_columns)
from dssm_tf.data.sources import files
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.io import md5
from dssm_tf.progress import progress

log = logging.getLogger("dssm_tf")

TIMESTAMP, RATING = "timestamp", "rating"   # the interaction columns build_dataset reads


@dataclasses.dataclass(frozen=True)
class _Side:
    """What is read about users (items): the key column, declared features, and the file
    they come from (None: the interactions file)."""

    name: str                           # "user" / "item"
    key: str
    specs: tuple[tuple[str, str], ...]  # (column, kind)
    path: str | None
    flag: str                           # the config field declaring the features
    title: str | None = None

    @property
    def columns(self) -> list[str]:
        """The columns read for this side besides the key."""
        return [c for c, _ in self.specs] + ([self.title] if self.title else [])

    @property
    def wanted(self) -> dict[str, str]:
        """The side's columns besides the key -> the flag that names them (for errors)."""
        wanted = {column: self.flag for column, _ in self.specs}
        if self.title:
            wanted.setdefault(self.title, "title_column")
        return wanted

    @property
    def text_columns(self) -> list[str]:
        return [c for c, kind in self.specs if kind == MULTI] + ([self.title] if self.title
                                                                 else [])


def load(config: DataConfig) -> Dataset:
    """Read `config.interactions` (and `config.users` / `config.items`) into a `Dataset`."""
    # A bar over the stages (reading, keys and features, checksums, indexing), on a terminal
    # only: the stage it is in, and the time it has taken.
    with progress(total=4, what="loading tabular", unit="stage") as bar:
        return _load(config, bar)


def _load(config: DataConfig, bar) -> Dataset:
    config.validate()
    users, items = _sides(config)
    _check_names(config, users, items)
    _check_encoding(config.encoding)
    encoding = config.encoding

    time_column, real_times = config.time_source
    wanted = {users.key: "user_column", items.key: "item_column"}
    if time_column is not None:
        wanted.setdefault(time_column, "time_column")
    if config.rating_column:
        wanted.setdefault(config.rating_column, "rating_column")
    for side in (users, items):
        if side.path is None:
            wanted.update({c: f for c, f in side.wanted.items() if c not in wanted})
    bar.set_postfix_str(f"reading {os.path.basename(config.interactions)}")
    interactions = _read(config.interactions, encoding, wanted,
                         [c for side in (users, items) if side.path is None
                          for c in side.text_columns])
    tables = {side.name: _read(side.path, encoding, {side.key: f"{side.name}_column",
                                                     **side.wanted}, side.text_columns)
              for side in (users, items) if side.path is not None}
    bar.update()

    bar.set_postfix_str("keys and features")
    key_dtypes, features, side_tables = {}, {}, {}
    for side in (users, items):
        interactions, table, key_dtypes[side.name] = _keys(side, interactions,
                                                           tables.get(side.name), encoding)
        if table is not None:
            side_tables[side.name], features[side.name] = _features(side, table, encoding)
        elif side.columns:
            parsed, features[side.name] = _features(side, interactions, encoding)
            side_tables[side.name] = _one_per_key(side, parsed)
            del parsed
        else:
            side_tables[side.name], features[side.name] = None, ()

    schema = Schema(user_key=users.key, item_key=items.key, user_key_dtype=key_dtypes["user"],
                    item_key_dtype=key_dtypes["item"], user_features=features["user"],
                    item_features=features["item"], item_title=config.title_column)
    frame = {users.key: interactions.frame[users.key], items.key: interactions.frame[items.key],
             TIMESTAMP: _times(interactions, time_column, real_times)}
    if config.rating_column:
        frame[RATING] = files.numbers(interactions, config.rating_column)
    events = dataclasses.replace(interactions, frame=pd.DataFrame(frame, copy=False))
    del interactions, frame
    bar.update()

    bar.set_postfix_str("checksums")
    checksums = {}
    for path in (config.interactions, config.users, config.items):
        if path:
            name = os.path.basename(path)
            checksums[os.path.abspath(path) if name in checksums else name] = md5(path)
    resolved = dataclasses.replace(
        config, interactions=os.path.abspath(config.interactions),
        users=os.path.abspath(config.users) if config.users else None,
        items=os.path.abspath(config.items) if config.items else None)
    bar.update()
    bar.set_postfix_str("indexing")
    dataset = build_dataset(schema, events, resolved, users=side_tables["user"],
                            items=side_tables["item"], checksums=checksums,
                            default_cutoff=None)
    bar.update()
    log.info("%s: %d interactions, %d users, %d items (%s user keys, %s item keys)",
             config.interactions, len(dataset.interactions), dataset.num_users,
             dataset.num_items, schema.user_key_dtype, schema.item_key_dtype)
    return dataset


# --- settings ------------------------------------------------------------------------------------

def _sides(config: DataConfig) -> tuple[_Side, _Side]:
    specs = {}
    for flag in ("user_feature_columns", "item_feature_columns"):
        try:
            specs[flag] = tuple(parse_feature_columns(getattr(config, flag)))
        except ValueError as error:
            raise ConfigError(flag, str(error)) from None
    return (_Side("user", config.user_column, specs["user_feature_columns"], config.users,
                  "user_feature_columns"),
            _Side("item", config.item_column, specs["item_feature_columns"], config.items,
                  "item_feature_columns", title=config.title_column))


def _check_names(config: DataConfig, users: _Side, items: _Side) -> None:
    """ConfigError for names that cannot be serving inputs or that collide, before reading."""
    for field, key in (("user_column", users.key), ("item_column", items.key)):
        try:
            Schema(user_key=key, item_key=key)
        except ValueError as error:
            raise ConfigError(field, str(error)) from None
        if key in (TIMESTAMP, RATING):
            raise ConfigError(field, f"a key column cannot be named {key!r} (a name the "
                                     f"interactions table keeps for itself); rename it")
    if users.key == items.key:
        raise ConfigError("item_column", f"{items.key!r} is also --user_column: users and items "
                                         f"need their own key columns")
    for side in (users, items):
        names = [column for column, _ in side.specs]
        try:
            Schema(user_key=users.key, item_key=items.key,
                   user_features=tuple(Feature(c) for c in names) if side is users else (),
                   item_features=tuple(Feature(c) for c in names) if side is items else ())
        except ValueError as error:
            raise ConfigError(side.flag, str(error)) from None
    for side, other in ((users, items), (items, users)):
        if other.key in side.columns:
            raise ConfigError(side.flag if other.key in dict(side.specs) else "title_column",
                              f"{other.key!r} is the {other.name} key column")
    if items.title is not None and (items.title == items.key
                                    or items.title in [c for c, _ in items.specs]):
        raise ConfigError("title_column", f"{items.title!r} is the item key or an item "
                                          f"feature; the title is a display column of its own")


def _times(interactions: Table, column: str | None, real_times: bool) -> np.ndarray:
    """The interactions' int64 timestamps: Unix seconds of a time column, the integers of an
    order column as they are, or (no time column) the row numbers: the file's order."""
    if column is None:
        return np.arange(len(interactions.frame), dtype=np.int64)
    if real_times:
        return files.timestamps(interactions, column)
    return files.orders(interactions, column)


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError("encoding", f"unknown text encoding {encoding!r}") from None


# --- reading -------------------------------------------------------------------------------------

def _read(path: str, encoding: str, wanted: dict[str, str], text_columns) -> Table:
    """The `wanted` columns (column -> the flag that named it) of `path`; InputError naming the
    first one the file lacks, the flag, and the columns it has."""
    names = files.header(path, encoding)
    for column, flag in wanted.items():
        files.require_header(path, names, [column], f" (--{flag})")
    return files.read_table(path, encoding, columns=list(wanted), text_columns=text_columns)


def _is_integer(values: pd.Series) -> bool:
    """Integers without a missing value (what makes a key or categorical column int64)."""
    return (pd.api.types.is_signed_integer_dtype(values)
            and not pd.api.types.is_bool_dtype(values) and not values.isna().any())


def _is_text(values: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(values) and not isinstance(values.dtype,
                                                                   pd.CategoricalDtype)


def _as_text(table: Table, columns, encoding: str) -> Table:
    """`table` with `columns` re-read from its file as text as written."""
    columns = [c for c in columns if not _is_text(table.frame[c])]
    if not columns:
        return table
    text = files.read_table(table.path, encoding, columns=columns, text_columns=columns)
    frame = table.frame.copy(deep=False)
    for column in columns:
        frame[column] = text.frame[column].to_numpy()
    return dataclasses.replace(table, frame=frame)


def _keys(side: _Side, interactions: Table, table: Table | None,
          encoding: str) -> tuple[Table, Table | None, str]:
    """The side's key column in the interactions (and the side's table) with one dtype:
    int64 when integer in both, else text as written. Returns both tables and the dtype."""
    holders = [interactions] + ([table] if table is not None else [])
    for holder in holders:
        holder.fail(holder.frame[side.key].isna().to_numpy(),
                    f"missing {side.name} key {side.key}", side.key)
    if all(_is_integer(holder.frame[side.key]) for holder in holders):
        if side.name == "item":
            for holder in holders:
                holder.fail(holder.frame[side.key].to_numpy() == 0,
                            "item key 0 is reserved: integer item keys pad serving "
                            "histories with 0 (number the items from 1, or give them keys "
                            "that are not integers, e.g. 'i0')")
        return interactions, table, INT64
    interactions = _as_text(interactions, [side.key], encoding)
    if table is not None:
        table = _as_text(table, [side.key], encoding)
    return interactions, table, STRING


def _features(side: _Side, source: Table, encoding: str) -> tuple[Table, tuple[Feature, ...]]:
    """The side's key, parsed feature columns and title, row for row with `source`, and the
    `Feature`s."""
    retext = [c for c, kind in side.specs
              if kind == CATEGORICAL and not _is_integer(source.frame[c])]
    source = _as_text(source, retext + side.text_columns, encoding)
    frame = {side.key: source.frame[side.key]}
    features = []
    for column, kind in side.specs:
        if kind == NUMERIC:
            frame[column] = files.numbers(source, column)
            features.append(Feature(column, NUMERIC, FLOAT32))
        elif kind == CATEGORICAL and _is_integer(source.frame[column]):
            frame[column] = source.frame[column].to_numpy(np.int64)
            features.append(Feature(column, CATEGORICAL, INT64))
        else:
            frame[column] = files.strings(source, column)
            features.append(Feature(column, kind, STRING))
    if side.title:
        frame[side.title] = files.strings(source, side.title)
    return dataclasses.replace(source, frame=pd.DataFrame(frame)), tuple(features)


def _one_per_key(side: _Side, parsed: Table) -> Table:
    """The side's table from the interactions' (parsed) columns: one row per key, sorted by
    key, with the key's value of each column; InputError at the first line that gives a key
    another value than its first line did."""
    frame = parsed.frame
    codes, uniques = pd.factorize(frame[side.key])
    # factorize numbers keys by first appearance: a row is a key's first iff its code is new
    running = np.maximum.accumulate(codes)
    first_row = np.flatnonzero(np.r_[True, running[1:] > running[:-1]])
    for column in side.columns:
        values, _ = pd.factorize(frame[column])
        conflict = values != values[first_row][codes]
        if conflict.any():
            row = int(np.argmax(conflict))
            first = int(first_row[codes[row]])
            raise InputError(
                f"{parsed.where(row)}: {column} {str(frame[column].iloc[row])!r} for "
                f"{side.key} {str(frame[side.key].iloc[row])!r}, which has "
                f"{str(frame[column].iloc[first])!r} on {parsed.line(first)} (without "
                f"--{side.name}s, a {side.name} column needs one value per {side.name})")
    rows = first_row[np.argsort(pd.Index(uniques).to_numpy(), kind="stable")]
    return parsed.subset(rows, frame.iloc[rows].reset_index(drop=True))
