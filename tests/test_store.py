"""The SQLite store and its migration runner."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiosqlite
import pytest

from bot.db.base import DB_ERRORS, StorageError, Tx, utc_now, utc_stamp
from bot.migrate import Migration, MigrationError, discover, migrate
from bot.store import Inbox, Settlement, Store, StoredMessage, appending, marked_answered
from channels.base import ChatRef, Inbound

CHAT = ChatRef("console", "local")


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path) -> str | Path:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database (tests/pgserver.py)."""
    return tmp_path / "db.sqlite" if request.param == "sqlite" else request.getfixturevalue("pg_url")


def iso_days_ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def test_migrations_apply_in_order_once_and_are_recorded(tmp_path):
    store = await Store.open(tmp_path / "db.sqlite")
    rows = [tuple(r) for r in await store.db.fetch("SELECT version, name FROM schema_migrations")]
    assert rows == [(m.version, m.name) for m in discover()]
    assert await store.db.fetchval("PRAGMA journal_mode") == "wal"
    assert await migrate(store.db.db) == []  # nothing left to apply
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


async def test_a_turn_reads_only_what_its_session_added_since_the_last_and_misses_nothing(tmp_path):
    """History is held between turns: each turn reads the rows after the last one it holds, so a long session
    costs no more than a short one. Rows another process adds are still seen; excluded turns never are."""
    path = tmp_path / "db.sqlite"
    store = await Store.open(path)
    try:
        store.HISTORY_CACHE = 1_600  # bytes: the first chat's five short messages (~1,520) and not much more
        others = [ChatRef("console", f"other{i}") for i in range(3)]
        state = await store.turn_state(CHAT)
        assert state.history == []
        await store.append(state.session_id, [StoredMessage("user", "one"), StoredMessage("assistant", "1")])
        assert [m.content for m in (await store.turn_state(CHAT)).history] == ["one", "1"]
        with sqlite3.connect(path) as cli:  # another process (the CLI) writes to the same session meanwhile
            cli.execute("UPDATE messages SET content = 'rewritten' WHERE content = 'one'")  # never done: to see it is held
            cli.execute("INSERT INTO messages (session_id, role, content) VALUES (?, 'user', 'from the cli')",
                        (state.session_id,))
        await store.append(state.session_id, [StoredMessage("assistant", "left out")], excluded=True)
        await store.append(state.session_id, [StoredMessage("user", "two"), StoredMessage("assistant", "2")])
        held = await store.turn_state(CHAT)
        assert [m.content for m in held.history] == ["one", "1", "from the cli", "two", "2"]
        held.history.clear()  # the caller's list is its own
        for chat in others:  # three more sessions push the first out of the hold
            sid = (await store.turn_state(chat)).session_id
            await store.append(sid, [StoredMessage("user", f"hi {chat.chat_id}"), StoredMessage("assistant", "hello")])
            assert [m.content for m in (await store.turn_state(chat)).history] == [f"hi {chat.chat_id}", "hello"]
        assert store._held <= store.HISTORY_CACHE
        assert [m.content for m in (await store.turn_state(CHAT)).history] == ["rewritten", "1", "from the cli", "two", "2"]
    finally:  # a failure must not leave the database thread running
        await store.close()


