"""A synthetic data set in the MovieLens-25M layout, at any size, with planted structure.

What: `write_dataset` writes ``ratings.csv`` (``userId,movieId,rating,timestamp``, sorted by
user, then movie, as GroupLens does), ``movies.csv`` (``movieId,title,genres``, UTF-8, titles
quoted where needed) and a ``README.txt`` saying what it is, into a folder that
``--dataset=movielens-25m --data_dir=DIR`` (or 20m/32m) reads. `PRESETS` give the shape of
the real ML-25M (162,541 users, 59,047 movies, 25,000,095 ratings) and an ML-1M-sized set
(6,040 users, 3,706 movies, 1,000,209 ratings).

Why: the real releases are not always downloadable (offline machines, CI), a model's figures
on random data mean nothing, and the scale problems of 25M rows (memory, time) should be
testable without the real files. So the data has the real data's shape and a structure whose
recovery can be measured:

- **Activity**: every user has at least `min_per_user` (20) interactions, the rest log-normal
  (ML-25M's median ~70, maximum in the tens of thousands); totals are exact.
- **Clusters**: items fall into `clusters` groups of varied size; a cluster has one or two
  signature genres most of its items carry (genres correlate with clusters). Each user has a
  home cluster: a share `home_share` (0.8) of their interactions are drawn from it, the rest
  from all clusters by the clusters' popularity.
- **Walks**: the items of a cluster are ordered, and the item at place p has appeal
  (p + 1)^-`zipf`. In each cluster a user visits, they walk *forward* through the cluster's
  cumulative appeal, from a uniform start, in exponential steps (mean `step` / cluster size):
  each step lands on the item whose share of the appeal holds the point, or the next one not
  yet seen. So a user's next item is near their last one in the order (sequential
  dependence: usually the very next one among the wide head items, a few or a few dozen
  places on in the tail), head items are met by most walks and tail items by few: item
  popularity is Zipf-like. `step` sets the difficulty: with the default 3 on the ML-1M-sized
  preset, leave-last-one-out hit@50 is ~0.13 for popularity and ~0.48 for itemCF (real ML-1M:
  0.14 and 0.22); larger steps make the next item harder to guess.
- **Time**: each user's interactions have strictly increasing timestamps in walk order,
  spread over a log-normal span that starts anywhere in ``[start, end]`` (1995-2019 as
  ML-25M); no time lies in the future, and no (user, item) pair repeats, so there are no
  exact duplicates.
- **Ratings**: 0.5..5.0; higher in the home cluster, with a per-user and per-item bias; 60%
  of the users use half stars, the rest whole stars.

Movie ids are a random increasing sample of 1..3.5 x items, assigned to the ordered items in
random order, so ids carry no structure. The same `Spec` (seed included) gives the same bytes.

It streams: the per-user and per-item arrays are computed once (a few MB at 25M), then blocks
of about `BLOCK_ROWS` interactions are generated with numpy and written with pyarrow's CSV
writer, so memory stays bounded (~0.5 GB at 25M) whatever the size. The folder is written under
a hidden temporary name beside the target and renamed into place when complete: a killed run
leaves no half data set at the target (its leftover is removed by the next run).

Usage::

    spec = dataclasses.replace(PRESETS["movielens-1m-size"], seed=3)
    summary = write_dataset("data/synthetic-1m", spec, command="python -m dssm_tf.synthetic ...")
    plan = make_plan(spec)          # the planted structure: plan.home, plan.item_cluster, ...
    plan.cluster_of(movie_ids)      # the cluster of each movieId
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import time

import numpy as np
import pyarrow as pa
from pyarrow import csv as arrow_csv

from dssm_tf.data.outputs import Output
from dssm_tf.errors import ConfigError
from dssm_tf.io import staged_folder
from dssm_tf.progress import progress

RATINGS, MOVIES, README = "ratings.csv", "movies.csv", "README.txt"
FILES = (RATINGS, MOVIES, README)
RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
MOVIES_HEADER = ("movieId", "title", "genres")
# The first line of README.txt: how a folder is recognised as one this module wrote.
MARKER = "Synthetic data set written by dssm_tf.synthetic (dssm_tf.data.synthetic)."
BLOCK_ROWS = 1 << 20       # interactions generated and written at once

# ML-25M's genres (movies.csv), in the alphabetical order GroupLens lists them in.
GENRES = ("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
          "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
          "Sci-Fi", "Thriller", "War", "Western")
NO_GENRES = "(no genres listed)"
# Chance of each genre besides a cluster's signature genres (Drama and Comedy are common).
EXTRA_GENRE = np.array([0.05 if g not in ("Drama", "Comedy") else 0.15 for g in GENRES])
RATING_TEXT = pa.array([f"{r / 2:.1f}" for r in range(1, 11)])   # "0.5" .. "5.0"

ML25M_START, ML25M_END = 789652009, 1574327703     # ML-25M's first and last rating
ML1M_START, ML1M_END = 956703932, 1046454590       # ML-1M's


@dataclasses.dataclass(frozen=True)
class Spec:
    """What to generate. Sizes are exact; the rest shapes the data (see the module doc)."""

    users: int
    items: int
    interactions: int
    seed: int = 0
    clusters: int | None = None     # None: items / (2 x mean interactions per user), 2..50
    min_per_user: int = 20          # lowered to interactions // users when that is smaller
    activity_sigma: float = 1.3     # log-normal spread of the interactions above the minimum
    home_share: float = 0.8         # share of a user's interactions drawn from home
    zipf: float = 1.3               # appeal of a cluster's item at place p: (p + 1)^-zipf
    step: float = 3.0               # mean step of a walk, in appeal / cluster size
    start: int = ML25M_START        # timestamps lie in [start, end] (Unix seconds)
    end: int = ML25M_END

    @property
    def n_clusters(self) -> int:
        if self.clusters is not None:
            return self.clusters
        mean = self.interactions / max(self.users, 1)
        return int(np.clip(round(self.items / (2 * mean)), 2, 50)) if self.items > 1 else 1

    def validate(self) -> None:
        """ConfigError naming the parameter (= the command's flag) when the sizes cannot work."""
        for name in ("users", "items", "interactions"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(name, f"expected a positive integer, got {value!r}")
        if self.interactions < self.users:
            raise ConfigError("interactions", f"{self.interactions}: fewer than the "
                                              f"{self.users} users (each has at least one)")
        if self.interactions > self.users * self.items:
            raise ConfigError("interactions", f"{self.interactions}: more than users x items "
                                              f"= {self.users * self.items} (a user rates an "
                                              f"item at most once)")
        if self.clusters is not None and not 1 <= self.clusters <= self.items:
            raise ConfigError("clusters", f"expected 1..{self.items} (--items), got "
                                          f"{self.clusters}")
        if not 0 <= self.start < self.end <= time.time():
            raise ConfigError("start", "expected 0 <= start < end <= now (Unix seconds)")
        if self.end - self.start <= self.items:
            raise ConfigError("start", "the time span must exceed --items seconds (a user's "
                                       "times are distinct)")


PRESETS: dict[str, Spec] = {
    # ML-25M: 162,541 users, 59,047 rated movies, 25,000,095 ratings; median 71 per user.
    # Its popularity is steeper than ML-1M's: zipf 1.5.
    "movielens-25m": Spec(users=162_541, items=59_047, interactions=25_000_095,
                          activity_sigma=1.39, zipf=1.5),
    # ML-1M's size (6,040 users, 3,706 rated movies, 1,000,209 ratings; median 96) and time
    # span, in the CSV layout.
    "movielens-1m-size": Spec(users=6_040, items=3_706, interactions=1_000_209,
                              activity_sigma=1.14, start=ML1M_START, end=ML1M_END),
}


@dataclasses.dataclass
class Plan:
    """The planted structure: everything per cluster, item and user (rows 0..n-1; user row u
    is userId u + 1, item row i is `movie_ids[i]`)."""

    spec: Spec
    sizes: np.ndarray          # items per cluster
    offsets: np.ndarray        # first ordered index of each cluster
    popularity: np.ndarray     # clusters' share of the interactions drawn outside home
    appeal: np.ndarray         # per ordered index: cluster + cumulative appeal before it
    signature: np.ndarray      # [clusters, 2] genre indices
    movie_ids: np.ndarray      # per item row, increasing
    ordered_item: np.ndarray   # ordered index (cluster offset + position) -> item row
    item_cluster: np.ndarray   # per item row
    item_position: np.ndarray  # per item row: its place in its cluster's order
    item_bias: np.ndarray      # per item row: rating bias
    genres: list[str]          # per item row
    titles: list[str]          # per item row
    home: np.ndarray           # per user row: home cluster
    counts: np.ndarray         # per user row: interactions
    half_stars: np.ndarray     # per user row: rates in half stars
    user_bias: np.ndarray      # per user row: rating bias
    first: np.ndarray          # per user row: time of the span's start
    duration: np.ndarray       # per user row: span in seconds (>= counts)

    def cluster_of(self, movie_ids) -> np.ndarray:
        """The cluster of each movieId (all must be this plan's)."""
        return self.item_cluster[np.searchsorted(self.movie_ids, np.asarray(movie_ids))]

    def position_of(self, movie_ids) -> np.ndarray:
        """The place of each movieId in its cluster's order."""
        return self.item_position[np.searchsorted(self.movie_ids, np.asarray(movie_ids))]


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `write_dataset` wrote."""

    folder: str
    users: int
    items: int
    rated_items: int
    interactions: int
    clusters: int
    top10_share: float    # share of the interactions on the 10% most popular items
    seconds: float


# --- the plan: per cluster, item and user ---------------------------------------------------

def _split_total(total: int, weights: np.ndarray, minimum: int = 1) -> np.ndarray:
    """`total` split in proportion to `weights`, each part >= `minimum`, summing exactly."""
    spare = total - minimum * len(weights)
    raw = spare * weights / weights.sum()
    parts = np.floor(raw).astype(np.int64)
    left = spare - int(parts.sum())
    parts[np.argsort(parts - raw, kind="stable")[:left]] += 1   # largest remainders
    return parts + minimum


def _activity(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    """Interactions per user: a floor plus log-normal extras capped at 60% of the items (or
    what the total needs), summing exactly to `spec.interactions`."""
    users, total = spec.users, spec.interactions
    low = min(spec.min_per_user, total // users)
    cap = min(spec.items, max(int(0.6 * spec.items), -(-total // users)))
    spare, room = total - low * users, cap - low
    weights = rng.lognormal(0.0, spec.activity_sigma, users)
    extra = np.zeros(users)
    free = np.ones(users, bool)
    while free.any():   # water-filling: proportional shares, those above the cap held at it
        share = (spare - extra[~free].sum()) * weights * free / weights[free].sum()
        over = free & (share > room)
        if not over.any():
            extra[free] = share[free]
            break
        extra[over] = room
        free &= ~over
    counts = np.minimum(np.floor(extra + 1e-9).astype(np.int64), room)
    left = spare - int(counts.sum())
    fraction = np.where(counts < room, extra - counts, -np.inf)
    counts[np.argsort(-fraction, kind="stable")[:left]] += 1
    assert counts.sum() == spare and counts.max(initial=0) <= room
    return counts + low


def _genres(item_cluster: np.ndarray, signature: np.ndarray,
            rng: np.random.Generator) -> list[str]:
    """Per item: its cluster's first signature genre (90%), second (60%), a few others."""
    n = len(item_cluster)
    chosen = rng.random((n, len(GENRES))) < EXTRA_GENRE
    rows = np.arange(n)
    chosen[rows, signature[item_cluster, 0]] |= rng.random(n) < 0.9
    chosen[rows, signature[item_cluster, 1]] |= rng.random(n) < 0.6
    empty = ~chosen.any(axis=1)
    chosen[rows[empty], signature[item_cluster[empty], 0]] = True
    names = np.array(GENRES, dtype=object)
    genres = ["|".join(names[row]) for row in chosen]
    for i in np.flatnonzero(rng.random(n) < 0.005):   # as in ML-25M, a few have none
        genres[i] = NO_GENRES
    return genres


def _titles(movie_ids: np.ndarray, rng: np.random.Generator) -> list[str]:
    """'Synthetic Film 123 (1994)'; one in ten 'Synthetic Film 123, The (1994)', which needs
    CSV quoting as real titles do. Years lean recent, as in MovieLens."""
    years = 1900 + np.floor(119 * rng.beta(4.0, 1.3, len(movie_ids))).astype(int)
    the = rng.random(len(movie_ids)) < 0.1
    return [f"Synthetic Film {m}{', The' if t else ''} ({y})"
            for m, y, t in zip(movie_ids.tolist(), years.tolist(), the.tolist())]


def make_plan(spec: Spec) -> Plan:
    """The planted structure of `spec` (deterministic in `spec.seed`): cheap, O(users + items)."""
    spec.validate()
    rng = np.random.default_rng([spec.seed, 1])
    k = spec.n_clusters
    sizes = _split_total(spec.items, rng.lognormal(0.0, 0.5, k))
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    popularity = sizes * rng.lognormal(0.0, 0.6, k)
    popularity /= popularity.sum()
    first_genre = rng.permutation(len(GENRES))[np.arange(k) % len(GENRES)]
    second_genre = (first_genre + rng.integers(1, len(GENRES), k)) % len(GENRES)
    signature = np.stack([first_genre, second_genre], axis=1)

    item_cluster_ordered = np.repeat(np.arange(k), sizes)
    item_position_ordered = np.arange(spec.items) - np.repeat(offsets, sizes)
    weight = (item_position_ordered + 1.0) ** -spec.zipf
    cumulative = np.cumsum(weight) - weight
    cumulative -= np.repeat(cumulative[offsets], sizes)
    totals = np.add.reduceat(weight, offsets)
    appeal = item_cluster_ordered + cumulative / np.repeat(totals, sizes)
    ordered_item = rng.permutation(spec.items)            # ordered index -> item row
    item_cluster = np.empty(spec.items, np.int64)
    item_position = np.empty(spec.items, np.int64)
    item_cluster[ordered_item] = item_cluster_ordered
    item_position[ordered_item] = item_position_ordered
    id_range = max(spec.items, int(3.5 * spec.items))
    movie_ids = np.sort(rng.choice(id_range, spec.items, replace=False)) + 1
    genres = _genres(item_cluster, signature, rng)
    titles = _titles(movie_ids, rng)
    item_bias = rng.normal(0.0, 0.35, spec.items)

    home = rng.choice(k, spec.users, p=popularity)
    counts = _activity(spec, rng)
    half_stars = rng.random(spec.users) < 0.6
    user_bias = rng.normal(0.0, 0.4, spec.users)
    span = spec.end - spec.start
    # A user's span: log-normal around two months, at least a minute per interaction.
    duration = np.exp(rng.normal(np.log(60 * 86400), 2.5, spec.users))
    duration = np.clip(np.maximum(duration, 60.0 * counts), counts, span - 1).astype(np.int64)
    duration = np.maximum(duration, counts)
    first = spec.start + np.floor(rng.random(spec.users) * (span - duration)).astype(np.int64)
    return Plan(spec=spec, sizes=sizes, offsets=offsets, popularity=popularity, appeal=appeal,
                signature=signature, movie_ids=movie_ids, ordered_item=ordered_item,
                item_cluster=item_cluster, item_position=item_position, item_bias=item_bias,
                genres=genres, titles=titles, home=home, counts=counts,
                half_stars=half_stars, user_bias=user_bias, first=first, duration=duration)


# --- blocks of interactions -------------------------------------------------------------------

def _cap_quotas(quotas: np.ndarray, sizes: np.ndarray, popularity: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
    """Move what exceeds a cluster's size to clusters with room (a user rates an item once)."""
    for _ in range(64):
        over = np.maximum(quotas - sizes, 0)
        excess = over.sum(axis=1)
        if not excess.any():
            return quotas
        quotas -= over
        busy = np.flatnonzero(excess)
        weights = popularity * (quotas[busy] < sizes)
        weights /= weights.sum(axis=1, keepdims=True)
        quotas[busy] += rng.multinomial(excess[busy], weights)
    for user in np.flatnonzero((quotas > sizes).any(axis=1)):   # rare: fill largest rooms
        excess = int(np.maximum(quotas[user] - sizes, 0).sum())
        quotas[user] = np.minimum(quotas[user], sizes)
        for cluster in np.argsort(quotas[user] - sizes, kind="stable"):
            take = min(excess, int(sizes[cluster] - quotas[user, cluster]))
            quotas[user, cluster] += take
            excess -= take
    return quotas


def _segment_starts(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def generate_block(plan: Plan, first_user: int, end_user: int, block: int) -> dict:
    """Interactions of user rows `first_user:end_user` as arrays ``userId``, ``movieId``,
    ``rating`` (index 0..9 of 0.5..5.0), ``timestamp``, ``cluster`` (of the item), sorted by
    user, then movie. Deterministic in (`plan.spec.seed`, `block`)."""
    spec = plan.spec
    rng = np.random.default_rng([spec.seed, 2, block])
    counts = plan.counts[first_user:end_user]
    home = plan.home[first_user:end_user]
    n_users, k = len(counts), len(plan.sizes)
    mix = np.broadcast_to((1 - spec.home_share) * plan.popularity, (n_users, k)).copy()
    mix[np.arange(n_users), home] += spec.home_share
    quotas = _cap_quotas(rng.multinomial(counts, mix), plan.sizes, plan.popularity, rng)

    # One walk per (user, cluster) with a quota, rows grouped by walk, in walk order. A walk
    # moves forward in its cluster's cumulative appeal (0..1): steps ~ exponential with mean
    # `step` / cluster size, from a uniform start; the item is the one whose appeal interval
    # holds the point. So head items (wide intervals) are seen by most walks, tail items by
    # few, and consecutive items of a walk are close in the cluster's order.
    walk_user, walk_cluster = np.nonzero(quotas)
    walk_length = quotas[walk_user, walk_cluster]
    walk_start = _segment_starts(walk_length)
    rows = int(walk_length.sum())
    row_walk = np.repeat(np.arange(len(walk_length)), walk_length)
    rank = np.arange(rows) - walk_start[row_walk]
    size = plan.sizes[walk_cluster]
    steps = rng.exponential(spec.step, rows) / size[row_walk]
    steps[walk_start] = 0.0
    travel = np.cumsum(steps)
    travel -= travel[walk_start][row_walk]                 # appeal travelled since the start
    span = travel[walk_start + walk_length - 1]
    shrink = np.where(span > 0.999, 0.999 / np.maximum(span, 1e-12), 1.0)
    span *= shrink
    origin = rng.random(len(walk_length)) * (1.0 - span)
    point = walk_cluster[row_walk] + origin[row_walk] + travel * shrink[row_walk]
    ordered = np.searchsorted(plan.appeal, point, side="right") - 1
    position = ordered - plan.offsets[walk_cluster][row_walk]
    # Distinct items in order: at least one place after the previous one, and room left for
    # the rest of the walk (a running maximum of position - rank within each walk).
    latest = (size - walk_length)[row_walk] + rank
    lag = np.minimum(position, latest) - rank
    fence = 2 * int(plan.sizes.max()) + 2                  # keeps walks apart in the maximum
    lag = np.maximum.accumulate(lag + row_walk * fence) - row_walk * fence
    position = lag + rank
    cluster = walk_cluster[row_walk]
    item = plan.ordered_item[plan.offsets[cluster] + position]
    user = walk_user[row_walk]

    # Time: a random interleaving of a user's walks that keeps each walk in order.
    keys = rng.random(rows)
    keys = keys[np.lexsort((keys, row_walk))]               # ascending within each walk
    order = np.lexsort((keys, user))                        # a user's rows in time order
    user, item, cluster = user[order], item[order], cluster[order]
    user_start = _segment_starts(counts)
    exponential = rng.exponential(1.0, rows)
    total_exp = np.add.reduceat(exponential, user_start) if rows else exponential
    duration = plan.duration[first_user:end_user]
    scale = (duration - counts) / np.maximum(total_exp, 1e-12)
    gaps = 1 + np.floor(exponential * scale[user]).astype(np.int64)  # >= 1 s: strictly after
    stamps = np.cumsum(gaps)
    stamps -= (stamps[user_start] - gaps[user_start])[user]
    stamps += plan.first[first_user:end_user][user] - 1

    users = first_user + user
    score = (3.55 + np.where(cluster == home[user], 0.25, -0.45) + plan.user_bias[users]
             + plan.item_bias[item] + rng.normal(0.0, 0.85, rows))
    whole = ~plan.half_stars[users]
    doubled = np.where(whole, 2 * np.clip(np.rint(score), 1, 5), np.clip(np.rint(2 * score),
                                                                         1, 10))
    movie = plan.movie_ids[item]
    order = np.lexsort((movie, users))                      # the release's order
    return {"userId": users[order] + 1, "movieId": movie[order],
            "rating": doubled[order].astype(np.int64) - 1, "timestamp": stamps[order],
            "cluster": cluster[order]}


def user_blocks(counts: np.ndarray, rows: int = BLOCK_ROWS) -> list[tuple[int, int]]:
    """(first, end) user rows of consecutive blocks of about `rows` interactions each."""
    ends = np.searchsorted(np.cumsum(counts), np.arange(rows, int(counts.sum()), rows),
                           side="left") + 1
    bounds = np.unique(np.concatenate([[0], ends, [len(counts)]]))
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


# --- writing ----------------------------------------------------------------------------------

def _write_movies(path: str, plan: Plan) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MOVIES_HEADER)
        writer.writerows(zip(plan.movie_ids.tolist(), plan.titles, plan.genres))


def _write_block(f, arrays: dict) -> None:
    table = pa.table({"userId": arrays["userId"], "movieId": arrays["movieId"],
                      "rating": RATING_TEXT.take(pa.array(arrays["rating"])),
                      "timestamp": arrays["timestamp"]})
    arrow_csv.write_csv(table, f, arrow_csv.WriteOptions(include_header=False,
                                                         quoting_style="none"))


def _date(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).strftime(
        "%Y-%m-%d")


def readme_text(plan: Plan, summary: Summary, command: str | None) -> str:
    spec = plan.spec
    low = min(spec.min_per_user, spec.interactions // spec.users)
    return f"""{MARKER}
This is NOT MovieLens: every user, movie, rating and time here is generated. Figures
measured on it say how well a model finds the planted structure below, nothing about real
users.

Made by:  {command or 'dssm_tf.data.synthetic.write_dataset'}
Seed:     {spec.seed} (the same command and seed write identical files)
Users:    {summary.users:,}
Movies:   {summary.items:,} ({summary.rated_items:,} rated)
Ratings:  {summary.interactions:,} ({summary.top10_share:.0%} of them on the 10% most rated movies)
Clusters: {summary.clusters}
Times:    {_date(spec.start)} .. {_date(spec.end)} (UTC)
Layout:   MovieLens-25M's: ratings.csv (userId,movieId,rating,timestamp; sorted by user, then
          movie) and movies.csv (movieId,title,genres). Read it with
          python -m dssm_tf.train --dataset=movielens-25m --data_dir=<this folder> ...

Planted structure:
- Movies fall into the clusters above, of varied size. Each cluster has one or two
  signature genres most of its movies carry, so genres correlate with clusters.
- Each user has a home cluster: {spec.home_share:.0%} of their ratings are drawn from it, the rest
  from all clusters by their popularity.
- The movies of a cluster are ordered; the one at place p has appeal (p + 1)^-{spec.zipf:g}.
  Users walk forward through each cluster they visit, in steps through the cluster's
  cumulative appeal (mean {spec.step:g} / cluster size): their next movie there is the one
  holding the new point (or the next one not yet seen), so a user's next movie tends to be
  near their last one (sequential dependence), and popularity is Zipf-like.
- A user's timestamps increase strictly along their walks; each user's span is log-normal
  (about two months typically) and starts anywhere in the period above.
- Every user has at least {low} ratings, the rest log-normal (sigma {spec.activity_sigma:g}).
- Ratings (0.5..5.0; 60% of the users use half stars) are higher in the home cluster,
  with a per-user and a per-movie bias. No (user, movie) pair occurs twice.
"""


def is_synthetic(folder: str) -> bool:
    """Whether `folder` holds only a data set this module wrote (so it may be replaced)."""
    try:
        names = set(os.listdir(folder))
        with open(os.path.join(folder, README), encoding="utf-8") as f:
            first = f.readline().rstrip("\n")
    except OSError:
        return False
    return first == MARKER and names <= set(FILES)


SYNTHETIC = Output("a data set written by dssm_tf.synthetic", is_synthetic)


def write_dataset(out: str, spec: Spec, command: str | None = None) -> Summary:
    """Write the data set of `spec` into folder `out` (see the module doc); returns a Summary.

    `out` must be new, empty, or a data set written here before (replaced); else
    ConfigError("out"). Everything is written into ``.<name>.partial-<pid>-*`` beside `out`
    and renamed when complete, so `out` never holds half a data set. `command` is recorded in
    README.txt.
    """
    started = time.perf_counter()
    spec.validate()
    out = os.path.abspath(out)
    SYNTHETIC.check(out)
    with staged_folder(out) as tmp:
        plan = make_plan(spec)
        _write_movies(os.path.join(tmp, MOVIES), plan)
        popularity = np.zeros(spec.items, np.int64)
        blocks = user_blocks(plan.counts, BLOCK_ROWS)
        with open(os.path.join(tmp, RATINGS), "wb") as f, \
                progress(total=spec.interactions, what="generating",
                         unit="interactions") as bar:
            f.write(RATINGS_HEADER.encode())
            for block, (first_user, end_user) in enumerate(blocks):
                arrays = generate_block(plan, first_user, end_user, block)
                popularity += np.bincount(np.searchsorted(plan.movie_ids, arrays["movieId"]),
                                          minlength=spec.items)
                _write_block(f, arrays)
                bar.update(len(arrays["userId"]))
        top = np.sort(popularity)[::-1][:max(1, spec.items // 10)]
        summary = Summary(folder=out, users=spec.users, items=spec.items,
                          rated_items=int((popularity > 0).sum()),
                          interactions=int(popularity.sum()), clusters=len(plan.sizes),
                          top10_share=float(top.sum() / max(popularity.sum(), 1)),
                          seconds=0.0)
        with open(os.path.join(tmp, README), "w", encoding="utf-8") as f:
            f.write(readme_text(plan, summary, command))
    return dataclasses.replace(summary, seconds=round(time.perf_counter() - started, 2))
