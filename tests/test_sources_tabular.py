"""`--dataset=tabular` (`dssm_tf.data.sources.tabular`): round trips and every bad input.

Small files written into `tmp_path`; no TensorFlow (but for the last tests, which run the
commands in a subprocess). Each bad input must be exactly one `InputError`/`ConfigError` line
naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pandas as pd
import pytest

from dssm_tf.config import LEAVE_LAST_ONE_OUT, DataConfig, RunConfig, SplitConfig, TowerConfig
from dssm_tf.data.schema import CATEGORICAL, FLOAT32, INT64, MULTI, NUMERIC, STRING, Feature
from dssm_tf.data.sources import files, load_dataset, tabular
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.io import md5
from tests.conftest import make_split, run_command

DAY = 86400
JAN_1_2003 = 1041379200


def write(folder, name: str, text: str | bytes) -> str:
    path = os.path.join(str(folder), name)
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def load(**fields):
    return tabular.load(DataConfig(dataset="tabular", **fields))


def fails(error_type, **fields) -> str:
    """The message of the one-line error loading `fields` raises."""
    with pytest.raises(error_type) as caught:
        load(**fields)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- round trips ---------------------------------------------------------------------------------

EVENTS = """customer,sku,time,stars
u2,b,2003-01-02T10:00:00Z,3
u1,a,2003-01-01,4.5
u1,b,2003-01-03 12:00:00+02:00,5
u3,c,2003-01-04T00:00:00,1
"""
USERS = """customer,country,age,segment,ignored
u1,FR,031,1,x
u2,DE,,2,y
u3,,45,1,z
u4,US,22,3,w
"""
ITEMS = ('sku,brand,tags,price,name\n'
         'a,Acme,x|y,1.5,"Widget, large"\n'
         'b,Bolt,,2,Bolt\n'
         'c,Acme,z,3.25,"Quote ""q"""\n')


def test_csv_with_string_keys_iso_times_and_feature_tables(tmp_path):
    events, users, items = (write(tmp_path, "events.csv", EVENTS),
                            write(tmp_path, "users.csv", USERS),
                            write(tmp_path, "items.csv", ITEMS))
    dataset = load_dataset(DataConfig(
        dataset="tabular", interactions=events, users=users, items=items,
        user_column="customer", item_column="sku", time_column="time", rating_column="stars",
        user_feature_columns=("country", "age", "segment"),
        item_feature_columns=("brand", "tags:multi", "price:numeric"), title_column="name"))

    schema = dataset.schema
    assert (schema.user_key, schema.item_key) == ("customer", "sku")
    assert (schema.user_key_dtype, schema.item_key_dtype) == (STRING, STRING)
    assert schema.user_features == (Feature("country", CATEGORICAL, STRING),
                                    Feature("age", CATEGORICAL, STRING),
                                    Feature("segment", CATEGORICAL, INT64))
    assert schema.item_features == (Feature("brand", CATEGORICAL, STRING),
                                    Feature("tags", MULTI, STRING),
                                    Feature("price", NUMERIC, FLOAT32))
    assert schema.item_title == "name"

    # users and items in file order, with users that have no interaction
    assert list(dataset.users.columns) == ["customer", "country", "age", "segment"]
    assert dataset.users.customer.tolist() == ["u1", "u2", "u3", "u4"]
    assert dataset.users.country.tolist() == ["FR", "DE", "", "US"]
    assert dataset.users.age.tolist() == ["031", "", "45", "22"]   # text as written
    assert dataset.users.segment.dtype == np.int64
    assert dataset.users.segment.tolist() == [1, 2, 1, 3]
    assert list(dataset.items.columns) == ["sku", "brand", "tags", "price", "name"]
    assert dataset.items.sku.tolist() == ["a", "b", "c"]
    assert dataset.items.brand.tolist() == ["Acme", "Bolt", "Acme"]
    assert dataset.items.tags.tolist() == ["x|y", "", "z"]
    assert dataset.items.price.tolist() == [1.5, 2.0, 3.25]
    assert dataset.items.name.tolist() == ["Widget, large", "Bolt", 'Quote "q"']

    # interactions in file order
    frame = dataset.interactions
    assert list(frame.columns) == ["user", "item", "timestamp", "rating"]
    assert dataset.user_keys[frame.user].tolist() == ["u2", "u1", "u1", "u3"]
    assert dataset.item_keys[frame.item].tolist() == ["b", "a", "b", "c"]
    assert frame.timestamp.tolist() == [JAN_1_2003 + DAY + 10 * 3600, JAN_1_2003,
                                        JAN_1_2003 + 2 * DAY + 10 * 3600,
                                        JAN_1_2003 + 3 * DAY]
    assert frame.timestamp.dtype == np.int64
    assert frame.rating.tolist() == [3.0, 4.5, 5.0, 1.0]

    assert dataset.name == "tabular"
    assert dataset.default_cutoff is None
    assert dataset.checksums == {"events.csv": md5(events), "users.csv": md5(users),
                                 "items.csv": md5(items)}
    assert dataset.config.interactions == os.path.abspath(events)
    assert dataset.config.users == os.path.abspath(users)
    assert dataset.config.items == os.path.abspath(items)
    assert dataset.user_index(["u3", "nobody"]).tolist() == [2, -1]


