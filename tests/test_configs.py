"""The shipped `configs/*.flags` files: each parses into a valid run configuration through the
command layer (`dssm_tf.cli.flags.run_config`), so a renamed flag or a value outside its choice
list breaks a test rather than a user's first run; and the flags, made from the config fields,
keep the fields' defaults and parse each flagfile as before."""

from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os

import numpy as np
import pytest

from dssm_tf.cli import flags as cli_flags
from dssm_tf.config import IndexConfig, RunConfig
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


def test_the_sequence_config_is_the_scalable_one_with_time_and_the_refit(parse_flags):
    """sequence.flags repeats sequence_scalable.flags and adds only the history's times, and
    trains as the refit (every interaction, the derived epochs, the last weights) of a narrower
    model (the time budget), where the scalable config early-stops on the validation hit rate
    for data of unknown shape."""
    timed, scalable = parse_flags(f"--flagfile={SEQUENCE}"), parse_flags(f"--flagfile={SCALABLE}")
    assert timed.tower.history_time and timed.tower.attention_time_bias
    assert not timed.tower.request_gap              # no input depends on the held-out item
    assert not scalable.tower.history_time           # order-only data can use it
    assert (scalable.training.validation, scalable.training.early_stopping_metric) == \
        ("last", "recall")
    assert timed.flat() == dict(scalable.flat(), history_time=True, attention_time_bias=True,
                                validation="none", early_stopping_metric="loss",
                                embedding_dim=112)


# --- one default per setting: the flags are made from the config fields ------------------------

SNAPSHOT = os.path.join(REPO_ROOT, "tests", "configs_snapshot.json")
NO_FLAGFILE = "(no flagfile)"
COMMANDS = ("train", "evaluate", "itemcf", "recommend", "prepare", "synthetic")


def _fields_by_name():
    return {field.name: field for cls in cli_flags.CONFIG_CLASSES
            for field in dataclasses.fields(cls)}


def test_no_flags_give_the_dataclass_defaults(parse_flags):
    """A flag default that differs from its field's would make a run of the command line differ
    from a run of the library: the configs the flags give unset are the dataclasses' own."""
    run = parse_flags()
    assert run.flat() == RunConfig().flat()
    assert cli_flags.index_config() == IndexConfig()


def test_every_config_field_has_its_flag_and_its_metadata():
    """Each field with a help text is a flag of its type, default, choices and bounds; data_dir
    is a flag defined by hand; ef_construction is no flag (build_index's default is used)."""
    flags = cli_flags.FLAGS
    without_flag = {name for name in _fields_by_name() if name not in flags}
    assert without_flag == {"ef_construction"}
    for name, field in _fields_by_name().items():
        if "help" not in field.metadata:
            continue
        flag, meta = flags[name], field.metadata
        assert flag.help.endswith(meta["help"]), name   # enums prefix their choices
        default = field.default
        if isinstance(default, tuple):
            default = [str(value) for value in default]
        assert flag.default == default, name
        if "choices" in meta:
            assert flag.parser.enum_values == list(meta["choices"]), name
        for key in ("lower", "upper"):
            assert getattr(flag.parser, f"{key}_bound", None) == meta.get(key), (name, key)


def test_every_commands_flags_are_defined_in_the_flags_module():
    """cli/flags.py says every flag is defined there: the commands define none of their own."""
    for command in COMMANDS:
        importlib.import_module(f"dssm_tf.cli.{command}")
    by_module = cli_flags.FLAGS.flags_by_module_dict()
    assert not [module for module in by_module
                if module.startswith("dssm_tf.cli.") and module.split(".")[-1] in COMMANDS]
    assert {"preset", "clusters", "shards"} <= {flag.name for flag in
                                                by_module["dssm_tf.cli.flags"]}


def _snapshot():
    with open(SNAPSHOT, encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("name", sorted(_snapshot()))
def test_flagfiles_parse_to_the_recorded_configs(name, parse_flags):
    """Each configs/*.flags (and no flagfile) gives the RunConfig and IndexConfig recorded in
    tests/configs_snapshot.json before the flags were made from the config fields. A deliberate
    change of a config file or default re-records it: for each file, the JSON of
    ``{"run": asdict(run_config()), "index": asdict(index_config())}``."""
    recorded = _snapshot()[name]
    path = os.path.join(REPO_ROOT, "configs", name)
    run = parse_flags(*(() if name == NO_FLAGFILE else (f"--flagfile={path}",)))
    got = {"run": dataclasses.asdict(run), "index": dataclasses.asdict(cli_flags.index_config())}
    assert json.loads(json.dumps(got)) == recorded


def test_the_snapshot_covers_every_config():
    """A new config file is recorded too (see above), so that its parse is kept."""
    assert set(_snapshot()) == {os.path.basename(path) for path in CONFIGS} | {NO_FLAGFILE}
