"""Fuzzed inputs: randomly corrupted versions of small valid files, for every reader.

For each generated file the loader must either load it and give exactly the rows the file
says (an independent, strict parse of the corrupted bytes: the oracle), or raise one
`InputError` whose single line names the file — never another exception, never a hang (each
case has a deadline). A few cases also go through the real command, which must exit 0, or 2
with one stderr line and no output file.

Corruptions: truncated lines, a wrong separator, random bytes, huge and negative numbers,
another text encoding, reordered columns, dropped, repeated and blank lines, a byte-order
mark, Windows line ends.

CI runs `FUZZ_EXAMPLES` cases per reader (default 100); `make bench` runs it with
``FUZZ_EXAMPLES=300`` and ``--hypothesis-show-statistics`` for the count in BUILD_NOTES.md.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import re
import subprocess
import sys

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dssm_tf.config import DataConfig
from dssm_tf.data.sources import load_dataset
from dssm_tf.errors import InputError
from tests import movielens_layouts as layouts
from tests.conftest import REPO_ROOT, command_env
from tests.synthetic import TINY_MOVIES, TINY_RATINGS, TINY_USERS, write_movielens

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=datetime.timedelta(seconds=20),
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow], derandomize=False)
INT64 = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")

# --- corruptions -------------------------------------------------------------------------------


@st.composite
def corruptions(draw, lines: list[bytes], separator: bytes):
    """A corrupted copy of the file made of `lines` (each without its line break)."""
    lines = list(lines)
    kind = draw(st.sampled_from([
        "truncate", "separator", "random_bytes", "huge", "negative", "encoding", "drop",
        "repeat", "blank", "bom", "crlf", "swap_fields", "noop"]))
    row = draw(st.integers(0, len(lines) - 1))
    line = lines[row]
    if kind == "truncate":
        lines[row] = line[:draw(st.integers(0, max(len(line) - 1, 0)))]
    elif kind == "separator":
        lines[row] = line.replace(separator, draw(st.sampled_from([b",", b";", b" ", b"|", b":",
                                                                   b"\t", b"::"])), 1)
    elif kind == "random_bytes":
        at = draw(st.integers(0, len(line)))
        lines[row] = line[:at] + draw(st.binary(min_size=1, max_size=6)) + line[at:]
    elif kind in ("huge", "negative"):
        fields = line.split(separator)
        field = draw(st.integers(0, len(fields) - 1))
        fields[field] = b"9" * draw(st.integers(19, 40)) if kind == "huge" else \
            b"-" + fields[field]
        lines[row] = separator.join(fields)
    elif kind == "encoding":
        text = b"\n".join(lines).decode("latin-1")
        encoding = draw(st.sampled_from(["utf-16", "utf-32", "cp437"]))
        lines = text.encode(encoding, errors="replace").split(b"\n")
    elif kind == "drop":
        del lines[row]
    elif kind == "repeat":
        lines.insert(row, line)
    elif kind == "blank":
        lines.insert(row, b"")
    elif kind == "swap_fields":
        fields = line.split(separator)
        if len(fields) > 1:
            fields[0], fields[-1] = fields[-1], fields[0]
        lines[row] = separator.join(fields)
    raw = b"\n".join(lines) + b"\n"
    if kind == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif kind == "crlf":
        raw = raw.replace(b"\n", b"\r\n")
    return kind, raw


# --- the oracle: a strict parse of the corrupted bytes ------------------------------------------

def _int(text: str):
    return int(text) if INT64.fullmatch(text) and -2**63 <= int(text) < 2**63 else None


def oracle_dat(raw: bytes, separator: str, rating_range, float_ratings=False):
    """(user, item, rating, time) rows of a header-less interactions file, or None when any
    line is invalid. MovieLens layout rules: the separator, 4 fields, integer keys and time
    (>= 0), ratings in range; BOM, Windows line ends and trailing blank lines are allowed."""
    text = raw.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").rstrip(b"\n")
    try:
        text = text.decode("latin-1")
    except UnicodeDecodeError:
        return None
    rows = []
    for line in text.split("\n"):
        fields = line.split(separator)
        if len(fields) != 4:
            return None
        user, item, stamp = _int(fields[0]), _int(fields[1]), _int(fields[3])
        if float_ratings:
            rating = float(fields[2]) if NUMBER.fullmatch(fields[2]) else None
        else:
            rating = _int(fields[2])
        if None in (user, item, rating, stamp) or stamp < 0:
            return None
        if not rating_range[0] <= rating <= rating_range[1]:
            return None
        rows.append((user, item, rating, stamp))
    return rows


def oracle_csv(raw: bytes, delimiter: str, columns: list[str]):
    """Rows (in `columns` order: user, item, rating, time) of a header-row CSV/TSV, or None."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
               if r]
    if not records or len(set(records[0])) != len(records[0]):
        return None
    header = records[0]
    if any(c not in header for c in columns) or len(records) < 2:
        return None
    rows = []
    for record in records[1:]:
        if len(record) != len(header):
            return None
        values = dict(zip(header, record))
        user, item, rating, stamp = (values[c] for c in columns)
        if not user or not item or not NUMBER.fullmatch(rating) or _int(stamp) is None:
            return None
        rows.append((user, item, float(rating), int(stamp)))
    return rows


