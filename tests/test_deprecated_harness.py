"""The harness's old paths (dssm_tf 0.2) still work for one release, with a deprecation warning
naming the new command: `python -m dssm_tf.benchmark|scaling|speed` and
`import dssm_tf.cli.benchmark|scaling|speed|children`. Without the source tree's
`benchmarks/` (an installed wheel) the commands say so in one line, exit status 2."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import pytest

import dssm_tf.cli
from tests.conftest import REPO_ROOT, run_module

HARNESS = ("benchmark", "scaling", "speed", "children")


@pytest.mark.parametrize("name, args, said", [
    # Each a bad flag the moved command itself refuses, before any data or TensorFlow.
    ("benchmark", ["--configs=nope"], "--configs: "),
    ("scaling", ["--sizes=abc"], "--sizes: "),
    ("speed", ["--output={tmp}"], "--output: "),
])
def test_old_command_warns_then_runs_the_moved_one(tmp_path, name, args, said):
    args = [arg.format(tmp=tmp_path) for arg in args]
    proc = run_module(f"dssm_tf.{name}", *args, f"--out={tmp_path / 'out'}",
                      tmp_path=tmp_path, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 2, proc.stderr[-3000:]
    assert lines[0].startswith(f"warning: python -m dssm_tf.{name} is deprecated")
    assert f"python -m benchmarks.{name}" in lines[0]
    assert lines[1].startswith(f"error: {said}")  # from benchmarks.<name>'s own checks


@pytest.mark.parametrize("name", HARNESS)
def test_old_module_path_is_the_moved_module(name):
    old = f"dssm_tf.cli.{name}"
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=rf"benchmarks\.{name}") as caught:
        __import__(old)  # a C function: the warning names this file, as an import would
    [warning] = [w for w in caught if old in str(w.message)]
    assert warning.filename == __file__
    moved = importlib.import_module(f"benchmarks.{name}")
    assert sys.modules[old] is moved and getattr(dssm_tf.cli, name) is moved


def test_without_the_source_tree_the_old_paths_say_where_it_is(tmp_path):
    """A copy of the package alone, as a wheel installs it."""
    site = tmp_path / "site"
    shutil.copytree(f"{REPO_ROOT}/dssm_tf", site / "dssm_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    proc = run_module("dssm_tf.speed", "--helpshort", tmp_path=tmp_path, cwd=str(tmp_path),
                      pythonpath=str(site), timeout=120)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: python -m dssm_tf.speed moved out of the installed package")
    assert "benchmarks/" in line and "python -m benchmarks.speed" in line
    proc = subprocess.run([sys.executable, "-c", "import dssm_tf.cli.scaling"],
                          cwd=str(tmp_path), env={"PYTHONPATH": str(site), "PATH": ""},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "ModuleNotFoundError: dssm_tf.cli.scaling moved to benchmarks.scaling")
