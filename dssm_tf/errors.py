"""The error types of dssm_tf: one for bad input, one for a bad setting.

Library code raises them; only the command layer (`dssm_tf.cli.app.run`) turns them into the
contract's exit status 2 with one line on stderr. A `ConfigError` names the *parameter* (a
config field, e.g. ``batch_size``); the command layer shows it as the flag (``--batch_size``),
so no error text is ever parsed to find out which flag was at fault.

Usage::

    raise InputError(f"{path}:{line}: expected an integer rating, got 'x'")
    raise ConfigError("frequent_min_count", "no item has that many training interactions")
    raise InputError(f"{path}: cannot parse ({one_line(error)})")   # another library's error
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad data, files or exports. The message is one line naming the file (and line)."""


class ConfigError(InputError):
    """A setting that cannot work. `parameter` is the config field (= flag name) at fault."""

    def __init__(self, parameter: str, message: str):
        self.parameter = parameter
        self.message = message
        super().__init__(f"{parameter}: {message}")


def one_line(error: BaseException) -> str:
    """The first line of another library's error message (its type name if it has none), to
    quote inside an InputError's one line."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