def loaded_rows(dataset, keys_as=str):
    frame = dataset.interactions
    return [(keys_as(u), keys_as(i), float(r), int(t)) for u, i, r, t in zip(
        dataset.user_keys[frame.user], dataset.item_keys[frame.item], frame.rating,
        frame.timestamp)]


def without_repeats(rows):
    seen, kept = set(), []
    for row in rows:
        if row not in seen:
            seen.add(row)
            kept.append(row)
    return kept


def check(load, path: str, expected):
    """The property: loads exactly `expected`, or one InputError line naming `path`."""
    try:
        dataset = load()
    except InputError as error:
        message = str(error)
        assert "\n" not in message and path in message, message
        return None
    assert expected is not None, "loaded a file the strict parse rejects"
    return dataset


# --- every reader ------------------------------------------------------------------------------

ML1M_LINES = ["::".join(map(str, row)).encode() for row in TINY_RATINGS]


@FUZZ
@given(case=corruptions(ML1M_LINES, b"::"))
def test_movielens_1m_ratings(tmp_path_factory, case):
    _, raw = case
    folder = write_movielens(tmp_path_factory.mktemp("ml1m"))
    path = os.path.join(folder, "ratings.dat")
    with open(path, "wb") as f:
        f.write(raw)
    expected = oracle_dat(raw, "::", (1, 5))
    known = ({u[0] for u in TINY_USERS}, {m[0] for m in TINY_MOVIES})
    if expected is not None and not all(r[0] in known[0] and r[1] in known[1]
                                        for r in expected):
        expected = None  # a key the users/movies tables lack: an error, by default
    dataset = check(lambda: load_dataset(DataConfig(data_dir=folder)), path, expected)
    if dataset is not None:
        assert loaded_rows(dataset, int) == [(r[0], r[1], float(r[2]), r[3])
                                             for r in without_repeats(expected)]


ML1M_MOVIES = ["::".join(map(str, row)).encode("latin-1") for row in TINY_MOVIES]
ML1M_USERS = ["::".join(map(str, row)).encode() for row in TINY_USERS]


@FUZZ
@given(data=st.data(), which=st.sampled_from(["movies", "users"]))
def test_movielens_1m_feature_tables(tmp_path_factory, data, which):
    """No oracle for the feature tables: the property is no escape (loads, or one line)."""
    lines = ML1M_MOVIES if which == "movies" else ML1M_USERS
    _, raw = data.draw(corruptions(lines, b"::"))
    folder = write_movielens(tmp_path_factory.mktemp("ml1m"))
    path = os.path.join(folder, f"{which}.dat")
    with open(path, "wb") as f:
        f.write(raw)
    check(lambda: load_dataset(DataConfig(data_dir=folder)), path, True)