def test_tsv_with_integer_keys_and_unix_seconds(tmp_path):
    events = write(tmp_path, "events.tsv", "user_id\titem_id\ttimestamp\n"
                                           "7\t30\t1041379200\n"
                                           "3\t10\t1041379300.9\n"
                                           "7\t10\t1041379400\n")
    dataset = load(interactions=events)
    assert (dataset.schema.user_key_dtype, dataset.schema.item_key_dtype) == (INT64, INT64)
    assert dataset.users.user_id.tolist() == [3, 7]         # no table: sorted keys
    assert dataset.items.item_id.tolist() == [10, 30]
    assert dataset.user_keys[dataset.interactions.user].tolist() == [7, 3, 7]
    assert dataset.item_keys[dataset.interactions.item].tolist() == [30, 10, 10]
    assert dataset.interactions.timestamp.tolist() == [1041379200, 1041379300, 1041379400]
    assert "rating" not in dataset.interactions
    assert dataset.checksums == {"events.tsv": md5(events)}


def test_parquet_files(tmp_path):
    events = os.path.join(tmp_path, "events.parquet")
    pd.DataFrame({"user_id": [5, 6, 5], "item_id": [20, 10, 10],
                  "timestamp": pd.to_datetime(["2003-01-02", "2003-01-01 00:00:30",
                                               "2003-01-03"], format="ISO8601"),
                  "rating": [1.0, 2.5, 4.0]}).to_parquet(events)
    items = os.path.join(tmp_path, "items.parquet")
    pd.DataFrame({"item_id": [10, 20, 30], "genre": ["Drama", None, "Comedy"],
                  "year": [1999, 2001, 2003], "votes": [3, np.nan, 5],
                  "name": ["Ten", "Twenty", None]}).to_parquet(items)
    dataset = load(interactions=events, items=items, rating_column="rating",
                   item_feature_columns=("genre", "year", "votes"), title_column="name")
    assert dataset.schema.item_key_dtype == INT64
    assert dataset.schema.item_features == (Feature("genre", CATEGORICAL, STRING),
                                            Feature("year", CATEGORICAL, INT64),
                                            Feature("votes", CATEGORICAL, STRING))
    assert dataset.items.item_id.tolist() == [10, 20, 30]
    assert dataset.items.genre.tolist() == ["Drama", "", "Comedy"]
    assert dataset.items.year.tolist() == [1999, 2001, 2003]
    assert dataset.items.votes.tolist() == ["3", "", "5"]   # whole numbers stay whole
    assert dataset.items.name.tolist() == ["Ten", "Twenty", ""]
    assert dataset.user_keys[dataset.interactions.user].tolist() == [5, 6, 5]
    assert dataset.item_keys[dataset.interactions.item].tolist() == [20, 10, 10]
    assert dataset.interactions.timestamp.tolist() == [JAN_1_2003 + DAY, JAN_1_2003 + 30,
                                                       JAN_1_2003 + 2 * DAY]
    assert dataset.interactions.rating.tolist() == [1.0, 2.5, 4.0]
    assert set(dataset.checksums) == {"events.parquet", "items.parquet"}


