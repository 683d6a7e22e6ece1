"""What the store asks of a database engine: transactions of statements, and reads, in one SQL for both engines.

Statements are written once, in the SQL that SQLite and PostgreSQL share, with ``?`` placeholders (the
PostgreSQL engine numbers them). A write is an ``async`` function of a ``Tx`` run in one transaction; on SQLite
it runs through without ever suspending (``run_through``), so it can run on the loop or in the database thread.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")


class StorageError(Exception):
    """The database could not do it (unreachable, refused, full); the message says why, never the password."""


class Conflict(StorageError):
    """A unique constraint refused the row (PostgreSQL's; SQLite raises ``sqlite3.IntegrityError``)."""


# What a caller catches when "the database failed" must not crash it: either engine's errors.
DB_ERRORS: tuple[type[BaseException], ...] = (sqlite3.Error, StorageError)
CONFLICTS: tuple[type[BaseException], ...] = (sqlite3.IntegrityError, Conflict)


class Row(Protocol):
    """A result row: by column name or position (``sqlite3.Row`` and ``asyncpg.Record`` both are)."""

    def __getitem__(self, key: str | int) -> Any: ...
    def __iter__(self) -> Any: ...


class Reader(Protocol):
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Row | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Tx(Reader, Protocol):
    """The statements of one transaction."""

    async def execute(self, sql: str, *args: Any) -> int:
        """Run one statement; returns how many rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def lock(self, name: str) -> None:
        """Hold ``name`` until the transaction ends, against other instances' transactions that lock it (a
        count and an insert that must not race). SQLite's writes are serial already."""
        ...


Write = Callable[[Tx], Awaitable[T]]
# One statement and its arguments, for ``Database.write_all``; one that ends in ``RETURNING id`` gives ids.
Statement = tuple[str, Sequence[Any]]


class Database(Reader, Protocol):
    """One engine's connection(s). Reads outside ``write`` see what is committed."""

    engine: str  # "sqlite" | "postgresql"
    shared: bool  # several instances may use it at once

    async def write(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` in a transaction committed when this returns, or rolled back with what it raised."""
        ...

    async def execute(self, sql: str, *args: Any) -> int:
        """One statement, committed on its own (on PostgreSQL without a BEGIN and a COMMIT: a third of the trips)."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """One statement for each of ``rows``, all or none committed (on its own, as ``execute``)."""
        ...

    async def write_all(self, statements: Sequence[Statement]) -> list[list[int]]:
        """Statements committed together (all or none), each giving the ids its ``RETURNING id`` returned,
        ascending: a statement numbers its rows in their order, but RETURNING does not promise to list them so.
        On PostgreSQL one trip (one statement of data-modifying CTEs), where a transaction would take two more
        than it has statements; the statements must then not depend on each other's changes."""
        ...

    async def read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Several reads in one trip (on SQLite, on the loop)."""
        ...

    async def in_thread(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """A write that may take long (many rows): never on the loop's own thread."""
        ...

    async def close(self) -> None: ...


def run_through(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (every statement of a SQLite write is synchronous) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a write on SQLite awaited something other than its statements")


def inserting(table: str, columns: str, rows: Sequence[Sequence[Any]]) -> Statement:
    """One INSERT of ``rows`` (not empty) into ``table`` (``columns``: "a, b, c") returning their ids."""
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    return (f"INSERT INTO {table} ({columns}) VALUES {', '.join([one] * len(rows))} RETURNING id",
            [value for row in rows for value in row])


async def write_as_one(db: Reader, statements: Sequence[Statement]) -> list[list[int]]:
    """``Database.write_all`` on PostgreSQL: the statements as one, each a data-modifying CTE (PostgreSQL runs
    every one to completion, on one snapshot); the ids of those ``RETURNING id`` come back as ``(step, id)``."""
    if len(statements) == 1:  # a lone statement is its own transaction
        return [sorted(int(r[0]) for r in await db.fetch(statements[0][0], *statements[0][1]))]
    steps = ", ".join(f"s{i} AS ({sql})" for i, (sql, _) in enumerate(statements))
    selects = [f"SELECT {i}, id FROM s{i}" for i, (sql, _) in enumerate(statements) if sql.endswith("RETURNING id")]
    ids: list[list[int]] = [[] for _ in statements]
    for step, row_id in await db.fetch(f"WITH {steps} " + (" UNION ALL ".join(selects) or "SELECT 0, 0 WHERE false"),
                                       *(a for _, args in statements for a in args)):
        ids[step].append(int(row_id))
    return [sorted(i) for i in ids]


def utc_now() -> str:
    """The time as the schema keeps it in text columns: ISO 8601, milliseconds, UTC (sorts as it reads)."""
    return utc_stamp(datetime.now(timezone.utc))


def utc_stamp(moment: datetime) -> str:
    """``moment`` (aware) as the schema keeps times, the form of SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ')``.
    ``isoformat`` rather than ``strftime``: a third of the cost, and it is paid with every answer."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


_PLACEHOLDER = re.compile(r"'[^']*'|(\bIS\s+)?\?")


@lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...``; ``x IS ?`` (a comparison that matches NULL too, as
    SQLite reads it) as ``x IS NOT DISTINCT FROM $n``. Quoted text is left alone."""
    count = 0

    def number(m: re.Match[str]) -> str:
        nonlocal count
        if m.group(0).startswith("'"):
            return m.group(0)
        count += 1
        return f"IS NOT DISTINCT FROM ${count}" if m.group(1) else f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***``: how a database URL is ever shown."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
