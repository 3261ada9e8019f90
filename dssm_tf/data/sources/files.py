"""Readers for the file formats the sources use, with errors that name the file and line.

- `read_delimited`: header-less files with a fixed field list (MovieLens' ``::``, tab and ``|``
  files), parsed by pandas' C engine;
- `read_table`: ``.csv``/``.tsv`` with a header row and ``.parquet``; `header` gives a file's
  column names without reading its rows. CSV/TSV are parsed by pyarrow's multi-threaded reader
  (25M rows in a few seconds);
- `integers`, `numbers`, `timestamps`, `orders`, `strings`: typed columns of a parsed
  `Table`, refusing the first value that is not what the column must hold, by line.

Lines are physical file lines (a blank line or a line break inside a quoted value counts), so
an editor's "go to line" finds the fault.

Usage::

    ratings = read_delimited("ml-1m/ratings.dat", {"user_id": "int", "movie_id": "int",
                                                    "rating": "int", "timestamp": "int"})
    table = read_table("events.csv")              # Table(frame, path, first_line=2)
    table = read_table("events.csv", columns=["user", "time"], text_columns=["user"])
    stamps = timestamps(table, "time")            # Unix seconds or ISO dates -> int64 seconds
    steps = orders(table, "step")                 # integers that only order -> int64
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import io
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import csv as arrow_csv

from dssm_tf.data.dataset import Table
from dssm_tf.errors import InputError, one_line

TABLE_FORMATS = (".csv", ".tsv", ".parquet")
_BLOCK = 1 << 24                      # bytes per read when scanning a file
_ARROW_BLOCK = 1 << 22                # pyarrow's parsing block (types are inferred from one)
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")   # pandas' index columns in Parquet
# Beyond this many seconds (year 5138) a "Unix seconds" value is almost surely milliseconds.
MAX_UNIX_SECONDS = 10**11


def read_bytes(path: str) -> bytes:
    """The whole file, or InputError (missing, empty, unreadable)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or one_line(error)})") from None
    if not raw.strip():
        raise InputError(f"{path}: file is empty")
    return raw


def _encoding_error(path: str, error: BaseException | None, encoding: str,
                    raw: bytes | None = None, hint: str = "") -> InputError:
    """InputError naming the line of the first byte `encoding` cannot decode."""
    found = _undecodable(path, encoding, raw)
    where, what = (f"{path}:{found[0]}", f"byte 0x{found[1]:02x}") if found else \
        (path, one_line(error) if error else "undecodable bytes")
    return InputError(f"{where}: not {encoding} text ({what}{hint})")


