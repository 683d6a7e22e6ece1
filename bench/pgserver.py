"""A throwaway PostgreSQL server for the bench: the tests' launcher (tests/pgserver.py) with production settings.

``fsync`` and ``synchronous_commit`` on, the defaults: a commit waits for its WAL to reach the disk, as it would
for a real bot. The server listens on 127.0.0.1 only, in a temporary directory removed at the end.
``BENCH_POSTGRES_URL`` names a server of one's own instead (its CPU is then not read, unless
``BENCH_POSTGRES_PID`` gives its postmaster's pid).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.pgserver import PgServerError, start_postgres


@dataclass(frozen=True, slots=True)
class Server:
    """A running server: the superuser's URL (to create a fresh database per run), and the postmaster's pid."""

    admin_url: str
    pid: int | None

    def url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + database

    async def fresh_database(self, name: str) -> str:
        """An empty database ``name`` (dropped first if a run left it); returns its URL."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


def fresh_database_now(admin_url: str, name: str) -> str:
    """``Server.fresh_database`` for synchronous code that may run on an event loop's thread (in one of its own)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, Server(admin_url, None).fresh_database(name)).result()


@contextmanager
def running() -> Iterator[Server | None]:
    """A server for the length of the block; ``None`` (and a line saying why) when there is none to be had."""
    if url := os.environ.get("BENCH_POSTGRES_URL"):
        pid = os.environ.get("BENCH_POSTGRES_PID")
        yield Server(url, int(pid) if pid else None)
        return
    with tempfile.TemporaryDirectory(prefix="chorus-bench-pg-") as tmp:
        try:
            server = start_postgres(Path(tmp), durable=True)
        except PgServerError as exc:
            print(f"PostgreSQL: no server to measure ({exc})")
            yield None
            return
        try:
            yield Server(server.admin_url, server.pid)
        finally:
            server.stop()
