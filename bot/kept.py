"""Values every instance on one database reads (``shared_values``): the Telegram update offset, a cached
document such as OpenRouter's model catalog, or a short-lived secret such as a Discord interaction's token, with
when each was kept and expires."""

from __future__ import annotations

import time
from collections.abc import Callable

from .db.base import Database, Statement, Tx

LARGE = 64 * 1024  # characters of a value written in the database's thread on SQLite, off the loop

_UPSERT = ("INSERT INTO shared_values (name, value, kept_at, expires_at) VALUES (?, ?, ?, ?)"
           " ON CONFLICT (name) DO UPDATE SET value = excluded.value, kept_at = excluded.kept_at,"
           " expires_at = excluded.expires_at")


class KeptValues:
    """Named values in the database, replaced whole; one with a ``ttl`` is gone once it expires."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def get(self, name: str, *, max_age: float | None = None) -> tuple[str, float] | None:
        """``name``'s value and when it was kept (unix time), unless expired or older than ``max_age`` seconds."""
        now = self.clock()
        oldest = max(0.0, now - max_age) if max_age is not None else 0.0
        row = await self.db.fetchrow("SELECT value, kept_at FROM shared_values WHERE name = ? AND kept_at >= ?"
                                     " AND (expires_at IS NULL OR expires_at > ?)", name, oldest, now)
        return (str(row[0]), float(row[1])) if row is not None else None

    async def put(self, name: str, value: str, *, ttl: float | None = None) -> None:
        """Keep ``value`` as ``name`` (for ``ttl`` seconds, else until replaced); a short-lived one takes the expired
        ones with it. One trip on PostgreSQL (the Telegram poller keeps its offset after every batch); in the
        database's thread on SQLite when it is large (a catalog is a few hundred KB)."""
        now = self.clock()
        statements: list[Statement] = [(_UPSERT, [name, value, now, now + ttl if ttl is not None else None])]
        if ttl is not None:
            statements.append(("DELETE FROM shared_values WHERE expires_at < ?", [now]))
        if len(value) > LARGE:
            await self.db.in_thread(lambda tx: _run(tx, statements))
        else:
            await self.db.write_all(statements)

    async def drop(self, name: str) -> None:
        await self.db.execute("DELETE FROM shared_values WHERE name = ?", name)


async def _run(tx: Tx, statements: list[Statement]) -> None:
    for sql, args in statements:
        await tx.execute(sql, *args)
