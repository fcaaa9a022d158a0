"""Private files for the ledger: directories 0700 and files 0600, whatever the umask.

Records carry costs, models and task names that are nobody else's business. ``mkdir(mode=0o700)``
is filtered by the umask, and under a umask of 0277 or 0377 that leaves a directory its owner
cannot write into; so the modes are set explicitly after creation. An existing file readable by
others is tightened to 0600 when it is ours (and the change logged).
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from .._log import log

__all__ = [
    "append_private",
    "make_private_dirs",
    "make_private_file",
    "open_locked",
    "read_all",
    "write_all",
    "write_private",
]


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700 (existing ones are left alone)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # another process won the race
            continue
        os.chmod(path, 0o700)  # the umask filtered mkdir's mode


def make_private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 unless it exists; tighten an existing one of ours to 0600.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode, so they follow.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        _tighten(path)
        return
    try:
        os.fchmod(fd, 0o600)  # a restrictive umask must not leave us unable to write
    finally:
        os.close(fd)


def _tighten(path: Path) -> None:
    for each in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            info = os.stat(each)
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if not mode & 0o077 or info.st_uid != os.geteuid():
            continue
        try:
            os.chmod(each, mode & 0o700)
        except OSError:
            continue
        log.warning(
            "ledger.permissions_tightened", path=str(each), old_mode=oct(mode), new_mode=oct(mode & 0o700),
            detail="the ledger was readable by other users; it holds costs, models and task names",
        )  # fmt: skip


def append_private(path: Path, text: str) -> None:
    """Append ``text`` to ``path``, creating it (and its directories) private; one write per call."""
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8", "backslashreplace"))
    finally:
        os.close(fd)


def write_private(path: Path, text: str) -> None:
    """Replace ``path``'s content with ``text``; a new file is 0600, an existing one keeps its mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def open_locked(path: Path, *, create: bool) -> int | None:
    """``path`` opened for appending under an exclusive ``flock``; None when another open file
    holds the lock (its owner lives), or, without ``create``, when the file is gone or was replaced.

    The lock lives as long as the file stays open anywhere (a forked child's inherited copy too:
    close it, never unlock it) and ends with the process, so a file found unlocked is an orphan.
    """
    if create:
        make_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if create:
            os.fchmod(fd, 0o600)
        elif os.fstat(fd).st_ino != os.stat(path).st_ino:  # replaced since it was opened: not this one
            raise FileNotFoundError(path)
    except (BlockingIOError, FileNotFoundError):
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, text: str) -> None:
    """Append ``text`` to ``fd`` (a short write is continued, never left half done)."""
    data = memoryview(text.encode("utf-8", "backslashreplace"))
    while data:
        data = data[os.write(fd, data) :]


def read_all(fd: int) -> bytes:
    """The whole content of the file open as ``fd``, from its start."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
