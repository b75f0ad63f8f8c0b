"""Atomic file writes: a reader (or a crash) never sees half a file.

The data is written to a temporary file in the destination's folder, flushed
and fsync'ed, then renamed over the destination with os.replace, which is
atomic on POSIX and Windows.  Checkpoints, logs, curves and output images all
go through `atomic_write`, so an interrupted run leaves either the old file or
the new one, never a truncated one.

When a write fails, the error names the destination (not the hidden temporary
file) and, for a full disk or a read-only folder, says so and what to do.  A
process killed hard (kill -9, a power cut) can leave its temporary file behind:
`remove_stale_temporaries` deletes those, matched by their exact name pattern.
`refuse_to_overwrite` is the check commands make before writing where a user's
own file might be.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, BinaryIO

from numpyseg.errors import ConfigError

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

    Raises:
        OSError: the write failed; its `filename` is `path` (or the folder that cannot
            be created) and its `strerror` says what to do (see `_name_the_target`).
            The destination is unchanged and the temporary file is removed.
    """
    path = Path(path)
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

    Raises:
        OSError: naming the destination whose write failed (see `_name_the_target`).
    """
    paths = [Path(p) for p in writers]
    temporaries: list[str] = []
    path = paths[0] if paths else Path(".")
    try:
        for path, write in zip(paths, writers.values()):
            temporaries.append(_write_temporary(path, write))
        for tmp, path in zip(temporaries, paths):
            os.replace(tmp, path)
    except BaseException as error:
        for tmp in temporaries:
            _remove(tmp)
        if isinstance(error, OSError):
            raise _name_the_target(error, path) from None
        raise
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


# ------------------------------------------------------------------ errors

#: errno values of a full disk (ENOSPC) or quota (EDQUOT, absent on Windows).
_DISK_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
#: errno values of a folder one may not write into.
_NOT_WRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


def _is_temporary_of(filename, path: Path) -> bool:
    """Whether `filename` (from an OSError) is a temporary file of `path` (or None)."""
    return filename is None or bool(_temporary_pattern(path.name).match(Path(str(filename)).name))


def _name_the_target(error: OSError, path: Path) -> OSError:
    """An OSError about `path` instead of its hidden temporary file, with what to do.

    Errors about another file (the folder that cannot be created, a file the
    `write` callback reads) keep their own filename.
    """
    filename = str(path) if _is_temporary_of(error.filename, path) else error.filename
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in _DISK_FULL:
        reason = f"{reason}: the disk is full; free some space (or write elsewhere) and run again; the file is unchanged"
    elif error.errno in _NOT_WRITABLE:
        reason = (f"cannot write here ({reason}: a read-only or protected folder): choose a writable "
                  f"folder; the file is unchanged")
    return OSError(error.errno, reason, filename)


# ------------------------------------------------------- leftover temporaries

#: mkstemp's random part: 8 characters from this alphabet (CPython's tempfile).
_RANDOM_PART = "[a-z0-9_]{8}"


def _temporary_pattern(name: str) -> re.Pattern:
    """The names atomic_write gives the temporary files of `name`: .NAME.XXXXXXXX.tmp."""
    return re.compile(rf"\.{re.escape(name)}\.{_RANDOM_PART}\.tmp\Z")


def remove_stale_temporaries(folder: str | os.PathLike, names) -> list[Path]:
    """Delete the temporary files a killed atomic_write of folder/NAME left, for each NAME.

    Only files whose whole name matches `.NAME.XXXXXXXX.tmp` (see `_temporary_pattern`)
    are removed; nothing else in the folder is touched.  Call it only where no other
    process is writing the same files (e.g. when a training run starts in its folder).

    Returns:
        The files removed (files that vanished or cannot be removed are skipped).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    patterns = [_temporary_pattern(name) for name in names]
    removed = []
    for entry in folder.iterdir():
        if any(p.match(entry.name) for p in patterns) and entry.is_file() and not entry.is_symlink():
            try:
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed


# ----------------------------------------------------------------- overwrite

def refuse_to_overwrite(path: str | os.PathLike, option: str, may_replace: Callable[[Path], bool] | None = None,
                        what: str = "an earlier output of this command") -> Path:
    """Check that writing `path` destroys nothing of the user's.

    Args:
        path: the file a command is about to write.
        option: the option that named it (for the message), e.g. '--out'.
        may_replace: called with an existing `path`; True when it is a file this
            command wrote before (which it may replace).  None: never replace.
        what: what `may_replace` accepts, for the message.

    Returns:
        `path` as a Path.

    Raises:
        ConfigError: `path` is a folder, or an existing file `may_replace` rejects.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder: name a file")
    if path.exists() and not (may_replace is not None and may_replace(path)):
        raise ConfigError(f"{option} {path} already exists and is not {what}: choose another {option} "
                          f"or move that file away (numpyseg does not overwrite it)")
    return path


def is_json_with_keys(path: str | os.PathLike, keys) -> bool:
    """Whether `path` holds a JSON object with every one of `keys` (an earlier output
    a command recognises as its own, e.g. evaluate's score file)."""
    import json

    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and all(key in document for key in keys)
