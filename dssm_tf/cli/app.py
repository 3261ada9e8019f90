"""How every command runs: absl flags, the contract's exit codes, warnings on stderr.

`run(main)` is `absl.app.run(main)` with the contract's error handling, so no traceback reaches
a user: a bad flag, bad input (`InputError`), a bad setting (`ConfigError`, shown as the flag it
names) or an operating-system error (a full disk, a file it may not read; also when TensorFlow
meets it) ends the command with exit status 2 and one line on stderr saying what and where;
anything else is a bug, reported in one line with exit status 1 (the traceback only with
``--verbosity``). Library warnings (the ``dssm_tf`` logger) print as ``warning: ...`` lines.

Usage::

    if __name__ == "__main__":
        run(main)
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from dssm_tf import progress, runtime
from dssm_tf.errors import ConfigError, InputError
from dssm_tf.io import os_error_in, os_error_line, write_json


def _parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """absl's default parser exits 1 on a bad flag; the contract says 2, with one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def error_line(error: BaseException) -> tuple[str, int]:
    """(the one stderr line, the exit status) of an error that ends a command."""
    if isinstance(error, ConfigError):
        return f"error: --{error.parameter}: {error.message}", 2
    if isinstance(error, InputError):
        return f"error: {error}", 2
    if isinstance(error, OSError):
        return f"error: {os_error_line(error)}", 2
    message = str(getattr(error, "message", error)).strip()
    cause = os_error_in(message) if type(error).__module__.startswith("tensorflow") else None
    if cause is not None:  # TensorFlow reports operating-system errors as its own types
        return f"error: {os_error_line(cause)}", 2
    first = message.splitlines()[0] if message else ""
    return (f"error: internal error, please report it: {type(error).__name__}: {first} "
            f"(--verbosity=1 shows the traceback)"), 1


class _WarningLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"{record.levelname.lower()}: {record.getMessage()}\n")


def _show_library_warnings() -> None:
    logger = logging.getLogger("dssm_tf")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
    logger.propagate = False  # not twice through absl's handler
    logger.setLevel(logging.WARNING)


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)` with the contract's exit codes: 2 and one stderr line on bad input."""

    def guarded(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:  # TensorFlow's INFO lines drown the output
            absl_logging.set_verbosity(absl_logging.WARNING)
        _show_library_warnings()
        if "verbose" in flags.FLAGS:  # --verbose=false: no progress bars either
            progress.set_enabled(flags.FLAGS.verbose)
        if len(argv) > 1:
            sys.stderr.write(f"error: unexpected positional arguments: {' '.join(argv[1:])}\n")
            sys.exit(2)
        try:
            main(argv)
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            sys.exit(130)
        except Exception as error:  # noqa: BLE001  (the contract: one line, never a traceback)
            line, status = error_line(error)
            if status == 1 and flags.FLAGS["verbosity"].present:
                traceback.print_exc()
            sys.stderr.write(line + "\n")
            sys.exit(status)

    app.run(guarded, flags_parser=_parse_flags_or_exit)


def start_tensorflow() -> None:
    """Start TensorFlow quietly (its C++ start-up lines only with --verbosity): commands call
    this after their checks, right before they need TensorFlow."""
    runtime.start_tensorflow(show_logs=flags.FLAGS["verbosity"].present)


def report(result: dict, output: str | None) -> None:
    """Print `result` as JSON and, if `output` is set, write it there atomically."""
    print(json.dumps(result, indent=2, sort_keys=True))
    if output:
        write_json(output, result)
