"""Settings of sequence training derived from the data, for those left at 0 ("derive").

A sequence model trained on a new data set should not need hand-tuning of the three settings
whose right value depends most on the data's shape: how much history a window holds, how many
users a batch holds, and how many epochs to run. With ``--examples=sequences``, each of
``--history_length``, ``--batch_size`` and ``--epochs`` set to 0 is derived here from the
training sequences' lengths and count (nothing else of the data, so the choice is the same for
any seed, and a resumed run derives the same):

- history_length: the 90th percentile of the users' sequence lengths, rounded up to a multiple
  of 8, within [8, 200] (MovieLens-1M: 200; 9 items a user: 16). Longer windows cost time
  on every position and help few users.
- batch_size: about `TARGET_POSITIONS` target positions a batch (users x their mean number of
  positions), within [8, 1024]: MovieLens-1M's ~115 positions a user give 16 users, short
  sequences of 8 give 256. A softmax step learns from positions, not from users.
- epochs: enough epochs for about `TARGET_TOTAL_POSITIONS` positions in all, within [1, 50]:
  small data sets get many epochs (early stopping on validation still ends them), large ones
  one (MovieLens-1M: 8 epochs of ~650,000 positions; MovieLens-25M's shape holds over 10M
  positions an epoch). The total is set by the time budget of MovieLens-1M on 2 cores
  (BUILD_NOTES.md, issue 21).

Usage::

    run, message = derive(run, split.user_offsets)
    print(message)   # "sequence settings derived from the data: history_length=200 (...)..."
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dssm_tf.config import RunConfig

DERIVE = 0                          # a setting left at 0 is derived from the data
TARGET_POSITIONS = 2048             # target positions a batch
TARGET_TOTAL_POSITIONS = 5_000_000  # target positions of a whole run
LENGTH_QUANTILE = 0.9
LENGTH_RANGE = (8, 200)
BATCH_RANGE = (8, 1024)
EPOCH_RANGE = (1, 50)
BUCKET = 8                          # window widths are multiples of this (`sequences.BUCKET`)


def _clip(value: float, bounds: tuple[int, int]) -> int:
    return int(min(max(value, bounds[0]), bounds[1]))


def derive(run: RunConfig, user_offsets: np.ndarray) -> tuple[RunConfig, str]:
    """`run` with its derived sequence settings filled in, and a line saying what was chosen
    (empty when nothing was derived). `user_offsets` are the training rows' user boundaries
    (`Split.user_offsets`); a user with fewer than 2 training items gives no window.

    >>> from dssm_tf.config import TowerConfig, TrainingConfig
    >>> run = RunConfig(tower=TowerConfig(history_length=0),
    ...                 training=TrainingConfig(examples="sequences", batch_size=0, epochs=0))
    >>> offsets = np.cumsum([0] + [10] * 1000)     # 1,000 users of 10 items
    >>> derived, message = derive(run, offsets)
    >>> derived.tower.history_length, derived.training.batch_size, derived.training.epochs
    (16, 228, 50)
    """
    training, tower = run.training, run.tower
    wanted = {"history_length": tower.history_length == DERIVE,
              "batch_size": training.batch_size == DERIVE, "epochs": training.epochs == DERIVE}
    if training.examples != "sequences" or not any(wanted.values()):
        return run, ""
    lengths = np.diff(np.asarray(user_offsets, np.int64))
    lengths = lengths[lengths >= 2]
    if not len(lengths):
        lengths = np.array([2])
    chosen, why = {}, {}
    length = tower.history_length
    if wanted["history_length"]:
        quantile = float(np.quantile(lengths, LENGTH_QUANTILE))
        length = _clip(math.ceil(quantile / BUCKET) * BUCKET, LENGTH_RANGE)
        chosen["history_length"] = length
        why["history_length"] = f"90% of users have <= {quantile:.0f} items"
    positions = np.minimum(lengths - 1, length)     # target positions of a user's window
    mean_positions = float(positions.mean())
    batch = training.batch_size
    if wanted["batch_size"]:
        batch = _clip(round(TARGET_POSITIONS / mean_positions), BATCH_RANGE)
        chosen["batch_size"] = batch
        why["batch_size"] = f"~{TARGET_POSITIONS} positions a batch at {mean_positions:.1f} a user"
    if wanted["epochs"]:
        per_epoch = int(positions.sum())
        chosen["epochs"] = _clip(math.ceil(TARGET_TOTAL_POSITIONS / per_epoch), EPOCH_RANGE)
        why["epochs"] = f"~{TARGET_TOTAL_POSITIONS:,} positions in all at {per_epoch:,} an epoch"
    tower_fields = {"history_length"} & set(chosen)
    run = dataclasses.replace(
        run, tower=dataclasses.replace(tower, **{k: chosen[k] for k in tower_fields}),
        training=dataclasses.replace(training, **{k: v for k, v in chosen.items()
                                                  if k not in tower_fields}))
    message = "sequence settings derived from the data: " + ", ".join(
        f"{name}={value} ({why[name]})" for name, value in chosen.items())
    return run, message