def test_parquet_errors_name_the_row(tmp_path):
    events = os.path.join(tmp_path, "events.parquet")
    pd.DataFrame({"user_id": ["a", None], "item_id": [1, 2],
                  "timestamp": [1, 2]}).to_parquet(events)
    assert fails(InputError, interactions=events) == (
        f"{events}: row 2: missing user key user_id, got an empty field")


def test_features_read_from_the_interactions_file(tmp_path):
    events = write(tmp_path, "events.csv", "user,item,time,country,score,genres,title\n"
                                           "b,9,100,DE,0.5,Drama|War,Nine\n"
                                           "a,8,200,FR,1.5,,Eight\n"
                                           "b,8,300,DE,0.5,,Eight\n"
                                           "a,9,400,FR,1.5,Drama|War,Nine\n")
    dataset = load(interactions=events, user_column="user", item_column="item",
                   time_column="time", user_feature_columns=("country", "score:numeric"),
                   item_feature_columns=("genres:multi",), title_column="title")
    assert dataset.users.user.tolist() == ["a", "b"]           # sorted, one row per key
    assert dataset.users.country.tolist() == ["FR", "DE"]
    assert dataset.users.score.tolist() == [1.5, 0.5]
    assert dataset.items.item.tolist() == [8, 9]
    assert dataset.items.genres.tolist() == ["", "Drama|War"]
    assert dataset.items.title.tolist() == ["Eight", "Nine"]
    assert dataset.user_keys[dataset.interactions.user].tolist() == ["b", "a", "b", "a"]
    assert dataset.interactions.timestamp.tolist() == [100, 200, 300, 400]


def test_a_key_with_two_values_in_the_interactions_file(tmp_path):
    events = write(tmp_path, "events.csv", "user,item,time,country\n"
                                           "a,1,100,FR\n"
                                           "b,1,100,DE\n"
                                           "a,2,200,IT\n")
    message = fails(InputError, interactions=events, user_column="user", item_column="item",
                    time_column="time", user_feature_columns=("country",))
    assert message.startswith(f"{events}:4: country 'IT' for user 'a', which has 'FR' on "
                              f"line 2")


def test_multi_and_numeric_features(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n1,1,5\n1,2,6\n")
    items = write(tmp_path, "items.csv", "item_id,tags,weight\n1,a|b|c,-2.5e1\n2,,7\n")
    dataset = load(interactions=events, items=items,
                   item_feature_columns=("tags:multi", "weight:numeric"))
    assert dataset.items.tags.tolist() == ["a|b|c", ""]
    assert dataset.items.weight.dtype == np.float64
    assert dataset.items.weight.tolist() == [-25.0, 7.0]
    assert dataset.vocabulary("item", "tags") == ["a", "b", "c"]


def test_min_rating(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp,rating\n"
                                           "1,1,10,1\n1,2,20,4\n2,1,30,5\n2,3,40,3.5\n")
    dataset = load(interactions=events, rating_column="rating", min_rating=4)
    assert dataset.interactions.rating.tolist() == [4.0, 5.0]
    assert dataset.interactions.timestamp.tolist() == [20, 30]
    assert dataset.items.item_id.tolist() == [1, 2, 3]   # every key seen stays indexed
    with pytest.raises(ConfigError) as caught:
        load(interactions=events, min_rating=4)
    assert caught.value.parameter == "min_rating"


def test_keys_missing_from_a_feature_table_error_or_drop(tmp_path, caplog):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n"
                                           "1,1,10\n1,5,20\n2,1,30\n2,5,40\n3,2,50\n")
    items = write(tmp_path, "items.csv", "item_id,genre\n1,x\n2,y\n")
    message = fails(InputError, interactions=events, items=items,
                    item_feature_columns=("genre",))
    assert message == (f"{events}:3: item_id not in {items} (--missing_keys=drop drops such "
                       f"interactions), got '5'")
    with caplog.at_level(logging.WARNING, logger="dssm_tf"):
        dataset = load(interactions=events, items=items, item_feature_columns=("genre",),
                       missing_keys="drop")
    assert dataset.interactions.timestamp.tolist() == [10, 30, 50]
    assert any("dropped 2 interaction(s)" in r.getMessage() for r in caplog.records)


