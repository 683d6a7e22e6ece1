"""PostgreSQL through asyncpg: the shared store of several instances.

asyncpg was chosen over psycopg 3 by measuring a turn's statements (see bench/README.md, "PostgreSQL"): it
speaks the binary protocol and caches prepared statements per connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg

from ..migrate import migrate_postgres
from .base import Conflict, Row, Statement, StorageError, Tx, masked, numbered, write_as_one

T = TypeVar("T")
log = logging.getLogger("chorus.db")
CONNECT_TIMEOUT = 5.0  # seconds: an unreachable database is reported, not waited for
STATEMENT_TIMEOUT = 30.0
# InternalClientError: a query on a connection whose server was just killed ("cannot switch to state ...").
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, asyncio.TimeoutError)


def _failed(exc: BaseException, url: str) -> StorageError:
    kind = Conflict if isinstance(exc, asyncpg.UniqueViolationError) else StorageError
    text = str(exc).replace(url, masked(url)) or type(exc).__name__
    return kind(f"PostgreSQL ({masked(url)}): {text}")


class PgTx:
    """The statements of one PostgreSQL transaction (or single statements on a pooled connection)."""

    __slots__ = ("conn", "url")

    def __init__(self, conn: asyncpg.Connection, url: str) -> None:
        self.conn = conn
        self.url = url

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status = await self.conn.execute(numbered(sql), *args)
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc
        tail = status.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 1"
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self.conn.executemany(numbered(sql), list(rows))
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc

    async def lock(self, name: str) -> None:
        await self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", name)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            return await self.conn.fetch(numbered(sql), *args)  # type: ignore[no-any-return]
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            return await self.conn.fetchrow(numbered(sql), *args)  # type: ignore[no-any-return]
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self.conn.fetchval(numbered(sql), *args)
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, which several instances share."""

    engine = "postgresql"
    shared = True

    def __init__(self, pool: asyncpg.Pool, url: str) -> None:
        self.pool = pool
        self.url = url

    def __str__(self) -> str:
        return masked(self.url)

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10) -> PostgresDatabase:
        """Connect to ``url`` and migrate the schema (once, under an advisory lock, whoever else starts)."""
        try:
            pool = await asyncpg.create_pool(url, min_size=1, max_size=max_size, timeout=CONNECT_TIMEOUT,
                                             command_timeout=STATEMENT_TIMEOUT, reset=_kept)
        except _FAILURES as exc:
            raise _failed(exc, url) from exc
        db = cls(pool, url)
        try:
            async with db.connection() as conn:
                await migrate_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        return db

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), 10)
        except (asyncio.TimeoutError, *_FAILURES):
            self.pool.terminate()

    def connection(self) -> Any:
        """A pooled connection for the caller's own use (``async with``); raises ``StorageError`` if none."""
        return _Acquire(self)

    async def _with(self, fn: Callable[[PgTx], Coroutine[Any, Any, T]]) -> T:
        try:
            async with self.pool.acquire() as conn:
                return await fn(PgTx(conn, self.url))
        except _FAILURES as exc:
            raise _failed(exc, self.url) from exc

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._with(lambda tx: tx.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._with(lambda tx: tx.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._with(lambda tx: tx.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._with(lambda tx: tx.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._with(lambda tx: tx.executemany(sql, rows))  # asyncpg runs them in one implicit transaction

    async def write_all(self, statements: Sequence[Statement]) -> list[list[int]]:
        return await write_as_one(self, statements)

    async def read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Several reads on one connection, each seeing what is committed when it runs: under READ COMMITTED a
        transaction around them would not make them one snapshot, only cost a BEGIN and a COMMIT."""
        return await self._with(fn)

    async def write(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        async def run(tx: PgTx) -> T:
            async with tx.conn.transaction():
                return await fn(tx)

        return await self._with(run)

    in_thread = write  # nothing here runs on the loop's own thread for long


class _Acquire:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db
        self.conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            self.conn = await self.db.pool.acquire()
        except _FAILURES as exc:
            raise _failed(exc, self.db.url) from exc
        return self.conn

    async def __aexit__(self, *exc: object) -> None:
        if self.conn is not None:
            try:
                await self.conn.reset()  # what the caller left in the session (LISTEN, locks, settings) goes
            finally:
                await self.db.pool.release(self.conn)


async def _kept(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection coming back: nothing (asyncpg still rolls back an open transaction).
    The store's own statements leave no session state (transaction locks only, and the prepared statements,
    which are meant to stay); asyncpg's reset query was a fifth of a turn's round trips. A connection lent out
    through ``connection()`` is reset on its way back."""