def _undecodable(path: str, encoding: str, raw: bytes | None = None) -> tuple[int, int] | None:
    """(line, byte value) of the first bytes `encoding` cannot decode, or None; the file is
    decoded in blocks, so a fault near the top is found without reading the rest."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0  # line breaks before the current block
    with (io.BytesIO(raw) if raw is not None else open(path, "rb")) as f:
        while True:
            block = f.read(_BLOCK)
            pending = decoder.getstate()[0]  # the previous block's undecoded tail
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as error:
                data = pending + block          # the decoder's error offsets are into this
                line = lines - pending.count(b"\n") + data.count(b"\n", 0, error.start) + 1
                return line, data[error.start] if error.start < len(data) else 0
            if not block:
                return None
            lines += block.count(b"\n")


_SPACE = r"[ \t\v\f]"                           # white space pandas skips around numbers
_PADDING = re.compile(_SPACE.encode())
_PADDED_FIELD = rf"^{_SPACE}|{_SPACE}$"
_NOT_A_NUMBER = "expected a number in column "


def _is_int64(text: str) -> bool:
    return (re.fullmatch(r"[+-]?[0-9]+", text) is not None
            and -2**63 <= int(text) < 2**63)


def _field_counts(raw: bytes) -> np.ndarray:
    """Fields per line of `raw` (separators already replaced by ``\x1f``), vectorised: pandas
    cannot tell a missing last field from an empty one."""
    data = np.frombuffer(raw, np.uint8)
    breaks = np.flatnonzero(data == 10)
    line_of_separator = np.searchsorted(breaks, np.flatnonzero(data == 0x1F))
    return np.bincount(line_of_separator, minlength=len(breaks) + 1) + 1


def read_delimited(path: str, columns: dict[str, str], sep: str = "::",
                   encoding: str = "latin-1") -> Table:
    """Parse a header-less `sep`-separated file; `columns` maps each field to "int", "float"
    or "str". Every malformed line is reported as ``file:line: what was expected``; an empty
    "str" field is an empty string, a missing field an error. A UTF-8 byte-order mark, Windows
    line ends and blank lines at the end of the file are ignored."""
    raw = read_bytes(path).removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n").rstrip(b"\n")
    names = list(columns)
    layout = f"{len(names)} {sep!r}-separated fields ({sep.join(names)})"
    raw = raw.replace(sep.encode(), b"\x1f")
    counts = _field_counts(raw)
    wrong = counts != len(names)
    if wrong.any():
        line = int(np.argmax(wrong))
        raise InputError(f"{path}:{line + 1}: expected {layout}, saw {counts[line]}")

    def parse(dtype) -> pd.DataFrame:
        return pd.read_csv(
            io.BytesIO(raw), sep="\x1f", header=None, names=names, index_col=False,
            dtype=dtype, quoting=csv.QUOTE_NONE, encoding=encoding, skip_blank_lines=False,
            keep_default_na=False, na_values=[], engine="c")

    try:
        frame = parse({n: str for n, kind in columns.items() if kind == "str"})
    except UnicodeDecodeError as error:
        raise _encoding_error(path, error, encoding) from None
    table = Table(frame, path, first_line=1)
    # pandas reads " 7" or "7\v" as the number 7: where the file holds such white space, the
    # number fields are checked as written.
    padded = _PADDING.search(raw) is not None
    written = functools.cache(lambda: parse(str))  # every field as written, parsed once
    for name, kind in columns.items():
        if kind == "int" and (padded or not pd.api.types.is_signed_integer_dtype(frame[name])):
            # The fields as written ("4.0" must not pass as 4, nor " 4").
            text = written()[name]
            bad = np.array([not _is_int64(value) for value in text])
            Table(pd.DataFrame({name: text}), path).fail(
                bad, f"expected an integer {name}", name)
        elif kind == "float":
            if padded:
                text = written()[name]
                Table(pd.DataFrame({name: text}), path).fail(
                    text.str.contains(_PADDED_FIELD).to_numpy(), _NOT_A_NUMBER + name, name)
            numbers(table, name)
    return table


ENCODING_HINT = "; --encoding names another"


def _extension(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension not in TABLE_FORMATS:
        raise InputError(f"{path}: expected a {', '.join(TABLE_FORMATS)} file")
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found")
    return extension


def _lines(path: str) -> int:
    """The file's physical lines, counted in blocks (under a second for 25M lines)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def _require_text(path: str) -> None:
    """InputError unless the file holds something besides white space (or is unreadable)."""
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                if not block.isspace():
                    return
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or one_line(error)})") from None
    raise InputError(f"{path}: file is empty")


def _plain(path: str) -> bool:
    """No quotes, blank lines or bare carriage returns: record n (0 = the header) is on line
    n + 1."""
    previous = b"\n"
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            data = previous + block
            if (b'"' in block or b"\n\n" in data or b"\n\r\n" in data
                    or data.count(b"\r") - data.endswith(b"\r") != data.count(b"\r\n")):
                return False
            previous = block[-2:]
    return True


