"""File writing that never leaves half a file, and checksums.

Usage::

    write_json("runs/bce/metrics.json", {"recall@50": 0.14})
    atomic_write("plot.png", lambda tmp: figure.savefig(tmp, format="png"))
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp_path)` into a temp file beside `path`, then rename it to `path`: readers see
    the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temp file only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    atomic_write(path, write)


def write_json(path: str, payload: dict) -> None:
    """Write `payload` as indented, key-sorted JSON atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def md5(path: str) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