def test_integer_keys_meet_string_keys_as_text(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n007,1,10\n8,2,20\n")
    users = write(tmp_path, "users.csv", "user_id,group\n007,g1\n8,g2\nx9,g3\n")
    dataset = load(interactions=events, users=users, user_feature_columns=("group",))
    assert dataset.schema.user_key_dtype == STRING
    assert dataset.users.user_id.tolist() == ["007", "8", "x9"]
    assert dataset.user_keys[dataset.interactions.user].tolist() == ["007", "8"]
    assert dataset.schema.item_key_dtype == INT64


def test_types_decided_by_the_whole_file(tmp_path, monkeypatch):
    """pyarrow infers types from the first block; a later value that does not fit widens
    the column (here with 64-byte blocks)."""
    monkeypatch.setattr(files, "_ARROW_BLOCK", 64)
    rows = "".join(f"{k},{k},{1000 + k},4\n" for k in range(1, 30))
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp,rating\n" + rows
                   + "u30,30,2003-01-01,4.5\n")
    dataset = load(interactions=events, rating_column="rating")
    assert dataset.schema.user_key_dtype == STRING
    assert dataset.schema.item_key_dtype == INT64
    assert dataset.user_keys[dataset.interactions.user].tolist()[-2:] == ["29", "u30"]
    assert dataset.interactions.timestamp.tolist()[-2:] == [1029, JAN_1_2003]
    assert dataset.interactions.rating.tolist()[-1] == 4.5


# --- bad input -----------------------------------------------------------------------------------

def events_csv(tmp_path, text=EVENTS, name="events.csv") -> dict:
    path = write(tmp_path, name, text)
    return dict(interactions=path, user_column="customer", item_column="sku",
                time_column="time", rating_column="stars")


def test_missing_column(tmp_path):
    fields = events_csv(tmp_path)
    fields["time_column"] = "when"
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}: no column 'when' (--time_column) (columns: customer, sku, "
        f"time, stars)")
    items = write(tmp_path, "items.csv", ITEMS)
    fields = events_csv(tmp_path)
    assert fails(InputError, items=items, item_feature_columns=("colour",), **fields) == (
        f"{items}: no column 'colour' (--item_feature_columns) (columns: sku, brand, tags, "
        f"price, name)")


def test_unparseable_time(tmp_path):
    fields = events_csv(tmp_path, EVENTS.replace("2003-01-01,", "yesterday,"))
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:3: expected Unix seconds or an ISO date in column time, "
        f"got 'yesterday'")


def test_empty_file(tmp_path):
    fields = events_csv(tmp_path, "")
    assert fails(InputError, **fields) == f"{fields['interactions']}: file is empty"
    fields = events_csv(tmp_path, "\n  \n")
    assert fails(InputError, **fields) == f"{fields['interactions']}: file is empty"


def test_header_only_file(tmp_path):
    fields = events_csv(tmp_path, "customer,sku,time,stars\n")
    assert fails(InputError, **fields) == f"{fields['interactions']}: no rows below the header"


def test_duplicate_keys_in_a_feature_table(tmp_path):
    users = write(tmp_path, "users.csv", "customer,country\nu1,FR\nu2,DE\nu1,IT\nu3,US\n")
    assert fails(InputError, users=users, user_feature_columns=("country",),
                 **events_csv(tmp_path)) == f"{users}:4: duplicate user key customer, got 'u1'"


def test_a_value_that_is_not_its_declared_type(tmp_path):
    items = write(tmp_path, "items.csv", ITEMS.replace("b,Bolt,,2,", "b,Bolt,,cheap,"))
    assert fails(InputError, items=items, item_feature_columns=("price:numeric",),
                 **events_csv(tmp_path)) == (
        f"{items}:3: expected a number in column price, got 'cheap'")
    items = write(tmp_path, "items.csv", ITEMS.replace("b,Bolt,,2,", "b,Bolt,,,"))
    assert fails(InputError, items=items, item_feature_columns=("price:numeric",),
                 **events_csv(tmp_path)) == (
        f"{items}:3: expected a number in column price, got an empty field")


