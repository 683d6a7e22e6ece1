"""What every channel adapter shares: the normalized message types and the ``Channel`` protocol.

Nothing platform-specific passes inward past ``Inbound``; nothing past ``Reply``
knows which platform it goes to, except through ``Capabilities``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable


class NotAccepted(Exception):
    """The core could not store a message (disk full): do not acknowledge it, the platform may deliver it again."""


class FetchError(Exception):
    """A file a user sent could not be fetched from the platform (after retries); the text says so to the user."""


def clean_text(text: str) -> str:
    """``text`` with anything that is not valid Unicode (undecodable bytes, lone surrogates) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


class AttachmentKind(str, Enum):
    VOICE = "voice"  # a recorded voice note
    AUDIO = "audio"  # an audio file
    IMAGE = "image"
    VIDEO = "video"
    DOCUMENT = "document"


Fetch = Callable[[], Awaitable[bytes]]


@dataclass(slots=True)
class Attachment:
    """A file that came with a message; its bytes are fetched only when someone needs them."""

    kind: AttachmentKind
    mime: str | None = None
    filename: str | None = None
    size: int | None = None
    duration: float | None = None
    fetch: Fetch | None = None
    source: str | None = None  # what the channel can fetch again after a restart (a path, a platform file id)
    _data: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_bytes(cls, kind: AttachmentKind, data: bytes, **kw: object) -> Attachment:
        """An attachment whose bytes are already here."""
        return cls(kind=kind, size=len(data), _data=data, **kw)  # type: ignore[arg-type]

    @classmethod
    def from_path(cls, kind: AttachmentKind, path: Path, **kw: object) -> Attachment:
        """An attachment read from a local file when first needed."""

        async def read() -> bytes:
            return path.read_bytes()

        return cls(kind=kind, filename=path.name, size=path.stat().st_size, fetch=read, source=str(path), **kw)  # type: ignore[arg-type]

    async def read(self) -> bytes:
        """The bytes, fetched once."""
        if self._data is None:
            if self.fetch is None:
                raise ValueError("attachment has neither bytes nor a way to fetch them")
            self._data = await self.fetch()
        return self._data


@dataclass(frozen=True, slots=True)
class ChatRef:
    """Where a message came from and where its answer goes."""

    channel: str
    chat_id: str
    thread_id: str | None = None
    kind: Literal["direct", "group"] = "direct"

    @property
    def session_key(self) -> str:
        """One conversation: a chat, or a topic/thread inside one."""
        base = f"{self.channel}:{self.chat_id}"
        return f"{base}:{self.thread_id}" if self.thread_id else base


@dataclass(frozen=True, slots=True)
class Replied:
    """The message an inbound one replies to (or the part of it the user quoted), as context for the model."""

    text: str
    author: str
    by_bot: bool = False  # the bot's own earlier answer
    quoted: bool = False  # ``text`` is the part the user selected, not the whole message


@dataclass(slots=True)
class Inbound:
    """One normalized incoming message."""

    chat: ChatRef
    sender_id: str
    sender_name: str
    text: str = ""
    message_id: str | None = None
    mentioned: bool = False  # addressed to the bot: named, replied to, or where its rules need no mention
    reply_to: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    sender_username: str | None = None  # the platform handle without "@", for allowlists by @username
    moved_from: str | None = None  # the chat's previous id: a Telegram group that became a supergroup
    # Parts of one message that the platform delivers one by one and will not send the next of before this one
    # is acknowledged (a Telegram album through a webhook): the core answers the parts with one key together.
    album: str | None = None
    scheduled: bool = False  # a scheduled job's run (bot.cron), not a person's message
    replied: Replied | None = None  # what ``reply_to`` said, when the platform told
    edit_of: str | None = None  # an edit: the id of the message it changes (``message_id`` is the edit's own)


def as_edit(inbound: Inbound, version: object) -> Inbound:
    """``inbound`` as the edit ``version`` (an edit time) of its message: an id of its own, so the inbox takes
    each version once, and ``edit_of`` naming the message it changes."""
    inbound.edit_of, inbound.message_id = inbound.message_id, f"{inbound.message_id}~edit{version}"
    return inbound


@dataclass(slots=True)
class Media:
    """A file the bot sends: generated image, video, music, or a voice note."""

    kind: AttachmentKind
    data: bytes
    mime: str
    filename: str
    caption: str | None = None
    duration: float | None = None
    title: str | None = None  # music: what a player shows


