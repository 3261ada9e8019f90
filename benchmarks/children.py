"""Child processes of the measuring commands (`benchmark`, `scaling`): each job runs in its
own process, so its peak memory is its own (the kernel's ``ru_maxrss`` from `os.wait4`) and a
crash or an out-of-memory kill ends one job, not the whole table.

Usage::

    done = run_measured([sys.executable, "-m", "dssm_tf.train", ...], stdout=log, stderr=log)
    done.returncode, done.peak_rss_bytes, done.wall_seconds
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import dssm_tf

# The folder holding the dssm_tf package: children import this very copy of it.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(dssm_tf.__file__)))
# The source tree holding this harness and `configs/`: children import `benchmarks` from it.
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def environment() -> dict:
    """This process's environment, with `PACKAGE_PARENT` and `SOURCE_TREE` first on the
    child's PYTHONPATH."""
    env = dict(os.environ)
    first = list(dict.fromkeys([PACKAGE_PARENT, SOURCE_TREE]))  # once each, in this order
    env["PYTHONPATH"] = os.pathsep.join(
        first + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@dataclasses.dataclass
class Finished:
    """How a child ended: its exit status (negative: killed by that signal), its standard
    output when it was captured, its peak resident memory and its wall time."""

    returncode: int
    stdout: str | None
    peak_rss_bytes: int
    wall_seconds: float


def run_measured(command: list[str], stdout=None, stderr=None,
                 capture_stdout: bool = False) -> Finished:
    """Run `command` to its end (killed if this process is interrupted meanwhile)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE if capture_stdout else stdout,
                            stderr=stderr, stdin=subprocess.DEVNULL, env=environment(),
                            text=True)
    try:
        out = proc.stdout.read() if capture_stdout else None
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    return Finished(returncode=os.waitstatus_to_exitcode(status), stdout=out,
                    peak_rss_bytes=usage.ru_maxrss * 1024,
                    wall_seconds=time.perf_counter() - start)
