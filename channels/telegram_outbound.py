"""Replies into Telegram: formatted text in parts, streamed drafts or edits, media as Telegram shows them,
and the chat action that tells the user something is coming."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError, TelegramBadRequest, TelegramForbiddenError
from aiogram.types import BufferedInputFile, MessageEntity, ReplyParameters
from aiogram.utils.chat_action import ChatActionSender

from . import telegram_format as fmt
from .base import AttachmentKind, ChatRef, Media, Reply
from .telegram_inbound import parse_ref

log = logging.getLogger("chorus.telegram")
MB = 1_000_000
PHOTO_LIMIT = 10 * MB  # sendPhoto refuses larger photos: they go as documents
UPLOAD_LIMIT = 50 * MB  # the Bot API's upload limit; a self-hosted Bot API server takes up to 2000 MB
LOCAL_UPLOAD_LIMIT = 2000 * MB
Streaming = Literal["off", "partial", "block", "progress"]


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    streaming: Streaming = "partial"
    throttle: float = 0.7  # seconds between two draft updates or edits of one reply
    upload_limit: int = UPLOAD_LIMIT
    performer: str = "Chorus"


class Sender:
    """Sends whole replies; shared by streams and by late deliveries (finished videos)."""

    def __init__(self, bot: Bot, settings: OutboundSettings) -> None:
        self.bot = bot
        self.settings = settings

    async def reply(self, chat: ChatRef, reply: Reply, *, first_message: int | None = None) -> None:
        """Text (in parts), then media, then the voice note; ``first_message`` is a preview to edit into part one."""
        target = _Target.of(chat, reply.reply_to)
        try:
            if reply.text.strip():
                await self.text(target, reply.text, first_message)
            for media in reply.media:
                await self.media(target, media)
            if reply.voice is not None:
                await self.media(target, reply.voice)
        except TelegramForbiddenError:
            pass  # the user blocked the bot: logged once by FloodControl, nothing more to do

    async def text(self, target: _Target, markdown: str, first_message: int | None = None) -> None:
        for i, part in enumerate(fmt.render(markdown)):
            if i == 0 and first_message is not None:
                await self._edit(target, first_message, part)
            else:
                await self._send_part(target, part, quote=i == 0)

    async def _send_part(self, target: _Target, part: fmt.Part, *, quote: bool) -> None:
        kw = target.kwargs(quote=quote)
        try:
            await self.bot.send_message(text=part.text, entities=_entities(part), **kw)
        except TelegramBadRequest as exc:
            if "parse" not in exc.message and "entit" not in exc.message:
                raise
            log.warning("Telegram refused the formatting (%s); sending plain text", exc.message)
            await self.bot.send_message(text=part.text, **kw)

    async def _edit(self, target: _Target, message_id: int, part: fmt.Part) -> None:
        try:
            await self.bot.edit_message_text(chat_id=target.chat_id, message_id=message_id, text=part.text,
                                             entities=_entities(part))
        except TelegramBadRequest as exc:
            if "not modified" not in exc.message:
                log.warning("could not edit the preview into the answer (%s); sending it anew", exc.message)
                await self._send_part(target, part, quote=False)

    async def media(self, target: _Target, media: Media) -> None:
        """A photo as a photo, a video as a video, music as audio, a voice note as a voice bubble; too big for its
        kind as a document; over the upload limit, a sentence saying so."""
        size = len(media.data)
        if size > self.settings.upload_limit:
            await self.bot.send_message(text=(
                f"The {media.kind.value} is too large to send here ({size / MB:.1f} MB; Telegram bots can send "
                f"at most {self.settings.upload_limit / MB:g} MB)."), **target.kwargs(quote=False))
            return
        file = BufferedInputFile(media.data, filename=media.filename)
        caption = fmt.caption(media.caption) if media.caption else None
        kw: dict[str, Any] = target.kwargs(quote=False)
        if caption is not None:
            kw.update(caption=caption.text, caption_entities=_entities(caption))
        action, send = self._method(media)
        # Shown before the upload starts (a quick upload would end ChatActionSender before its first tick),
        # then repeated while a long one runs.
        with contextlib.suppress(TelegramAPIError):
            await self.bot.send_chat_action(chat_id=target.chat_id, action=action, message_thread_id=target.thread_id)
        async with ChatActionSender(bot=self.bot, chat_id=target.chat_id, action=action,
                                    message_thread_id=target.thread_id, initial_sleep=4.5):
            await send(file, kw)
        if media.caption and caption is None:  # too long for a caption: sent as its own text
            await self.text(target, media.caption)

    def _method(self, media: Media) -> tuple[str, Any]:
        bot, kind = self.bot, media.kind
        duration = round(media.duration) if media.duration else None
        if kind is AttachmentKind.VOICE:
            return "upload_voice", lambda f, kw: bot.send_voice(voice=f, duration=duration, **kw)
        if kind is AttachmentKind.IMAGE and len(media.data) <= PHOTO_LIMIT:
            return "upload_photo", lambda f, kw: bot.send_photo(photo=f, **kw)
        if kind is AttachmentKind.VIDEO:
            return "upload_video", lambda f, kw: bot.send_video(video=f, duration=duration, supports_streaming=True, **kw)
        if kind is AttachmentKind.AUDIO:
            title = media.title or media.filename.rsplit(".", 1)[0]
            return "upload_document", lambda f, kw: bot.send_audio(
                audio=f, duration=duration, title=title, performer=self.settings.performer, **kw)
        return "upload_document", lambda f, kw: bot.send_document(document=f, **kw)


@dataclass(frozen=True, slots=True)
class _Target:
    chat_id: int
    thread_id: int | None
    reply_to: int | None

    @classmethod
    def of(cls, chat: ChatRef, reply_to: str | None) -> _Target:
        # In groups the answer quotes the message it answers; in a private chat that is only noise.
        quoted = parse_ref(reply_to) if chat.kind == "group" else None
        return cls(int(chat.chat_id), int(chat.thread_id) if chat.thread_id else None, quoted)

    def kwargs(self, *, quote: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"chat_id": self.chat_id}
        if self.thread_id is not None:
            kw["message_thread_id"] = self.thread_id
        if quote and self.reply_to is not None:
            kw["reply_parameters"] = ReplyParameters(message_id=self.reply_to, allow_sending_without_reply=True)
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
        self._flush: asyncio.Task[None] | None = None
        self._typing_done = asyncio.Event()
        self._typing = asyncio.create_task(self._keep_typing())

    async def _keep_typing(self) -> None:
        with contextlib.suppress(TelegramAPIError):
            async with ChatActionSender.typing(bot=self.sender.bot, chat_id=self.target.chat_id,
                                               message_thread_id=self.target.thread_id):
                await self._typing_done.wait()

    async def delta(self, text: str) -> None:
        self.text += text
        if self.live and (self._flush is None or self._flush.done()):
            self._flush = asyncio.create_task(self._show_later())

    async def _show_later(self) -> None:
        """One update of the live text, no sooner than ``throttle`` after the last: the bot never floods."""
        await asyncio.sleep(max(0.0, self._last + self.sender.settings.throttle - time.monotonic()))
        part = fmt.preview(self.text)
        if not part.text.strip() or part.text == self.shown:
            return
        self._last = time.monotonic()
        try:
            if self.live == "draft":
                await self.sender.bot.send_message_draft(chat_id=self.target.chat_id, draft_id=self.draft_id,
                                                         text=part.text, entities=_entities(part),
                                                         message_thread_id=self.target.thread_id)
            elif self.preview_id is None:
                sent = await self.sender.bot.send_message(text=part.text, entities=_entities(part),
                                                          **self.target.kwargs(quote=False))
                self.preview_id = sent.message_id
            else:
                await self.sender.bot.edit_message_text(chat_id=self.target.chat_id, message_id=self.preview_id,
                                                        text=part.text, entities=_entities(part))
            self.shown = part.text
        except TelegramAPIError as exc:  # a lost preview is harmless: the final message follows
            log.info("live preview update skipped: %s", exc.message)

    async def notice(self, text: str) -> None:
        """A passing status ("the model is busy, trying again…"): shown as the draft in private chats, where it
        is replaced by the answer; elsewhere the typing indicator already says that work goes on."""
        if self.live == "draft" and not self.text:
            with contextlib.suppress(TelegramAPIError):
                await self.sender.bot.send_message_draft(chat_id=self.target.chat_id, draft_id=self.draft_id,
                                                         text=text, message_thread_id=self.target.thread_id)

    async def close(self, reply: Reply) -> None:
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush
        try:
            await self.sender.reply(self.chat, reply, first_message=self.preview_id)
        finally:
            self._typing_done.set()
            await self._typing


def _entities(part: fmt.Part) -> list[MessageEntity] | None:
    return [MessageEntity(**e) for e in part.entities] or None
