"""How every command runs: absl flags, the contract's exit codes, warnings on stderr.

`run(main)` is `absl.app.run(main)` with the contract's error handling: a bad flag, bad input
(`InputError`) or bad setting (`ConfigError`, shown as the flag it names) ends the command with
exit status 2 and one line on stderr; library warnings (the ``dssm_tf`` logger) print as
``warning: ...`` lines.

Usage::

    if __name__ == "__main__":
        run(main)
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from dssm_tf.errors import ConfigError, InputError
from dssm_tf.io import write_json


def _parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """absl's default parser exits 1 on a bad flag; the contract says 2, with one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def error_line(error: InputError) -> str:
    """The one stderr line of an error; a ConfigError names its flag."""
    if isinstance(error, ConfigError):
        return f"error: --{error.parameter}: {error.message}"
    return f"error: {error}"


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
        if len(argv) > 1:
            sys.stderr.write(f"error: unexpected positional arguments: {' '.join(argv[1:])}\n")
            sys.exit(2)
        try:
            main(argv)
        except InputError as error:
            sys.stderr.write(error_line(error) + "\n")
            sys.exit(2)

    app.run(guarded, flags_parser=_parse_flags_or_exit)


def report(result: dict, output: str | None) -> None:
    """Print `result` as JSON and, if `output` is set, write it there atomically."""
    print(json.dumps(result, indent=2, sort_keys=True))
    if output:
        write_json(output, result)
