"""The one check of `--out` that `prepare` and `synthetic` make (`dssm_tf.data.outputs`): a new,
empty or own folder passes; a file, or a folder holding anything else, is refused in one line,
by `prepare` before it reads the data."""

from __future__ import annotations

import json

import pytest

from dssm_tf.data import synthetic
from dssm_tf.data.outputs import MANIFEST, PREPARED, RECORDS_FORMAT, Output
from dssm_tf.errors import ConfigError
from tests.conftest import run_command


def _prepared(folder, fmt=RECORDS_FORMAT, extra=()):
    folder.mkdir()
    (folder / "part-00000-of-00001.tfrecord").write_bytes(b"")
    (folder / MANIFEST).write_text(json.dumps(
        {"format": fmt, "shards": [{"file": "part-00000-of-00001.tfrecord"}]}))
    for name in extra:
        (folder / name).write_text("x")
    return folder


@pytest.mark.parametrize("output", [PREPARED, synthetic.SYNTHETIC], ids=["prepared", "synthetic"])
def test_new_empty_and_own_folders_pass_others_are_refused(tmp_path, output: Output):
    output.check(str(tmp_path / "new"))
    (tmp_path / "empty").mkdir()
    output.check(str(tmp_path / "empty"))
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder") as error:
        output.check(str(tmp_path / "a_file"))
    assert error.value.parameter == "out"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match=f"holding other files \\(not {output.what}\\)"):
        output.check(str(notes))


def test_prepared_folders_are_recognised_by_their_manifest(tmp_path):
    PREPARED.check(str(_prepared(tmp_path / "ours")))
    for name, folder in (("other format", _prepared(tmp_path / "other", fmt="x")),
                         ("a file the manifest lists not", _prepared(tmp_path / "more",
                                                                     extra=["notes.txt"]))):
        with pytest.raises(ConfigError, match="holding other files"):
            PREPARED.check(str(folder))
        assert not synthetic.SYNTHETIC.is_ours(str(folder)), name


def test_prepare_refuses_a_foreign_manifest_before_reading_the_data(tmp_path):
    """The command checks --out as write_records does: a folder holding someone else's
    manifest.json is refused before the (here missing) data is looked for."""
    out = _prepared(tmp_path / "other", fmt="someone.else")
    proc = run_command("prepare", f"--out={out}", f"--data_dir={tmp_path / 'no-data'}",
                       tmp_path=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: --out: {out} is a folder holding other files (not examples "
                        f"written by dssm_tf.prepare): give a new or empty folder")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "part-00000-of-00001.tfrecord"]
