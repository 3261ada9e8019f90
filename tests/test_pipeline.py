"""The tf.data input pipeline (`dssm_tf.data.pipeline`) and the negative samplers
(`dssm_tf.data.negatives`): features, histories, negatives, validation."""

from __future__ import annotations

import numpy as np
import pytest

import dssm_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
import tensorflow as tf

from dssm_tf.config import TIME_SPLIT, SamplerConfig
from dssm_tf.data import negatives, pipeline
from dssm_tf.data.pipeline import FeatureTables
from dssm_tf.errors import ConfigError
from tests.conftest import load_ml, make_split
from tests.synthetic import CUTOFF, TINY_MOVIES, TINY_RATINGS, write_movielens

HISTORY = 4


@pytest.fixture(scope="module")
def synth(synthetic_session):
    """(ml, split, tables) of the session's synthetic data set, time split, history of 4."""
    ml = load_ml(synthetic_session.folder)
    split = make_split(ml, TIME_SPLIT)
    return ml, split, FeatureTables(ml, split, HISTORY)


@pytest.fixture
def small_catalog(tmp_path):
    """TINY data plus a movie nobody rates and one rated only after the cutoff: 4 of the 6
    movies have training ratings, so sampled negatives often equal the positive."""
    movies = list(TINY_MOVIES) + [(50, "Unrated (1999)", "Drama"), (60, "Late (2001)", "Comedy")]
    ratings = list(TINY_RATINGS) + [(1, 60, 4, CUTOFF + 50)]
    ml = load_ml(write_movielens(tmp_path / "catalog", movies=movies, ratings=ratings))
    split = make_split(ml, TIME_SPLIT)
    return ml, split, FeatureTables(ml, split, 2)


def make_sampler(name, counts, **params):
    return negatives.make_sampler(SamplerConfig(negative_sampler=name, **params), counts)


def _take(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in ds.take(n)]


def _uniform_stream(split, tables, num_negatives, batch_size, n, rows=None, seed=0,
                    start_step=0):
    """The first `n` batches of the training stream with uniform negatives over `rows`
    (default: every training row)."""
    sampler = make_sampler("uniform", split.item_counts)
    rows = np.arange(len(split.train)) if rows is None else rows
    return _take(pipeline.training_dataset(tables, rows, sampler, num_negatives=num_negatives,
                                           batch_size=batch_size, seed=seed,
                                           start_step=start_step), n)


def _row_of(split, ml):
    """(raw UserID, raw MovieID) -> training row (a user rates a movie once)."""
    train = split.train
    user_ids = ml.users.user_id.to_numpy()[train.user.to_numpy()]
    movie_ids = ml.items.movie_id.to_numpy()[train.item.to_numpy()]
    return {(int(u), int(m)): row for row, (u, m) in enumerate(zip(user_ids, movie_ids))}


def _rows(batch, row_of):
    return np.array([row_of[(int(u), int(m))] for u, m in
                     zip(batch["user"]["user_id"], batch["positive"]["movie_id"])])


# --- samplers ----------------------------------------------------------------------------------

def test_uniform_sampler_support_is_training_movies_only(small_catalog):
    ml, split, _ = small_catalog
    sampler = make_sampler("uniform", split.item_counts)
    trained = set(np.flatnonzero(split.item_counts > 0).tolist())
    assert trained == set(ml.item_index([1, 2, 10, 32]).tolist())  # not 50 nor 60
    draws = sampler.sample(tf.constant([20000], tf.int64), tf.constant([0, 1], tf.int64)).numpy()
    assert set(draws.tolist()) == trained
    shares = np.bincount(draws, minlength=ml.num_items)[sorted(trained)] / len(draws)
    np.testing.assert_allclose(shares, 0.25, atol=0.02)
    p = sampler.probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert set(np.flatnonzero(p).tolist()) == trained
    # The inbatch sampler's optional extra negatives come from the same uniform sampler.
    inbatch = make_sampler("inbatch", split.item_counts)
    np.testing.assert_array_equal(inbatch.probabilities(), p)


