"""Progress bars for long work (loading, itemCF, evaluation, data generation): tqdm's, with
rate and ETA, on a terminal only.

The bar goes to stderr, and only when stderr is a terminal and the command is not asked to be
quiet (`set_enabled(False)`, the commands' ``--verbose=false``): logs, pipes and tests get no
bar characters.

Usage::

    with progress(total=len(users), what="evaluating", unit="users") as bar:
        for block in blocks:
            ...
            bar.update(len(block))
"""

from __future__ import annotations

import sys

from tqdm import tqdm

_enabled = True


def set_enabled(enabled: bool) -> None:
    """Turn every bar of this process on (the default, on a terminal) or off."""
    global _enabled
    _enabled = bool(enabled)


def progress(total: int | None, what: str, unit: str = "it") -> tqdm:
    """A tqdm bar over `total` units (None: unknown), shown only on a terminal."""
    shown = _enabled and sys.stderr.isatty()
    return tqdm(total=total, desc=what, unit=unit, unit_scale=True, disable=not shown,
                file=sys.stderr, leave=False, dynamic_ncols=True)
