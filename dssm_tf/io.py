"""Files: writing that never leaves half a file (or half a folder), the one-line report of an
operating-system error, output checks made before any work, an exclusive lock, checksums.

Usage::

    check_writable_file("out/metrics.json", "output")   # ConfigError("output") if it cannot be
    write_json("runs/bce/metrics.json", {"recall@50": 0.14})
    atomic_write("plot.png", lambda tmp: figure.savefig(tmp, format="png"))
    with exclusive_lock("runs/bce/.lock", "model_dir"):  # ConfigError naming the holder's pid
        ...
    with staged_folder("/data/out") as tmp:   # renamed to /data/out only when complete
        write_files_into(tmp)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from typing import Callable

from dssm_tf.errors import ConfigError, InputError

# What to do about an operating-system error, by errno.
_ADVICE = {
    errno.ENOSPC: "free some space there or write elsewhere",
    errno.EDQUOT: "free some space there or write elsewhere",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "it is on a read-only file system: write elsewhere",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder: give a file name",
}


def os_error_line(error: OSError, path: str | None = None) -> str:
    """One line naming the path, the reason and what to do: ``PATH: No space left on device
    (free some space there or write elsewhere)``."""
    where = path or error.filename or ""
    reason = error.strerror or str(error).splitlines()[0]
    advice = _ADVICE.get(error.errno)
    return f"{where}: {reason}" + (f" ({advice})" if advice else "")


def as_input_error(error: OSError, path: str | None = None) -> InputError:
    return InputError(os_error_line(error, path))


def check_writable_file(path: str, parameter: str) -> None:
    """ConfigError(`parameter`) when `path` cannot become a file: it is a folder, or its folder
    cannot be created or written. Checked before any work, so nothing is half done."""
    if os.path.isdir(path):
        raise ConfigError(parameter, f"{path} is a folder: give a file name")
    check_writable_folder(os.path.dirname(os.path.abspath(path)), parameter)


def check_writable_folder(path: str, parameter: str) -> None:
    """ConfigError(`parameter`) when `path` cannot be (or become) a folder this process
    writes into: it is a file, or a part of it is, or permissions forbid it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(parameter, f"{path} is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(parameter, f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(parameter, f"{path}: {existing} is not writable (check its "
                                     f"permissions)")


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp_path)` into a temp file beside `path`, then rename it to `path`: readers see
    the old file or the new one, never half of one."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a folder (give a file name)")
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-",
                                   suffix=os.path.splitext(path)[1])
        os.close(fd)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is for the temp file only
        os.replace(tmp, path)
    except OSError as error:
        raise as_input_error(error, path) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


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


@contextlib.contextmanager
def exclusive_lock(path: str, parameter: str):
    """Hold an exclusive lock on file `path` (created with its folder), released on exit.

    The lock is the kernel's (`flock`), so a process that dies, even by ``kill -9``, releases
    it: a leftover lock file from a dead run never blocks the next one. A second process gets
    ConfigError(`parameter`) naming the holder's pid, written into the file.
    """
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        handle = open(path, "a+")
    except OSError as error:
        raise as_input_error(error, path) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ConfigError(parameter, f"{os.path.dirname(path)} is in use by another run "
                                         f"(pid {holder}); wait for it to finish, or use "
                                         f"another --{parameter}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


PARTIAL, OLD = ".partial-", ".old-"   # staging names beside a folder: .<name><kind><pid>-*


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists (owned by anyone): its staging folders are not stale."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_folder(out: str, parameter: str, is_ours: Callable[[str], bool],
                        what: str) -> None:
    """ConfigError(`parameter`) unless `out` is new, an empty folder or a folder `is_ours`
    recognises (`what` wrote it, so it may be replaced), in a folder this process can write."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(parameter, f"{out} is a file, not a folder: give a new folder")
    if os.path.isdir(out) and os.listdir(out) and not is_ours(out):
        raise ConfigError(parameter, f"{out} is a folder holding other files (not {what}): "
                                     f"give a new or empty folder")
    check_writable_folder(os.path.dirname(os.path.abspath(out)), parameter)


def clear_stale(out: str) -> list[str]:
    """Remove the staging folders beside `out` that dead processes left; returns their paths."""
    parent, name = os.path.split(os.path.abspath(out))
    pattern = re.compile(re.escape(f".{name}") + f"(?:{re.escape(PARTIAL)}|{re.escape(OLD)})"
                         + r"(\d+)-.*")
    removed = []
    for entry in os.listdir(parent):
        found = pattern.fullmatch(entry)
        if found and not process_alive(int(found.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed.append(os.path.join(parent, entry))
    return removed


def _publish(tmp: str, out: str) -> None:
    """Rename the finished `tmp` to `out`, replacing an empty folder or earlier contents."""
    if os.path.isdir(out) and os.listdir(out):
        parent, name = os.path.split(os.path.abspath(out))
        old = tempfile.mkdtemp(dir=parent, prefix=f".{name}{OLD}{os.getpid()}-")
        os.rename(out, os.path.join(old, "previous"))
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)   # replaces an empty folder


@contextlib.contextmanager
def staged_folder(out: str):
    """Yield a staging folder ``.<name>.partial-<pid>-*`` beside `out`, renamed to `out` when
    the block ends normally (replacing an empty folder or what was there) and removed when it
    raises, so `out` never holds half a result. Leftovers of dead processes are cleared first.
    """
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    clear_stale(out)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}{PARTIAL}{os.getpid()}-")
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)   # mkdtemp's 0700 is for the staging name only
        _publish(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
