"""The Telegram channel on the Bot API (``api``): long polling or a webhook in, replies out.

Nothing is lost between Telegram and the inbox: in polling mode the update offset moves past an update only
after ``on_message`` returned (the message is durably accepted); in webhook mode the 200 is answered only
then. In webhook mode nothing calls ``getUpdates`` (Telegram would refuse it, and some bots "fix" that by
deleting the webhook). With several instances on one database, one of them polls at a time (``poller``);
every instance sends the answers of the turns it runs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from net import wirejson

from ..backoff import Backoff
from ..base import (Alone, Attachment, Capabilities, ChatRef, FetchError, InboundHandler, Leases, NotAccepted, Reply,
                    as_edit)
from ..outbox import PartStore, attempt
from .api import Message, TelegramAPI, TelegramError, Update, User
from .flood import FloodControl
from .inbound import (UNREADABLE, Albums, MentionRules, for_another_bot, lazy, parse_ref, to_inbound,
                      unreadable_note)
from .outbound import LOCAL_UPLOAD_LIMIT, UPLOAD_LIMIT, OutboundSettings, Sender, TelegramStream, classify
from .poller import PollerSeat
from .settings import TelegramSettings

log = logging.getLogger("chorus.telegram")
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
NOT_FETCHED = "I couldn't fetch the file you sent from Telegram; please send it again."
TOO_BIG = ("Your file is over the 20 MB that Telegram lets bots download, so I can't read it; "
           "please send a smaller one.")
# What the bot takes up: a message with none of these (a sticker, a member joining) is confirmed and dropped.
CONTENT = ("text", "caption", "photo", "voice", "audio", "video_note", "document", "video")


class TelegramChannel:
    """One bot token; ``run`` receives until stopped, ``send``/``open_stream`` reply."""

    name = "telegram"
    capabilities = Capabilities(text_limit=4096, markdown="markdown", voice_format="ogg_opus", streams_text=True)

    def __init__(self, settings: TelegramSettings, *, parts: PartStore | None = None,
                 leases: Leases | None = None) -> None:
        """``parts``: where unsent parts of answers are kept (the core's database); else in memory only.
        ``leases``: which instance polls, with several on one database; else this one alone."""
        self.settings = settings
        self.leases = leases or Alone()
        self.api = TelegramAPI(settings.token, settings.api_root, middlewares=[FloodControl()], proxy=settings.proxy,
                               timeout=settings.timeout)
        limit = LOCAL_UPLOAD_LIMIT if settings.api_root else UPLOAD_LIMIT
        self.sender = Sender(self.api, OutboundSettings(settings.streaming, settings.stream_throttle, limit,
                                                        reply_to_mode=settings.reply_to_mode),
                             parts=parts, retry=settings.retry)
        self.rules = MentionRules(settings.require_mention, settings.groups)
        self.me: User | None = None
        self.greeting = settings.greeting  # the core's answer to /start in a private chat
        self._stopped = asyncio.Event()
        self._later: set[asyncio.Task[None]] = set()  # notices sent after accepting

    # ---- the Channel protocol ----------------------------------------------------------------

    async def run(self, on_message: InboundHandler) -> str | None:
        """Start (getMe, commands menu), send what the last run left unsent, then poll or serve the webhook until
        ``stop()``. A start-up Telegram cannot answer now is tried again with growing pauses; returns why the
        channel gave up for good (a refused token, webhook settings Telegram or this machine refuse), else
        ``None`` once stopped."""
        resuming: asyncio.Task[None] | None = None
        try:
            if reason := await self._start():
                return reason
            resuming = asyncio.create_task(self.sender.outbox.resume())
            if self.settings.webhook_url:
                return await self._serve_webhook(on_message)
            log.info("Telegram: %s ready (long polling)", self._who())
            return await self._poll(on_message)
        finally:
            for task in list(self._later):  # notes still on their way: a stopped channel cannot send them
                task.cancel()
            if resuming is not None:
                resuming.cancel()  # what it had not sent stays pending
            await self.api.aclose()
            log.info("Telegram: stopped")

    async def stop(self) -> None:
        self._stopped.set()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        await self.sender.reply(chat, reply)

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> TelegramStream:
        return TelegramStream(self.sender, chat)

    async def react(self, chat: ChatRef, message_id: str, emoji: str | None) -> None:
        """``emoji`` on the message (``None``: none); a chat where reactions are off is not worth a failure."""
        reaction = [{"type": "emoji", "emoji": emoji}] if emoji else []
        if (number := parse_ref(message_id)) is None:
            return
        try:
            await self.api.call("setMessageReaction", chat_id=int(chat.chat_id), message_id=number, reaction=reaction)
        except TelegramError as exc:
            log.debug("reaction not set chat=%s: %s", chat.session_key, exc)

    def reattach(self, attachment: Attachment) -> Attachment | None:
        """An attachment from the inbox, fetchable again by its file_id."""
        if not attachment.source:
            return None
        return lazy(attachment.kind, attachment.source, self.download, mime=attachment.mime,
                    filename=attachment.filename, size=attachment.size, duration=attachment.duration)

    # ---- starting ----------------------------------------------------------------------------

    async def _start(self) -> str | None:
        """getMe, the command menu, and in polling mode the removal of a stale webhook, tried until they pass;
        returns why the channel cannot start at all, else ``None``."""
        async def start() -> None:
            self.me = _expect("getMe", await self.api.call("getMe"), dict)
            await self._set_commands()
            if not self.settings.webhook_url:
                await self._drop_stale_webhook()

        return await self._until_done("start", start)  # the "ready" line follows once receiving starts

    async def _until_done(self, what: str, attempt: Callable[[], Awaitable[None]]) -> str | None:
        """``attempt`` again, with growing pauses, while it fails in a way that may pass (the outage is logged
        once); returns the sentence for a failure that will not pass, else ``None`` (done, or stopped)."""
        backoff = Backoff()
        while not self._stopped.is_set():
            try:
                await attempt()
                if backoff.failures:
                    log.info("Telegram %s succeeded after %d failed tries", what, backoff.failures)
                return None
            except UNREACHABLE as exc:
                if isinstance(exc, TelegramError) and (reason := refusal(exc)):
                    return reason
                pause = backoff.failed()
                if backoff.first_failure:
                    log.warning("Telegram %s failed (%s); trying again with growing pauses", what, _why(exc))
                else:
                    log.debug("Telegram %s failed again (%s); next try in %.0f s", what, _why(exc), pause)
                await self._pause(pause)
        return None

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
        if (pressed := update.get("callback_query")) is not None:
            await self._pressed(pressed, handle)
            return
        if message is None:
            if (edited := update.get("edited_message")) is not None and any(k in edited for k in ("text", "caption")):
                await self._accept([edited], handle)
            return
        if not isinstance(message, dict):  # unreadable: skipped by the caller with the update's id
            raise TypeError(f"the message is a {type(message).__name__}, not an object")
        if "migrate_from_chat_id" in message:  # the first message of a group that became a supergroup
            inbound = to_inbound([message], self._me(), self.rules, self.download)
            inbound.moved_from = str(message["migrate_from_chat_id"])
            await handle(inbound)
        elif any(key in message for key in CONTENT) and not for_another_bot(message, self._me()):
            await self._accept([message], handle)

    async def _accept(self, parts: list[Message], handle: InboundHandler) -> None:
        """A message, or an album's parts as one: files the model cannot take get a sentence, sent once the
        message is accepted (never from inside accepting: a chat refusing it must not block the updates). A part
        of an album taken alone (webhook mode) is marked with the album, for the core to fold."""
        inbound = to_inbound(parts, self._me(), self.rules, self.download)
        if len(parts) == 1 and (album := parts[0].get("media_group_id")):
            inbound.album = str(album)
        if "edit_date" in parts[0]:
            as_edit(inbound, parts[0]["edit_date"])
        note = unreadable_note(inbound) if inbound.mentioned else None
        if note is None:
            await handle(inbound)
            return
        inbound.attachments = [a for a in inbound.attachments if a.kind not in UNREADABLE]
        if (inbound.text or inbound.attachments) and await handle(inbound) is False:
            return  # a redelivery: its note went out the first time
        self._send_later(inbound.chat, Reply(text=note, reply_to=inbound.message_id))

    async def _take(self, what: str, accepting: Awaitable[None]) -> None:
        """Await ``accepting`` (one update, or an album); one that cannot be read (malformed, or anything that
        raises while it is normalized) is logged with its id and skipped, so it is confirmed and holds nothing
        up. ``NotAccepted`` (it could not be stored) goes on to the caller: unconfirmed, it comes again."""
        try:
            await accepting
        except NotAccepted:
            raise
        except Exception as exc:
            log.warning("Telegram %s cannot be read and is skipped (%s: %s)", what, type(exc).__name__,
                        self.api.mask(str(exc))[:200])
            log.debug("%s", what, exc_info=True)

    def _send_later(self, chat: ChatRef, reply: Reply) -> None:
        """Send a notice of the channel's own after accepting; a chat refusing it is logged, nothing more."""
        async def send() -> None:
            try:
                await self.sender.reply(chat, reply)
            except Exception as exc:
                log.warning("could not send a notice chat=%s: %s", chat.chat_id, exc)

        task = asyncio.get_running_loop().create_task(send())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def _pressed(self, query: dict[str, Any], handle: InboundHandler) -> None:
        """A button of ours was pressed: its command is handled as if the presser had typed it."""
        await self.api.call("answerCallbackQuery", callback_query_id=query["id"])  # stops the button's spinner
        shown = query.get("message")
        if not shown or not str(query.get("data") or "").startswith("/"):
            return
        typed = {**shown, "from": query["from"], "text": query["data"], "entities": [], "caption": None}
        typed.pop("reply_to_message", None)
        inbound = to_inbound([typed], self._me(), self.rules, self.download)
        inbound.message_id, inbound.mentioned = f"callback-{query['id']}", True
        await handle(inbound)

    async def _poll(self, handle: InboundHandler) -> str | None:
        """Long polling, by the one instance holding the poller lease (``PollerSeat``); the offset confirms an
        update only once ``handle`` has returned for it (or it was skipped as unreadable), and is then kept for
        the next holder. Returns why receiving stopped for good (the token refused), else ``None``."""
        seat = PollerSeat(self.leases, self._me()["id"])
        try:
            return await self._poll_while_held(seat, handle)
        finally:
            await seat.leave()

    async def _poll_while_held(self, seat: PollerSeat, handle: InboundHandler) -> str | None:
        offset: int | None = None
        seen: set[int] = set()  # fed while an album holds the offset back (they come again)
        albums = Albums()
        receiving, storing = Backoff(cap=30), Backoff(cap=30)
        refused = 0
        while not self._stopped.is_set():
            if not seat.held():  # another instance polls (or did until now): wait for the lease
                if not await seat.take():
                    await self._pause(self.leases.every)
                    continue
                # What this instance held back before is not confirmed: the new holder's offset decides.
                offset, albums = await seat.offset(), Albums()
                seen.clear()
            held = albums.first_update_id()
            if held is not None:
                await asyncio.sleep(0.3)  # the other photos of an album arrive within moments
            timeout = 0 if held is not None else self.settings.poll_timeout
            try:
                # The read timeout outlasts the long poll: an idle poll is answered "no updates", not cut off.
                updates = _expect("getUpdates", await self.api.call(
                    "getUpdates", offset=held if held is not None else offset, timeout=timeout,
                    allowed_updates=ALLOWED_UPDATES, request_timeout=timeout + 15), list)
            except UNREACHABLE as exc:
                refused = refused + 1 if isinstance(exc, TelegramError) and token_refused(exc) else 0
                if refused >= TOKEN_TRIES_RUNNING:
                    return refusal(exc)  # type: ignore[arg-type]  (a refused token is a TelegramError)
                pause = receiving.failed()
                if isinstance(exc, TelegramError) and exc.conflict and receiving.first_failure:
                    log.warning("Telegram says another process is receiving this bot's updates (%s); "
                                "run one Chorus per bot token, or several sharing one database (`chorus doctor` "
                                "explains)", exc.description)
                elif receiving.first_failure:
                    log.warning("receiving from Telegram failed (%s); retrying with growing pauses (up to %.0f s)",
                                _why(exc), receiving.cap)
                else:
                    log.debug("receiving from Telegram failed again (%s); next try in %.0f s", _why(exc), pause)
                await self._pause(pause)
                continue
            refused = 0
            if receiving.succeeded():
                log.info("receiving from Telegram again")
            try:
                offset = await self._take_all(updates, held, seen, albums, offset, handle)
                storing.succeeded()
                await seat.keep(offset)
            except NotAccepted:  # not stored (e.g. the disk is full): unconfirmed, so Telegram sends it again
                pause = storing.failed()
                log.warning("a Telegram update could not be stored; it is received again in %.0f s", pause)
                seen.clear()
                albums.take()
                await self._pause(pause)
        return None

    async def _take_all(self, updates: list[Update], held: int | None, seen: set[int], albums: Albums,
                        offset: int | None, handle: InboundHandler) -> int | None:
        """Feed one getUpdates answer; returns the offset that confirms what was taken."""
        fresh = []
        for update in updates:
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if not isinstance(update_id, int):  # nothing to confirm it by: it cannot come again either
                log.warning("Telegram sent an update without an update_id; skipped: %.100r", update)
            elif update_id not in seen:
                fresh.append(update)
        if held is not None and not fresh:
            for parts in albums.take():
                await self._take(f"album {parts[0].get('media_group_id')}", self._accept(parts, handle))
        for update in fresh:
            message = update.get("message")
            if isinstance(message, dict) and message.get("media_group_id"):
                albums.add(update["update_id"], message)
            else:
                await self._take(f"update {update['update_id']}", self._feed(update, handle))
            seen.add(update["update_id"])
        if albums.first_update_id() is None and seen:
            offset = max(seen) + 1
            seen.clear()
        return offset

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except TimeoutError:
            pass

    async def _drop_stale_webhook(self) -> None:
        info = _expect("getWebhookInfo", await self.api.call("getWebhookInfo"), dict)
        if info.get("url"):
            log.warning("a webhook is set for this bot; removing it so that polling works "
                        "(set channels.telegram.webhookUrl to use webhook mode)")
            await self.api.call("deleteWebhook", drop_pending_updates=False)

    async def _serve_webhook(self, handle: InboundHandler) -> str | None:
        """The listener Telegram posts to; ``/healthz`` beside it. 200 only after ``handle`` returned (or the
        update was skipped as unreadable); a body that is no update at all is answered 400, one too big 413."""
        from aiohttp import web  # the server side of aiohttp, only in webhook mode

        settings = self.settings
        async def receive(request: web.Request) -> web.Response:
            given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
            if not hmac.compare_digest(given.encode(), (settings.webhook_secret or "").encode()):
                log.warning("webhook request with a wrong secret token from %s refused", request.remote)
                return web.Response(status=401, text="wrong secret token")
            try:
                update = wirejson.loads(await request.read())
            except web.HTTPRequestEntityTooLarge:
                log.warning("webhook request from %s too large; refused", request.remote)
                return web.Response(status=413, text="too large")
            except ValueError:
                update = None
            if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
                log.warning("webhook request from %s is not a Telegram update; refused", request.remote)
                return web.Response(status=400, text="not a Telegram update")
            try:
                # Telegram sends a chat's next update only once this one is answered: an album's parts cannot be
                # gathered here, so each is accepted on its own, marked, and the core answers them together.
                await self._take(f"update {update['update_id']}", self._feed(update, handle))
            except Exception:  # not stored: Telegram delivers the update again after a non-200
                log.warning("webhook update %s could not be stored; Telegram sends it again", update["update_id"])
                return web.Response(status=500, text="not accepted")
            return web.Response(text="ok")

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"ok": True, "bot": self._me().get("username")})

        async def set_webhook() -> None:
            await self.api.call("setWebhook", url=settings.webhook_url, secret_token=settings.webhook_secret,
                                allowed_updates=ALLOWED_UPDATES)

        app = web.Application()
        app.add_routes([web.post(settings.webhook_path, receive), web.get("/healthz", healthz)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            try:
                await web.TCPSite(runner, settings.webhook_host, settings.webhook_port).start()
            except OSError as exc:
                return (f"the Telegram webhook cannot listen on {settings.webhook_host}:{settings.webhook_port} "
                        f"({exc.strerror or exc}); the Telegram channel stops. Set channels.telegram.webhookPort "
                        "to a free port (or stop the program using it) and restart")
            if reason := await self._until_done("setWebhook", set_webhook):
                return reason
            log.info("Telegram: %s ready (webhook %s, listening on %s:%s%s)", self._who(), settings.webhook_url,
                     settings.webhook_host, settings.webhook_port, settings.webhook_path)
            await self._stopped.wait()
            return None
        finally:
            await runner.cleanup()

    # ---- helpers -----------------------------------------------------------------------------

    def _who(self) -> str:
        """``@name_bot (id 123)``: the bot as its owner finds it in Telegram."""
        return f"@{self._me().get('username')} (id {self._me()['id']})"

    def _me(self) -> User:
        assert self.me is not None, "getMe runs before anything is received"
        return self.me

    async def _set_commands(self) -> None:
        """The command menu; Telegram refusing it (not a bad minute, not the token) costs only the menu."""
        if self.settings.commands:
            commands = [{"command": c, "description": d} for c, d in self.settings.commands]
            try:
                await self.api.call("setMyCommands", commands=commands)
            except TelegramError as exc:
                if refusal(exc) is None or token_refused(exc):
                    raise
                log.warning("Telegram refused the command menu (%s); commands still work when typed", exc)


# What a call to the Bot API may fail with: its own error, or (should one slip past the HTTP layer's wrapping)
# the network's: each may pass, and is retried.
UNREACHABLE = (TelegramError, OSError, TimeoutError)
TOKEN_TRIES_RUNNING = 3  # a token refused while running: one refusal may be Telegram's blip, three are not


def token_refused(exc: TelegramError) -> bool:
    """The Bot API refused the token: 401 for a revoked one, 404 for one that is not a token at all."""
    return exc.answered and exc.code in (401, 404)


def refusal(exc: TelegramError) -> str | None:
    """The one line for a failure that will not pass by itself, saying what to do; ``None`` for one that may
    (no answer, a 5xx or a proxy's error page, flood control)."""
    if token_refused(exc):
        return (f"Telegram refused the bot token ({exc.description}, {exc.code}); the Telegram channel stops. "
                "Put the token @BotFather gave you in channels.telegram.botToken (or TELEGRAM_BOT_TOKEN) and restart")
    if exc.code == 0 or exc.code >= 500 or exc.flood or exc.conflict:
        return None
    if not exc.answered:
        return (f"{exc.method} was answered HTTP {exc.code} by something that is not the Bot API; the Telegram "
                "channel stops. Check channels.telegram.apiRoot")
    where = "channels.telegram.webhookUrl" if exc.method == "setWebhook" else "the Telegram settings"
    return f"Telegram refused {exc.method} ({exc.description}); the Telegram channel stops. Check {where} and restart"


def _why(exc: Exception) -> str:
    """An error as a log line shows it: its text, or its kind when it has none (a timeout)."""
    return str(exc) or type(exc).__name__


def _expect(method: str, result: object, kind: type) -> Any:
    """``result`` if it is of the type the Bot API documents, else a ``TelegramError`` that may pass (a proxy or
    a Bot API server answering nonsense is retried like an outage)."""
    if not isinstance(result, kind):
        raise TelegramError(method, 0, f"answered with an unexpected result ({str(result)[:60]})")
    return result
