"""Telegram messages as ``Inbound``: who, where (chat, forum topic), text, mention, reply, attachments.

Attachments carry their ``file_id`` as ``source`` and fetch their bytes only when asked, so a message saved
in the inbox before a restart can be fetched again (``reattach``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import Attachment, AttachmentKind, ChatRef, Inbound, Replied
from .api import File, Message, MessageEntity, User

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
    chat = message["chat"]
    thread = message.get("message_thread_id") if chat.get("is_forum") and message.get("is_topic_message") else None
    return ChatRef(CHANNEL, str(chat["id"]), str(thread) if thread else None,
                   "direct" if chat["type"] == "private" else "group")


def full_name(user: User) -> str:
    """First and last name, as Telegram shows a user."""
    return f"{user['first_name']} {user['last_name']}" if user.get("last_name") else user["first_name"]


def entity_text(text: str, entity: MessageEntity) -> str:
    """The part of ``text`` an entity covers (its offsets count UTF-16 units)."""
    units = text.encode("utf-16-le")
    return units[entity["offset"] * 2:(entity["offset"] + entity["length"]) * 2].decode("utf-16-le", "replace")


def addressed(message: Message, me: User) -> bool:
    """Whether a message names the bot: @username, a text mention, /cmd@username, or a reply to the bot."""
    if message["chat"]["type"] == "private":
        return True
    reply = message.get("reply_to_message")
    if reply is not None and reply.get("from", {}).get("id") == me["id"]:
        return True
    text = message.get("text") or message.get("caption") or ""
    username = me.get("username", "").lower()
    for entity in message.get("entities") or message.get("caption_entities") or []:
        if entity["type"] == "text_mention" and entity.get("user", {}).get("id") == me["id"]:
            return True
        if entity["type"] in ("mention", "bot_command") and username:
            value = entity_text(text, entity).lower()
            if value == f"@{username}" or value.endswith(f"@{username}"):
                return True
    return False


def _command(message: Message) -> tuple[str, str]:
    """A text's leading command and the bot it names: ``/start@chorus_bot hi`` -> (``start``, ``chorus_bot``)."""
    text = message.get("text") or ""
    first = text.split(maxsplit=1)[0] if text.startswith("/") else ""
    name, _, bot = first[1:].partition("@")
    return name, bot.lower()


def command(message: Message, me: User) -> str | None:
    """The command a text starts with when it is for us (``/start``, ``/start@ourbot``), else ``None``."""
    name, bot = _command(message)
    return name if name and bot in ("", me.get("username", "").lower()) else None


def for_another_bot(message: Message, me: User) -> bool:
    """``/cmd@otherbot`` in a group: a command for another bot, not for us."""
    _, bot = _command(message)
    return bool(bot) and bot != me.get("username", "").lower()


def to_inbound(messages: list[Message], me: User, rules: MentionRules, download: Download) -> Inbound:
    """One ``Inbound`` for a message, or for all photos of an album (``messages`` in order)."""
    first = messages[0]
    sender = first.get("from")
    chat = chat_ref(first)
    chat_id = first["chat"]["id"]
    text = next((m.get("text") or m.get("caption") for m in messages if m.get("text") or m.get("caption")), "") or ""
    mentioned = any(addressed(m, me) for m in messages) or (chat.kind == "group" and not rules.required(chat_id))
    reply = first.get("reply_to_message")
    if reply is not None and "forum_topic_created" in reply:
        reply = None  # every message in a forum topic "replies" to the topic's first one: not a reply
    return Inbound(
        chat=chat,
        sender_id=str(sender["id"]) if sender else str(chat_id),
        sender_name=(full_name(sender) if sender else first["chat"].get("title")) or "someone",
        text=text,
        message_id=message_ref(chat_id, first["message_id"]),
        mentioned=mentioned,
        reply_to=message_ref(chat_id, reply["message_id"]) if reply else None,
        attachments=[a for m in messages for a in attachments(m, download)],
        sender_username=sender.get("username") if sender else None,
        replied=replied(reply, first.get("quote"), me) if reply else None,
    )