def test_bad_feature_spec(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(item_feature_columns=("price:float",), **events_csv(tmp_path))
    assert caught.value.parameter == "item_feature_columns"
    assert "price:float" in str(caught.value)


@pytest.mark.parametrize("field, value", [("user_column", "user id"),
                                          ("item_column", "_sku"),
                                          ("user_feature_columns", "history"),
                                          ("item_column", "customer"),
                                          ("encoding", "no-such-codec")])
def test_settings_that_cannot_work(tmp_path, field, value):
    fields = events_csv(tmp_path)
    fields[field] = (value,) if field.endswith("feature_columns") else value
    with pytest.raises(ConfigError) as caught:
        load(**fields)
    assert caught.value.parameter == field


def test_wrong_field_count(tmp_path):
    fields = events_csv(tmp_path, EVENTS.replace("u1,a,2003-01-01,4.5",
                                                 "u1,a,2003-01-01,4.5,extra"))
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:3: expected 4 fields (as the header), saw 5")
    fields = events_csv(tmp_path, EVENTS.replace("u1,a,2003-01-01,4.5", "u1,a"))
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:3: expected 4 fields (as the header), saw 2")


def test_lines_count_blank_lines_and_quoted_line_breaks(tmp_path):
    text = ('customer,sku,time,stars\n\nu1,"a\nb",2003-01-01,4\n\n'
            'u2,b,2003-01-02,4\nu3,c,never,4\n')
    fields = events_csv(tmp_path, text)
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:7: expected Unix seconds or an ISO date in column time, "
        f"got 'never'")


def test_non_utf8_file(tmp_path):
    text = EVENTS.replace("u3,c,", "u3,caf\xe9,").encode("latin-1")
    fields = events_csv(tmp_path, text)
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:5: not utf-8 text (byte 0xe9; --encoding names another)")
    dataset = load(encoding="latin-1", **fields)
    assert dataset.item_keys[dataset.interactions.item].tolist() == ["b", "a", "b", "café"]


