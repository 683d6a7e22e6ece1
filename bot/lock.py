"""One service per state directory: ``chorus run`` holds an exclusive lock for its whole life,
and every process that opens the database migrates it under a second, short lock."""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

LOCK_FILE = "chorus.lock"


class AlreadyRunning(Exception):
    """Another ``chorus run`` holds the state directory."""

    def __init__(self, state: Path, pid: int | None) -> None:
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"Chorus is already running on {state} ({who}). Stop it first, or give this one its own CHORUS_HOME."
        )


class StateLock:
    """The service's exclusive hold on a state directory; the file names the holder's pid."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def acquire(cls, state: Path) -> StateLock:
        """Take the lock at once or raise ``AlreadyRunning`` (never wait: the other one may run for weeks)."""
        state.mkdir(parents=True, exist_ok=True)
        fd = os.open(state / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _pid_in(fd)
            os.close(fd)
            raise AlreadyRunning(state, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the lock; a killed process drops it the same way


def lock_holder(state: Path) -> int | None:
    """The pid of the service running on ``state``, or ``None`` when none is."""
    try:
        fd = os.open(state / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _pid_in(fd) or -1
    else:
        return None
    finally:
        os.close(fd)  # also releases the shared lock taken just to look


@asynccontextmanager
async def migration_lock(db: Path) -> AsyncIterator[None]:
    """Held while a process migrates ``db``, so two starting at once never race on the schema."""
    fd = os.open(db.with_name(db.name + ".migrate-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pid_in(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