ML100K_LINES = ["\t".join(map(str, row)).encode() for row in layouts.ML100K_RATINGS]


@FUZZ
@given(case=corruptions(ML100K_LINES, b"\t"))
def test_movielens_100k(tmp_path_factory, case):
    _, raw = case
    folder = layouts.write_ml100k(tmp_path_factory.mktemp("ml100k"))
    path = os.path.join(folder, "u.data")
    with open(path, "wb") as f:
        f.write(raw)
    expected = oracle_dat(raw, "\t", (1, 5))
    known = ({u[0] for u in layouts.ML100K_USERS}, {m[0] for m in layouts.ML100K_MOVIES})
    if expected is not None and not all(r[0] in known[0] and r[1] in known[1]
                                        for r in expected):
        expected = None
    dataset = check(lambda: load_dataset(DataConfig(dataset="movielens-100k",
                                                    data_dir=folder)), path, expected)
    if dataset is not None:
        assert loaded_rows(dataset, int) == [(r[0], r[1], float(r[2]), r[3])
                                             for r in without_repeats(expected)]


ML10M_LINES = ["::".join(map(str, row)).encode() for row in layouts.ML10M_RATINGS]


@FUZZ
@given(case=corruptions(ML10M_LINES, b"::"))
def test_movielens_10m(tmp_path_factory, case):
    _, raw = case
    folder = layouts.write_ml10m(tmp_path_factory.mktemp("ml10m"))
    path = os.path.join(folder, "ratings.dat")
    with open(path, "wb") as f:
        f.write(raw)
    expected = oracle_dat(raw, "::", (0.5, 5), float_ratings=True)
    known = {m[0] for m in layouts.ML10M_MOVIES}
    if expected is not None and not all(r[1] in known for r in expected):
        expected = None
    dataset = check(lambda: load_dataset(DataConfig(dataset="movielens-10m",
                                                    data_dir=folder)), path, expected)
    if dataset is not None:
        assert loaded_rows(dataset, int) == [(r[0], r[1], float(r[2]), r[3])
                                             for r in without_repeats(expected)]


CSV_LINES = [layouts.CSV_RATINGS_HEADER.encode()] + [
    ",".join(map(str, row)).encode() for row in layouts.CSV_RATINGS]


@FUZZ
@given(case=corruptions(CSV_LINES, b","))
def test_movielens_csv_releases(tmp_path_factory, case):
    _, raw = case
    folder = layouts.write_csv_release(tmp_path_factory.mktemp("ml25m"))
    path = os.path.join(folder, "ratings.csv")
    with open(path, "wb") as f:
        f.write(raw)
    expected = oracle_csv(raw, ",", ["userId", "movieId", "rating", "timestamp"])
    known = {m[0] for m in layouts.CSV_MOVIES}
    if expected is not None and not all(
            INT64.fullmatch(r[0]) and INT64.fullmatch(r[1]) and int(r[1]) in known
            and 0.5 <= r[2] <= 5 and r[3] >= 0 for r in expected):
        expected = None
    dataset = check(lambda: load_dataset(DataConfig(dataset="movielens-25m",
                                                    data_dir=folder)), path, expected)
    if dataset is not None:
        want = [(int(u), int(i), r, t) for u, i, r, t in expected]
        assert loaded_rows(dataset, int) == without_repeats(want)


EVENTS = [b"customer,item,stars,time"] + [
    f"c{u},i{m},{r},{t}".encode() for u, m, r, t in TINY_RATINGS]


@FUZZ
@given(case=corruptions(EVENTS, b","), delimiter=st.sampled_from([",", "\t"]),
       shuffle=st.booleans())