ACCEPT_AND_REPORT = """
import asyncio, sys
from pathlib import Path
from bot.store import Inbox, Store
from channels.base import ChatRef, Inbound

async def main():
    inbox = Inbox(await Store.open(Path(sys.argv[1])))

    async def one(i):
        chat = ChatRef("test", f"c{i % 7}")
        if await inbox.accept(Inbound(chat=chat, sender_id="u", sender_name="u", text=f"t{i}", message_id=f"m{i}")):
            print(f"m{i}", flush=True)  # acknowledged: from here on the platform forgets the message

    await asyncio.gather(*(one(i) for i in range(60)))
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_every_acknowledged_accept_survives_kill_9_with_group_commit(tmp_path):
    """Accepts arriving together share commits; each one returns only once its row is committed, so a
    process killed right after acknowledging loses none of them."""
    path = tmp_path / "chorus.db"
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ACCEPT_AND_REPORT, str(path), cwd=root,
                                                stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    assert proc.stdout is not None
    acked: list[str] = []
    while len(acked) < 60:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line, "the accepting process died"
        acked.append(line.decode().strip())
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    with sqlite3.connect(path) as db:
        stored = {r[0] for r in db.execute("SELECT message_id FROM inbox")}
    assert set(acked) <= stored and len(acked) == 60


async def test_writes_that_queue_up_share_a_commit_and_one_failure_spares_the_rest(tmp_path):
    store = await Store.open(tmp_path / "db.sqlite")
    inbox = Inbox(store)
    trips: list[int] = []
    run = store.db._run

    async def counted(fn):
        trips.append(1)
        return await run(fn)

    store.db._run = counted  # type: ignore[method-assign]

    async def broken(tx: Tx) -> None:
        await tx.execute("INSERT INTO inbox (channel) VALUES ('half a row')")  # violates NOT NULL: rolled back alone

    results = await asyncio.gather(
        *(inbox.accept(Inbound(chat=CHAT, sender_id="u", sender_name="u", text=f"t{i}", message_id=f"m{i}"))
          for i in range(40)),
        store.write(broken), return_exceptions=True)
    assert results[:40] == [True] * 40 and isinstance(results[40], sqlite3.IntegrityError)
    assert len(trips) <= 2  # forty accepts and a failed write: one trip with its commit (two at worst)
    assert [i.message_id for i in await inbox.pending()] == [f"m{i}" for i in range(40)]
    await store.close()


async def test_a_lone_write_that_fails_leaves_nothing_and_the_next_write_goes_through(where):
    """A write alone runs without a savepoint (SQLite): its failure must still undo what it did before failing."""
    store = await Store.open(where)
    inbox = Inbox(store)

    async def half(tx: Tx) -> None:
        await tx.execute("INSERT INTO inbox (channel, message_id, chat_id, sender_id, sender_name)"
                         " VALUES ('test', 'half', 'c', 'u', 'u')")
        await tx.execute("INSERT INTO inbox (channel) VALUES ('half a row')")  # violates NOT NULL

    with pytest.raises(DB_ERRORS):
        await store.write(half)
    assert await inbox.accept(message(1))
    assert [r[0] for r in await store.db.fetch("SELECT message_id FROM inbox")] == ["m1"]
    await store.close()


def message(i: int) -> Inbound:
    return Inbound(chat=CHAT, sender_id="u", sender_name="u", text=f"t{i}", message_id=f"m{i}")


async def test_an_accept_never_waits_behind_the_database_thread(tmp_path):
    """A turn's writes may keep the database thread busy; accepting a message (which the channel waits for
    before it takes the next one) does not queue behind them."""
    store = await Store.open(tmp_path / "db.sqlite")
    busy = asyncio.create_task(store.db._run(lambda conn: time.sleep(0.5)))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await Inbox(store).accept(message(1))
    assert time.monotonic() - started < 0.25
    await busy
    await store.close()


async def test_an_accept_while_another_write_holds_the_database_is_committed_after_it(tmp_path):
    store = await Store.open(tmp_path / "db.sqlite")
    inbox = Inbox(store)
    async with store.db._write:  # a write in progress elsewhere holds the database's write lock
        await store.db._run(lambda conn: conn.execute("BEGIN IMMEDIATE"))
        await store.db._run(lambda conn: conn.execute(
            "INSERT INTO group_history (session_key, sender_name, text) VALUES ('k', 'a', 'b')"))
        accepting = asyncio.create_task(inbox.accept(message(1)))
        await asyncio.sleep(0.1)
        assert not accepting.done()
        await store.db._run(lambda conn: conn.commit())
    assert await accepting
    assert not await inbox.accept(message(1))  # and once only
    assert [i.message_id for i in await inbox.pending()] == ["m1"]
    await store.close()


async def test_writes_on_the_loop_are_checkpointed_so_the_wal_stays_small(tmp_path):
    """Writes commit on the loop's connection, which never checkpoints; the thread does, every so many
    commits, or the WAL would grow with every message ever stored."""
    store = await Store.open(tmp_path / "db.sqlite")
    store.db.CHECKPOINT_EVERY = 20
    blob = "x" * 20_000  # five pages a write: 2,000 writes would make a 40 MB WAL
    for i in range(2000):
        await store.write(lambda tx, i=i: tx.execute(
            "INSERT INTO group_history (session_key, sender_name, text) VALUES ('k', ?, ?)", str(i), blob))
        while store.db._checkpoint is not None and not store.db._checkpoint.done():  # its trip to the thread, however
            await asyncio.sleep(0.001)  # long a loaded machine makes it: a lagging checkpoint leaves a longer WAL
    wal = (tmp_path / "db.sqlite-wal").stat().st_size
    assert wal < 4_000_000, f"the WAL grew to {wal} bytes"
    assert await store.db.fetchval("SELECT COUNT(*) FROM group_history") == 2000
    await store.close()


def test_times_are_kept_in_the_form_sqlite_writes_them():
    """Text columns hold times as the schema's defaults write them, so that they compare as they read."""
    sqlite_now = sqlite3.connect(":memory:").execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')").fetchone()[0]
    ours = utc_now()
    assert len(ours) == len(sqlite_now) == 24 and ours[10] == "T" and ours.endswith("Z")
    assert abs(datetime.fromisoformat(ours) - datetime.fromisoformat(sqlite_now)) < timedelta(seconds=5)
    two_hours_east = timezone(timedelta(hours=2))
    assert utc_stamp(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=two_hours_east)) == "2026-01-02T01:04:05.678Z"
    assert utc_stamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2026-01-02T03:04:05.000Z"


