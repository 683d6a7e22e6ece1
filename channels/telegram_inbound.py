"""Telegram messages as ``Inbound``: who, where (chat, forum topic), text, mention, reply, attachments.

Attachments carry their ``file_id`` as ``source`` and fetch their bytes only when asked, so a message saved
in the inbox before a restart can be fetched again (``reattach``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from aiogram.types import Message, User

from .base import Attachment, AttachmentKind, ChatRef, Inbound

Download = Callable[[str], Awaitable[bytes]]
CHANNEL = "telegram"


@dataclass(frozen=True, slots=True)
class MentionRules:
    """When a group message is addressed to the bot without naming it: ``requireMention`` per group."""

    require_mention: bool = True
    groups: Mapping[str, bool | None] = field(default_factory=dict)  # chat id or "*" -> requireMention

    def required(self, chat_id: int) -> bool:
        for key in (str(chat_id), "*"):
            value = self.groups.get(key)
            if value is not None:
                return value
        return self.require_mention


def message_ref(chat_id: int | str, message_id: int) -> str:
    """The inbox id of a message: Telegram's message ids are only unique within a chat."""
    return f"{chat_id}:{message_id}"


def parse_ref(ref: str | None) -> int | None:
    """The Telegram message id inside ``message_ref``'s string, if it is one."""
    if not ref or ":" not in ref:
        return None
    tail = ref.rsplit(":", 1)[1]
    return int(tail) if tail.isdigit() else None


def chat_ref(message: Message) -> ChatRef:
    """Where a message lives: private chat, group, or a forum topic of a supergroup (its own session)."""
    chat = message.chat
    thread = message.message_thread_id if chat.is_forum and message.is_topic_message else None
    return ChatRef(CHANNEL, str(chat.id), str(thread) if thread else None,
                   "direct" if chat.type == "private" else "group")


def addressed(message: Message, me: User) -> bool:
    """Whether a message names the bot: @username, a text mention, /cmd@username, or a reply to the bot."""
    if message.chat.type == "private":
        return True
    reply = message.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == me.id:
        return True
    text = message.text or message.caption or ""
    username = (me.username or "").lower()
    for entity in message.entities or message.caption_entities or []:
        if entity.type == "text_mention" and entity.user is not None and entity.user.id == me.id:
            return True
        if entity.type in ("mention", "bot_command") and username:
            value = entity.extract_from(text).lower()
            if value == f"@{username}" or value.endswith(f"@{username}"):
                return True
    return False


def for_another_bot(message: Message, me: User) -> bool:
    """``/cmd@otherbot`` in a group: a command for another bot, not for us."""
    first = (message.text or "").split(maxsplit=1)[0] if message.text else ""
    if not first.startswith("/") or "@" not in first:
        return False
    return first.split("@", 1)[1].lower() != (me.username or "").lower()


def to_inbound(messages: list[Message], me: User, rules: MentionRules, download: Download) -> Inbound:
    """One ``Inbound`` for a message, or for all photos of an album (``messages`` in order)."""
    first = messages[0]
    sender = first.from_user
    chat = chat_ref(first)
    text = next((m.text or m.caption for m in messages if m.text or m.caption), "") or ""
    mentioned = any(addressed(m, me) for m in messages) or (chat.kind == "group" and not rules.required(first.chat.id))
    reply = first.reply_to_message
    return Inbound(
        chat=chat,
        sender_id=str(sender.id) if sender else str(first.chat.id),
        sender_name=(sender.full_name if sender else first.chat.title) or "someone",
        text=text,
        message_id=message_ref(first.chat.id, first.message_id),
        mentioned=mentioned,
        reply_to=message_ref(first.chat.id, reply.message_id) if reply else None,
        attachments=[a for m in messages for a in attachments(m, download)],
        sender_username=sender.username if sender else None,
    )


