"""State: sessions, their history, per-chat settings, and the durable inbox, on either database engine."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from channels.base import Attachment, AttachmentKind, ChatRef, Inbound, Replied
from providers.openrouter.refs import same_family

from .db.base import Database, Row, Statement, Tx, inserting, utc_now, utc_stamp

T = TypeVar("T")


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
        if self.tool_calls:
            msg["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            msg["tool_call_id"] = self.tool_call_id
        # Spelled out rather than looped over field names: it runs for every message of the history every turn.
        if (self.reasoning or self.reasoning_details) and (
                for_model is None or self.model is None or same_family(self.model, for_model)):
            if self.reasoning:
                msg["reasoning"] = self.reasoning
            if self.reasoning_details:
                msg["reasoning_details"] = self.reasoning_details
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


@dataclass(slots=True)
class Settlement:
    """What a turn writes once its answer is known: its history, its messages marked answered. Committed in the
    transaction that writes the answer's parts down for sending (``bot.outbox``), or after the answer where a
    channel keeps no parts (``Store.settle``): the answer, its record and "answered" are one fact, so a stop
    between them can neither lose the answer nor send it twice."""

    statements: list[Statement] = field(default_factory=list)
    settled: bool = False


_SETTINGS = ("model", "thinking", "tts", "tz")
KEEP_ANSWERED_DAYS = 7  # answered inbox rows are kept this long, far past any redelivery
_ACTIVE = "SELECT id FROM sessions WHERE key = ? AND active = 1"
# A turn's state in one statement: the chat's settings, its active session and that session's messages after
# the last one held (all of them if what is held is another session's). One row at least, NULLs for what is not.
_TURN_STATE = ("SELECT s.id AS active_session, c.model AS chat_model, c.thinking AS chat_thinking,"
               " c.tts AS chat_tts, c.tz AS chat_tz, m.* FROM (SELECT 1) AS one"
               " LEFT JOIN chat_settings c ON c.key = ?"
               " LEFT JOIN sessions s ON s.key = ? AND s.active = 1"
               " LEFT JOIN messages m ON m.session_id = s.id AND m.excluded = 0"
               " AND m.id > CASE WHEN s.id = ? THEN ? ELSE 0 END ORDER BY m.id")
_MESSAGE_COLUMNS = ("session_id, role, content, content_json, name, tool_calls, tool_call_id, model, prompt_tokens,"
                    " completion_tokens, cost, excluded, reasoning, reasoning_details")
_HISTORY_AFTER = "SELECT * FROM messages WHERE session_id = ? AND excluded = 0 AND id > ? ORDER BY id"
_CHAT_SETTINGS = "SELECT model, thinking, tts, tz FROM chat_settings WHERE key = ?"
_ACCEPT = ("INSERT INTO inbox (channel, message_id, chat_id, thread_id, chat_kind, sender_id, sender_name, text, mentioned,"
           " reply_to, attachments, sender_username, replied) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
           " ON CONFLICT DO NOTHING")


class Store:
    """Sessions, history and settings on a ``Database`` (SQLite by default, PostgreSQL for several instances).

    A turn's own reads go in one trip (``turn_state``); on SQLite that trip is on the loop, and a write with
    nothing ahead of it commits there too (see ``bot.db.sqlite``).
    """

    # Messages of recent sessions held in memory, so a turn reads only the rows added since its session's last
    # turn: reading a whole history each turn cost 3.3 µs a message, 1 ms a turn at 300 messages. Bounded by
    # size (held_size), not by count: 10,000 messages were too few for 130 chats of 100 messages (each turn
    # then read its whole history again, as the least recently used is the next to talk), and a count does not
    # bound a history of images kept as data URLs.
    HISTORY_CACHE = 32 << 20  # bytes, about

    def __init__(self, db: Database) -> None:
        self.db = db
        # chat's session key -> (its active session's id, that history, its held_size), least recently used first
        self._histories: OrderedDict[str, tuple[int, list[StoredMessage], int]] = OrderedDict()
        self._held = 0  # held_size of what _histories holds

    @classmethod
    async def open(cls, where: Path | str) -> Store:
        """Open (creating and migrating) the SQLite file at ``where``, or the PostgreSQL database whose
        ``postgresql://`` URL it is."""
        if isinstance(where, str) and is_database_url(where):
            from .db.postgres import PostgresDatabase  # asyncpg is loaded only by those who use it

            return cls(await PostgresDatabase.open(where))
        from .db.sqlite import SqliteDatabase

        return cls(await SqliteDatabase.open(Path(where)))

    async def close(self) -> None:
        await self.db.close()

    async def write(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` in a transaction committed when this returns (see ``Database.write``)."""
        return await self.db.write(fn)

    async def active_session(self, chat: ChatRef) -> int:
        """The chat's current session id, opening one if there is none."""
        found = await self.db.fetchval(_ACTIVE, chat.session_key)
        return int(found) if found is not None else await self.write(lambda tx: _open_session(tx, chat))

    async def turn_state(self, chat: ChatRef) -> TurnState:
        """The chat's session (opened if there is none), its history and the chat's settings, in one trip."""
        key = chat.session_key
        held_session, held, _ = self._histories.get(key, (0, [], 0))
        rows = await self.db.read(lambda tx: tx.fetch(_TURN_STATE, key, key, held_session, held[-1].id or 0 if held else 0))
        first = rows[0]
        settings = ChatSettings(first["chat_model"], first["chat_thinking"], first["chat_tts"], first["chat_tz"])
        if first["active_session"] is None:  # the chat's first turn: open its session, which has no history yet
            return TurnState(await self.write(lambda tx: _open_session(tx, chat)), [], settings)
        session_id = int(first["active_session"])
        added = [_from_row(r) for r in rows if r["id"] is not None]
        return TurnState(session_id, self._hold(key, session_id, added), settings)

    def _hold(self, key: str, session_id: int, added: list[StoredMessage]) -> list[StoredMessage]:
        """The session's history with ``added`` joined (the rows after the last held: history only grows, by
        rows with higher ids, and on a shared database another instance may have answered since), kept as the
        most recently used; the least recently used are let go past ``HISTORY_CACHE`` bytes. A history held
        for another session of the chat (retired since) is dropped: ``added`` is then the whole history.
        Returns a list of the caller's own. A session's turns run one at a time (its lane), so what one turn
        read is joined before the next reads."""
        held_session, held, size = self._histories.pop(key, (session_id, [], 0))
        if held_session != session_id:
            self._held -= size
            held, size = [], 0
        held += added
        grown = sum(map(held_size, added))
        self._histories[key] = (session_id, held, size + grown)
        self._held += grown
        while self._held > self.HISTORY_CACHE and len(self._histories) > 1:
            self._held -= self._histories.popitem(last=False)[1][2]
        return list(held)

    async def new_session(self, chat: ChatRef) -> int:
        """Retire the chat's session (kept in the database) and open a fresh one."""
        async def retire(tx: Tx) -> int:
            await tx.execute("UPDATE sessions SET active = 0 WHERE key = ? AND active = 1", chat.session_key)
            return await _open_session(tx, chat)

        return await self.write(retire)

    async def move_chat(self, channel: str, old_id: str, new_id: str) -> None:
        """A chat got a new id (a Telegram group became a supergroup): its sessions, per-chat settings and
        group buffer follow it, topics included. Whatever the new id already had gives way."""
        old, new = f"{channel}:{old_id}", f"{channel}:{new_id}"
        rekey = "? || substr(key, ?)"
        under = "(key = ? OR substr(key, 1, ?) = ?)"  # the chat itself, or one of its topics
        cut, under_args = len(old) + 1, (old, len(old) + 1, old + ":")

        async def move(tx: Tx) -> None:
            await tx.execute("UPDATE sessions SET active = 0 WHERE channel = ? AND chat_id = ?", channel, new_id)
            await tx.execute(f"UPDATE sessions SET key = {rekey}, chat_id = ? WHERE channel = ? AND chat_id = ?",
                             new, cut, new_id, channel, old_id)
            await tx.execute(f"DELETE FROM chat_settings WHERE key IN (SELECT {rekey} FROM chat_settings WHERE {under})",
                             new, cut, *under_args)
            await tx.execute(f"UPDATE chat_settings SET key = {rekey} WHERE {under}", new, cut, *under_args)
            await tx.execute(f"UPDATE group_history SET session_key = {rekey.replace('key', 'session_key')} "
                             f"WHERE {under.replace('key', 'session_key')}", new, cut, *under_args)

        await self.write(move)

    async def history(self, session_id: int) -> list[StoredMessage]:
        """The session's messages that later requests carry, oldest first (excluded turns are left out)."""
        return [_from_row(r) for r in await self.db.fetch(_HISTORY_AFTER, session_id, 0)]

    async def append(self, session_id: int, messages: list[StoredMessage], *, excluded: bool = False) -> None:
        """Store messages of one turn together, so a crash never leaves half a turn; ``excluded``
        keeps them out of every later request (a turn that would fail again)."""
        ids, = await self.db.write_all([appending(session_id, messages, excluded=excluded)])
        for m, row_id in zip(messages, ids, strict=True):
            m.id = row_id

    async def settle(self, settlement: Settlement) -> None:
        """Commit what ``settlement`` still owes (nothing when the outbox committed it with the answer)."""
        if not settlement.settled and settlement.statements:
            await self.db.write_all(settlement.statements)
        settlement.settled = True

    async def stats(self, session_id: int) -> SessionStats:
        """Message count, tokens and cost of a session."""
        row = await self.db.fetchrow(
            "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
            " COALESCE(SUM(cost), 0) FROM messages WHERE session_id = ?",
            session_id,
        )
        assert row is not None
        return SessionStats(int(row[0]), int(row[1]), int(row[2]), float(row[3]))

    async def chat_settings(self, chat: ChatRef) -> ChatSettings:
        row = await self.db.fetchrow(_CHAT_SETTINGS, chat.session_key)
        return ChatSettings(*row) if row else ChatSettings()

    async def set_chat_setting(self, chat: ChatRef, name: str, value: str | None) -> None:
        """Persist one override (``None`` clears it)."""
        if name not in _SETTINGS:
            raise ValueError(f"unknown chat setting {name!r}")
        await self.write(lambda tx: tx.execute(
            f"INSERT INTO chat_settings (key, {name}) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET {name} = excluded.{name}",
            chat.session_key, value))


def is_database_url(where: str) -> bool:
    """Whether ``where`` names a PostgreSQL database rather than a file."""
    return where.startswith(("postgresql://", "postgres://"))


def appending(session_id: int, messages: list[StoredMessage], *, excluded: bool = False) -> Statement:
    """The statement that stores ``messages`` (not empty) of one turn; ``excluded`` keeps them out of every later
    request (a turn that would fail again). The session's updated_at is set by a trigger (migration 0013)."""
    return inserting("messages", _MESSAGE_COLUMNS, [_message_row(session_id, m, excluded) for m in messages])


def marked_answered(inbounds: list[Inbound]) -> Statement:
    """The statement that marks messages (of one channel) answered."""
    ids = [i.message_id for i in inbounds]
    return (f"UPDATE inbox SET status = 'done', done_at = ? WHERE channel = ? AND message_id IN ({', '.join('?' * len(ids))})",
            [utc_now(), inbounds[0].chat.channel, *ids])


def _attachment_meta(a: Attachment) -> dict[str, Any]:
    """What is kept of an attachment: enough to fetch it again, never its bytes."""
    return {"kind": a.kind.value, "mime": a.mime, "filename": a.filename, "size": a.size, "source": a.source}


def held_size(m: StoredMessage) -> int:
    """About the bytes ``m`` takes in memory: its text, and a few hundred for the object and its other fields."""
    content = m.content if isinstance(m.content, str) else json.dumps(m.content) if m.content else ""
    return 300 + len(content) + len(m.reasoning or "")


def _from_row(r: Row) -> StoredMessage:
    content = json.loads(r["content"]) if r["content_json"] else r["content"]
    return StoredMessage(
        role=r["role"], content=content, name=r["name"],
        tool_calls=json.loads(r["tool_calls"]) if r["tool_calls"] else None,
        tool_call_id=r["tool_call_id"], model=r["model"], prompt_tokens=r["prompt_tokens"],
        completion_tokens=r["completion_tokens"], cost=r["cost"], reasoning=r["reasoning"],
        reasoning_details=json.loads(r["reasoning_details"]) if r["reasoning_details"] else None, id=r["id"],
    )


async def _open_session(tx: Tx, chat: ChatRef) -> int:
    await tx.execute("INSERT INTO sessions (key, channel, chat_id, thread_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                     chat.session_key, chat.channel, chat.chat_id, chat.thread_id)
    return int(await tx.fetchval(_ACTIVE, chat.session_key))


def _message_row(session_id: int, m: StoredMessage, excluded: bool) -> tuple[Any, ...]:
    content, is_json = (json.dumps(m.content), 1) if isinstance(m.content, list) else (m.content, 0)
    return (session_id, m.role, content, is_json, m.name, json.dumps(m.tool_calls) if m.tool_calls else None,
            m.tool_call_id, m.model, m.prompt_tokens, m.completion_tokens, m.cost, int(excluded), m.reasoning,
            json.dumps(m.reasoning_details) if m.reasoning_details else None)


class Inbox:
    """The durable inbox and the group-chat buffer, on the store's database."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def accept(self, inbound: Inbound) -> bool:
        """Record a message before it is acknowledged; ``False`` when it was seen already (a redelivery).

        Committed before it returns (on SQLite, on the loop at once, or, when another write holds the database,
        in the next group commit). The channel waits for it before it takes the next message."""
        chat = inbound.chat
        row = (chat.channel, inbound.message_id, chat.chat_id, chat.thread_id, chat.kind, inbound.sender_id,
               inbound.sender_name, inbound.text, int(inbound.mentioned), inbound.reply_to,
               json.dumps([_attachment_meta(a) for a in inbound.attachments]) if inbound.attachments else None,
               inbound.sender_username, json.dumps(asdict(inbound.replied)) if inbound.replied else None)
        return await self.store.db.execute(_ACCEPT, *row) == 1

    async def done(self, inbounds: list[Inbound]) -> None:
        """Mark messages answered."""
        by_channel: dict[str, list[Inbound]] = {}
        for i in inbounds:
            by_channel.setdefault(i.chat.channel, []).append(i)
        if by_channel:
            await self.store.db.write_all([marked_answered(group) for group in by_channel.values()])

    async def prune(self, keep_days: int = KEEP_ANSWERED_DAYS) -> int:
        """Forget messages answered more than ``keep_days`` ago; returns how many. Their words stay in the
        session history; a row only has to outlive the platform's redeliveries (minutes), and without this
        the inbox kept a second copy of every message ever received."""
        before = utc_stamp(datetime.now(timezone.utc) - timedelta(days=keep_days))
        # in the database thread on SQLite: a first prune may delete many rows; a pending row has no done_at
        return await self.store.db.in_thread(lambda tx: tx.execute("DELETE FROM inbox WHERE done_at < ?", before))

    async def pending(self) -> list[Inbound]:
        """Messages accepted but never answered (the process died mid-turn), oldest first."""
        return await self._select("status = 'pending'")

    async def pending_of(self, chat: ChatRef) -> list[Inbound]:
        """One conversation's messages waiting to be answered, oldest first."""
        return await self._select("status = 'pending' AND awaiting = 0 AND channel = ? AND chat_id = ? AND thread_id IS ?",
                                  chat.channel, chat.chat_id, chat.thread_id)

    async def pending_chats(self) -> list[ChatRef]:
        """The conversations with messages waiting to be answered."""
        rows = await self.store.db.fetch("SELECT DISTINCT channel, chat_id, thread_id, chat_kind FROM inbox"
                                         " WHERE status = 'pending' AND awaiting = 0")
        return [ChatRef(r[0], r[1], r[2], r[3]) for r in rows]

    async def await_approval(self, inbound: Inbound, keep: int) -> None:
        """Keep a stranger's message to answer once the owner approves them: only their newest ``keep``."""
        key = (inbound.chat.channel, inbound.sender_id)

        async def mark(tx: Tx) -> None:
            await tx.execute("UPDATE inbox SET awaiting = 1 WHERE channel = ? AND message_id = ?",
                             inbound.chat.channel, inbound.message_id)
            await tx.execute("UPDATE inbox SET awaiting = 0 WHERE channel = ? AND sender_id = ? AND awaiting = 1 AND id NOT IN"
                             " (SELECT id FROM inbox WHERE channel = ? AND sender_id = ? AND awaiting = 1"
                             " ORDER BY id DESC LIMIT ?)", *key, *key, keep)

        await self.store.write(mark)

    async def awaiting_approved(self) -> list[Inbound]:
        """Strangers' kept messages whose senders the owner has approved since, oldest first (one query, however
        many strangers still wait)."""
        return await self._select("awaiting = 1 AND EXISTS (SELECT 1 FROM access_approvals a"
                                  " WHERE a.channel = inbox.channel AND a.sender_id = inbox.sender_id)")

    async def release(self, inbounds: list[Inbound]) -> list[Inbound]:
        """Hand awaited messages back to be answered: pending again (a restart answers them), no longer awaited,
        so they are answered once. Returns those this call released: of several instances, one gets each."""
        async def claim(tx: Tx) -> list[Inbound]:
            return [i for i in inbounds if await tx.execute(
                "UPDATE inbox SET awaiting = 0, status = 'pending', done_at = NULL"
                " WHERE channel = ? AND message_id = ? AND awaiting = 1", i.chat.channel, i.message_id)]

        return await self.store.write(claim)

    async def _select(self, where: str, *args: Any) -> list[Inbound]:
        return [_inbound(r) for r in await self.store.db.fetch(f"SELECT * FROM inbox WHERE {where} ORDER BY id", *args)]

    async def remember_group(self, inbound: Inbound, limit: int) -> None:
        """Keep a group message the bot was not addressed in; only the newest ``limit`` stay."""
        key, sender, text = inbound.chat.session_key, inbound.sender_name, inbound.text

        async def remember(tx: Tx) -> None:
            await tx.execute("INSERT INTO group_history (session_key, sender_name, text) VALUES (?, ?, ?)", key, sender, text)
            await tx.execute("DELETE FROM group_history WHERE session_key = ? AND id NOT IN"
                             " (SELECT id FROM group_history WHERE session_key = ? ORDER BY id DESC LIMIT ?)", key, key, limit)

        await self.store.write(remember)

    async def take_group(self, chat: ChatRef) -> list[tuple[str, str]]:
        """The buffered group messages (sender, text), emptied: they are given to the model once."""
        key = chat.session_key

        async def take(tx: Tx) -> list[tuple[str, str]]:
            rows = [(r[0], r[1]) for r in await tx.fetch(
                "SELECT sender_name, text FROM group_history WHERE session_key = ? ORDER BY id", key)]
            await tx.execute("DELETE FROM group_history WHERE session_key = ?", key)
            return rows

        return await self.store.write(take)


def _inbound(r: Row) -> Inbound:
    return Inbound(
        chat=ChatRef(r["channel"], r["chat_id"], r["thread_id"], r["chat_kind"]),
        sender_id=r["sender_id"], sender_name=r["sender_name"], text=r["text"],
        message_id=r["message_id"], mentioned=bool(r["mentioned"]), reply_to=r["reply_to"],
        attachments=[Attachment(**{**meta, "kind": AttachmentKind(meta["kind"])})
                     for meta in json.loads(r["attachments"] or "[]")],
        sender_username=r["sender_username"],
        replied=Replied(**json.loads(r["replied"])) if r["replied"] else None,
    )
