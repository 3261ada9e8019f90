"""Runs the measurement harness (`benchmarks/`, beside `dssm_tf/` in the source tree) and the
deprecated `dssm_tf` paths that lead to it, as subprocesses from the repository's root.

Usage::

    proc = run_module("benchmarks.scaling", "--out=DIR", tmp_path=tmp_path)
    proc.returncode, proc.stderr
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT, command_env


def run_module(module: str, *args: str, tmp_path, timeout: float = 600, cwd: str = REPO_ROOT,
               pythonpath: str = REPO_ROOT) -> subprocess.CompletedProcess:
    """`python -m <module> args...` from `cwd`, in `command_env(tmp_path)` with `pythonpath`."""
    env = dict(command_env(tmp_path), PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