_SHOWN_AS = {"photo": "[a photo]", "voice": "[a voice note]", "video": "[a video]", "video_note": "[a video note]",
             "audio": "[an audio file]", "document": "[a file]", "sticker": "[a sticker]"}


def replied(reply: Message, quote: dict[str, Any] | None, me: User) -> Replied:
    """The replied-to message as context: the part the user quoted, else its text or caption (a file says what
    it was), who wrote it, and whether that was the bot."""
    author = reply.get("from")
    text = (quote or {}).get("text") or reply.get("text") or reply.get("caption") or next(
        (shown for key, shown in _SHOWN_AS.items() if key in reply), "")
    return Replied(text=text, author=full_name(author) if author else reply["chat"].get("title") or "someone",
                   by_bot=bool(author) and author["id"] == me["id"], quoted=bool((quote or {}).get("text")))


def attachments(message: Message, download: Download) -> list[Attachment]:
    """The files of one message, fetched lazily by file_id."""
    found: list[Attachment] = []

    def add(kind: AttachmentKind, file: File, **kw: object) -> None:
        duration = file.get("duration")
        found.append(lazy(kind, file["file_id"], download, size=file.get("file_size"),
                          duration=float(duration) if duration is not None else None, **kw))

    if photos := message.get("photo"):
        add(AttachmentKind.IMAGE, photos[-1], mime="image/jpeg", filename="photo.jpg")  # sizes come smallest first
    if voice := message.get("voice"):
        add(AttachmentKind.VOICE, voice, mime=voice.get("mime_type") or "audio/ogg", filename="voice.ogg")
    if audio := message.get("audio"):
        add(AttachmentKind.AUDIO, audio, mime=audio.get("mime_type"), filename=audio.get("file_name"))
    if note := message.get("video_note"):  # a round video: its sound is heard like a voice note
        add(AttachmentKind.VOICE, note, mime="video/mp4", filename="video_note.mp4")
    if video := message.get("video"):
        add(AttachmentKind.VIDEO, video, mime=video.get("mime_type"), filename=video.get("file_name"))
    if document := message.get("document"):
        mime = document.get("mime_type")
        major = (mime or "").split("/", 1)[0]  # a photo or a recording sent "as a file" is still one
        kind = {"image": AttachmentKind.IMAGE, "audio": AttachmentKind.AUDIO}.get(major, AttachmentKind.DOCUMENT)
        add(kind, document, mime=mime, filename=document.get("file_name"))
    return found


def lazy(kind: AttachmentKind, file_id: str, download: Download, **kw: object) -> Attachment:
    """An attachment fetched from Telegram by ``file_id`` when first read."""

    async def fetch() -> bytes:
        return await download(file_id)

    return Attachment(kind=kind, fetch=fetch, source=file_id, **kw)  # type: ignore[arg-type]


UNREADABLE = (AttachmentKind.VIDEO,)  # documents are read by the core (text files, PDFs) or it says why not


def unreadable_note(inbound: Inbound) -> str | None:
    """A sentence about the files the model cannot take (videos), or ``None``."""
    names = [a.filename or a.kind.value for a in inbound.attachments if a.kind in UNREADABLE]
    if not names:
        return None
    return (f"I can't read {', '.join(names)}: I understand text, photos, voice notes, audio files, "
            "text files and PDFs."
            + (" I'll answer the rest of your message." if inbound.text else ""))


class Albums:
    """Photos sent together arrive as one update each; they are held here and become one message."""

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[int, Message]]] = {}

    def add(self, update_id: int, message: Message) -> None:
        self._parts.setdefault(str(message.get("media_group_id")), []).append((update_id, message))

    def first_update_id(self) -> int | None:
        """The oldest update still held: polling must not confirm past it."""
        ids = [u for parts in self._parts.values() for u, _ in parts]
        return min(ids) if ids else None

    def take(self) -> list[list[Message]]:
        """Every held album, each in message order; the holder is empty afterwards."""
        albums = [[m for _, m in sorted(parts, key=lambda p: p[1]["message_id"])] for parts in self._parts.values()]
        self._parts.clear()
        return albums
