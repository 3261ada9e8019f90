"""The deprecated paths of the measurement harness, which moved out of the library (issue 22)
into the source tree's `benchmarks/` folder. Kept for one release (dssm_tf 0.2.x), then gone.

`python -m dssm_tf.benchmark`, `dssm_tf.scaling` and `dssm_tf.speed` still run, after a
``warning:`` line naming the new command; `import dssm_tf.cli.benchmark` (`.scaling`,
`.speed`, `.children`) still gives the moved module. Both also raise a `DeprecationWarning`.
An installed wheel holds no `benchmarks/`: the commands then say so in one line (exit 2), the
imports raise `ModuleNotFoundError`.

Usage (the old modules are these shims)::

    alias(__name__, "benchmark")             # in dssm_tf/cli/benchmark.py
    if __name__ == "__main__":               # in dssm_tf/benchmark.py
        run_moved("dssm_tf.benchmark", "benchmark")
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings

from dssm_tf.cli import app

PACKAGE = "benchmarks"
# A source checkout: the folder holding dssm_tf/ also holds benchmarks/.
SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def harness(name: str) -> types.ModuleType | None:
    """`benchmarks.<name>`, from the source tree beside this dssm_tf when it is not on the
    path already; None when there is none (an installed wheel)."""
    if not os.path.isfile(os.path.join(SOURCE_TREE, PACKAGE, name + ".py")):
        return None
    if PACKAGE not in sys.modules and SOURCE_TREE not in sys.path:
        sys.path.insert(0, SOURCE_TREE)  # e.g. an editable install used from another folder
    return importlib.import_module(f"{PACKAGE}.{name}")


def _notice(old: str, new: str) -> str:
    return (f"{old} is deprecated and goes in the next release: the measurement harness "
            f"moved to the source tree's {PACKAGE}/, {new}")


def alias(old: str, name: str) -> None:
    """Make the module `old` (being imported) the moved `benchmarks.<name>`."""
    moved = harness(name)
    if moved is None:
        raise ModuleNotFoundError(f"{old} moved to {PACKAGE}.{name}, in dssm_tf's source tree "
                                  f"only (not in the installed package)", name=old)
    # stacklevel 3: the code importing `old` (the import machinery's frames are skipped).
    warnings.warn(_notice(old, f"import {PACKAGE}.{name} instead"), DeprecationWarning,
                  stacklevel=3)
    sys.modules[old] = moved  # the import statement returns what sys.modules holds


def run_moved(old: str, name: str) -> None:
    """`python -m <old>`: run `benchmarks.<name>` with the same arguments, after a warning
    line; without a source tree, one error line and exit status 2."""
    moved = harness(name)
    if moved is None:
        sys.stderr.write(f"error: python -m {old} moved out of the installed package into "
                         f"{PACKAGE}/ of dssm_tf's source tree: run `python -m {PACKAGE}.{name}` "
                         f"from a checkout\n")
        sys.exit(2)
    notice = _notice(f"python -m {old}", f"run `python -m {PACKAGE}.{name}` from its root")
    sys.stderr.write(f"warning: {notice}\n")  # the contract's form of a warning
    # Attributed to this module, not __main__: hidden unless asked for (-W), not shown twice.
    warnings.warn(notice, DeprecationWarning, stacklevel=1)
    app.run(moved.main)
