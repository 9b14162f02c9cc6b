"""Cross-process locks on files (fcntl.flock): concurrent runs and pytest-xdist workers on
one host wait for each other instead of doing the same work twice.

The kernel drops a flock when its process exits, however it exits, so a worker killed
half-way never leaves a lock behind. A `transient` lock file is removed on release (one per
artifact key would pile up otherwise); a waiter that then holds the lock of a removed file
notices (the path no longer names its inode) and locks the current file instead.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional


class FileLock:
    """One lock file; `acquire(block=False)` tries once, otherwise waits (with an optional timeout)."""

    def __init__(self, path: Path, shared: bool = False, transient: bool = False) -> None:
        self.path = Path(path)
        self.shared = shared  # LOCK_SH: many holders at once, excluding LOCK_EX holders
        self.transient = transient  # remove the file on release (exclusive locks only)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, block: bool = True, timeout: Optional[float] = None, poll_s: float = 0.02) -> bool:
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fd = self._lock_once(block, deadline, poll_s)
            if fd is None:
                return False
            if self._current(fd):
                self._fd = fd
                return True
            os.close(fd)  # a transient file removed by its last holder: lock the one there now

    def _lock_once(self, block: bool, deadline: Optional[float], poll_s: float) -> Optional[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        mode = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if block and deadline is None:
                fcntl.flock(fd, mode)
                return fd
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    if not block or time.monotonic() >= deadline:
                        os.close(fd)
                        return None
                    time.sleep(poll_s)
        except BaseException:
            os.close(fd)
            raise

    def _current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if self.transient and not self.shared:
                try:
                    os.unlink(self.path)  # while still locked: a newcomer creates a fresh file
                except FileNotFoundError:
                    pass
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def file_lock(path: Path, shared: bool = False, transient: bool = False) -> Iterator[FileLock]:
    """Hold `path` locked (exclusively, or shared) for the block; waits as long as it takes."""
    lock = FileLock(path, shared, transient)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
