"""State in SQLite: sessions, their history and per-chat settings."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from channels.base import Attachment, AttachmentKind, ChatRef, Inbound, Replied
from providers.openrouter.refs import same_family

from .lock import migration_lock
from .migrate import migrate

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], Any]  # the statements of one write


@dataclass(slots=True)
class StoredMessage:
    """One history entry, in OpenAI chat shape."""

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    reasoning: str | None = None  # what the model thought; the request builder replays it per model family
    reasoning_details: list[dict[str, Any]] | None = None
    id: int | None = None

    def to_api(self, for_model: str | None = None) -> dict[str, Any]:
        """The message as chat completions takes it. Its thoughts go only to a model of the family that had
        them (``for_model``: the slug it is sent to): Gemini's signatures mean nothing to Kimi or DeepSeek.
        The request builder then sorts out, per model, which reasoning fields it reads."""
        msg: dict[str, Any] = {"role": self.role, "content": self.content}
        thoughts = for_model is None or self.model is None or same_family(self.model, for_model)
        for key in ("tool_calls", "tool_call_id", *(("reasoning", "reasoning_details") if thoughts else ())):
            if getattr(self, key):
                msg[key] = getattr(self, key)
        return msg


@dataclass(slots=True)
class ChatSettings:
    """A chat's own overrides; ``None`` means the config's default."""

    model: str | None = None
    thinking: str | None = None
    tts: str | None = None
    tz: str | None = None  # IANA zone (/tz) for reminders and scheduled runs


@dataclass(slots=True)
class SessionStats:
    messages: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0


@dataclass(slots=True)
class TurnState:
    """What a turn needs from the database before it asks the model, read in one trip."""

    session_id: int
    history: list[StoredMessage] = field(default_factory=list)
    settings: ChatSettings = field(default_factory=ChatSettings)


_SETTINGS = ("model", "thinking", "tts", "tz")
KEEP_ANSWERED_DAYS = 7  # answered inbox rows are kept this long, far past any redelivery
_ACTIVE = "SELECT id FROM sessions WHERE key = ? AND active = 1"
_HISTORY_AFTER = "SELECT * FROM messages WHERE session_id = ? AND excluded = 0 AND id > ? ORDER BY id"
_CHAT_SETTINGS = "SELECT model, thinking, tts, tz FROM chat_settings WHERE key = ?"
_ACCEPT = ("INSERT OR IGNORE INTO inbox (channel, message_id, chat_id, thread_id, chat_kind, sender_id, sender_name,"
           " text, mentioned, reply_to, attachments, sender_username, replied) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class Store:
    """SQLite through two connections: the loop's own for the hot paths, aiosqlite's thread for the rest.

    A write with nothing ahead of it runs and commits right on the loop (``write``): tens of microseconds,
    never a wait, since that connection takes no lock it cannot have at once, never syncs to disk (WAL with
    ``synchronous=NORMAL``) and never checkpoints. When another write holds the database, writes queue up
    and go together in one trip to the thread and one commit (group commit). A turn's own reads are on the
    loop too (``turn_state``): a trip to the thread costs two wake-ups and a hand-over of the GIL, which
    was more than the read.
    """

    CHECKPOINT_EVERY = 500  # commits on the loop between two checkpoints in the thread (~1,500 pages of WAL)
    # Messages of recent sessions held in memory, so a turn reads only the rows added since its session's last
    # turn: reading a whole history each turn cost 3.3 µs a message, 1 ms a turn at 300 messages.
    HISTORY_CACHE = 10_000

    def __init__(self, db: aiosqlite.Connection, direct: sqlite3.Connection) -> None:
        self.db = db
        self._direct = direct  # used on the loop's own thread only
        self._write = asyncio.Lock()
        self._queued: list[tuple[Write, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._unchecked = 0  # commits on the loop since the last checkpoint
        self._histories: OrderedDict[int, list[StoredMessage]] = OrderedDict()  # session id -> history, LRU last
        self._held = 0  # messages in _histories
        self._checkpoint: asyncio.Task[Any] | None = None

    @classmethod
    async def open(cls, path: Path) -> Store:
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
        return cls(db, direct)

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

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction that is committed when this returns (or raise what it raised).

        Alone, it commits at once on the loop. Writes queued while the database is held go together in
        the next trip to the thread; each runs in a savepoint of its own, so one that fails leaves the
        others' work in place.
        """
        if not self._queued and not self._write.locked():
            try:
                (ok, value), = _commit_together(self._direct, [fn])
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            else:
                self._committed_on_loop()
                if not ok:
                    raise value
                return value
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queued.append((fn, done))
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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: committed on success, rolled back on error."""
        async with self._write:
            try:
                yield self.db
                await self.db.commit()
            except BaseException:
                await self.db.rollback()
                raise

    async def _one(self, sql: str, *args: Any) -> aiosqlite.Row | None:
        # One trip to the database thread (execute + fetch + close would be three).
        rows = await self.db.execute_fetchall(sql, args)
        return next(iter(rows), None)

    async def active_session(self, chat: ChatRef) -> int:
        """The chat's current session id, opening one if there is none."""
        row = await self._one(_ACTIVE, chat.session_key)
        return int(row[0]) if row else await self.write(lambda conn: _open_session(conn, chat))

    async def turn_state(self, chat: ChatRef) -> TurnState:
        """The chat's session (opened if there is none), its history and the chat's settings, read on the loop."""
        try:
            session_id, added, settings = _read_turn_state(self._direct, chat, self._last_held)
        except sqlite3.OperationalError as exc:  # rare in WAL (another connection is recovering it)
            if not _busy(exc):
                raise
            session_id, added, settings = await self._run(lambda conn: _read_turn_state(conn, chat, self._last_held))
        if session_id is None:  # the chat's first turn: open its session, which has no history yet
            session_id = await self.write(lambda conn: _open_session(conn, chat))
        return TurnState(session_id, self._hold(session_id, added), settings)

    def _last_held(self, session_id: int) -> int:
        """The id of the last message held for the session (0: none): history only grows, by rows with
        higher ids (no code updates or deletes a message), so the rows after it are all that is new."""
        held = self._histories.get(session_id)
        return held[-1].id or 0 if held else 0

    def _hold(self, session_id: int, added: list[StoredMessage]) -> list[StoredMessage]:
        """The session's history with ``added`` joined, kept as the most recently used; the least recently
        used sessions are let go past ``HISTORY_CACHE`` messages. Returns a list of the caller's own. A session's
        turns run one at a time (its lane), so what one turn read is joined before the next reads."""
        held = self._histories.pop(session_id, [])
        held += added
        self._histories[session_id] = held
        self._held += len(added)
        while self._held > self.HISTORY_CACHE and len(self._histories) > 1:
            self._held -= len(self._histories.popitem(last=False)[1])
        return list(held)

    async def new_session(self, chat: ChatRef) -> int:
        """Retire the chat's session (kept in the database) and open a fresh one."""
        async with self.transaction() as db:
            await db.execute("UPDATE sessions SET active = 0 WHERE key = ? AND active = 1", (chat.session_key,))
        return await self.active_session(chat)

    async def move_chat(self, channel: str, old_id: str, new_id: str) -> None:
        """A chat got a new id (a Telegram group became a supergroup): its sessions, per-chat settings and
        group buffer follow it, topics included. Whatever the new id already had gives way."""
        old, new = f"{channel}:{old_id}", f"{channel}:{new_id}"
        rekey = "key = ? || substr(key, ?)"
        under = "(key = ? OR substr(key, 1, ?) = ?)"  # the chat itself, or one of its topics
        moving = (new, len(old) + 1, old, len(old) + 1, old + ":")
        async with self.transaction() as db:
            await db.execute("UPDATE sessions SET active = 0 WHERE channel = ? AND chat_id = ?", (channel, new_id))
            await db.execute(f"UPDATE sessions SET {rekey}, chat_id = ? WHERE channel = ? AND chat_id = ?",
                             (new, len(old) + 1, new_id, channel, old_id))
            await db.execute(f"UPDATE OR REPLACE chat_settings SET {rekey} WHERE {under}", moving)
            await db.execute(f"UPDATE group_history SET session_key = ? || substr(session_key, ?) "
                             f"WHERE {under.replace('key', 'session_key')}", moving)

    async def history(self, session_id: int) -> list[StoredMessage]:
        """The session's messages that later requests carry, oldest first (excluded turns are left out)."""
        return [_from_row(r) for r in await self.db.execute_fetchall(_HISTORY_AFTER, (session_id, 0))]

    async def append(self, session_id: int, messages: list[StoredMessage], *, excluded: bool = False) -> None:
        """Store messages of one turn together, so a crash never leaves half a turn; ``excluded``
        keeps them out of every later request (a turn that would fail again)."""
        await self.write(lambda conn: _insert_messages(conn, session_id, messages, excluded))

    async def stats(self, session_id: int) -> SessionStats:
        """Message count, tokens and cost of a session."""
        row = await self._one(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(cost), 0) FROM messages WHERE session_id = ?",
            session_id,
        )
        assert row is not None
        return SessionStats(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    async def chat_settings(self, chat: ChatRef) -> ChatSettings:
        row = await self._one(_CHAT_SETTINGS, chat.session_key)
        return ChatSettings(*row) if row else ChatSettings()

    async def set_chat_setting(self, chat: ChatRef, name: str, value: str | None) -> None:
        """Persist one override (``None`` clears it)."""
        if name not in _SETTINGS:
            raise ValueError(f"unknown chat setting {name!r}")
        async with self.transaction() as db:
            await db.execute(
                f"INSERT INTO chat_settings (key, {name}) VALUES (?, ?) "
                f"ON CONFLICT (key) DO UPDATE SET {name} = excluded.{name}",
                (chat.session_key, value),
            )


def _attachment_meta(a: Attachment) -> dict[str, Any]:
    """What is kept of an attachment: enough to fetch it again, never its bytes."""
    return {"kind": a.kind.value, "mime": a.mime, "filename": a.filename, "size": a.size, "source": a.source}


def _from_row(r: sqlite3.Row) -> StoredMessage:
    content = json.loads(r["content"]) if r["content_json"] else r["content"]
    return StoredMessage(
        role=r["role"], content=content, name=r["name"],
        tool_calls=json.loads(r["tool_calls"]) if r["tool_calls"] else None,
        tool_call_id=r["tool_call_id"], model=r["model"], prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"], cost=r["cost"], reasoning=r["reasoning"],
        reasoning_details=json.loads(r["reasoning_details"]) if r["reasoning_details"] else None, id=r["id"],
    )


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


def _commit_together(conn: sqlite3.Connection, writes: list[Write]) -> list[tuple[bool, Any]]:
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


def _read_turn_state(conn: sqlite3.Connection, chat: ChatRef, last_held: Callable[[int], int]
                     ) -> tuple[int | None, list[StoredMessage], ChatSettings]:
    """The chat's settings, its active session, and that session's messages after ``last_held(session)``."""
    key = chat.session_key
    found = conn.execute(_CHAT_SETTINGS, (key,)).fetchone()
    settings = ChatSettings(*found) if found else ChatSettings()
    session = conn.execute(_ACTIVE, (key,)).fetchone()
    if session is None:
        return None, [], settings
    session_id = int(session[0])
    rows = conn.execute(_HISTORY_AFTER, (session_id, last_held(session_id)))
    return session_id, [_from_row(r) for r in rows], settings


def _open_session(conn: sqlite3.Connection, chat: ChatRef) -> int:
    conn.execute("INSERT OR IGNORE INTO sessions (key, channel, chat_id, thread_id) VALUES (?, ?, ?, ?)",
                 (chat.session_key, chat.channel, chat.chat_id, chat.thread_id))
    return int(conn.execute(_ACTIVE, (chat.session_key,)).fetchone()[0])


def _insert_messages(conn: sqlite3.Connection, session_id: int, messages: list[StoredMessage], excluded: bool) -> None:
    for m in messages:
        content, is_json = (json.dumps(m.content), 1) if isinstance(m.content, list) else (m.content, 0)
        cur = conn.execute(
            "INSERT INTO messages (session_id, role, content, content_json, name, tool_calls, tool_call_id,"
            " model, prompt_tokens, completion_tokens, cost, excluded, reasoning, reasoning_details)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                session_id, m.role, content, is_json, m.name,
                json.dumps(m.tool_calls) if m.tool_calls else None, m.tool_call_id,
                m.model, m.prompt_tokens, m.completion_tokens, m.cost, int(excluded), m.reasoning,
                json.dumps(m.reasoning_details) if m.reasoning_details else None,
            ),
        )
        m.id = cur.lastrowid
    conn.execute("UPDATE sessions SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?", (session_id,))


