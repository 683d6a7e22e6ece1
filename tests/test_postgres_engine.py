"""The PostgreSQL engine's round trips: what the pool does when a connection comes back, and the inbox's lone
statements, against a real server (tests/pgserver.py)."""

from __future__ import annotations

import asyncpg

from bot.db.postgres import PostgresDatabase
from bot.store import Inbox, Store, StoredMessage
from channels.base import ChatRef, Inbound


async def _last_statement(watcher: asyncpg.Connection, backend: int) -> str:
    """What the backend ``backend`` ran last, as the server saw it (``pg_stat_activity``)."""
    return await watcher.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", backend)


async def test_a_turns_statements_leave_nothing_for_the_pool_to_reset(pg_url) -> None:
    db = await PostgresDatabase.open(pg_url, max_size=1)
    watcher = await asyncpg.connect(pg_url)  # the same role sees its backends' statements
    try:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        inbox = Inbox(Store(db))
        hello = Inbound(chat=ChatRef("telegram", "42"), sender_id="7", sender_name="Ann", text="hello", message_id="1")
        assert await inbox.accept(hello) is True
        # One statement, committed on its own: no COMMIT after it, and no reset query when the pool took it back.
        assert (await _last_statement(watcher, backend)).startswith("INSERT INTO inbox")
        assert await inbox.accept(hello) is False  # a redelivery
        await inbox.done([hello])
        assert (await _last_statement(watcher, backend)).startswith("UPDATE inbox SET status = 'done'")
        assert await inbox.pending() == []
        state = await Store(db).turn_state(hello.chat)
        assert (await _last_statement(watcher, backend)) == "COMMIT;"  # the first turn opened the session
        store = Store(db)
        await store.turn_state(hello.chat)
        # settings, session and new history in one statement, without BEGIN/COMMIT
        assert (await _last_statement(watcher, backend)).startswith("SELECT s.id AS active_session")
        assert state.history == []
        await store.append(state.session_id, [StoredMessage("user", "hello"), StoredMessage("assistant", "hi")])
        # the turn's messages in one statement committed on its own, the session's updated_at set by a trigger
        assert (await _last_statement(watcher, backend)).startswith("INSERT INTO messages")
        assert [m.content for m in (await store.turn_state(hello.chat)).history] == ["hello", "hi"]
    finally:
        await watcher.close()
        await db.close()


async def test_a_lent_connection_comes_back_without_what_its_user_left_in_the_session(pg_url) -> None:
    db = await PostgresDatabase.open(pg_url, max_size=1)
    try:
        async with db.connection() as conn:
            await conn.execute("SELECT pg_advisory_lock(4242)")
            await conn.execute("LISTEN chorus_test")
            await conn.execute("SET application_name = 'lent'")
        async with db.connection() as conn:  # the pool's one connection, again
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
            assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0
            assert await conn.fetchval("SHOW application_name") != "lent"
    finally:
        await db.close()