COUNTS = np.array([0, 1, 2, 4, 5, 10, 50, 100, 0, 3, 7])


def test_frequency_sampler_probabilities_formula():
    sampler = make_sampler("frequency", COUNTS, frequent_share=0.3,
                                    frequent_min_count=5, frequency_power=0.75)
    p = sampler.probabilities()
    frequent = np.array([4, 5, 6, 7, 10])
    rare = np.array([1, 2, 3, 9])
    assert p.sum() == pytest.approx(1.0)
    assert p[frequent].sum() == pytest.approx(0.3)
    weights = COUNTS[frequent] ** 0.75
    np.testing.assert_allclose(p[frequent], 0.3 * weights / weights.sum())
    np.testing.assert_allclose(p[rare], 0.7 / len(rare))
    assert p[0] == p[8] == 0.0
    # No rare movie at all: every draw is a frequent one.
    only_frequent = make_sampler("frequency", np.array([0, 5, 9, 20]))
    assert only_frequent.probabilities()[1:].sum() == pytest.approx(1.0)


def test_frequency_sampler_draws_match_probabilities():
    sampler = make_sampler("frequency", COUNTS, frequent_share=0.3,
                                    frequent_min_count=5, frequency_power=0.75)
    n = 200_000
    draws = sampler.sample(tf.constant([n], tf.int64), tf.constant([3, 9], tf.int64)).numpy()
    assert draws.shape == (n,) and draws.dtype == np.int64
    observed = np.bincount(draws, minlength=len(COUNTS)) / n
    p = sampler.probabilities()
    assert observed[[0, 8]].sum() == 0.0  # never a movie without training ratings
    assert observed[COUNTS >= 5].sum() == pytest.approx(0.3, abs=0.005)
    tolerance = 5 * np.sqrt(p * (1 - p) / n) + 1e-4
    assert np.all(np.abs(observed - p) <= tolerance), (observed, p)
    # Within the frequent movies, draws are proportional to count**0.75, not to count.
    frequent = observed[[6, 7]]
    assert frequent[1] / frequent[0] == pytest.approx(2 ** 0.75, rel=0.05)
    # A shaped draw has the asked shape; the same seed gives the same draw.
    shaped = sampler.sample(tf.constant([7, 3], tf.int64), tf.constant([1, 2], tf.int64))
    assert shaped.shape == (7, 3)
    np.testing.assert_array_equal(
        shaped, sampler.sample(tf.constant([7, 3], tf.int64), tf.constant([1, 2], tf.int64)))


def test_frequency_sampler_needs_a_frequent_movie():
    with pytest.raises(ConfigError, match="no item has that many") as error:
        make_sampler("frequency", np.array([1, 2, 3]), frequent_min_count=5)
    assert error.value.parameter == "frequent_min_count"


def test_make_sampler_rejects_unknown_name():
    with pytest.raises(ConfigError, match="expected one of") as error:
        make_sampler("popular", COUNTS)
    assert error.value.parameter == "negative_sampler"


# --- training stream ---------------------------------------------------------------------------