class Inbox:
    """The durable inbox and the group-chat buffer, on the store's connection."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def accept(self, inbound: Inbound) -> bool:
        """Record a message before it is acknowledged; ``False`` when it was seen already (a redelivery).

        Committed before it returns: on the loop at once, or, when another write holds the database, in the
        next group commit. The channel waits for it before it takes the next message, so the first way
        matters: no wait at all."""
        chat = inbound.chat
        row = (chat.channel, inbound.message_id, chat.chat_id, chat.thread_id, chat.kind, inbound.sender_id,
               inbound.sender_name, inbound.text, int(inbound.mentioned), inbound.reply_to,
               json.dumps([_attachment_meta(a) for a in inbound.attachments]) if inbound.attachments else None,
               inbound.sender_username, json.dumps(asdict(inbound.replied)) if inbound.replied else None)
        return await self.store.write(lambda conn: conn.execute(_ACCEPT, row).rowcount) == 1

    async def done(self, inbounds: list[Inbound]) -> None:
        """Mark messages answered."""
        keys = [(i.chat.channel, i.message_id) for i in inbounds]
        await self.store.write(lambda conn: conn.executemany(
            "UPDATE inbox SET status = 'done', done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
            " WHERE channel = ? AND message_id = ?", keys))

    async def prune(self, keep_days: int = KEEP_ANSWERED_DAYS) -> int:
        """Forget messages answered more than ``keep_days`` ago; returns how many. Their words stay in the
        session history; a row only has to outlive the platform's redeliveries (minutes), and without this
        the inbox kept a second copy of every message ever received."""
        async with self.store.transaction() as db:  # in the database thread: a first prune may delete many rows
            cur = await db.execute("DELETE FROM inbox WHERE done_at < strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ?)",
                                   (f"-{keep_days} days",))  # a pending row has no done_at: never matched
            return cur.rowcount

    async def pending(self) -> list[Inbound]:
        """Messages accepted but never answered (the process died mid-turn), oldest first."""
        return await self._select("status = 'pending'")

    async def await_approval(self, inbound: Inbound, keep: int) -> None:
        """Keep a stranger's message to answer once the owner approves them: only their newest ``keep``."""
        key = (inbound.chat.channel, inbound.sender_id)

        def mark(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE inbox SET awaiting = 1 WHERE channel = ? AND message_id = ?",
                         (inbound.chat.channel, inbound.message_id))
            conn.execute("UPDATE inbox SET awaiting = 0 WHERE channel = ? AND sender_id = ? AND awaiting = 1 AND id NOT IN"
                         " (SELECT id FROM inbox WHERE channel = ? AND sender_id = ? AND awaiting = 1"
                         " ORDER BY id DESC LIMIT ?)", (*key, *key, keep))

        await self.store.write(mark)

    async def awaiting_approved(self) -> list[Inbound]:
        """Strangers' kept messages whose senders the owner has approved since, oldest first (one query, however
        many strangers still wait)."""
        return await self._select("awaiting = 1 AND EXISTS (SELECT 1 FROM access_approvals a"
                                  " WHERE a.channel = inbox.channel AND a.sender_id = inbox.sender_id)")

    async def release(self, inbounds: list[Inbound]) -> None:
        """Hand awaited messages back to be answered: pending again (a restart answers them), no longer awaited,
        so they are answered once."""
        keys = [(i.chat.channel, i.message_id) for i in inbounds]
        await self.store.write(lambda conn: conn.executemany(
            "UPDATE inbox SET awaiting = 0, status = 'pending', done_at = NULL WHERE channel = ? AND message_id = ?",
            keys))

    async def _select(self, where: str) -> list[Inbound]:
        async with self.store.db.execute(f"SELECT * FROM inbox WHERE {where} ORDER BY id") as cur:
            rows = await cur.fetchall()
        return [
            Inbound(
                chat=ChatRef(r["channel"], r["chat_id"], r["thread_id"], r["chat_kind"]),
                sender_id=r["sender_id"], sender_name=r["sender_name"], text=r["text"],
                message_id=r["message_id"], mentioned=bool(r["mentioned"]), reply_to=r["reply_to"],
                attachments=[Attachment(**{**meta, "kind": AttachmentKind(meta["kind"])})
                             for meta in json.loads(r["attachments"] or "[]")],
                sender_username=r["sender_username"],
                replied=Replied(**json.loads(r["replied"])) if r["replied"] else None,
            )
            for r in rows
        ]

    async def remember_group(self, inbound: Inbound, limit: int) -> None:
        """Keep a group message the bot was not addressed in; only the newest ``limit`` stay."""
        key, sender, text = inbound.chat.session_key, inbound.sender_name, inbound.text

        def remember(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO group_history (session_key, sender_name, text) VALUES (?, ?, ?)", (key, sender, text))
            conn.execute("DELETE FROM group_history WHERE session_key = ? AND id NOT IN"
                         " (SELECT id FROM group_history WHERE session_key = ? ORDER BY id DESC LIMIT ?)", (key, key, limit))

        await self.store.write(remember)

    async def take_group(self, chat: ChatRef) -> list[tuple[str, str]]:
        """The buffered group messages (sender, text), emptied: they are given to the model once."""
        key = chat.session_key

        def take(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = [(r[0], r[1]) for r in conn.execute(
                "SELECT sender_name, text FROM group_history WHERE session_key = ? ORDER BY id", (key,))]
            conn.execute("DELETE FROM group_history WHERE session_key = ?", (key,))
            return rows

        return await self.store.write(take)
