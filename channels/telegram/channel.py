"""The Telegram channel on the Bot API (``api``): long polling or a webhook in, replies out.

Nothing is lost between Telegram and the inbox: in polling mode the update offset moves past an update only
after ``on_message`` returned (the message is durably accepted); in webhook mode the 200 is answered only
then. In webhook mode nothing calls ``getUpdates`` (Telegram would refuse it, and some bots "fix" that by
deleting the webhook).
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from ..base import Attachment, Capabilities, ChatRef, FetchError, InboundHandler, Reply
from ..outbox import PartStore, attempt
from .api import Message, TelegramAPI, TelegramError, Update, User
from .flood import FloodControl
from .inbound import (UNREADABLE, Albums, AlbumWaiter, MentionRules, command, for_another_bot, lazy, to_inbound,
                      unreadable_note)
from .outbound import LOCAL_UPLOAD_LIMIT, UPLOAD_LIMIT, OutboundSettings, Sender, TelegramStream, classify
from .settings import TelegramSettings

log = logging.getLogger("chorus.telegram")
ALLOWED_UPDATES = ["message"]
NOT_FETCHED = "I couldn't fetch the file you sent from Telegram; please send it again."
TOO_BIG = ("Your file is over the 20 MB that Telegram lets bots download, so I can't read it; "
           "please send a smaller one.")
# What the bot takes up: a message with none of these (a sticker, a member joining) is confirmed and dropped.
CONTENT = ("text", "caption", "photo", "voice", "audio", "video_note", "document", "video")


class TelegramChannel:
    """One bot token; ``run`` receives until stopped, ``send``/``open_stream`` reply."""

    name = "telegram"
    capabilities = Capabilities(text_limit=4096, markdown="markdown", voice_format="ogg_opus", streams_text=True)

    def __init__(self, settings: TelegramSettings, *, parts: PartStore | None = None) -> None:
        """``parts``: where unsent parts of answers are kept (the core's database); else in memory only."""
        self.settings = settings
        self.api = TelegramAPI(settings.token, settings.api_root, middlewares=[FloodControl()], timeout=settings.timeout)
        limit = LOCAL_UPLOAD_LIMIT if settings.api_root else UPLOAD_LIMIT
        self.sender = Sender(self.api, OutboundSettings(settings.streaming, settings.stream_throttle, limit),
                             parts=parts, retry=settings.retry)
        self.rules = MentionRules(settings.require_mention, settings.groups)
        self.me: User | None = None
        self._stopped = asyncio.Event()

    # ---- the Channel protocol ----------------------------------------------------------------

    async def run(self, on_message: InboundHandler) -> str | None:
        """Start (getMe, commands menu), send what the last run left unsent, then poll or serve the webhook
        until ``stop()``."""
        resuming: asyncio.Task[None] | None = None
        try:
            self.me = await self.api.call("getMe")
            log.info("Telegram bot @%s is up (%s mode)", self._me().get("username"),
                     "webhook" if self.settings.webhook_url else "polling")
            resuming = asyncio.create_task(self.sender.outbox.resume())
            await self._set_commands()
            if self.settings.webhook_url:
                await self._serve_webhook(on_message)
            else:
                await self._poll(on_message)
        except TelegramError as exc:
            if not exc.unauthorized:
                raise
            return "Telegram refused the bot token (401 Unauthorized); check channels.telegram.botToken"
        finally:
            if resuming is not None:
                resuming.cancel()  # what it had not sent stays pending
            await self.api.aclose()

    async def stop(self) -> None:
        self._stopped.set()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        await self.sender.reply(chat, reply)

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> TelegramStream:
        return TelegramStream(self.sender, chat)

    def reattach(self, attachment: Attachment) -> Attachment | None:
        """An attachment from the inbox, fetchable again by its file_id."""
        if not attachment.source:
            return None
        return lazy(attachment.kind, attachment.source, self.download, mime=attachment.mime,
                    filename=attachment.filename, size=attachment.size, duration=attachment.duration)

    async def download(self, file_id: str) -> bytes:
        """A file a user sent, retried like a send while the failure may be transient; one that remains is a
        ``FetchError`` whose text asks the user to send it again (or says it is over the download limit)."""
        try:
            return await attempt(lambda: self.api.download(file_id), classify, self.settings.retry,
                                 f"channel=telegram file={file_id}")
        except TelegramError as exc:
            log.warning("could not download a file the user sent (%s)", exc)
            raise FetchError(TOO_BIG if "too big" in exc.description else NOT_FETCHED) from None

    # ---- receiving ---------------------------------------------------------------------------

    async def _feed(self, update: Update, handle: InboundHandler) -> None:
        """One update (not part of an album): /start greets, a migrated group moves its conversation along,
        anything with text or files is handed to the core."""
        message = update.get("message")
        if message is None:
            return
        if message["chat"]["type"] == "private" and command(message, self._me()) == "start":
            await self.sender.reply(ChatRef(self.name, str(message["chat"]["id"])), Reply(text=self.settings.greeting))
        elif "migrate_from_chat_id" in message:  # the first message of a group that became a supergroup
            inbound = to_inbound([message], self._me(), self.rules, self.download)
            inbound.moved_from = str(message["migrate_from_chat_id"])
            await handle(inbound)
        elif any(key in message for key in CONTENT) and not for_another_bot(message, self._me()):
            await self._accept([message], handle)

    async def _accept(self, parts: list[Message], handle: InboundHandler) -> None:
        """A message, or an album's parts as one: files the model cannot take get a sentence at once."""
        inbound = to_inbound(parts, self._me(), self.rules, self.download)
        note = unreadable_note(inbound) if inbound.mentioned else None
        if note:  # said at once, by the channel: no model turn can do anything with these files
            await self.sender.reply(inbound.chat, Reply(text=note, reply_to=inbound.message_id))
            inbound.attachments = [a for a in inbound.attachments if a.kind not in UNREADABLE]
            if not inbound.text and not inbound.attachments:
                return
        await handle(inbound)

    async def _poll(self, handle: InboundHandler) -> None:
        """Long polling; the offset confirms an update only once ``handle`` has returned for it."""
        await self._drop_stale_webhook()
        offset: int | None = None
        seen: set[int] = set()  # fed while an album holds the offset back (they come again)
        albums = Albums()
        backoff = 1.0
        while not self._stopped.is_set():
            held = albums.first_update_id()
            if held is not None:
                await asyncio.sleep(0.3)  # the other photos of an album arrive within moments
            try:
                timeout = 0 if held is not None else self.settings.poll_timeout
                # The read timeout outlasts the long poll: an idle poll is answered "no updates", not cut off.
                updates: list[Update] = await self.api.call(
                    "getUpdates", offset=held if held is not None else offset, timeout=timeout,
                    allowed_updates=ALLOWED_UPDATES, request_timeout=timeout + 15)
                fresh = [u for u in updates if u["update_id"] not in seen]
                if held is not None and not fresh:
                    for parts in albums.take():
                        await self._accept(parts, handle)
                for update in fresh:
                    message = update.get("message")
                    if message is not None and message.get("media_group_id"):
                        albums.add(update["update_id"], message)
                    else:
                        await self._feed(update, handle)
                    seen.add(update["update_id"])
                if albums.first_update_id() is None and seen:
                    offset = max(seen) + 1
                    seen.clear()
                backoff = 1.0
            except TelegramError as exc:
                if exc.conflict:
                    log.warning("Telegram says another process is receiving this bot's updates (%s); "
                                "run only one Chorus per bot token (`chorus doctor` explains)", exc.description)
                else:
                    log.warning("receiving from Telegram failed (%s); retrying in %.0f s", exc, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, 30)
            except Exception:  # not accepted (e.g. the database failed): unconfirmed, so Telegram sends it again
                log.exception("an update could not be accepted; it is received again in %.0f s", backoff)
                seen.clear()
                albums.take()
                await self._pause(backoff)
                backoff = min(backoff * 2, 30)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            pass

    async def _drop_stale_webhook(self) -> None:
        info = await self.api.call("getWebhookInfo")
        if info.get("url"):
            log.warning("a webhook is set for this bot; removing it so that polling works "
                        "(set channels.telegram.webhookUrl to use webhook mode)")
            await self.api.call("deleteWebhook", drop_pending_updates=False)

    async def _serve_webhook(self, handle: InboundHandler) -> None:
        """The listener Telegram posts to; ``/healthz`` beside it. 200 only after ``handle`` returned."""
        from aiohttp import web  # the server side of aiohttp, only in webhook mode

        settings = self.settings
        albums = AlbumWaiter(0.5, lambda parts: self._accept(parts, handle))

        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not hmac.compare_digest(given.encode(), (settings.webhook_secret or "").encode()):
                log.warning("webhook request with a wrong secret token from %s refused", request.remote)
                return web.Response(status=401, text="wrong secret token")
            try:
                update: Update = await request.json()
                message = update.get("message")
                if message is not None and message.get("media_group_id"):
                    await albums.add(message)
                else:
                    await self._feed(update, handle)
            except Exception:  # Telegram delivers the update again after a non-200
                log.exception("webhook update could not be accepted")
                return web.Response(status=500, text="not accepted")
            return web.Response(text="ok")

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"ok": True, "bot": self._me().get("username")})

        app = web.Application()
        app.add_routes([web.post(settings.webhook_path, receive), web.get("/healthz", healthz)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.webhook_host, settings.webhook_port).start()
            assert settings.webhook_url is not None
            await self.api.call("setWebhook", url=settings.webhook_url, secret_token=settings.webhook_secret,
                                allowed_updates=ALLOWED_UPDATES)
            log.info("webhook listening on %s:%s%s", settings.webhook_host, settings.webhook_port, settings.webhook_path)
            await self._stopped.wait()
        finally:
            await runner.cleanup()

    # ---- helpers -----------------------------------------------------------------------------

    def _me(self) -> User:
        assert self.me is not None, "getMe runs before anything is received"
        return self.me

    async def _set_commands(self) -> None:
        if self.settings.commands:
            commands = [{"command": c, "description": d} for c, d in self.settings.commands]
            await self.api.call("setMyCommands", commands=commands)
