"""The store's ``Database`` on psycopg 3 (async, binary, every statement prepared): only for bench/postgres.py,
which runs the real ``Store`` on it and on asyncpg to choose the driver by a turn's cost.

Shaped like ``bot.db.postgres`` so the two differ only in the driver: a pool, one transaction per write
(``BEGIN``/``COMMIT``, as asyncpg's ``transaction()``), autocommit reads of one statement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Coroutine, Iterable, Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import AsyncConnectionPool

from bot.db.base import Row, Statement, numbered, write_as_one

T = TypeVar("T")


@lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """``?`` as psycopg's binary placeholder ``%b`` (through the ``$n`` numbering asyncpg gets)."""
    return re.sub(r"\$\d+", "%b", numbered(sql).replace("%", "%%"))


class _Record(tuple):  # type: ignore[type-arg]
    """A row by position or by column name, as ``asyncpg.Record`` and ``sqlite3.Row`` are (the store reads both)."""

    names: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:
        return tuple.__getitem__(self, self.names[key] if isinstance(key, str) else key)


@lru_cache(maxsize=256)
def _record_type(names: tuple[str, ...]) -> type[_Record]:
    return type("Record", (_Record,), {"names": {name: i for i, name in enumerate(names)}})


def _record_row(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[Any]:
    return _record_type(tuple(c.name for c in cursor.description or ()))  # type: ignore[return-value]


class PsycopgTx:
    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def _run(self, sql: str, args: Sequence[Any]) -> psycopg.AsyncCursor[Any]:
        return await self.conn.execute(_placeholders(sql), args, prepare=True, binary=True)

    async def execute(self, sql: str, *args: Any) -> int:
        return (await self._run(sql, args)).rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.conn.cursor(binary=True) as cur:
            await cur.executemany(_placeholders(sql), list(rows))

    async def lock(self, name: str) -> None:
        await self.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", name)

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await (await self._run(sql, args)).fetchall()

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await (await self._run(sql, args)).fetchone()

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await (await self._run(sql, args)).fetchone()
        return row[0] if row else None


class PsycopgDatabase:
    engine = "postgresql"
    shared = True

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, url: str, *, max_size: int = 10) -> PsycopgDatabase:
        """A pool on an already migrated database (the bench migrates it through ``bot.db.postgres`` first)."""
        pool = AsyncConnectionPool(url, min_size=1, max_size=max_size, open=False,
                                   kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": _record_row})
        await pool.open(wait=True)
        return cls(pool)

    async def close(self) -> None:
        await self.pool.close()

    async def _with(self, fn: Callable[[PsycopgTx], Coroutine[Any, Any, T]]) -> T:
        async with self.pool.connection() as conn:
            return await fn(PsycopgTx(conn))

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return await self._with(lambda tx: tx.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._with(lambda tx: tx.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._with(lambda tx: tx.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._with(lambda tx: tx.execute(sql, *args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async def atomic(tx: PsycopgTx) -> None:
            async with tx.conn.transaction():  # psycopg pipelines the rows but does not make them one transaction
                await tx.executemany(sql, rows)

        await self._with(atomic)

    async def write_all(self, statements: Sequence[Statement]) -> list[list[int]]:
        return await write_as_one(self, statements)

    async def write(self, fn: Callable[[PsycopgTx], Coroutine[Any, Any, T]]) -> T:
        async def run(tx: PsycopgTx) -> T:
            async with tx.conn.transaction():
                return await fn(tx)

        return await self._with(run)

    async def read(self, fn: Callable[[PsycopgTx], Coroutine[Any, Any, T]]) -> T:
        return await self._with(fn)

    in_thread = write