async def test_the_held_history_is_bounded_by_its_size_not_by_its_count_of_messages(tmp_path):
    """Mutation: the hold counted messages. One long message (a data URL, a long answer) fills it as many short
    ones would: two messages of 15 and 6 KB do not both stay in a 20 KB hold."""
    path = tmp_path / "db.sqlite"
    store = await Store.open(path)
    try:
        store.HISTORY_CACHE = 20_000
        big, small = ChatRef("console", "big"), ChatRef("console", "small")
        for chat, text in ((big, "x" * 15_000), (small, "y" * 6_000)):
            await store.append((await store.turn_state(chat)).session_id, [StoredMessage("user", text)])
            assert [m.content for m in (await store.turn_state(chat)).history] == [text]
        with sqlite3.connect(path) as cli:  # seen only if the big history was let go and is read again
            cli.execute("UPDATE messages SET content = 'rewritten' WHERE content = ?", ("x" * 15_000,))
        assert [m.content for m in (await store.turn_state(big)).history] == ["rewritten"]
    finally:
        await store.close()


async def test_answered_messages_are_forgotten_after_a_week_and_nothing_else_is(tmp_path):
    store = await Store.open(tmp_path / "db.sqlite")
    inbox = Inbox(store)
    for n in range(4):
        assert await inbox.accept(Inbound(chat=CHAT, sender_id="u", sender_name="u", text=f"t{n}", message_id=f"m{n}"))
    await inbox.done([i for i in await inbox.pending() if i.message_id in ("m0", "m1", "m2")])
    async def backdate(tx: Tx) -> None:  # m0 answered 8 days ago, m1 6 days ago, m2 now; m3 never
        for message_id, days in (("m0", 8), ("m1", 6)):
            await tx.execute("UPDATE inbox SET done_at = ? WHERE message_id = ?", iso_days_ago(days), message_id)

    await store.write(backdate)
    assert await inbox.prune() == 1
    assert await inbox.prune() == 0
    rows = await store.db.fetch("SELECT message_id, status FROM inbox ORDER BY id")
    assert [tuple(r) for r in rows] == [("m1", "done"), ("m2", "done"), ("m3", "pending")]
    # Within the week a redelivery is still recognised and not answered again.
    assert not await inbox.accept(Inbound(chat=CHAT, sender_id="u", sender_name="u", text="t1", message_id="m1"))
    await store.close()


async def test_a_moved_chat_takes_its_topics_settings_and_group_buffer_and_replaces_what_the_new_id_had(tmp_path):
    """A group that becomes a supergroup gets a new id: its session, each topic's settings and the messages
    buffered for the next mention move with it; a session the new id had already opened gives way."""
    store = await Store.open(tmp_path / "db.sqlite")
    inbox = Inbox(store)
    old, new = ChatRef("telegram", "-100", kind="group"), ChatRef("telegram", "-200", kind="group")
    old_topic, new_topic = ChatRef("telegram", "-100", "7", kind="group"), ChatRef("telegram", "-200", "7", kind="group")
    try:
        stale = await store.active_session(new)  # the new id spoke first: its session gives way
        await store.append(stale, [StoredMessage("user", "in the new id")])
        kept = await store.active_session(old)
        await store.append(kept, [StoredMessage("user", "in the old id")])
        await store.set_chat_setting(old_topic, "model", "openrouter/x/y")
        await inbox.remember_group(Inbound(chat=old, sender_id="u2", sender_name="Bob", text="lunch?"), 5)
        await store.move_chat("telegram", "-100", "-200")
        assert await store.active_session(new) == kept
        assert [m.content for m in await store.history(kept)] == ["in the old id"]
        assert (await store.chat_settings(new_topic)).model == "openrouter/x/y"
        assert await inbox.take_group(new) == [("Bob", "lunch?")]
    finally:
        await store.close()