def test_training_batches_have_raw_features_and_histories(synth):
    ml, split, tables = synth
    batches = _uniform_stream(split, tables, num_negatives=3, batch_size=50, n=4)
    row_of = _row_of(split, ml)
    train = split.train
    movie_ids = ml.items.movie_id.to_numpy()
    users = ml.users.set_index("user_id")
    checked_some_padding = checked_full = False
    for batch in batches:
        assert batch["user"]["history"].shape == (50, HISTORY)
        assert batch["user"]["history"].dtype == np.int64
        assert batch["negatives"]["movie_id"].shape == (50, 3)
        assert batch["negatives"]["genres"].shape == (50, 3)
        # The item indices the losses get are those of the raw keys the towers get.
        np.testing.assert_array_equal(ml.item_keys[batch["positive_item"]],
                                      batch["positive"]["movie_id"])
        np.testing.assert_array_equal(ml.item_keys[batch["negative_items"]],
                                      batch["negatives"]["movie_id"])
        for i, row in enumerate(_rows(batch, row_of)):
            uid = int(batch["user"]["user_id"][i])
            user = users.loc[uid]
            assert batch["user"]["gender"][i].decode() == user.gender
            assert batch["user"]["age"][i] == user.age
            assert batch["user"]["occupation"][i] == user.occupation
            movie = ml.items.iloc[train.item[row]]
            assert batch["positive"]["genres"][i].decode() == movie.genres
            # YouTube-style history: the user's training rows *before* this one, raw MovieIDs,
            # oldest to newest, right-aligned, zero-padded on the left.
            start = split.user_offsets[train.user[row]]
            earlier = movie_ids[train.item.to_numpy()[start:row]][-HISTORY:]
            expected = np.concatenate([np.zeros(HISTORY - len(earlier), np.int64), earlier])
            history = batch["user"]["history"][i]
            np.testing.assert_array_equal(history, expected)
            assert batch["positive"]["movie_id"][i] not in history
            later = train.timestamp.to_numpy()[start:row]
            assert np.all(later <= train.timestamp[row])
            checked_some_padding |= 0 < len(earlier) < HISTORY
            checked_full |= len(earlier) == HISTORY
        # A user's first training row has an empty history.
    assert checked_some_padding and checked_full
    first_rows = split.user_offsets[:-1][np.diff(split.user_offsets) > 0]
    first = tables.interaction_features(tf.constant(first_rows, tf.int64))
    assert not first["user"]["history"].numpy().any()


def test_each_epoch_is_a_fresh_permutation_with_fresh_negatives(synth):
    ml, split, tables = synth
    rows = np.arange(640)  # 10 full batches of 64 per epoch
    batches = _uniform_stream(split, tables, num_negatives=5, batch_size=64, n=20, rows=rows)
    row_of = _row_of(split, ml)
    epochs = []
    for epoch in (batches[:10], batches[10:]):
        order = np.concatenate([_rows(b, row_of) for b in epoch])
        negatives = np.concatenate([b["negatives"]["movie_id"] for b in epoch])
        np.testing.assert_array_equal(np.sort(order), rows)  # every row once per epoch
        epochs.append(dict(zip(order.tolist(), map(tuple, negatives))))
        assert order.tolist() != rows.tolist()  # shuffled
    order_1 = np.concatenate([_rows(b, row_of) for b in batches[:10]])
    order_2 = np.concatenate([_rows(b, row_of) for b in batches[10:]])
    assert not np.array_equal(order_1, order_2)  # reshuffled every epoch
    # Fresh negatives: no row gets the same 5 negatives twice, no two steps share a draw.
    assert all(epochs[0][row] != epochs[1][row] for row in rows.tolist())
    draws = [tuple(b["negatives"]["movie_id"].ravel()[:20]) for b in batches]
    assert len(set(draws)) == len(draws)


def test_epochs_are_whole_steps_and_start_step_resumes_the_stream(synth):
    """150 rows at batch 64: every epoch is 3 batches (the last short), each row once; a stream
    started at step k is the uninterrupted stream from its k-th batch, negatives included."""
    ml, split, tables = synth
    rows = np.arange(150)

    def stream(start_step, n):
        return _uniform_stream(split, tables, num_negatives=2, batch_size=64, n=n, rows=rows,
                               seed=3, start_step=start_step)

    whole = stream(0, 9)
    assert [len(b["user"]["user_id"]) for b in whole] == [64, 64, 22] * 3
    row_of = _row_of(split, ml)
    for epoch in range(3):
        order = np.concatenate([_rows(b, row_of) for b in whole[3 * epoch:3 * epoch + 3]])
        np.testing.assert_array_equal(np.sort(order), rows)
    for start in (1, 4):  # inside the first epoch, and past an epoch boundary
        for expected, got in zip(whole[start:], stream(start, 9 - start), strict=True):
            tf.nest.map_structure(np.testing.assert_array_equal, expected, got)


