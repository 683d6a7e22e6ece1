"""The SQLite store and its migration runner."""

from __future__ import annotations

import aiosqlite
import pytest

from bot.migrate import Migration, MigrationError, discover, migrate
from bot.store import Store, StoredMessage
from channels.base import ChatRef

CHAT = ChatRef("console", "local")


async def test_migrations_apply_in_order_once_and_are_recorded(tmp_path):
    store = await Store.open(tmp_path / "db.sqlite")
    async with store.db.execute("SELECT version, name FROM schema_migrations") as cur:
        rows = [tuple(r) for r in await cur.fetchall()]
    assert rows == [(m.version, m.name) for m in discover()]
    async with store.db.execute("PRAGMA journal_mode") as cur:
        assert (await cur.fetchone())[0] == "wal"
    assert await migrate(store.db) == []  # nothing left to apply
    await store.close()


async def test_a_database_newer_than_the_code_is_refused(tmp_path):
    path = tmp_path / "db.sqlite"
    await (await Store.open(path)).close()
    async with aiosqlite.connect(path) as db:
        await db.execute("INSERT INTO schema_migrations (version, name, checksum) VALUES (99, 'future', 'x')")
        await db.commit()
        with pytest.raises(MigrationError, match="newer than this Chorus"):
            await migrate(db)


async def test_an_edited_applied_migration_is_refused(tmp_path):
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:
        await migrate(db, [Migration(1, "first", "CREATE TABLE a (x);")])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(db, [Migration(1, "first", "CREATE TABLE a (x, y);")])


async def test_a_failing_migration_is_rolled_back_whole(tmp_path):
    async with aiosqlite.connect(tmp_path / "db.sqlite") as db:
        bad = Migration(1, "bad", "CREATE TABLE a (x); INSERT INTO nowhere VALUES (1);")
        with pytest.raises(MigrationError, match="rolled back"):
            await migrate(db, [bad])
        async with db.execute("SELECT name FROM sqlite_master WHERE name = 'a'") as cur:
            assert await cur.fetchone() is None
        assert [m.name for m in await migrate(db, [Migration(1, "good", "CREATE TABLE a (x);")])] == ["good"]


async def test_history_and_settings_survive_reopening(tmp_path):
    path = tmp_path / "db.sqlite"
    store = await Store.open(path)
    sid = await store.active_session(CHAT)
    await store.append(sid, [
        StoredMessage("user", "hi", name="ada"),
        StoredMessage("assistant", None, tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]),
        StoredMessage("tool", "done", tool_call_id="c1"),
        StoredMessage("user", [{"type": "text", "text": "parts"}]),
    ])
    await store.set_chat_setting(CHAT, "model", "openrouter/x/y")
    await store.close()

    store = await Store.open(path)
    assert await store.active_session(CHAT) == sid
    history = await store.history(sid)
    assert [m.to_api() for m in history] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "done", "tool_call_id": "c1"},
        {"role": "user", "content": [{"type": "text", "text": "parts"}]},
    ]
    assert (await store.chat_settings(CHAT)).model == "openrouter/x/y"
    new = await store.new_session(CHAT)
    assert new != sid and await store.history(new) == []
    assert len(await store.history(sid)) == 4  # the old session is kept
    await store.close()
