"""Replies into Telegram: formatted text in parts, streamed drafts or edits, media as Telegram shows them,
and the chat action that tells the user something is coming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from . import format as fmt
from ..base import AttachmentKind, ChatRef, Media, Reply
from .api import InputFile, TelegramAPI, TelegramError
from .inbound import parse_ref

log = logging.getLogger("chorus.telegram")
MB = 1_000_000
PHOTO_LIMIT = 10 * MB  # sendPhoto refuses larger photos: they go as documents
UPLOAD_LIMIT = 50 * MB  # the Bot API's upload limit; a self-hosted Bot API server takes up to 2000 MB
LOCAL_UPLOAD_LIMIT = 2000 * MB
Streaming = Literal["off", "partial", "block", "progress"]
ReplyToMode = Literal["off", "first", "all"]
ACTION_EVERY = 4.5  # Telegram shows a chat action for 5 s: repeated a little sooner, it never flickers off


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    streaming: Streaming = "partial"
    throttle: float = 0.7  # seconds between two draft updates or edits of one reply
    upload_limit: int = UPLOAD_LIMIT
    performer: str = "Chorus"
    reply_to_mode: ReplyToMode | None = None  # None: the first part, in groups only


class Sender:
    """Sends whole replies; shared by streams and by late deliveries (finished videos)."""

    def __init__(self, api: TelegramAPI, settings: OutboundSettings) -> None:
        self.api = api
        self.settings = settings

    async def reply(self, chat: ChatRef, reply: Reply, *, first_message: int | None = None) -> None:
        """Text (in parts), then media, then the voice note; ``first_message`` is a preview to edit into part one."""
        target = _Target.of(chat, reply.reply_to, self.settings.reply_to_mode)
        try:
            if reply.text.strip():
                await self.text(target, reply.text, first_message, keyboard(reply.buttons))
            for media in reply.media:
                await self.media(target, media)
            if reply.voice is not None:
                await self.media(target, reply.voice)
        except TelegramError as exc:
            if not exc.forbidden:  # forbidden: the user blocked the bot, logged once by FloodControl
                raise

    async def text(self, target: _Target, markdown: str, first_message: int | None = None,
                   markup: dict[str, Any] | None = None) -> None:
        """``markdown`` in parts; ``markup`` (buttons) goes under the last part."""
        parts = fmt.render(markdown)
        for i, part in enumerate(parts):
            if i == 0 and first_message is not None and not (markup and len(parts) == 1):
                await self._edit(target, first_message, part)
            else:
                await self._send_part(target, part, quote=i == 0, markup=markup if i == len(parts) - 1 else None)

    async def _send_part(self, target: _Target, part: fmt.Part, *, quote: bool,
                         markup: dict[str, Any] | None = None) -> None:
        kw = target.kwargs(quote=quote)
        if markup:
            kw["reply_markup"] = markup
        try:
            await self.api.call("sendMessage", text=part.text, entities=part.entities or None, **kw)
        except TelegramError as exc:
            if not exc.bad_request or ("parse" not in exc.description and "entit" not in exc.description):
                raise
            log.warning("Telegram refused the formatting (%s); sending plain text", exc.description)
            await self.api.call("sendMessage", text=part.text, **kw)

    async def _edit(self, target: _Target, message_id: int, part: fmt.Part) -> None:
        try:
            await self.api.call("editMessageText", chat_id=target.chat_id, message_id=message_id, text=part.text,
                                entities=part.entities or None)
        except TelegramError as exc:
            if not exc.bad_request:
                raise
            if "not modified" not in exc.description:
                log.warning("could not edit the preview into the answer (%s); sending it anew", exc.description)
                await self._send_part(target, part, quote=False)

    async def media(self, target: _Target, media: Media) -> None:
        """A photo as a photo, a video as a video, music as audio, a voice note as a voice bubble; too big for its
        kind as a document; over the upload limit, a sentence saying so."""
        size = len(media.data)
        if size > self.settings.upload_limit:
            await self.api.call("sendMessage", text=(
                f"The {media.kind.value} is too large to send here ({size / MB:.1f} MB; Telegram bots can send "
                f"at most {self.settings.upload_limit / MB:g} MB)."), **target.kwargs(quote=False))
            return
        caption = fmt.caption(media.caption) if media.caption else None
        kw: dict[str, Any] = target.kwargs(quote=False)
        if caption is not None:
            kw.update(caption=caption.text, caption_entities=caption.entities or None)
        action, method, params = self._method(media)
        async with chat_action(self.api, target, action):  # shown before the upload starts, repeated during it
            await self.api.call(method, **params, **kw)
        if media.caption and caption is None:  # too long for a caption: sent as its own text
            await self.text(target, media.caption)

    def _method(self, media: Media) -> tuple[str, str, dict[str, Any]]:
        """The chat action, the Bot API method and its parameters (the file among them) for one file."""
        kind, file = media.kind, InputFile(media.data, media.filename, media.mime)
        duration = round(media.duration) if media.duration else None
        if kind is AttachmentKind.VOICE:
            return "upload_voice", "sendVoice", {"voice": file, "duration": duration}
        if kind is AttachmentKind.IMAGE and len(media.data) <= PHOTO_LIMIT:
            return "upload_photo", "sendPhoto", {"photo": file}
        if kind is AttachmentKind.VIDEO:
            return "upload_video", "sendVideo", {"video": file, "duration": duration, "supports_streaming": True}
        if kind is AttachmentKind.AUDIO:
            title = media.title or media.filename.rsplit(".", 1)[0]
            return "upload_document", "sendAudio", {"audio": file, "duration": duration, "title": title,
                                                    "performer": self.settings.performer}
        return "upload_document", "sendDocument", {"document": file}


@contextlib.asynccontextmanager
async def chat_action(api: TelegramAPI, target: _Target, action: str) -> AsyncIterator[None]:
    """Show ``action`` ("typing", "upload_photo", ...) in the chat now and every 4.5 s until the block ends.

    The first one is sent before the block starts, so even a quick upload is announced.
    """
    await _show(api, target, action)
    showing = Showing(api, target, action, now=False)
    try:
        yield
    finally:
        await showing.stop()


class Showing:
    """Renews a chat action every ``ACTION_EVERY`` seconds from a timer until ``stop``.

    A timer, not a task that sleeps: a turn in flight then holds one handle instead of three tasks with their
    coroutines and contexts, which at 1,000 open chats the collector had to scan. A renewal still in flight is
    awaited by ``stop``, never cut off (a cancelled request would lose its pooled connection).
    """

    def __init__(self, api: TelegramAPI, target: _Target, action: str, *, now: bool) -> None:
        """``now``: the first one goes out beside the caller, which never waits for Telegram."""
        self.api, self.target, self.action = api, target, action
        self._sending = asyncio.create_task(_show(api, target, action)) if now else None
        self._timer = asyncio.get_running_loop().call_later(ACTION_EVERY, self._renew)

    def _renew(self) -> None:
        if self._sending is None or self._sending.done():  # one still on its way is not doubled
            self._sending = asyncio.create_task(_show(self.api, self.target, self.action))
        self._timer = asyncio.get_running_loop().call_later(ACTION_EVERY, self._renew)

    async def stop(self) -> None:
        """No more renewals; returns once the last one sent has its answer."""
        self._timer.cancel()
        if self._sending is not None:
            await self._sending


async def _show(api: TelegramAPI, target: _Target, action: str) -> None:
    try:
        await api.call("sendChatAction", chat_id=target.chat_id, action=action, message_thread_id=target.thread_id)
    except TelegramError as exc:  # a missed indicator is harmless: the reply itself follows
        log.debug("chat action %s not shown: %s", action, exc)


CALLBACK_DATA_MAX = 64  # bytes Telegram keeps of a button's callback_data


def keyboard(buttons: list[tuple[str, str]]) -> dict[str, Any] | None:
    """An inline keyboard, a button a row, each sending its command back as callback data; a command too
    long for callback data gets no button (the text names it)."""
    rows = [[{"text": label, "callback_data": command}] for label, command in buttons
            if len(command.encode()) <= CALLBACK_DATA_MAX]
    return {"inline_keyboard": rows} if rows else None


@dataclass(frozen=True, slots=True)
class _Target:
    chat_id: int
    thread_id: int | None
    reply_to: int | None
    every_part: bool = False  # replyToMode "all": every message of the answer replies, not just the first

    @classmethod
    def of(cls, chat: ChatRef, reply_to: str | None, mode: ReplyToMode | None = None) -> _Target:
        # Unset: in groups the answer quotes the message it answers; in a private chat that is only noise.
        quoted = parse_ref(reply_to) if mode in ("first", "all") or (mode is None and chat.kind == "group") else None
        return cls(int(chat.chat_id), int(chat.thread_id) if chat.thread_id else None, quoted, mode == "all")

    def kwargs(self, *, quote: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"chat_id": self.chat_id}
        if self.thread_id is not None:
            kw["message_thread_id"] = self.thread_id
        if (quote or self.every_part) and self.reply_to is not None:
            kw["reply_parameters"] = {"message_id": self.reply_to, "allow_sending_without_reply": True}
        return kw


class TelegramStream:
    """A reply being written: typing shown until it is out; the text grows in a draft (private chats) or an
    edited preview message (groups, ``streaming: block``), then the final message is sent."""

    def __init__(self, sender: Sender, chat: ChatRef) -> None:
        self.sender = sender
        self.chat = chat
        self.target = _Target.of(chat, None)
        mode = sender.settings.streaming
        self.live = "draft" if chat.kind == "direct" and mode != "off" else "edit" if mode == "block" else None
        self.text = ""
        self.draft_id = secrets.randbelow(2**31 - 1) + 1  # non-zero: Telegram animates changes of one draft
        self.preview_id: int | None = None
        self.shown = ""
        self._last = 0.0
        self._due: asyncio.TimerHandle | None = None  # the next update, waiting out the throttle
        self._flush: asyncio.Task[None] | None = None  # the update on its way to Telegram
        self._typing = Showing(sender.api, self.target, "typing", now=True)

    async def speaking(self) -> None:
        """The answer is being spoken: "recording voice" replaces "typing" until the reply is out."""
        await self._typing.stop()
        self._typing = Showing(self.sender.api, self.target, "record_voice", now=True)

    async def delta(self, text: str) -> None:
        """More of the answer; the live text is updated no sooner than ``throttle`` after the last update."""
        self.text += text
        if not self.live or self._due is not None or (self._flush is not None and not self._flush.done()):
            return
        wait = self._last + self.sender.settings.throttle - time.monotonic()
        if wait > 0:
            self._due = asyncio.get_running_loop().call_later(wait, self._update)
        else:
            self._update()

    def _update(self) -> None:
        self._due = None
        self._flush = asyncio.create_task(self._show())

    async def _show(self) -> None:
        """One update of the live text: the draft, or the preview message sent or edited."""
        part = fmt.preview(self.text)
        if not part.text.strip() or part.text == self.shown:
            return
        self._last = time.monotonic()
        api, entities = self.sender.api, part.entities or None
        try:
            if self.live == "draft":
                await api.call("sendMessageDraft", chat_id=self.target.chat_id, draft_id=self.draft_id,
                               text=part.text, entities=entities, message_thread_id=self.target.thread_id)
            elif self.preview_id is None:
                kw = self.target.kwargs(quote=False)
                sent = await api.call("sendMessage", text=part.text, entities=entities, **kw)
                self.preview_id = sent["message_id"]
            else:
                await api.call("editMessageText", chat_id=self.target.chat_id, message_id=self.preview_id,
                               text=part.text, entities=entities)
            self.shown = part.text
        except TelegramError as exc:  # a lost preview is harmless: the final message follows
            log.info("live preview update skipped: %s", exc.description)

    async def notice(self, text: str) -> None:
        """A passing status ("the model is busy, trying again…"): shown as the draft in private chats, where it
        is replaced by the answer; elsewhere the typing indicator already says that work goes on."""
        if self.live == "draft" and not self.text:
            with contextlib.suppress(TelegramError):
                await self.sender.api.call("sendMessageDraft", chat_id=self.target.chat_id, draft_id=self.draft_id,
                                           text=text, message_thread_id=self.target.thread_id)

    async def close(self, reply: Reply) -> None:
        """The whole reply. An update not yet due is dropped; one on its way is waited for, not cut off: Telegram
        may already show it, and a preview message whose id never came back would stay beside the answer."""
        if self._due is not None:
            self._due.cancel()
        if self._flush is not None:
            await self._flush
        try:
            await self.sender.reply(self.chat, reply, first_message=self.preview_id)
        finally:
            await self._typing.stop()