def test_tabular_csv_and_tsv(tmp_path_factory, case, delimiter, shuffle):
    _, raw = case
    if delimiter == "\t":
        raw = raw.replace(b",", b"\t")
    if shuffle:  # reorder every line's columns the same way: the header says which is which
        raw = b"\n".join(delimiter.encode().join(
            (fields := line.split(delimiter.encode()))[1:] + fields[:1]) if line else line
            for line in raw.split(b"\n"))
    path = str(tmp_path_factory.mktemp("tabular") / ("events.csv" if delimiter == ","
                                                     else "events.tsv"))
    with open(path, "wb") as f:
        f.write(raw)
    expected = oracle_csv(raw, delimiter, ["customer", "item", "stars", "time"])
    if expected is not None and not all(r[3] >= 0 for r in expected):
        expected = None
    dataset = check(lambda: load_dataset(DataConfig(
        dataset="tabular", interactions=path, user_column="customer", item_column="item",
        time_column="time", rating_column="stars")), path, expected)
    if dataset is not None:
        assert loaded_rows(dataset) == without_repeats(expected)


@FUZZ
@given(data=st.data())
def test_tabular_parquet(tmp_path_factory, data):
    """Parquet has no lines to corrupt: corrupt the bytes, or the values and column order."""
    frame = pd.DataFrame(
        [(f"c{u}", f"i{m}", float(r), t) for u, m, r, t in TINY_RATINGS],
        columns=["customer", "item", "stars", "time"])
    path = str(tmp_path_factory.mktemp("parquet") / "events.parquet")
    kind = data.draw(st.sampled_from(["bytes", "truncate", "values", "columns"]))
    expected = list(frame.itertuples(index=False, name=None))
    if kind == "values":
        row = data.draw(st.integers(0, len(frame) - 1))
        column = data.draw(st.sampled_from(list(frame.columns)))
        value = data.draw(st.one_of(st.none(), st.just(""), st.just(-1), st.just(2**62)))
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        expected = None if (value is None or value == "" or column == "time" and value < 0
                            or column == "time" and value >= 10**11) else [
            tuple(r) for r in frame.astype({"stars": float}).itertuples(index=False,
                                                                         name=None)]
        if expected is not None and column in ("customer", "item"):
            expected = [(str(a), str(b), c, d) for a, b, c, d in expected]
    elif kind == "columns":
        frame = frame[data.draw(st.permutations(list(frame.columns)))]
    try:
        frame.to_parquet(path)
    except Exception:  # noqa: BLE001  (a mixed-type column pyarrow will not write)
        return
    if kind in ("bytes", "truncate"):
        with open(path, "rb") as f:
            raw = bytearray(f.read())
        at = data.draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] if kind == "truncate" else raw[:at] + data.draw(
            st.binary(min_size=1, max_size=8)) + raw[at + 1:]
        with open(path, "wb") as f:
            f.write(bytes(raw))
        expected = None
    try:
        dataset = load_dataset(DataConfig(dataset="tabular", interactions=path,
                                          user_column="customer", item_column="item",
                                          time_column="time", rating_column="stars"))
    except InputError as error:
        assert "\n" not in str(error) and path in str(error), str(error)
        return
    if expected is not None:
        assert loaded_rows(dataset) == without_repeats(
            [(str(a), str(b), float(c), int(d)) for a, b, c, d in expected])


# --- through the command -----------------------------------------------------------------------

@settings(max_examples=max(4, EXAMPLES // 10), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=corruptions(ML1M_LINES, b"::"))
def test_the_command_exits_0_or_2_with_one_line(tmp_path_factory, case):
    _, raw = case
    root = tmp_path_factory.mktemp("command")
    folder = write_movielens(root / "data")
    path = os.path.join(folder, "ratings.dat")
    with open(path, "wb") as f:
        f.write(raw)
    output = root / "out" / "metrics.json"
    proc = subprocess.run([sys.executable, "-m", "dssm_tf.itemcf", f"--data_dir={folder}",
                           "--protocol=leave_last_one_out", "--k=2", f"--output={output}"],
                          cwd=REPO_ROOT, env=command_env(root), capture_output=True,
                          text=True, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("warning: ")]
    if proc.returncode == 0:
        assert not errors and json.loads(output.read_text())["k"] == 2
    else:
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr
        assert errors[0].startswith("error: ") and (path in errors[0] or "--" in errors[0])
        assert not output.exists() and not output.parent.exists()