@dataclasses.dataclass
class _LineFinder:
    """Row -> physical line of a header-row CSV/TSV whose blank lines or quoted line breaks
    make rows and lines differ. Only called to report an error: it reads the file up to the
    row with Python's csv module (the same dialect as the readers: ``"`` quotes, ``""`` for a
    quote inside one, blank lines skipped)."""

    path: str
    encoding: str
    delimiter: str

    def record(self, record: int) -> int:
        """The line record `record` (0 = the header) starts on."""
        if _plain(self.path):
            return record + 1
        with open(self.path, encoding=self.encoding, errors="replace", newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            end, seen = 0, -1
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields:          # a blank line
                    continue
                seen += 1
                if seen == record:
                    return start
        return end + 1

    def __call__(self, row: int) -> int:
        return self.record(row + 1)


def header(path: str, encoding: str = "utf-8") -> list[str]:
    """The column names of a ``.csv``/``.tsv`` (its header row) or ``.parquet`` file, read
    without its rows (InputError if it is missing, empty or unreadable)."""
    if _extension(path) == ".parquet":
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as error:  # noqa: BLE001  (pyarrow raises many types for bad files)
            raise InputError(f"{path}: not a readable Parquet file ({one_line(error)})") \
                from None
        return [str(n) for n in names if not _PANDAS_INDEX.fullmatch(str(n))]
    _require_text(path)
    delimiter = _delimiter(path)
    try:
        reader = arrow_csv.open_csv(path, read_options=_read_options(encoding),
                                    parse_options=_parse_options(delimiter))
        names = list(reader.schema.names)
        reader.close()
    except (pa.ArrowException, UnicodeError) as error:
        raise _csv_error(path, delimiter, encoding, error) from None
    if any("\ufffd" in name for name in names):  # pyarrow replaces undecodable header bytes
        found = _undecodable(path, encoding)
        if found:
            raise _encoding_error(path, None, encoding, hint=ENCODING_HINT)
    return names


def require_header(path: str, names, columns, what: str = "") -> None:
    """InputError naming the first of `columns` not in `names` (a file's header), and the
    columns the file has."""
    names = [str(n) for n in names]
    for column in columns:
        if column not in names:
            raise InputError(f"{path}: no column {column!r}{what} (columns: "
                             f"{', '.join(names)})")


def read_table(path: str, encoding: str = "utf-8", columns=None, text_columns=()) -> Table:
    """A ``.csv``/``.tsv`` file with a header row, or a ``.parquet`` file, as a `Table`.

    `columns`: read only these (InputError naming the first the file lacks); default all.
    `text_columns` are read as text as written (``007`` stays ``"007"``); elsewhere a column
    of integers without empty fields is int64, of numbers float64, of ISO dates or times
    (pyarrow) datetime64, otherwise text. Empty fields are missing values (NaN); "NA" and the
    like stay text; ``true``/``false`` stay text.
    """
    extension = _extension(path)
    names = header(path, encoding)
    if columns is not None:
        columns = list(dict.fromkeys(columns))
        require_header(path, names, columns)
    text_columns = [c for c in dict.fromkeys(text_columns) if columns is None or c in columns]
    duplicated = [n for n in (names if columns is None else columns) if names.count(n) > 1]
    if duplicated:
        raise InputError(f"{path}: column {duplicated[0]!r} appears twice in the header")
    if extension == ".parquet":
        table = Table(_read_parquet(path, columns, text_columns), path, first_line=None)
    else:
        delimiter = _delimiter(path)
        frame = _read_csv_arrow(path, delimiter, encoding, names, columns, text_columns)
        # Row i is on line i + 2 unless blank lines or quoted line breaks shift the rows.
        line_of = (None if len(frame) + 1 == _lines(path)
                   else _LineFinder(path, encoding, delimiter))
        table = Table(frame, path, first_line=2, line_of=line_of)
    if table.frame.empty:
        raise InputError(f"{path}: no rows below the header")
    return table


def _delimiter(path: str) -> str:
    return "\t" if os.path.splitext(path)[1].lower() == ".tsv" else ","


def _read_options(encoding: str, threads: bool = True):
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}") from None
    return arrow_csv.ReadOptions(encoding="utf8" if utf8 else encoding, use_threads=threads,
                                 block_size=_ARROW_BLOCK)


def _parse_options(delimiter: str, invalid_row_handler=None):
    # newlines_in_values: a quoted value may hold a line break (no measurable cost here).
    return arrow_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                  invalid_row_handler=invalid_row_handler)


