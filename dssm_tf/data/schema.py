"""What a data set declares about its users and items: keys, features, and the serving inputs
that follow from them.

A `Schema` names the user key, the item key (integer or string) and the feature columns of the
user and item tables. Everything downstream is derived from it: the towers' lookups and
embeddings (`dssm_tf.models.towers`), the input pipeline's gathers (`dssm_tf.data.pipeline`)
and the export's ``serving_default`` signatures (`dssm_tf.serving.contract`). For MovieLens-1M
the schema reproduces the historic contract exactly: user inputs ``user_id, gender, age,
occupation, history`` and item inputs ``movie_id, genres``.

Feature kinds:

- ``categorical``: one value per row (integer or string), looked up in the training
  vocabulary (unknown values share an out-of-vocabulary row) and embedded;
- ``multi``: a ``|``-separated string of values (``"Action|Comedy"``), each embedded, then
  mean-pooled (an empty string is no value);
- ``numeric``: a float, standardised with the table's mean and standard deviation.

Usage::

    schema = Schema(user_key="user_id", item_key="movie_id",
                    user_features=(Feature("gender", CATEGORICAL, STRING),),
                    item_features=(Feature("genres", MULTI, STRING),))
    schema.user_inputs()   # {"user_id": ("int64", 1), "gender": ("string", 1),
                           #  "history": ("int64", 2)}
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd

CATEGORICAL, MULTI, NUMERIC = "categorical", "multi", "numeric"
FEATURE_KINDS = (CATEGORICAL, MULTI, NUMERIC)
INT64, STRING, FLOAT32 = "int64", "string", "float32"
KEY_DTYPES = (INT64, STRING)
HISTORY = "history"
# With ``--history_time`` the user tower also takes the Unix seconds of each history item and
# of the request (`dssm_tf.models.time_gaps`); no user column may take these names either.
HISTORY_TIMESTAMPS, REQUEST_TIME = "history_timestamps", "request_time"
TIME_INPUTS = (HISTORY_TIMESTAMPS, REQUEST_TIME)
# Inputs of the one-piece retrieval model beside the user tower's: no user input may take them.
RETRIEVAL_INPUTS = ("k", "exclude_history")
MULTI_SEPARATOR = "|"
# TensorFlow's rule for the names of a signature's inputs.
_SERVING_NAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9_.\\/>-]*")


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature column of the user or item table; `name` is also its serving input name."""

    name: str
    kind: str = CATEGORICAL
    dtype: str = STRING   # int64 or string for categorical; string for multi; float32 numeric

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"{self.name}: feature kind must be one of {FEATURE_KINDS}")
        allowed = {CATEGORICAL: (INT64, STRING), MULTI: (STRING,), NUMERIC: (FLOAT32,)}
        if self.dtype not in allowed[self.kind]:
            kinds = " or ".join(allowed[self.kind])
            raise ValueError(f"{self.name}: a {self.kind} feature is {kinds}, not {self.dtype}")


@dataclasses.dataclass(frozen=True)
class Schema:
    """Keys and features of a data set; see the module docstring."""

    user_key: str = "user_id"
    item_key: str = "item_id"
    user_key_dtype: str = INT64
    item_key_dtype: str = INT64
    user_features: tuple[Feature, ...] = ()
    item_features: tuple[Feature, ...] = ()
    item_title: str | None = None   # an item column shown by `recommend`, never a feature

    def __post_init__(self):
        for dtype in (self.user_key_dtype, self.item_key_dtype):
            if dtype not in KEY_DTYPES:
                raise ValueError(f"key dtype must be one of {KEY_DTYPES}, got {dtype!r}")
        for side, names in (("user", self.user_input_names()),
                            ("item", self.item_input_names())):
            for name in names:
                if not _SERVING_NAME.fullmatch(name):
                    raise ValueError(f"{name!r} cannot name a serving input (letters, digits, "
                                     f"_ . - / > only, not first)")
            duplicated = sorted({n for n in names if names.count(n) > 1})
            if duplicated:
                raise ValueError(f"{side} inputs named twice: {', '.join(duplicated)}")
        reserved = sorted(set(RETRIEVAL_INPUTS + TIME_INPUTS) & set(self.user_input_names()))
        if reserved:
            raise ValueError(f"{reserved[0]!r} is an input of the retrieval model or of a "
                             f"timed user tower: a user column cannot be named so")

    def user_input_names(self) -> list[str]:
        return [self.user_key, *(f.name for f in self.user_features), HISTORY]

    def item_input_names(self) -> list[str]:
        return [self.item_key, *(f.name for f in self.item_features)]

    def user_inputs(self, timed: bool = False) -> dict[str, tuple[str, int]]:
        """The user tower's serving inputs, name -> (dtype, rank), in signature order; `timed`
        (a tower trained with ``--history_time``) adds the history's and the request's times."""
        inputs = {self.user_key: (self.user_key_dtype, 1)}
        inputs.update({f.name: (f.dtype, 1) for f in self.user_features})
        inputs[HISTORY] = (self.item_key_dtype, 2)
        if timed:
            inputs.update({HISTORY_TIMESTAMPS: (INT64, 2), REQUEST_TIME: (INT64, 1)})
        return inputs

    def item_inputs(self) -> dict[str, tuple[str, int]]:
        """The item tower's serving inputs, name -> (dtype, rank), in signature order."""
        inputs = {self.item_key: (self.item_key_dtype, 1)}
        inputs.update({f.name: (f.dtype, 1) for f in self.item_features})
        return inputs

    @property
    def history_padding(self) -> int | str:
        """The history value that means "no item": 0 for integer keys, "" for strings."""
        return 0 if self.item_key_dtype == INT64 else ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Schema":
        values = dict(values)
        for side in ("user_features", "item_features"):
            values[side] = tuple(Feature(**f) for f in values.get(side, ()))
        return cls(**values)


def as_dtype(values: pd.Series, dtype: str) -> np.ndarray:
    """A table column as the array the serving contract feeds for `dtype`: int64, float32, or
    str (missing text is "")."""
    if dtype == INT64:
        return values.to_numpy(np.int64)
    if dtype == FLOAT32:
        return values.to_numpy(np.float32)
    return values.fillna("").astype(str).to_numpy(dtype=str)


def parse_feature_columns(specs) -> list[tuple[str, str]]:
    """`["gender", "genres:multi", "age:numeric"]` -> `[(column, kind), ...]`.

    Raises ValueError naming the bad spec (the caller turns it into a `ConfigError`).
    """
    parsed = []
    for spec in specs:
        column, _, kind = str(spec).strip().partition(":")
        kind = kind or CATEGORICAL
        if not column or kind not in FEATURE_KINDS:
            raise ValueError(f"expected COLUMN or COLUMN:{'|'.join(FEATURE_KINDS[1:])}, "
                             f"got {spec!r}")
        parsed.append((column, kind))
    return parsed