def test_missing_key_and_item_key_zero(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n1,1,10\n,2,20\n")
    assert fails(InputError, interactions=events) == (
        f"{events}:3: missing user key user_id, got an empty field")
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n1,1,10\n2,0,20\n")
    assert fails(InputError, interactions=events).startswith(
        f"{events}:3: item key 0 is reserved: integer item keys pad serving histories with 0")
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n1,i1,10\n2,0,20\n")
    dataset = load(interactions=events)   # text keys: "0" is an ordinary key
    assert dataset.items.item_id.tolist() == ["0", "i1"]


def test_milliseconds_are_not_seconds(tmp_path):
    events = write(tmp_path, "events.csv", "user_id,item_id,timestamp\n1,1,1041379200000\n")
    assert fails(InputError, interactions=events).startswith(
        f"{events}:2: expected Unix seconds in column timestamp (this is after the year 5000")


def test_unknown_file_type_and_missing_file(tmp_path):
    assert fails(InputError, interactions=write(tmp_path, "events.txt", "a\n")) == (
        f"{tmp_path}/events.txt: expected a .csv, .tsv, .parquet file")
    missing = os.path.join(tmp_path, "nothing.csv")
    assert fails(InputError, interactions=missing) == f"{missing}: file not found"


def test_byte_order_mark_and_crlf_line_ends(tmp_path):
    text = "\ufeffcustomer,sku,time,stars\r\nu1,a,2003-01-01,4\r\nu2,b,2003-01-02,4\r\n"
    dataset = load(**events_csv(tmp_path, text))
    assert dataset.users.customer.tolist() == ["u1", "u2"]
    fields = events_csv(tmp_path, text.replace("2003-01-02", "later"))
    assert fails(InputError, **fields) == (
        f"{fields['interactions']}:3: expected Unix seconds or an ISO date in column time, "
        f"got 'later'")


def test_undecodable_bytes_after_the_first_block(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_ARROW_BLOCK", 64)
    rows = "".join(f"u{k},i{k},{k}\n" for k in range(1, 30)).encode()
    events = write(tmp_path, "events.csv", b"user_id,item_id,timestamp\n" + rows
                   + b"u9,caf\xe9,5\n")
    assert fails(InputError, interactions=events) == (
        f"{events}:31: not utf-8 text (byte 0xe9; --encoding names another)")


# --- an order but no times (--time_column=COLUMN:order, or empty) ------------------------------

def order_only_csv(folder, users: int = 40, seed: int = 0, name: str = "events.csv") -> tuple:
    """A few hundred rows of ``user,item,step`` (step 0, 1, 2... per user), in shuffled row
    order; (path, rows as (user, item, step) in file order)."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(users):
        length = int(rng.integers(5, 12))
        start = int(rng.integers(0, 30))   # a user walks through neighbouring items
        rows += [(f"u{user}", f"i{(start + step) % 30}", step) for step in range(length)]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    text = "user,item,step\n" + "".join(f"{u},{i},{s}\n" for u, i, s in rows)
    return write(folder, name, text), rows


def order_fields(path: str, time_column: str = "step:order") -> dict:
    return dict(interactions=path, user_column="user", item_column="item",
                time_column=time_column)


def test_real_times_and_the_time_column_parsed_once():
    assert DataConfig().real_times                         # MovieLens releases: real times
    assert DataConfig(time_column="step:order").real_times  # ignored outside tabular
    for time_column, source, real in (("time", ("time", True), True),
                                      ("step:order", ("step", False), False),
                                      (" step:order ", ("step", False), False),
                                      ("", (None, False), False)):
        config = DataConfig(dataset="tabular", interactions="x.csv", time_column=time_column)
        assert (config.time_source, config.real_times) == (source, real)
    for bad in ("step:seconds", ":order", "step:"):
        with pytest.raises(ConfigError) as caught:
            DataConfig(dataset="tabular", interactions="x.csv", time_column=bad).validate()
        assert caught.value.parameter == "time_column" and repr(bad) in str(caught.value)


def test_an_order_column_loads_as_it_is_and_sorts_by_step(tmp_path):
    path, rows = order_only_csv(tmp_path)
    assert 300 <= len(rows) <= 500
    dataset = load(**order_fields(path))
    assert not dataset.config.real_times
    frame = dataset.interactions
    assert frame.timestamp.dtype == np.int64
    assert frame.timestamp.tolist() == [s for _, _, s in rows]         # as written, file order
    assert dataset.user_keys[frame.user].tolist() == [u for u, _, _ in rows]

    split = make_split(dataset, LEAVE_LAST_ONE_OUT)
    last = {}
    for user, item, step in rows:
        if step >= last.get(user, (None, -1))[1]:
            last[user] = (item, step)
    test = {dataset.user_keys[u]: dataset.item_keys[i]
            for u, i in zip(split.test.user, split.test.item)}
    assert test == {user: item for user, (item, _) in last.items()}    # the highest step
    train = split.train
    assert (np.lexsort((train.timestamp, train.user)) == np.arange(len(train))).all()


def test_an_order_may_be_negative_or_beyond_today(tmp_path, caplog):
    path = write(tmp_path, "events.csv", "user,item,step\na,x,-5\na,y,-7\n"
                                         "b,x,99999999999\nb,y,3\n")
    with caplog.at_level(logging.WARNING, logger="dssm_tf"):
        dataset = load(**order_fields(path))
    assert dataset.interactions.timestamp.tolist() == [-5, -7, 99999999999, 3]
    assert not [r for r in caplog.records if "future" in r.getMessage()]


def test_an_empty_time_column_uses_the_file_order(tmp_path):
    path, rows = order_only_csv(tmp_path)
    dataset = load(**order_fields(path, time_column=""))
    assert not dataset.config.real_times
    assert dataset.interactions.timestamp.tolist() == list(range(len(rows)))
    last = {user: item for user, item, _ in rows}                      # the last row per user
    split = make_split(dataset, LEAVE_LAST_ONE_OUT)
    assert {dataset.user_keys[u]: dataset.item_keys[i]
            for u, i in zip(split.test.user, split.test.item)} == last
    # a file with no time column at all
    bare = write(tmp_path, "bare.csv", "user,item\nb,x\na,y\nb,y\n")
    dataset = load(**order_fields(bare, time_column=""))
    assert dataset.interactions.timestamp.tolist() == [0, 1, 2]


@pytest.mark.parametrize("value, shown", [("2.5", "'2.5'"), ("later", "'later'"),
                                          ("2003-01-01", "'2003-01-01'"),
                                          ("", "an empty field")])
def test_an_order_that_is_not_an_integer(tmp_path, value, shown):
    path = write(tmp_path, "events.csv", f"user,item,step\na,x,0\na,y,1\nb,x,{value}\n"
                                         f"b,y,3\n")
    assert fails(InputError, **order_fields(path)) == (
        f"{path}:4: expected an integer in column step (an order: --time_column=step:order), "
        f"got {shown}")
    dates = write(tmp_path, "dates.csv", "user,item,step\na,x,2003-01-01\na,y,2003-01-02\n")
    assert fails(InputError, **order_fields(dates)) == (
        f"{dates}:2: expected an integer in column step (an order: --time_column=step:order), "
        f"got '2003-01-01 00:00:00'")


# --- the commands, in a subprocess --------------------------------------------------------------

ORDER_ONLY_REFUSALS = {
    "history_time": (["--time_column=step:order", "--protocol=leave_last_one_out",
                      "--history_length=3", "--history_time"],
                     "error: --history_time: needs real timestamps: --time_column=step:order "
                     "gives an order only"),
    "time_split": (["--time_column=step:order"],     # time_split is the default protocol
                   "error: --protocol: time_split cuts at a time and needs real timestamps: "
                   "--time_column=step:order gives an order only (use "
                   "--protocol=leave_last_one_out)"),
    "time_split_file_order": (["--time_column=", "--protocol=time_split"],
                              "error: --protocol: time_split cuts at a time and needs real "
                              "timestamps: an empty --time_column gives the file's order only "
                              "(use --protocol=leave_last_one_out)"),
}


@pytest.mark.parametrize("case", list(ORDER_ONLY_REFUSALS))
def test_an_order_only_refuses_what_needs_times_in_one_line(tmp_path, case):
    path, _ = order_only_csv(tmp_path)
    args, expected = ORDER_ONLY_REFUSALS[case]
    model_dir = tmp_path / "model"
    start = time.perf_counter()
    proc = run_command("train", "--dataset=tabular", f"--interactions={path}",
                       "--user_column=user", "--item_column=item", *args,
                       f"--model_dir={model_dir}", tmp_path=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert (proc.returncode, lines) == (2, [expected]), proc.stderr[-3000:]
    assert not os.path.exists(model_dir)            # refused before any data or TensorFlow
    assert time.perf_counter() - start < 60


def test_refused_by_the_run_config_before_data_loads():
    """The same refusals as library calls: `RunConfig.validate`, no file read."""
    data = DataConfig(dataset="tabular", interactions="no-such-file.csv",
                      time_column="step:order")
    with pytest.raises(ConfigError) as caught:
        RunConfig(data=data, split=SplitConfig(protocol=LEAVE_LAST_ONE_OUT),
                  tower=TowerConfig(history_length=3, history_time=True)).validate()
    assert caught.value.parameter == "history_time"
    with pytest.raises(ConfigError) as caught:
        RunConfig(data=data).validate()
    assert caught.value.parameter == "protocol"
    RunConfig(data=data, split=SplitConfig(protocol=LEAVE_LAST_ONE_OUT),
              tower=TowerConfig(history_length=3)).validate()


def test_train_on_an_order_only_file_end_to_end(tmp_path):
    path, rows = order_only_csv(tmp_path)
    model_dir = tmp_path / "model"
    proc = run_command("train", "--dataset=tabular", f"--interactions={path}",
                       "--user_column=user", "--item_column=item", "--time_column=step:order",
                       "--protocol=leave_last_one_out", "--epochs=1", "--batch_size=64",
                       "--embedding_dim=8", "--hidden_units=8", "--history_length=3", "--k=10",
                       "--verbose=false", "--nobaselines", f"--model_dir={model_dir}",
                       tmp_path=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(model_dir / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["protocol"] == LEAVE_LAST_ONE_OUT and metrics["time_column"] == "step:order"
    assert metrics["n_test_users"] == len({u for u, _, _ in rows})
    assert 0.0 <= metrics["hit@10"] <= 1.0