def _read_csv_arrow(path: str, delimiter: str, encoding: str, names: list[str],
                    columns, text_columns) -> pd.DataFrame:
    """pyarrow's streaming reader, with pandas' rules: only empty fields are missing, no
    booleans.

    Streaming keeps memory near the size of the parsed columns (about 1 GB for 25M rows of
    four numbers; the one-shot reader peaks at 2.5-4.5 GB). It infers each column's type from
    the first block (4 MiB); when a later value does not fit (``4.5`` in a column of
    integers), the file is read again with that column widened (int64 -> float64 -> text),
    which gives the types the whole-file inference would.
    """
    types = {c: pa.string() for c in text_columns}
    for _ in range(4 * len(names) + 1):   # each pass widens a column; text never fails
        convert = arrow_csv.ConvertOptions(
            null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=True,
            true_values=[], false_values=[], include_columns=columns or [],
            column_types=types)
        try:
            reader = arrow_csv.open_csv(path, read_options=_read_options(encoding),
                                        parse_options=_parse_options(delimiter),
                                        convert_options=convert)
            schema = reader.schema
            retext = [f.name for f in schema if not _arrow_type_ok(pa, f.type)]
            if any(pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)
                   for f in schema):   # bytes that are not UTF-8 make a binary column
                raise _encoding_error(path, None, encoding, hint=ENCODING_HINT)
            if retext:                 # times of day and the like: the text as written
                types.update({name: pa.string() for name in retext})
                continue
            chunks = [[] for _ in schema]
            for batch in reader:
                for i, column in enumerate(batch.columns):
                    chunks[i].append(column)
        except pa.ArrowInvalid as error:
            widened = _widen(pa, error, names, types)
            if widened is None:
                raise _csv_error(path, delimiter, encoding, error) from None
            types[widened[0]] = widened[1]
            continue
        except (pa.ArrowException, UnicodeError) as error:
            raise _csv_error(path, delimiter, encoding, error) from None
        data = {}
        for i, field in enumerate(schema):  # one column at a time: the chunks are freed
            array = pa.chunked_array(chunks[i], type=field.type)
            chunks[i] = None
            if pa.types.is_null(field.type):  # every field empty
                array = array.cast(pa.string())
            data[field.name] = array.to_pandas(date_as_object=False)
            del array
        return pd.DataFrame(data, copy=False)
    raise InputError(f"{path}: cannot infer the column types")


def _arrow_type_ok(pa, kind) -> bool:
    """Types read_table returns as they are (others are read again as text)."""
    return (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_string(kind)
            or pa.types.is_large_string(kind) or pa.types.is_timestamp(kind)
            or pa.types.is_date(kind) or pa.types.is_null(kind)
            or pa.types.is_binary(kind) or pa.types.is_large_binary(kind))


def _widen(pa, error: BaseException, names: list[str], types: dict):
    """(column, wider type) for pyarrow's "value does not fit the type inferred from the first
    block" error, or None for any other error."""
    found = re.search(r"In CSV column #(\d+): CSV conversion error to (.+?): invalid value "
                      r"'(.*)'", str(error), re.DOTALL)
    if not found or int(found.group(1)) >= len(names):
        return None
    column, was, value = names[int(found.group(1))], found.group(2), found.group(3)
    if was == "null" and re.fullmatch(r"[+-]?[0-9]+", value) and _is_int64(value):
        return column, pa.int64()
    if was in ("null", "int64") and re.fullmatch(
            r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", value):
        return column, pa.float64()
    if was in ("string", "large_string", "utf8") or types.get(column) == pa.string():
        return None
    return column, pa.string()


def _csv_error(path: str, delimiter: str, encoding: str, error: BaseException) -> InputError:
    """The one-line InputError for a CSV/TSV pyarrow could not read, naming the line."""
    if isinstance(error, UnicodeError) or _undecodable(path, encoding):
        return _encoding_error(path, error, encoding, hint=ENCODING_HINT)
    found = re.search(r"Expected (\d+) columns, got (\d+)", str(error))
    if found:
        # Threaded parsing does not number rows: parse again on one thread to find it.
        rows = []

        def first_bad(row) -> str:
            rows.append(row.number)
            return "error"

        try:
            arrow_csv.read_csv(path, read_options=_read_options(encoding, threads=False),
                               parse_options=_parse_options(delimiter, first_bad))
        except Exception:  # noqa: BLE001  (the error is the one being diagnosed)
            pass
        where = path
        if rows and rows[0]:
            # pyarrow numbers records from 1 (the header), skipping blank lines
            where = f"{path}:{_LineFinder(path, encoding, delimiter).record(rows[0] - 1)}"
        return InputError(f"{where}: expected {found.group(1)} fields (as the header), saw "
                          f"{found.group(2)}")
    return InputError(f"{path}: cannot parse ({one_line(error)})")


def _read_parquet(path: str, columns, text_columns) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, columns=columns)
    except Exception as error:  # noqa: BLE001  (pyarrow raises many types for bad files)
        raise InputError(f"{path}: not a readable Parquet file ({one_line(error)})") from None
    frame = frame.reset_index(drop=True)
    names = [str(c) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"{path}: column {duplicated[0]!r} appears twice")
    for column in text_columns:
        frame[column] = _as_text(frame[column])
    return frame


