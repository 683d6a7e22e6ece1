"""The durable outbox every adapter sends the final parts of its answers through.

A part (one text message, one file, one notice) is written down (``PartStore``) before its first send and
forgotten only once the platform confirmed it. Sending retries with growing, jittered pauses when the failure
may be transient, waits out a rate limit however long it is, drops the chat's parts when the chat refuses the
bot for good, and leaves a part that still fails pending: it is sent again before anything newer in its chat,
in this run or the next. The adapter says what its errors mean (``classify``); nothing here knows a platform.

Order: a chat's parts go out one at a time, oldest first; the parts a previous run left are loaded before the
first new one is sent, so they always go first. With several instances on one database, the parts an instance
left when it died are handed over later (``adopt``) and go before the chat's newer parts not yet sent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol, TypeVar

from .base import ChatRef

log = logging.getLogger("chorus.outbox")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How a part is retried: ``attempts`` sends in all, pauses from ``min_delay`` doubling up to ``max_delay``
    seconds, each moved by up to ``jitter`` (a fraction) either way. OpenClaw's ``retry`` block, in seconds."""

    attempts: int = 3
    min_delay: float = 0.4
    max_delay: float = 30.0
    jitter: float = 0.1
    scale: float = 1.0  # every wait (pauses and rate limits) multiplied by this: tests shorten them

    def pause(self, tries: int) -> float:
        """The pause after the ``tries``-th failed send."""
        base = min(self.max_delay, self.min_delay * 2 ** (tries - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(slots=True)
class Part:
    """One message to send: ``body`` says what, in the adapter's terms (JSON-able); ``data`` a file's bytes,
    kept by the ``PartStore`` (a file named ``file``, or in the database where several instances share it)."""

    chat: ChatRef
    body: dict[str, Any]
    data: bytes | None = None
    file: str | None = None
    id: int | None = None


class Fate(Enum):
    """What a failed send means for the part."""

    RETRY = "retry"  # it certainly did not arrive (an error answer, no connection): send again after a pause
    UNKNOWN = "unknown"  # it went out and no answer came: it may have arrived; sent again (at least once)
    WAIT = "wait"  # a rate limit: send again once it is over, however long that is
    GONE = "gone"  # the chat refuses the bot (blocked, kicked, deleted): drop the chat's parts
    REFUSED = "refused"  # this part can never be sent (a malformed request): drop it, go on with the next


@dataclass(frozen=True, slots=True)
class Failure:
    """How the adapter reads an exception: its ``fate``, the wait a rate limit asks for, what to log."""

    fate: Fate
    why: str
    wait: float = 0.0


Classify = Callable[[BaseException], "Failure | None"]  # None: not a platform failure (a bug): raised
SendPart = Callable[[Part], Awaitable[Any]]
Outcome = Literal["sent", "pending", "dropped"]


class PartStore(Protocol):
    """Where parts are kept until they are sent (the core's database); ``None`` keeps them in memory only."""

    async def add(self, parts: list[Part], settles: Any = None) -> None:
        """Write ``parts`` (their files too) in one transaction, with what the reply ``settles`` (the core's
        writes, see ``Reply.settles``); sets each ``id`` and ``file``."""

    async def done(self, parts: list[Part]) -> None:
        """Forget parts that were sent or dropped, and their files."""

    async def pending(self, channel: str) -> list[Part]:
        """The channel's parts left unsent that are this process's to send (all, or those of instances that
        died, taken over), oldest first, each with its ``data`` read back."""

    def watch(self, channel: str, adopt: Callable[[], Awaitable[None]]) -> None:
        """Call ``adopt`` whenever parts of ``channel`` that another process left are there to take over."""


async def attempt(call: Callable[[], Awaitable[T]], classify: Classify, retry: RetrySettings, where: str) -> T:
    """``call()``, again after a pause while its failures may be transient (at most ``retry.attempts`` times),
    and again after a rate limit however long it is (logged once). Raises the failure that ended it."""
    tries, waited = 0, False
    while True:
        try:
            return await call()
        except Exception as exc:
            failure = classify(exc)
            if failure is None or failure.fate in (Fate.GONE, Fate.REFUSED):
                raise
            if failure.fate is Fate.WAIT:
                if not waited:  # once, however many times the platform asks again
                    log.warning("rate limited (%s): waiting %.0f s before sending again %s", failure.why,
                                failure.wait, where)
                    waited = True
                await asyncio.sleep(failure.wait * retry.scale)
                continue
            tries += 1
            if tries >= retry.attempts:
                raise
            if failure.fate is Fate.UNKNOWN:
                log.warning("no answer (%s); sending again, so it may arrive twice %s", failure.why, where)
            await asyncio.sleep(retry.pause(tries) * retry.scale)


@dataclass(slots=True)
class _Chat:
    queue: list[Part] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flushes: int = 0  # sending or waiting to: the chat is forgotten only when none is and its queue is empty


class Outbox:
    """One channel's outbox: ``deliver`` the final parts of an answer, ``resume`` what an earlier run left."""

    def __init__(self, channel: str, send: SendPart, classify: Classify, *, store: PartStore | None = None,
                 retry: RetrySettings = RetrySettings()) -> None:
        self.channel = channel
        self._send = send
        self._classify = classify
        self._store = store
        self.retry = retry
        self._chats: dict[str, _Chat] = {}
        self._loaded: asyncio.Task[None] | None = None
        self._refusing: set[str] = set()  # chats that refused the bot, said once until one takes a part again
        self._adopted: set[asyncio.Task[Outcome]] = set()
        if store is not None:
            store.watch(channel, self.adopt)

    async def deliver(self, parts: list[Part], settles: Any = None) -> Outcome:
        """Write ``parts`` (all of one chat) down, with what the reply ``settles``, then send the chat's queue,
        older parts first. ``"pending"``: a part still failed after every attempt and is kept for later (logged)."""
        if not parts:
            return "sent"
        await self._load()
        if self._store is not None:
            try:
                await self._store.add(parts, settles)
            except Exception as exc:  # the disk is full: say it now rather than keep it for later
                if settles is not None:
                    raise  # the reply's record was not written either: its sender answers again later, once
                log.error("could not write %d part(s) down (%s); sending them without a copy channel=%s chat=%s",
                          len(parts), exc, self.channel, parts[0].chat.chat_id)
        chat = self._chat(parts[0].chat)
        chat.queue += parts
        return await self._flush(parts[0].chat.session_key, chat)

    async def resume(self) -> None:
        """Send what earlier runs left pending, chat by chat (each chat's in order, the chats side by side)."""
        await self._load()
        waiting = [(key, chat) for key, chat in self._chats.items() if chat.queue]
        if waiting:
            log.info("sending %d part(s) left pending in %d chat(s) channel=%s",
                     sum(len(c.queue) for _, c in waiting), len(waiting), self.channel)
            await asyncio.gather(*(self._flush(key, chat) for key, chat in waiting))

    async def adopt(self) -> None:
        """Take over the parts instances that died left unsent, and send them in the background (each chat's
        before its newer parts still waiting). Before the first load (at start) there is nothing to do: it
        takes them."""
        if self._store is None or self._loaded is None or not self._loaded.done():
            return
        taken: dict[str, _Chat] = {}
        for part in await self._store.pending(self.channel):
            chat = taken[part.chat.session_key] = self._chat(part.chat)
            sending = chat.queue[:1] if chat.lock.locked() else []  # the part being sent stays at the head
            chat.queue[len(sending):] = sorted([*chat.queue[len(sending):], part], key=_age)
        for key, chat in taken.items():
            task = asyncio.create_task(self._flush(key, chat))
            self._adopted.add(task)
            task.add_done_callback(self._adopted.discard)

    def _chat(self, chat: ChatRef) -> _Chat:
        return self._chats.setdefault(chat.session_key, _Chat())

    async def _load(self) -> None:
        """Queue what earlier runs left, once, before anything new is queued behind it."""
        if self._store is None:
            return
        if self._loaded is None:
            self._loaded = asyncio.ensure_future(self._read_pending())
        try:
            await asyncio.shield(self._loaded)
        except Exception as exc:  # the database cannot be read: new parts go out; the old ones wait for a restart
            log.error("could not read the unsent parts (%s) channel=%s", exc, self.channel)

    async def _read_pending(self) -> None:
        assert self._store is not None
        for part in await self._store.pending(self.channel):
            self._chat(part.chat).queue.append(part)

    async def _flush(self, key: str, chat: _Chat) -> Outcome:
        chat.flushes += 1
        try:
            async with chat.lock:
                while chat.queue:
                    part = chat.queue[0]
                    outcome = await self._send_one(part)
                    if outcome == "pending":
                        return "pending"
                    done = 1 if outcome != "gone" else len(chat.queue)  # a chat gone takes its queue along
                    finished, chat.queue[:done] = chat.queue[:done], []
                    await self._forget(finished)
                    if outcome == "gone":
                        return "dropped"
                return "sent"
        finally:
            chat.flushes -= 1
            if not chat.queue and not chat.flushes and self._chats.get(key) is chat:
                del self._chats[key]

    async def _send_one(self, part: Part) -> Outcome | Literal["gone"]:
        """Send one part until it is sent, refused, or out of attempts."""
        where = f"channel={self.channel} chat={part.chat.chat_id}"
        try:
            await attempt(lambda: self._send(part), self._classify, self.retry, where)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failure = self._classify(exc)
            if failure is None:
                log.exception("a part could not be sent and is dropped %s", where)
                return "dropped"
            if failure.fate is Fate.GONE:
                if part.chat.session_key not in self._refusing:
                    self._refusing.add(part.chat.session_key)
                    log.warning("the chat refuses messages (%s); its unsent parts are dropped, and so are later "
                                "ones until it takes one again %s", failure.why, where)
                return "gone"
            if failure.fate is Fate.REFUSED:
                log.error("a part was refused and is dropped (%s) %s", failure.why, where)
                return "dropped"
            log.error("a part could not be sent after %d attempts (%s); it stays pending and is sent again "
                      "before this chat's next answer or at the next start %s", self.retry.attempts, failure.why, where)
            return "pending"
        self._refusing.discard(part.chat.session_key)
        return "sent"

    async def _forget(self, parts: list[Part]) -> None:
        kept = [p for p in parts if p.id is not None]
        if self._store is not None and kept:
            try:
                await self._store.done(kept)
            except Exception as exc:  # sent all the same; a restart would send it once more
                log.error("could not mark %d part(s) sent (%s) channel=%s", len(kept), exc, self.channel)


def _age(part: Part) -> float:
    """Where a part goes in its chat's queue: by id (the order parts were written), unwritten ones last."""
    return part.id if part.id is not None else float("inf")
