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
from ..outbox import Fate, Failure, Outbox, Outcome, Part, PartStore, RetrySettings
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
    """Sends whole replies through the durable outbox; shared by streams and by late deliveries (finished
    videos). Each Bot API message of a reply is one outbox part: ``{"call", "params"}``, and for a file the
    parameter it goes in, its name, type and chat action (its bytes are the part's file)."""

    def __init__(self, api: TelegramAPI, settings: OutboundSettings, *, parts: PartStore | None = None,
                 retry: RetrySettings = RetrySettings()) -> None:
        self.api = api
        self.settings = settings
        self.outbox = Outbox("telegram", self.send_part, classify, store=parts, retry=retry)

    async def reply(self, chat: ChatRef, reply: Reply, *, first_message: int | None = None) -> Outcome:
        """Text (in parts), then media, then the voice note; ``first_message`` is a preview to edit into part one."""
        return await self.outbox.deliver(self.parts(chat, reply, first_message), reply.settles)

    def parts(self, chat: ChatRef, reply: Reply, first_message: int | None = None) -> list[Part]:
        """The outbox parts of ``reply``, in the order they are sent."""
        target = _Target.of(chat, reply.reply_to, self.settings.reply_to_mode)
        parts = self._text(chat, target, reply.text, first_message, keyboard(reply.buttons)) if reply.text.strip() else []
        for media in [*reply.media, *([reply.voice] if reply.voice is not None else [])]:
            parts += self._media(chat, target, media)
        return parts

    def _text(self, chat: ChatRef, target: _Target, markdown: str, first_message: int | None = None,
              markup: dict[str, Any] | None = None) -> list[Part]:
        """``markdown`` in parts; ``markup`` (buttons) goes under the last part, which is then sent, not edited."""
        parts, rendered = [], fmt.render(markdown)
        for i, part in enumerate(rendered):
            text: dict[str, Any] = {"text": part.text, "entities": part.entities or None}
            if markup and i == len(rendered) - 1:
                text["reply_markup"] = markup
            if i == 0 and first_message is not None and not (markup and len(rendered) == 1):
                parts.append(Part(chat, {"call": "editMessageText", "anew": target.kwargs(quote=False), "params": {
                    "chat_id": target.chat_id, "message_id": first_message, **text}}))
            else:
                parts.append(Part(chat, {"call": "sendMessage", "params": {**text, **target.kwargs(quote=i == 0)}}))
        return parts

    def _media(self, chat: ChatRef, target: _Target, media: Media) -> list[Part]:
        """A photo as a photo, a video as a video, music as audio, a voice note as a voice bubble; too big for its
        kind as a document; over the upload limit, a sentence saying so."""
        size = len(media.data)
        kw: dict[str, Any] = target.kwargs(quote=False)
        if size > self.settings.upload_limit:
            return [Part(chat, {"call": "sendMessage", "params": {**kw, "text": (
                f"The {media.kind.value} is too large to send here ({size / MB:.1f} MB; Telegram bots can send "
                f"at most {self.settings.upload_limit / MB:g} MB).")}})]
        caption = fmt.caption(media.caption) if media.caption else None
        if caption is not None:
            kw.update(caption=caption.text, caption_entities=caption.entities or None)
        action, method, param, params = self._method(media)
        parts = [Part(chat, {"call": method, "params": {**params, **kw}, "file": param, "filename": media.filename,
                             "mime": media.mime, "action": action}, data=media.data)]
        if media.caption and caption is None:  # too long for a caption: sent as its own text
            parts += self._text(chat, target, media.caption)
        return parts

    def _method(self, media: Media) -> tuple[str, str, str, dict[str, Any]]:
        """The chat action, the Bot API method, the file's parameter and the other parameters for one file."""
        kind = media.kind
        duration = round(media.duration) if media.duration else None
        if kind is AttachmentKind.VOICE:
            return "upload_voice", "sendVoice", "voice", {"duration": duration}
        if kind is AttachmentKind.IMAGE and len(media.data) <= PHOTO_LIMIT:
            return "upload_photo", "sendPhoto", "photo", {}
        if kind is AttachmentKind.VIDEO:
            return "upload_video", "sendVideo", "video", {"duration": duration, "supports_streaming": True}
        if kind is AttachmentKind.AUDIO:
            title = media.title or media.filename.rsplit(".", 1)[0]
            return "upload_document", "sendAudio", "audio", {"duration": duration, "title": title,
                                                             "performer": self.settings.performer}
        return "upload_document", "sendDocument", "document", {}

    async def send_part(self, part: Part) -> None:
        """One part to the Bot API. Formatting Telegram refuses goes again as plain text; a preview that cannot
        be edited into the answer is left, and the text sent anew."""
        body = part.body
        method, params = body["call"], dict(body["params"])
        if "file" in body:
            assert part.data is not None, "a file part has its bytes"
            params[body["file"]] = InputFile(part.data, body["filename"], body["mime"])
            target = _Target(params["chat_id"], params.get("message_thread_id"), None)
            async with chat_action(self.api, target, body["action"]):  # shown before the upload, repeated during it
                await self.api.call(method, **params)
            return
        try:
            await self.api.call(method, **params)
        except TelegramError as exc:
            if not exc.bad_request:
                raise
            if method == "editMessageText":
                if "not modified" in exc.description:
                    return
                log.warning("could not edit the preview into the answer (%s); sending it anew", exc.description)
                anew = {"text": params["text"], "entities": params.get("entities"), **body["anew"]}
                await self.send_part(Part(part.chat, {"call": "sendMessage", "params": anew}))
            elif params.get("entities") and ("parse" in exc.description or "entit" in exc.description):
                log.warning("Telegram refused the formatting (%s); sending plain text", exc.description)
                await self.api.call(method, **{k: v for k, v in params.items() if k != "entities"})
            else:
                raise


def classify(exc: BaseException) -> Failure | None:
    """What a failed Bot API call means for an outbox part (``None``: not a Bot API failure)."""
    if not isinstance(exc, TelegramError):
        return None
    why = f"{exc.method}: {exc.description}"
    if exc.flood:
        return Failure(Fate.WAIT, why, float(exc.retry_after or 1))
    if exc.forbidden or (exc.bad_request and "chat not found" in exc.description.lower()):
        return Failure(Fate.GONE, why)
    if exc.unsent or exc.code >= 500 or exc.unauthorized:  # a revoked token: kept until the channel stops
        return Failure(Fate.RETRY, why)
    if exc.code == 0:  # it went out, and no answer came back
        return Failure(Fate.UNKNOWN, why)
    return Failure(Fate.REFUSED, why)  # any other 4xx, from the Bot API or a proxy before it: sending again won't do


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
