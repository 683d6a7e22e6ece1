"""SQLite through two connections: the loop's own for the hot paths, aiosqlite's thread for the rest.

A write with nothing ahead of it runs and commits right on the loop: tens of microseconds, never a wait, since
that connection takes no lock it cannot have at once, never syncs to disk (WAL with ``synchronous=NORMAL``) and
never checkpoints. When another write holds the database, writes queue up and go together in one trip to the
thread and one commit (group commit). Reads run on the loop too: a trip to the thread costs two wake-ups and a
hand-over of the GIL, which was more than the read.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..lock import migration_lock
from ..migrate import migrate
from .base import Row, Statement, Tx, run_through

T = TypeVar("T")
_Sync = Callable[[sqlite3.Connection], Any]


class SqliteTx:
    """The statements of one SQLite transaction: ``async`` in form, synchronous in fact."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        return self.conn.execute(sql, args).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    async def lock(self, name: str) -> None:
        pass  # a write transaction holds the whole database (BEGIN IMMEDIATE)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return self.conn.execute(sql, args).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return self.conn.execute(sql, args).fetchone()  # type: ignore[no-any-return]

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = self.conn.execute(sql, args).fetchone()
        return row[0] if row else None


class SqliteDatabase:
    """The default engine: one file in the state directory, one process at a time."""

    engine = "sqlite"
    shared = False
    CHECKPOINT_EVERY = 500  # commits on the loop between two checkpoints in the thread (~1,500 pages of WAL)

    def __init__(self, db: aiosqlite.Connection, direct: sqlite3.Connection, path: Path) -> None:
        self.db = db  # aiosqlite's: its thread takes the writes that must wait, checkpoints and migrations
        self.path = path
        self._direct = direct  # used on the loop's own thread only
        self._write = asyncio.Lock()
        self._queued: list[tuple[_Sync, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._unchecked = 0  # commits on the loop since the last checkpoint
        self._checkpoint: asyncio.Task[Any] | None = None

    def __str__(self) -> str:
        return str(self.path)

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        """Open (creating) the database at ``path`` in WAL mode and migrate it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit is in the WAL (the OS
            # holds it) when it returns, so a killed process loses nothing; only a power cut may lose the
            # last commits. FULL paid an fsync per commit, three per turn.
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            async with migration_lock(path):
                await migrate(db)
            direct = _direct_connection(path)
        except BaseException:
            await db.close()
            raise
        return cls(db, direct, path)

    async def close(self) -> None:
        for task in (self._flusher, self._checkpoint):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._direct.close()
        await self.db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` on the connection in the database thread: one trip, however many statements it runs.

        aiosqlite's own methods are one trip per call (a queue put, a thread wake-up and a wake-up of the
        loop each); its ``_execute`` is the primitive they are all built on.
        """
        return await self.db._execute(lambda: fn(self.db._conn))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the loop; in the thread in the rare case the database is busy (another connection is
        recovering the WAL)."""
        try:
            return fn(self._direct)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return await self._run(fn)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._read(lambda conn: conn.execute(sql, args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._read(lambda conn: conn.execute(sql, args).fetchone())

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return row[0] if row else None

    async def read(self, fn: Callable[[SqliteTx], Coroutine[Any, Any, T]]) -> T:
        """Several reads in one go on the loop (a turn's state), like ``write`` without the transaction."""
        return await self._read(lambda conn: run_through(fn(SqliteTx(conn))))

    async def write(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` in a write transaction that is committed when this returns (or raise what it raised).

        Alone, it commits at once on the loop. Writes queued while the database is held go together in
        the next trip to the thread; each runs in a savepoint of its own, so one that fails leaves the
        others' work in place.
        """
        def sync(conn: sqlite3.Connection) -> T:
            return run_through(fn(SqliteTx(conn)))

        if not self._queued and not self._write.locked():
            try:
                (ok, value), = _commit_together(self._direct, [sync])
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            else:
                self._committed_on_loop()
                if not ok:
                    raise value
                return value  # type: ignore[no-any-return]
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((sync, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await done

    def _committed_on_loop(self) -> None:
        """Every ``CHECKPOINT_EVERY`` commits, copy the WAL back into the database in the thread (it syncs
        to disk there), as SQLite's automatic checkpoint would after a commit on that connection."""
        self._unchecked += 1
        if self._unchecked >= self.CHECKPOINT_EVERY and (self._checkpoint is None or self._checkpoint.done()):
            self._unchecked = 0
            self._checkpoint = asyncio.create_task(self._checkpoint_wal())

    async def _checkpoint_wal(self) -> None:
        def copy(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # fetched: an open statement pins the WAL

        await self._run(copy)  # the bulk (1,500 pages at 1,000 chats: 6-36 ms), while writes go on
        # The WAL starts over only once it is copied whole; the frames written meanwhile are few, and writes
        # queue for one group commit while they are copied.
        async with self._write:
            await self._run(copy)

    async def _flush(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                async with self._write:
                    outcomes = await self._run(lambda conn: _commit_together(conn, [fn for fn, _ in batch]))
            except BaseException as exc:  # the transaction as a whole failed (disk full): so did each write
                cancelled = isinstance(exc, asyncio.CancelledError)
                for _, done in batch:
                    if cancelled:
                        done.cancel()
                    elif not done.done():
                        done.set_exception(exc)
                if cancelled:
                    raise
                continue
            for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
                if done.done():  # its caller gave up waiting (cancelled); the write stands
                    continue
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(value)

    async def execute(self, sql: str, *args: Any) -> int:
        return await self.write(lambda tx: tx.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.write(lambda tx: tx.executemany(sql, rows))

    async def write_all(self, statements: Sequence[Statement]) -> list[list[int]]:
        async def run(tx: Tx) -> list[list[int]]:
            return [sorted(int(r[0]) for r in await tx.fetch(sql, *args)) for sql, args in statements]

        return await self.write(run)

    async def in_thread(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """A write that may take long (a first prune of many rows): in the thread, never on the loop."""
        async with self._write:
            (ok, value), = await self._run(lambda conn: _commit_together(conn, [lambda c: run_through(fn(SqliteTx(c)))]))
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]


def _direct_connection(path: Path) -> sqlite3.Connection:
    """The loop's connection: a busy database is reported at once (never waited for on the loop), and
    checkpoints, which sync the file to disk, are left to the database thread's connection."""
    direct = sqlite3.connect(path, isolation_level=None)
    direct.row_factory = sqlite3.Row
    try:
        for pragma in ("busy_timeout=0", "synchronous=NORMAL", "wal_autocheckpoint=0", "foreign_keys=ON"):
            direct.execute(f"PRAGMA {pragma}")
    except BaseException:
        direct.close()
        raise
    return direct


def _commit_together(conn: sqlite3.Connection, writes: list[_Sync]) -> list[tuple[bool, Any]]:
    """Run ``writes`` in one transaction, each in a savepoint of its own when there are several; commit once
    (a savepoint and its release are 2 of the ~5 statements of a lone write). Returns, per write,
    ``(True, result)`` or ``(False, the exception)``; a failure of the transaction itself raises."""
    outcomes: list[tuple[bool, Any]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now: another process (the CLI) may be writing
        if len(writes) == 1:  # alone (most writes): no savepoint, its failure rolls the transaction back
            try:
                outcomes.append((True, writes[0](conn)))
            except Exception as exc:
                conn.rollback()
                return [(False, exc)]
        else:
            for fn in writes:
                conn.execute("SAVEPOINT one")
                try:
                    outcomes.append((True, fn(conn)))
                except Exception as exc:
                    conn.execute("ROLLBACK TO one")
                    outcomes.append((False, exc))
                conn.execute("RELEASE one")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcomes


def _busy(exc: sqlite3.OperationalError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
