"""The one exception type for bad input, and the CLI wrapper that turns it into exit code 2."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from absl import app, flags, logging


class InputError(ValueError):
    """Bad data or flags. The message is one line naming the file/line or flag at fault."""


def _parse_flags_or_exit(argv: Sequence[str]) -> list[str]:
    """absl's default parser exits 1 on a bad flag; the contract says 2, with one clear line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(2)


def run(main: Callable[[list[str]], None]) -> None:
    """`app.run(main)` with the contract's exit codes: 2 and one stderr line on InputError."""

    def guarded(argv: list[str]) -> None:
        if not flags.FLAGS["verbosity"].present:  # TensorFlow's INFO lines drown the output
            logging.set_verbosity(logging.WARNING)
        if len(argv) > 1:
            sys.stderr.write(f"error: unexpected positional arguments: {' '.join(argv[1:])}\n")
            sys.exit(2)
        try:
            main(argv)
        except InputError as error:
            sys.stderr.write(f"error: {error}\n")
            sys.exit(2)

    app.run(guarded, flags_parser=_parse_flags_or_exit)