async def test_a_write_that_fails_alone_on_the_loop_raises_and_keeps_nothing(tmp_path):
    """The write that commits right on the loop must raise what failed (a full disk, a broken constraint): a
    caller that got the exception back as a value took a lost message for a stored one."""
    store = await Store.open(tmp_path / "db.sqlite")
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY constraint failed"):
            await store.append(999, [StoredMessage("user", "to no session")])
        assert await store.history(999) == []
    finally:
        await store.close()


async def test_history_settings_and_the_inbox_behave_alike_on_both_engines(where):
    store = await Store.open(where)
    inbox = Inbox(store)
    try:
        sid = await store.active_session(CHAT)
        await store.append(sid, [StoredMessage("user", "hi", name="ada"), StoredMessage("user", [{"type": "text", "text": "p"}]),
                                 StoredMessage("assistant", "ok", model="m", prompt_tokens=3, completion_tokens=2, cost=0.5)])
        await store.set_chat_setting(CHAT, "tz", "Europe/Paris")
        assert await inbox.accept(message(1)) and not await inbox.accept(message(1))  # a redelivery, recognised
        assert await inbox.accept(message(2))
        await inbox.done([message(1)])
        assert [i.message_id for i in await inbox.pending()] == ["m2"]
        assert [i.message_id for i in await inbox.pending_of(CHAT)] == ["m2"]
        stats = await store.stats(sid)
        assert (stats.messages, stats.prompt_tokens, stats.completion_tokens, stats.cost) == (3, 3, 2, 0.5)
    finally:
        await store.close()
    store = await Store.open(where)  # reopened: migrated once, everything kept
    try:
        assert [m.content for m in (await store.turn_state(CHAT)).history] == ["hi", [{"type": "text", "text": "p"}], "ok"]
        assert (await store.chat_settings(CHAT)).tz == "Europe/Paris"
        new = await store.new_session(CHAT)
        assert new != sid and (await store.turn_state(CHAT)).history == []
        with pytest.raises(DB_ERRORS):  # a broken constraint raises, and keeps nothing
            await store.append(10**9, [StoredMessage("user", "to no session")])
        assert await store.history(10**9) == []
    finally:
        await store.close()


async def test_a_settlement_commits_the_history_and_the_answered_marks_together_or_not_at_all(where):
    """A turn's end in one go (on PostgreSQL one statement): its messages, its inbox rows marked answered, and
    whatever is committed with them (the outbox's rows); a failing part keeps all of it out."""
    store = await Store.open(where)
    inbox = Inbox(store)
    try:
        sid = await store.active_session(CHAT)
        for n in (1, 2, 3):
            await inbox.accept(message(n))
        first = [StoredMessage("user", "q"), StoredMessage("assistant", "a")]
        broken = Settlement([appending(sid, first), marked_answered([message(1)]),
                             appending(10**9, [StoredMessage("user", "to no session")])])
        with pytest.raises(DB_ERRORS):
            await store.settle(broken)
        assert [i.message_id for i in await inbox.pending()] == ["m1", "m2", "m3"] and await store.history(sid) == []
        ids = await store.db.write_all([appending(sid, first), marked_answered([message(1), message(2)]),
                                        appending(sid, [StoredMessage("user", "r")])])
        assert len(ids[0]) == 2 and ids[1] == [] and len(ids[2]) == 1 and ids[0][0] < ids[0][1] < ids[2][0]
        assert [i.message_id for i in await inbox.pending()] == ["m3"]
        assert [m.content for m in await store.history(sid)] == ["q", "a", "r"]
        settled = Settlement([marked_answered([message(3)]), appending(sid, [StoredMessage("assistant", "s")])])
        await store.settle(settled)
        await store.settle(settled)  # once only (the outbox may have committed it with the answer's parts)
        assert settled.settled and await inbox.pending() == []
        assert [m.content for m in await store.history(sid)] == ["q", "a", "r", "s"]
    finally:
        await store.close()