@dataclass(slots=True)
class Reply:
    """What goes back to a chat: text, media, and optionally a spoken voice note."""

    text: str = ""
    media: list[Media] = field(default_factory=list)
    voice: Media | None = None
    reply_to: str | None = None
    # Choices offered under the text, as (label, the command pressing it sends): a channel that can show
    # buttons does (Telegram's inline keyboard); the text says the same for those that cannot.
    buttons: list[tuple[str, str]] = field(default_factory=list)
    # The core's writes that this reply settles (a turn's history, its messages marked answered), opaque here:
    # a channel's durable outbox commits them in the transaction that writes the reply's parts down.
    settles: Any = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can render; the core shapes replies by these, never by platform name."""

    text_limit: int = 4096
    markdown: Literal["none", "markdown", "telegram-html", "discord"] = "none"
    voice_format: Literal["ogg_opus", "mp3"] = "mp3"
    streams_text: bool = False


# Returns once the message is accepted; ``False`` when it was a redelivery (accepted before).
InboundHandler = Callable[[Inbound], Awaitable[bool | None]]


@runtime_checkable
class ReplyStream(Protocol):
    """A reply being written: text arrives in pieces, then the whole reply closes it."""

    async def delta(self, text: str) -> None: ...

    async def close(self, reply: Reply) -> None:
        """Finish: ``reply.text`` is the whole text (already shown in pieces where the channel streams)."""
        ...

    # A channel may also offer ``async def react(self, chat: ChatRef, message_id: str, emoji: str | None)``:
    # put ``emoji`` on a message as a sign it is being answered (``None`` takes it off again).
    # A stream may also offer ``async def notice(self, text: str) -> None``: a passing status
    # ("the model is busy, trying again in 30 s…") that is not part of the answer; and
    # ``async def speaking(self) -> None``: the answer is being made into a voice note now.


class Leases(Protocol):
    """Named leases the instances on one database share (a Discord shard, the Telegram poller): each held by one
    live instance at a time, free again when its holder stops or dies. The core implements it; a channel is
    handed one (``Alone`` when it runs as the only instance)."""

    lease: float  # seconds a dead holder keeps its leases: how soon another instance can take them over
    every: float  # seconds between tries to take a lease another instance holds

    async def take(self, name: str) -> bool:
        """Hold ``name`` if it is free, its holder dead, or already ours; ``True`` when this instance holds it."""
        ...

    def holds(self, name: str) -> bool:
        """Whether this instance still holds ``name`` (it may have lost it while cut off from the others)."""
        ...

    async def give_up(self, name: str) -> None: ...

    async def count_live(self) -> int:
        """How many instances are alive, this one included."""
        ...

    async def get(self, name: str) -> str | None:
        """The shared value ``name`` a holder handed on (the Telegram update offset), or ``None`` (none kept, or
        the database cannot tell now)."""
        ...

    async def put(self, name: str, value: str) -> None:
        """Keep ``value`` as ``name`` for the next holder (best effort: a failure is logged, not raised)."""
        ...


class Alone:
    """The only instance: every lease is its own, and it has no one to hand a value on to."""

    lease = 15.0
    every = 1.0

    async def take(self, name: str) -> bool:
        return True

    def holds(self, name: str) -> bool:
        return True

    async def give_up(self, name: str) -> None:
        pass

    async def count_live(self) -> int:
        return 1

    async def get(self, name: str) -> str | None:
        return None

    async def put(self, name: str, value: str) -> None:
        pass


class Kept(Protocol):
    """Values every instance of the bot reads, each kept for a while (a Discord interaction's token until it
    expires): the core keeps them in its database (``bot.kept.KeptValues``); ``KeptHere`` in this process."""

    async def get(self, name: str, *, max_age: float | None = None) -> tuple[str, float] | None:
        """``name``'s value and when it was kept (unix time), unless expired or older than ``max_age`` seconds."""
        ...

    async def put(self, name: str, value: str, *, ttl: float | None = None) -> None:
        """Keep ``value`` as ``name``, for ``ttl`` seconds (else until replaced)."""
        ...

    async def drop(self, name: str) -> None: ...


class KeptHere:
    """``Kept`` in this process only: a channel run without the core's database."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[str, float, float]] = {}  # name -> value, kept at, expires at

    async def get(self, name: str, *, max_age: float | None = None) -> tuple[str, float] | None:
        value, kept_at, expires_at = self._values.get(name, ("", 0.0, 0.0))
        now = time.time()
        fresh = expires_at > now and (max_age is None or kept_at >= now - max_age)
        return (value, kept_at) if fresh else None

    async def put(self, name: str, value: str, *, ttl: float | None = None) -> None:
        now = time.time()
        self._values = {k: v for k, v in self._values.items() if v[2] > now}
        self._values[name] = (value, now, now + ttl if ttl is not None else float("inf"))

    async def drop(self, name: str) -> None:
        self._values.pop(name, None)


@runtime_checkable
class Channel(Protocol):
    """A platform adapter: turns platform events into ``Inbound`` and sends ``Reply`` back."""

    name: str
    capabilities: Capabilities

    async def run(self, on_message: InboundHandler) -> str | None:
        """Receive until stopped or the source ends, handing each message to ``on_message``; returns why it
        gave up for good (the platform refused its configuration, e.g. the token), else ``None``."""
        ...

    async def stop(self) -> None: ...

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        """Send a whole reply (used for replies that arrive later, e.g. finished video jobs)."""
        ...

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> ReplyStream:
        """Start a reply whose text is streamed as it is generated; ``reply_to`` is the message it answers."""
        ...

    def reattach(self, attachment: Attachment) -> Attachment | None:
        """Make an attachment saved by an earlier run fetchable again (from its ``source``), or ``None``."""
        ...