def _as_text(values: pd.Series) -> pd.Series:
    """A typed (Parquet) column as text: integers (also float columns holding only whole
    numbers, as integers with missing values are stored) without a decimal point, missing
    values kept missing."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(values.cat.categories.dtype if not values.isna().any()
                               else object)
    missing = values.isna().to_numpy()
    if pd.api.types.is_string_dtype(values) and not pd.api.types.is_object_dtype(values):
        return values
    if pd.api.types.is_float_dtype(values):
        present = values.to_numpy(np.float64)[~missing]
        if np.all(np.isfinite(present) & (present == np.round(present))
                  & (np.abs(present) < 2**53)):
            values = values.astype("Int64")
    return values.astype(str).where(~missing)


def require_columns(table: Table, columns, what: str = "") -> None:
    """InputError naming the first of `columns` the table lacks, and the ones it has."""
    require_header(table.path, table.frame.columns, columns, what)


def integers(table: Table, column: str, message: str | None = None) -> np.ndarray:
    """The column as int64; InputError (`message`, default "expected an integer COLUMN") at
    the first value that is not an integer."""
    values = table.frame[column]
    message = message or f"expected an integer {column}"
    if pd.api.types.is_signed_integer_dtype(values) and not values.isna().any():
        return values.to_numpy(np.int64)
    numbers_ = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    whole = np.isfinite(numbers_) & (numbers_ == np.round(numbers_)) & (np.abs(numbers_) < 2**53)
    table.fail(~whole, message, column)
    return numbers_.astype(np.int64)


def orders(table: Table, column: str) -> np.ndarray:
    """An order column (``--time_column=COLUMN:order``) as int64, the values as they are:
    integers that only order the interactions (0, 1, 2... per user, or a global counter).
    InputError at the first value that is not an integer (a date or a boolean included)."""
    message = f"expected an integer in column {column} (an order: --time_column={column}:order)"
    values = table.frame[column]
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_bool_dtype(values):
        table.fail(np.ones(len(values), bool), message, column)  # numbers only by conversion
    return integers(table, column, message)


def numbers(table: Table, column: str) -> np.ndarray:
    """The column as float64; InputError at the first value that is not a finite number."""
    values = table.frame[column]
    if not (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)):
        values = pd.to_numeric(values, errors="coerce")
    values = values.to_numpy(np.float64)
    table.fail(~np.isfinite(values), _NOT_A_NUMBER + column, column)
    return values


def timestamps(table: Table, column: str) -> np.ndarray:
    """Unix seconds (int64) from numbers (seconds, fractions floored) or ISO dates/times (UTC
    when unzoned); a text column may mix both. A number beyond ±10^11 (year 5138) is refused:
    milliseconds, probably."""
    values = table.frame[column]
    too_late = f"expected Unix seconds in column {column} (this is after the year 5000: " \
               f"milliseconds?)"
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        if pd.api.types.is_signed_integer_dtype(values) and not values.isna().any():
            seconds = values.to_numpy(np.int64)
        else:
            seconds = np.floor(numbers(table, column))
        table.fail(np.abs(seconds) >= MAX_UNIX_SECONDS, too_late, column)
        return seconds.astype(np.int64, copy=False)
    if pd.api.types.is_datetime64_any_dtype(values):  # Parquet or pyarrow timestamps
        table.fail(values.isna().to_numpy(), f"expected a time in column {column}", column)
        return _seconds(pd.to_datetime(values, utc=True))
    numeric = pd.to_numeric(values, errors="coerce").to_numpy(np.float64)
    iso = np.isnan(numeric) & values.notna().to_numpy()
    moments = pd.to_datetime(values.where(iso), utc=True, errors="coerce", format="ISO8601")
    bad = (iso & moments.isna().to_numpy()) | values.isna().to_numpy() \
        | (~iso & ~np.isfinite(numeric) & values.notna().to_numpy())
    table.fail(bad, f"expected Unix seconds or an ISO date in column {column}", column)
    seconds = np.where(iso, 0, np.floor(np.nan_to_num(numeric)))
    table.fail(np.abs(seconds) >= MAX_UNIX_SECONDS, too_late, column)
    seconds = seconds.astype(np.int64)
    if iso.any():
        seconds[iso] = _seconds(moments[iso])
    return seconds


def _seconds(moments: pd.Series) -> np.ndarray:
    """Unix seconds (floored) of UTC datetimes."""
    return ((moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def strings(table: Table, column: str) -> np.ndarray:
    """The column as Python strings; missing values become ""."""
    values = table.frame[column]
    return values.fillna("").astype(str).to_numpy(dtype=object)
