"""Atomic file writes: a reader (or a crash) never sees half a file.

The data is written to a temporary file in the destination's folder, flushed
and fsync'ed, then renamed over the destination with os.replace, which is
atomic on POSIX and Windows.  Checkpoints, logs, curves and output images all
go through `atomic_write`, so an interrupted run leaves either the old file or
the new one, never a truncated one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, BinaryIO

# The process umask can only be read by setting it; done once, at import.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _write_temporary(path: Path, write: Callable[[BinaryIO], None]) -> str:
    """Fill a new temporary file next to `path` with `write(f)`, flushed and fsync'ed; returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes the file private (0600); use the umask as open() would
            os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _remove(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], *, durable: bool = False) -> Path:
    """Call `write(f)` on a temporary binary file, then rename it to `path`.

    Args:
        path: destination; parent folders are created.
        write: fills the open file.
        durable: also fsync the folder, so the rename itself survives a power cut
            (checkpoints).

    Returns:
        The destination path.
    """
    return atomic_write_all({path: write}, durable=durable)[0]


def atomic_write_all(writers: dict, *, durable: bool = False) -> list[Path]:
    """Write several files all or nothing: every one into a temporary file, then rename them all.

    Any error while writing (a full disk, an encoder failing) happens before the first
    rename, and removes every temporary file: no destination is touched.  The renames
    that follow do not allocate space and are atomic one by one.

    Args:
        writers: {destination path: write(f) callable filling the open binary file}.
        durable: also fsync the folders after the renames (see `atomic_write`).

    Returns:
        The destination paths, in the order given.
    """
    paths = [Path(p) for p in writers]
    temporaries: list[str] = []
    try:
        for path, write in zip(paths, writers.values()):
            temporaries.append(_write_temporary(path, write))
    except BaseException:
        for tmp in temporaries:
            _remove(tmp)
        raise
    for tmp, path in zip(temporaries, paths):
        os.replace(tmp, path)
    if durable:
        for folder in dict.fromkeys(path.parent for path in paths):
            _fsync_folder(folder)
    return paths


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