def test_training_stream_is_reproducible_under_its_seed(synth):
    _, split, tables = synth
    rows = np.arange(len(split.train))
    sampler = make_sampler("frequency", split.item_counts, frequent_min_count=3)

    def stream(seed):
        return _take(pipeline.training_dataset(tables, rows, sampler, num_negatives=4,
                                               batch_size=32, seed=seed), 3)

    first, again, other = stream(5), stream(5), stream(6)
    for a, b in zip(first, again):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    for key in ("user", "negatives"):
        assert not all(np.array_equal(a[key]["user_id" if key == "user" else "movie_id"],
                                      b[key]["user_id" if key == "user" else "movie_id"])
                       for a, b in zip(first, other)), key


def test_negative_mask_is_false_exactly_where_negative_is_positive(small_catalog):
    ml, split, tables = small_catalog
    rows = np.arange(len(split.train))
    sampler = make_sampler("uniform", split.item_counts)
    batches = _take(pipeline.training_dataset(tables, rows, sampler, num_negatives=8,
                                              batch_size=4, seed=1), 12)
    masks = []
    for batch in batches:
        expected = batch["negatives"]["movie_id"] != batch["positive"]["movie_id"][:, None]
        np.testing.assert_array_equal(batch["negative_mask"], expected)
        assert batch["negative_mask"].dtype == bool
        masks.append(batch["negative_mask"].ravel())
    masks = np.concatenate(masks)
    assert masks.any() and not masks.all()  # with 4 candidate movies, collisions happen
    negatives = np.concatenate([b["negatives"]["movie_id"].ravel() for b in batches])
    assert set(negatives.tolist()) <= {1, 2, 10, 32}  # only movies with training ratings


def test_shared_negatives_shapes_and_mask(small_catalog):
    _, split, tables = small_catalog
    rows = np.arange(len(split.train))
    sampler = make_sampler("inbatch", split.item_counts)
    batches = _take(pipeline.training_dataset(tables, rows, sampler, num_negatives=6,
                                              batch_size=4, seed=0, shared_negatives=True), 6)
    collisions = 0
    for batch in batches:
        b = len(batch["positive"]["movie_id"])
        assert batch["negatives"]["movie_id"].shape == (6,)
        assert batch["negatives"]["genres"].shape == (6,)
        assert batch["negative_mask"].shape == (b, 6)
        np.testing.assert_array_equal(
            batch["negative_mask"],
            batch["negatives"]["movie_id"][None, :] != batch["positive"]["movie_id"][:, None])
        collisions += int((~batch["negative_mask"]).sum())
    assert collisions > 0
    # Without negatives (pure in-batch softmax) there is neither `negatives` nor a mask.
    plain = _take(pipeline.training_dataset(tables, rows, sampler, num_negatives=0,
                                            batch_size=4, seed=0, shared_negatives=True), 1)[0]
    assert "negatives" not in plain and "negative_mask" not in plain


def test_validation_dataset_is_one_ordered_pass_with_fixed_negatives(synth):
    ml, split, tables = synth
    rows = np.arange(5, 105)
    sampler = make_sampler("uniform", split.item_counts)
    ds = pipeline.validation_dataset(tables, rows, sampler, num_negatives=3, batch_size=32,
                                     seed=0)
    first, second = _take(ds, 100), _take(ds, 100)
    assert [len(b["positive"]["movie_id"]) for b in first] == [32, 32, 32, 4]
    row_of = _row_of(split, ml)
    np.testing.assert_array_equal(np.concatenate([_rows(b, row_of) for b in first]), rows)
    for a, b in zip(first, second):
        tf.nest.map_structure(np.testing.assert_array_equal, a, b)