async def test_a_chat_moved_onto_a_held_id_reads_its_own_whole_history(where):
    """A history held for the new id's retired session (with higher ids) must not hide the moved session's
    rows: the turn's one read takes the whole history when the active session is not the one held."""
    store = await Store.open(where)
    old, new = ChatRef("telegram", "-100"), ChatRef("telegram", "-200")
    try:
        moved = (await store.turn_state(old)).session_id
        await store.append(moved, [StoredMessage("user", "before the move")])
        retired = (await store.turn_state(new)).session_id
        await store.append(retired, [StoredMessage("user", "the new id's"), StoredMessage("assistant", "own")])
        assert len((await store.turn_state(new)).history) == 2  # held, up to an id above the moved session's rows
        await store.move_chat("telegram", "-100", "-200")
        state = await store.turn_state(new)
        assert (state.session_id, [m.content for m in state.history]) == (moved, ["before the move"])
    finally:
        await store.close()


async def test_an_append_marks_its_session_updated(where):
    """``sessions.updated_at`` follows the session's last append (set by the insert's trigger)."""
    store = await Store.open(where)
    try:
        sid = (await store.turn_state(CHAT)).session_id
        await store.write(lambda tx: tx.execute("UPDATE sessions SET updated_at = '2000-01-01T00:00:00.000Z'"))
        await store.append(sid, [StoredMessage("user", "hi"), StoredMessage("assistant", "hello")])
        touched = await store.db.fetchval("SELECT updated_at FROM sessions WHERE id = ?", sid)
        when = datetime.strptime(touched, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)  # the schema's form
        assert abs(when - datetime.now(timezone.utc)) < timedelta(minutes=5)
    finally:
        await store.close()


async def test_a_held_history_sees_what_another_instance_appended(pg_url):
    """Two instances on one database answer one session in turn (the lease moves): each turn reads what the
    other appended since, never a history held from before it."""
    a, b = await Store.open(pg_url), await Store.open(pg_url)
    try:
        sid = (await a.turn_state(CHAT)).session_id
        await a.append(sid, [StoredMessage("user", "one"), StoredMessage("assistant", "1")])
        assert [m.content for m in (await a.turn_state(CHAT)).history] == ["one", "1"]
        assert [m.content for m in (await b.turn_state(CHAT)).history] == ["one", "1"]
        await b.append(sid, [StoredMessage("user", "two"), StoredMessage("assistant", "2")])
        assert [m.content for m in (await a.turn_state(CHAT)).history] == ["one", "1", "two", "2"]
    finally:
        await a.close()
        await b.close()


async def test_instances_starting_together_migrate_the_database_once(pg_url):
    stores = await asyncio.gather(*(Store.open(pg_url) for _ in range(4)))
    try:
        rows = await stores[0].db.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in discover(engine="postgresql")]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_an_unreachable_database_is_a_clear_error_without_its_password(pg_server):
    url = pg_server.url.replace(f":{pg_server.port}/", f":{pg_server.port + 1}/")  # nothing listens there
    password = url.split(":")[2].split("@")[0]
    with pytest.raises(StorageError) as failed:
        await Store.open(url)
    assert password not in str(failed.value) and "***" in str(failed.value), str(failed.value)


async def test_pairing_and_cron_claims_hold_on_postgresql_too(pg_url):
    """What guards a count and an insert (two strangers at once make two requests, not four), and a firing
    claimed by one conditional UPDATE, on the shared database."""
    from bot.cron.jobs import CronJobs
    from bot.cron.schedule import Schedule
    from bot.pairing import MAX_PENDING, Pairing, Sender

    store = await Store.open(pg_url)
    try:
        pairing = Pairing(store)
        issued = await asyncio.gather(*(pairing.request("telegram", Sender(str(i), f"s{i}", None))
                                        for i in range(MAX_PENDING + 3)))
        assert sum(1 for i in issued if i.request is not None) == MAX_PENDING
        approved = issued[0].request
        assert (await pairing.approve("telegram", approved.code)).sender.id == approved.sender.id
        assert await pairing.approved("telegram", approved.sender.id)
        jobs = CronJobs(store)
        job = await jobs.add(CHAT, "u", "U", None, "water the plants", Schedule.from_json({"kind": "every", "everyMs": 60_000, "anchorMs": 0}),
                             next_run_at=100.0, now=50.0, limit=5)
        claims = await asyncio.gather(*(jobs.move(job, 160.0) for _ in range(5)))
        assert claims.count(True) == 1 and (await jobs.get(job.id)).next_run_at == 160.0
    finally:
        await store.close()
