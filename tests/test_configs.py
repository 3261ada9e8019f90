"""The shipped `configs/*.flags` files: each parses into a valid run configuration through the
command layer (`dssm_tf.cli.flags.run_config`), so a renamed flag or a value outside its choice
list breaks a test rather than a user's first run."""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest

from dssm_tf.cli import flags as cli_flags
from dssm_tf.data import sequence_settings
from tests.conftest import REPO_ROOT

CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "*.flags")))
SEQUENCE = os.path.join(REPO_ROOT, "configs", "sequence.flags")
SCALABLE = os.path.join(REPO_ROOT, "configs", "sequence_scalable.flags")


@pytest.fixture
def parse_flags():
    """Parse a command line into the global flags; restore the defaults afterwards."""
    def parse(*args):
        cli_flags.FLAGS.unparse_flags()
        cli_flags.FLAGS(["test", *args])
        return cli_flags.run_config()
    yield parse
    cli_flags.FLAGS.unparse_flags()


def test_every_config_is_found():
    assert len(CONFIGS) >= 10 and SEQUENCE in CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_parses_and_validates(path, parse_flags):
    run = parse_flags(f"--flagfile={path}")
    if run.training.examples == "sequences":   # 0: derived from the data, then positive
        run, _ = sequence_settings.derive(run, np.cumsum([0] + [30] * 100))
    assert run.training.batch_size > 0 and run.training.epochs > 0
    assert run.tower.history_length > 0 or run.training.examples == "interactions"


def test_sequence_config_is_the_sequence_model(parse_flags):
    run = parse_flags(f"--flagfile={SEQUENCE}")
    assert (run.training.examples, run.tower.user_encoder) == ("sequences", "attention")
    assert run.tower.share_item_embeddings and not run.tower.user_key_embedding
    # A command-line flag after the flagfile overrides it (how the README tunes a config).
    run = parse_flags(f"--flagfile={SEQUENCE}", "--epochs=3")
    assert run.training.epochs == 3


def test_the_sequence_config_is_the_scalable_one_with_time(parse_flags):
    """sequence.flags repeats sequence_scalable.flags and adds only the history's times."""
    timed, scalable = parse_flags(f"--flagfile={SEQUENCE}"), parse_flags(f"--flagfile={SCALABLE}")
    assert timed.tower.history_time and timed.tower.attention_time_bias
    assert not timed.tower.request_gap              # no input depends on the held-out item
    assert not scalable.tower.history_time           # order-only data can use it
    assert timed.flat() == dict(scalable.flat(), history_time=True, attention_time_bias=True)