def attachments(message: Message, download: Download) -> list[Attachment]:
    """The files of one message, fetched lazily by file_id."""
    found: list[Attachment] = []

    def add(kind: AttachmentKind, file_id: str, **kw: object) -> None:
        found.append(lazy(kind, file_id, download, **kw))

    if message.photo:
        biggest = message.photo[-1]  # sizes come smallest first
        add(AttachmentKind.IMAGE, biggest.file_id, mime="image/jpeg", filename="photo.jpg", size=biggest.file_size)
    if message.voice:
        v = message.voice
        add(AttachmentKind.VOICE, v.file_id, mime=v.mime_type or "audio/ogg", filename="voice.ogg", size=v.file_size,
            duration=float(v.duration))
    if message.audio:
        a = message.audio
        add(AttachmentKind.AUDIO, a.file_id, mime=a.mime_type, filename=a.file_name, size=a.file_size,
            duration=float(a.duration))
    if message.video_note:
        n = message.video_note  # a round video: its sound is heard like a voice note
        add(AttachmentKind.VOICE, n.file_id, mime="video/mp4", filename="video_note.mp4", size=n.file_size,
            duration=float(n.duration))
    if message.video:
        v = message.video
        add(AttachmentKind.VIDEO, v.file_id, mime=v.mime_type, filename=v.file_name, size=v.file_size,
            duration=float(v.duration))
    if message.document:
        d = message.document
        major = (d.mime_type or "").split("/", 1)[0]  # a photo or a recording sent "as a file" is still one
        kind = {"image": AttachmentKind.IMAGE, "audio": AttachmentKind.AUDIO}.get(major, AttachmentKind.DOCUMENT)
        add(kind, d.file_id, mime=d.mime_type, filename=d.file_name, size=d.file_size)
    return found


def lazy(kind: AttachmentKind, file_id: str, download: Download, **kw: object) -> Attachment:
    """An attachment fetched from Telegram by ``file_id`` when first read."""

    async def fetch() -> bytes:
        return await download(file_id)

    return Attachment(kind=kind, fetch=fetch, source=file_id, **kw)  # type: ignore[arg-type]


UNREADABLE = (AttachmentKind.DOCUMENT, AttachmentKind.VIDEO)


def unreadable_note(inbound: Inbound) -> str | None:
    """A sentence about the files the model cannot take (documents, videos), or ``None``."""
    names = [a.filename or a.kind.value for a in inbound.attachments if a.kind in UNREADABLE]
    if not names:
        return None
    return (f"I can't read {', '.join(names)}: I understand text, photos, voice notes and audio files."
            + (" I'll answer the rest of your message." if inbound.text else ""))


class Albums:
    """Photos sent together arrive as one update each; they are held here and become one message."""

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[int, Message]]] = {}

    def add(self, update_id: int, message: Message) -> None:
        self._parts.setdefault(str(message.media_group_id), []).append((update_id, message))

    def first_update_id(self) -> int | None:
        """The oldest update still held: polling must not confirm past it."""
        ids = [u for parts in self._parts.values() for u, _ in parts]
        return min(ids) if ids else None

    def take(self) -> list[list[Message]]:
        """Every held album, each in message order; the holder is empty afterwards."""
        albums = [[m for _, m in sorted(parts, key=lambda p: p[1].message_id)] for parts in self._parts.values()]
        self._parts.clear()
        return albums


class AlbumWaiter:
    """Albums for webhook mode: every part's request waits until the album, complete, is accepted."""

    def __init__(self, quiet: float, accept: Callable[[list[Message]], Awaitable[None]]) -> None:
        self.quiet = quiet
        self.accept = accept
        self._groups: dict[str, tuple[list[Message], asyncio.Future[None], asyncio.TimerHandle | None]] = {}

    async def add(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        key = str(message.media_group_id)
        parts, done, timer = self._groups.get(key) or ([], loop.create_future(), None)
        if timer:
            timer.cancel()
        parts.append(message)
        self._groups[key] = (parts, done, loop.call_later(self.quiet, self._flush, key))
        await asyncio.shield(done)

    def _flush(self, key: str) -> None:
        parts, done, _ = self._groups.pop(key)

        async def run() -> None:
            try:
                await self.accept(sorted(parts, key=lambda m: m.message_id))
                done.set_result(None)
            except Exception as exc:  # the webhook answers 500 and Telegram delivers again
                done.set_exception(exc)

        asyncio.get_running_loop().create_task(run())