def test_split_validation_is_seeded_disjoint_and_complete():
    fit, val = pipeline.split_validation(1000, 0.1, seed=3)
    assert len(val) == 100 and len(fit) == 900
    assert not set(fit.tolist()) & set(val.tolist())
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val])), np.arange(1000))
    assert np.all(np.diff(fit) > 0) and np.all(np.diff(val) > 0)
    again = pipeline.split_validation(1000, 0.1, seed=3)
    np.testing.assert_array_equal(again[1], val)
    other = pipeline.split_validation(1000, 0.1, seed=4)
    assert not np.array_equal(other[1], val)
    assert not np.array_equal(val, np.arange(100))  # random, not the first rows
    fit0, val0 = pipeline.split_validation(50, 0.0, seed=0)
    assert len(val0) == 0 and len(fit0) == 50


def test_history_gap_stops_earlier_but_never_looks_ahead(synth):
    """With `history_gap`, a row's history ends 0..gap rows before it (within the user): still
    only earlier training movies, still right-aligned and zero-padded."""
    ml, split, _ = synth
    gap = 3
    tables = FeatureTables(ml, split, HISTORY, history_gap=gap)
    batches = _uniform_stream(split, tables, num_negatives=1, batch_size=64, n=6)
    row_of = _row_of(split, ml)
    train = split.train
    movie_ids = ml.items.movie_id.to_numpy()
    gaps = []
    for batch in batches:
        for i, row in enumerate(_rows(batch, row_of)):
            start = split.user_offsets[train.user[row]]
            history = batch["user"]["history"][i]
            windows = {}
            for g in range(gap + 1):
                end = max(row - g, start)
                earlier = movie_ids[train.item.to_numpy()[start:end]][-HISTORY:]
                windows[g] = np.concatenate([np.zeros(HISTORY - len(earlier), np.int64),
                                             earlier])
            matches = [g for g, w in windows.items() if np.array_equal(w, history)]
            assert matches, (row, history, windows)
            if row - start > gap:
                gaps.append(matches[0])
    assert len(set(gaps)) == gap + 1  # every gap 0..3 occurs
    # Without a seed (validation, serving-like features) the history ends right before the row.
    plain = tables.interaction_features(tf.constant([len(train) - 1], tf.int64))
    start = split.user_offsets[train.user.iloc[-1]]
    expected = movie_ids[train.item.to_numpy()[start:len(train) - 1]][-HISTORY:]
    np.testing.assert_array_equal(plain["user"]["history"].numpy()[0, -len(expected):],
                                  expected)


def test_temporal_validation_sees_users_as_of_the_validation_cutoff(synth):
    """Under --validation=temporal a validation row's history is the user's last items
    *before the validation period*, for every validation row of that user; under the other
    validations it runs up to the row."""
    from dssm_tf.config import TrainingConfig

    ml, split, tables = synth
    fit, val = pipeline.validation_split(split, TrainingConfig(validation="temporal",
                                                               validation_share=0.3))
    assert pipeline.validation_history_ends(split, val, "last") is None
    ends = pipeline.validation_history_ends(split, val, "temporal")
    users = split.train.user.to_numpy()
    items = split.train.item.to_numpy()
    keys = ml.item_keys
    stream = pipeline.validation_dataset(tables, val, negatives.make_sampler(
        SamplerConfig(negative_sampler="uniform"), split.item_counts), 0, 64, 0,
        history_ends=ends)
    histories = np.concatenate([b["user"]["history"].numpy() for b in stream])
    checked = 0
    for row, history in zip(val, histories):
        user = users[row]
        before = [r for r in fit if users[r] == user]   # the user's pre-validation items
        expected = [keys[items[r]] for r in before][-HISTORY:]
        got = [k for k in history if k != 0]
        assert got == expected, row
        assert ends[row] <= row
        checked += row > ends[row]   # a later validation row: its own history is frozen too
    assert checked > 0
    np.testing.assert_array_equal(ends[fit], fit)
