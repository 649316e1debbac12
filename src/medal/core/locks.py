"""One writer at a time: an exclusive lock per fold folder and per stage output.

The lock is `fcntl.flock` on a small file that also names its holder. The kernel releases a flock when
its process dies, however it dies, so a lock left by a killed run never blocks: the next run takes it
over, and says so (the file still names the dead holder, whereas a run that finishes clears it).
POSIX only (Linux, macOS: Kaggle, Colab and most servers).
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from medal.core.log import get_logger


class LockedError(OSError):
    """Another live process holds the lock; the message names it and what it is doing."""


@contextmanager
def exclusive(path: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold the lock file `path` for `what` (e.g. "fold 0 of 'base'"); raise LockedError at once when a live
    process holds it, or with `wait`, block until it is free (for short writes that may queue)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _read(fd) or "another process"
            raise LockedError(f"{what} is in use by {holder} (lock {path}); wait for it to finish, or stop it "
                              "first") from None
        previous = _read(fd)
        if previous:
            get_logger().info("took over the lock of %s: %s, which ended without releasing it", what, previous)
        _write(fd, f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:4])}) since "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            yield
        finally:
            _write(fd, "")
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace").strip()


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, text.encode())
