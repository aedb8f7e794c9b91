"""Atomic file writing, used for every file major2minor writes.

Every file is written to a temporary file in the same directory, flushed, fsync'ed and renamed over the
target, so a crash leaves either the old or the new file, never a truncated one.  The file gets the mode
the process umask implies (``0666 & ~umask``, as ``open`` would give it), not the 0600 of the temporary
file.  A full disk is reported naming the file and what was kept.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    """The process umask, read without changing it where /proc says it (setting it is process-wide)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)  # the most restrictive value while it is being read
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _disk_full(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the mode open() would
                os.fchmod(fh.fileno(), 0o666 & ~_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise _disk_full(path, exc) from exc
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _disk_full(path: Path, exc: OSError) -> OSError:
    """``exc`` itself, or for a full disk (or quota) one naming the file, what was kept and the fix: the bare
    "[Errno 28] No space left on device" names neither."""
    if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return exc
    kept = f"the previous {path.name} is kept unchanged" if path.exists() else f"{path.name} was not written"
    return OSError(
        exc.errno,
        f"{exc.strerror} while writing {path} ({kept}; every file is written whole or not at all). Free space "
        "on that disk (or give another directory) and run the same command again (m2m train: with --resume, "
        "which continues from the last checkpoint written).",
    )


def atomic_write_text(path: PathLike, text: str) -> None:
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates: bytes the locale could not decode (a path, usually)
        bad = text[max(exc.start - 30, 0) : exc.end + 10]
        raise ValueError(
            f"cannot write {path}: its text holds characters that are not valid Unicode ({bad!r}): a non-ASCII "
            f"path or value given under a locale whose encoding ({sys.getfilesystemencoding()}) cannot decode it. "
            "Run under a UTF-8 locale (e.g. LC_ALL=C.UTF-8, or PYTHONUTF8=1), or use ASCII names."
        ) from None
    atomic_write_bytes(path, data)


def json_text(obj: Any) -> str:
    """The text :func:`atomic_write_json` writes for ``obj`` (indented JSON, arrays and numpy values as lists)."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n"


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)
