"""Files: writing that never leaves half a file (or half a folder), the one-line report of an
operating-system error, output checks made before any work, an exclusive lock, checksums.

Whatever is written in more than one step is written under a hidden staging name,
``.<name>.partial-<pid>-*``, and renamed into place in one step; whatever is removed is first
renamed out of the way, to ``.<name>.old-<pid>-*``, and then deleted. A process killed at any
point leaves only such hidden folders, which no reader takes for a result and the next writer
removes once their pid is dead (`clear_stale`).

Usage::

    check_writable_file("out/metrics.json", "output")   # ConfigError("output") if it cannot be
    write_json("runs/bce/metrics.json", {"recall@50": 0.14})
    atomic_write("plot.png", lambda tmp: figure.savefig(tmp, format="png"))
    with exclusive_lock("runs/bce/.lock", "model_dir"):  # ConfigError naming the holder's pid
        ...
    with staged_folder("/data/out") as tmp:   # renamed to /data/out only when complete
        write_files_into(tmp)
    publish_version("runs/bce/export", write_files_into, keep=3, is_complete=complete)
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
import time
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


# Operating-system errors TensorFlow reports as its own types: their messages tell the cause.
_CAUSES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
           "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS,
           "Not a directory": errno.ENOTDIR, "is not a directory": errno.ENOTDIR}
# TensorFlow's wrapping of an op's message: ``{{function_node ...}} TEXT [Op:SaveV2]``.
_TF_WRAPPING = re.compile(r"^\s*(?:\{\{[^}]*\}\}\s*)?(.*?)(?:\s*\[Op:[^\]]*\])?\s*$")


def os_error_line(error: OSError, path: str | None = None) -> str:
    """One line naming the path, the reason and what to do: ``PATH: No space left on device
    (free some space there or write elsewhere)``."""
    where = path or error.filename or ""
    reason = error.strerror or str(error).splitlines()[0]
    advice = _ADVICE.get(error.errno)
    return (f"{where}: " if where else "") + reason + (f" ({advice})" if advice else "")


def os_error_in(message: str) -> OSError | None:
    """The operating-system error a message of another library (TensorFlow's) reports, with
    the file it names, or None: ``{{function_node __wrapped__SaveV2...}} /m/v.data; No space
    left on device [Op:SaveV2]`` is ``OSError(ENOSPC, "No space left on device", "/m/v.data")``.
    """
    lines = str(message).strip().splitlines()
    text = _TF_WRAPPING.fullmatch(lines[0]).group(1) if lines else ""
    for cause, number in _CAUSES.items():
        if cause in text:
            where, _, said = text.rpartition("; ")
            return OSError(number, os.strerror(number),
                           where if cause in said and where else None)
    return None


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
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()   # a full disk shows here, in an error that names no file
        except OSError as error:
            raise as_input_error(error, path) from None
        yield
    finally:
        with contextlib.suppress(OSError):  # a full disk may refuse the buffer once more
            handle.close()  # closing releases the lock


PARTIAL, OLD = ".partial-", ".old-"   # staging names: .<name><kind><pid>-<random>


def staging(parent: str, name: str, kind: str = PARTIAL) -> str:
    """A new empty folder ``.<name><kind><pid>-<random>`` in `parent`, for what becomes (or
    was) `name`: hidden, so no reader takes it for a result, and removed by `clear_stale` once
    this process is dead."""
    return tempfile.mkdtemp(dir=parent, prefix=f".{name}{kind}{os.getpid()}-")


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


def clear_stale(parent: str, name: str) -> list[str]:
    """Remove the staging folders of `name` in `parent` that dead processes left (half
    written, or half removed); returns their paths."""
    pattern = re.compile(re.escape(f".{name}") + f"(?:{re.escape(PARTIAL)}|{re.escape(OLD)})"
                         + r"(\d+)-.*")
    removed = []
    for entry in os.listdir(parent):
        found = pattern.fullmatch(entry)
        if found and not process_alive(int(found.group(1))):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            removed.append(os.path.join(parent, entry))
    return removed


def discard(path: str, name: str) -> None:
    """Remove folder `path`: renamed in one step into a staging folder of `name` beside it,
    then deleted, so a kill never leaves half of it under its own name."""
    trash = staging(os.path.dirname(path), name, OLD)
    os.rename(path, os.path.join(trash, "removed"))
    shutil.rmtree(trash, ignore_errors=True)


def _readable(tmp: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp's 0700 is for the staging name only


def _publish(tmp: str, out: str) -> None:
    """Rename the finished `tmp` to `out`, replacing an empty folder or earlier contents."""
    if os.path.isdir(out) and os.listdir(out):
        parent, name = os.path.split(os.path.abspath(out))
        old = staging(parent, name, OLD)
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
    clear_stale(parent, name)
    tmp = staging(parent, name)
    try:
        yield tmp
        _readable(tmp)
        _publish(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


VERSION = "version"   # the staging name of a numbered version: .version.partial-<pid>-*


def numbered(root: str) -> list[int]:
    """The numbers of the numbered folders under `root` (complete or not), ascending."""
    if not os.path.isdir(root):
        return []
    return sorted(int(entry) for entry in os.listdir(root)
                  if entry.isdigit() and os.path.isdir(os.path.join(root, entry)))


def publish_version(root: str, write: Callable[[str], None], keep: int,
                    is_complete: Callable[[str], bool]) -> str:
    """`write(tmp)` a new version into a staging folder under `root`, rename it to the next
    number (seconds since 1970, above every numbered folder) and keep the newest `keep`
    complete versions; returns the new version's folder.

    Every other numbered folder is removed with `discard`, incomplete ones too (what an older
    writer killed mid-removal left), and staging folders of dead processes first. So a kill at
    any step leaves the versions whole or hidden, and after the next call exactly `keep`
    complete ones remain (fewer if there were fewer).
    """
    os.makedirs(root, exist_ok=True)
    clear_stale(root, VERSION)
    tmp = staging(root, VERSION)
    try:
        write(tmp)
        _readable(tmp)
        version = max(int(time.time()), max(numbered(root), default=0) + 1)
        while True:
            target = os.path.join(root, str(version))
            try:
                os.rename(tmp, target)  # fails if `target` exists: never replaces a version
                break
            except OSError:
                if not os.path.exists(target):
                    raise
                version += 1
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    kept = [n for n in numbered(root)
            if n == version or is_complete(os.path.join(root, str(n)))][-keep:]
    for number in numbered(root):
        if number not in kept:
            discard(os.path.join(root, str(number)), VERSION)
    return target
