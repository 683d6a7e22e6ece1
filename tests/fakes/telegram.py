"""A fake Telegram Bot API on 127.0.0.1 that the bot reaches through ``channels.telegram.apiRoot``.

It keeps the server's state (updates and their offset, webhook, chats, sent messages, files), checks every
call against the Bot API spec and Telegram's formatting rules (``telegram_spec``), and lets a test act as
Telegram users: send texts, photos, albums, voice notes, into private chats, groups and forum topics.
A call Telegram would refuse is answered 400 and recorded in ``violations``; the ``fake_telegram`` fixture
fails the test when there are any.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from .media import make_png
from .telegram_spec import CAPTION_LIMIT, TEXT_LIMIT, Problem, check_call, check_length, decode_form_value, rendered_text

TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijklmn"
MAX_CONNECTIONS = 40  # setWebhook's default
BOT = {"id": 123456789, "is_bot": True, "first_name": "Chorus", "username": "chorus_test_bot",
       "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
MEDIA_METHODS = {"sendPhoto": "photo", "sendVideo": "video", "sendAudio": "audio", "sendVoice": "voice",
                 "sendDocument": "document", "sendVideoNote": "video_note", "sendAnimation": "animation"}


@dataclass
class Call:
    """One Bot API call as the fake received it: decoded parameters, uploaded files, and when."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes]
    at: float
    status: int = 200

    def file(self, param: str) -> bytes:
        """The bytes uploaded for ``param`` (e.g. ``voice``)."""
        ref = self.params[param]
        return self.files[ref.removeprefix("attach://")]


@dataclass
class Failure:
    """An error to answer instead of the next matching call (429 flood control, 403 blocked, ...)."""

    method: str
    status: int
    description: str
    retry_after: int | None = None
    chat_id: int | None = None
    times: int = 1
    after: int = 0  # let this many matching calls through first
    kind: str = "error"  # error | html | reset | hang | late (see the fault block of FakeTelegram)


@dataclass
class Chat:
    id: int
    type: str  # private | group | supergroup
    title: str | None = None
    is_forum: bool = False
    next_message_id: int = 1
    deleted: set[int] = field(default_factory=set)

    def has(self, message_id: int) -> bool:
        return 0 < message_id < self.next_message_id and message_id not in self.deleted

    def as_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            out["first_name"] = f"User{self.id}"
        else:
            out["title"] = self.title or f"Group {self.id}"
        if self.is_forum:
            out["is_forum"] = True
        return out


@dataclass
class Sent:
    """A message the bot sent (text as it stands after edits)."""

    chat_id: int
    message_id: int
    method: str
    text: str | None = None
    entities: list[dict[str, Any]] = field(default_factory=list)
    caption: str | None = None
    thread_id: int | None = None
    reply_to: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    edits: int = 0


def user(user_id: int, name: str = "Ada", username: str | None = "ada") -> dict[str, Any]:
    """A Telegram user object."""
    out: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": name}
    if username:
        out["username"] = username
    return out


class FakeTelegram:
    """The fake server; ``async with FakeTelegram() as tg:`` starts and stops it."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.failures: list[Failure] = []
        self.raw_answers: list[list[Any]] = []  # [method, result, times]: answer_raw
        self.held: dict[str, asyncio.Event] = {}  # method -> answered once the event is set
        self.sent: list[Sent] = []
        self._sent_by_id: dict[tuple[int, int], Sent] = {}  # (chat_id, message_id): edits find theirs at once
        self.chats: dict[int, Chat] = {}
        self.allowed_updates: list[str] | None = None  # the update kinds the bot asked for (None: all but a few)
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, bytes)
        self.updates: list[dict[str, Any]] = []  # not yet confirmed
        self.pushed_at: dict[int, float] = {}  # update_id -> when it became available (time.monotonic)
        self.listeners: list[Callable[[Call], None]] = []  # told of every call as it arrives (benchmarks)
        self.webhook: dict[str, Any] = {}
        self.webhook_results: list[tuple[int, int]] = []  # (update_id, HTTP status)
        self._update_ids = itertools.count(1000)
        self._last_update_id = 0
        self._arrived = asyncio.Event()
        self._poller: asyncio.Future[None] | None = None
        self._delivery: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=100 * 2**20)
        app.add_routes([web.route("*", "/bot{token}/{method}", self._api),
                        web.get("/file/bot{token}/{path:.+}", self._download)])
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._delivery:
            self._delivery.cancel()
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def api_root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def assert_clean(self) -> None:
        assert not self.violations, "Bot API violations:\n" + "\n".join(self.violations)

    # ---- acting as Telegram users ------------------------------------------------------------

    def chat(self, chat_id: int, type: str = "private", *, title: str | None = None, is_forum: bool = False) -> Chat:
        """The chat with this id, created on first use."""
        if chat_id not in self.chats:
            self.chats[chat_id] = Chat(chat_id, type, title, is_forum)
        return self.chats[chat_id]

    def upload(self, data: bytes, path: str) -> str:
        """Store a file as if a user had sent it; returns its file_id."""
        file_id = "F" + secrets.token_hex(8)
        self.files[file_id] = (path, data)
        return file_id

    def message(self, chat_id: int, text: str | None = None, *, sender: dict[str, Any] | None = None,
                chat_type: str = "private", **extra: Any) -> dict[str, Any]:
        """Deliver a message from a user as a new update; returns the message."""
        chat = self.chat(chat_id, chat_type)
        msg: dict[str, Any] = {"message_id": chat.next_message_id, "date": int(time.time()), "chat": chat.as_api(),
                               "from": sender or user(chat_id if chat_type == "private" else 42)}
        chat.next_message_id += 1
        if text is not None:
            msg["text"] = text
        msg.update(extra)
        self.push({"message": msg})
        return msg

    def edit(self, message: dict[str, Any], text: str) -> dict[str, Any]:
        """The user edits ``message`` (one of theirs) to say ``text``: an ``edited_message`` update."""
        edited = {**message, "text": text, "edit_date": int(time.time()) + len(self.updates)}
        self.push({"edited_message": edited})
        return edited

    def buttons(self, sent: Sent) -> list[tuple[str, str]]:
        """The inline keyboard under a message the bot sent, as (label, callback data)."""
        rows = (sent.params.get("reply_markup") or {}).get("inline_keyboard") or []
        return [(b["text"], b["callback_data"]) for row in rows for b in row]

    def press(self, sent: Sent, label: str, *, sender: dict[str, Any] | None = None) -> str:
        """A user presses the button ``label`` under ``sent``: a ``callback_query`` update; returns its id."""
        data = dict(self.buttons(sent))[label]
        query_id = secrets.token_hex(8)
        self.push({"callback_query": {"id": query_id, "from": sender or user(sent.chat_id), "chat_instance": "1",
                                      "message": self._message_json(sent), "data": data}})
        return query_id

    def delete(self, chat_id: int, message_id: int) -> None:
        """A user deletes a message of theirs."""
        self.chats[chat_id].deleted.add(message_id)

    def photo(self, chat_id: int, data: bytes, *, width: int = 64, height: int = 36, **kw: Any) -> dict[str, Any]:
        """A user sends a photo (``caption=``, ``media_group_id=`` for albums, ``chat_type=`` ...).

        As Telegram does, the message lists the photo's sizes smallest first: a thumbnail (another real image,
        so a bot that fetched it would show the wrong picture, not fail), then ``data`` itself."""
        sizes = []
        for image, (w, h) in ((make_png(9, 5), (90, 51)), (data, (width, height))):
            file_id = self.upload(image, f"photos/file_{len(self.files)}.jpg")
            sizes.append({"file_id": file_id, "file_unique_id": "U" + file_id, "width": w, "height": h,
                          "file_size": len(image)})
        return self.message(chat_id, None, photo=sizes, **kw)

    def voice(self, chat_id: int, data: bytes, duration: int, **kw: Any) -> dict[str, Any]:
        """A user records a voice note (the bytes should be real OGG/Opus)."""
        file_id = self.upload(data, f"voice/file_{len(self.files)}.oga")
        note = {"file_id": file_id, "file_unique_id": "U" + file_id, "duration": duration, "mime_type": "audio/ogg",
                "file_size": len(data)}
        return self.message(chat_id, None, voice=note, **kw)

    @property
    def last_update_id(self) -> int:
        """The id of the update pushed last (``message``, ``photo`` and ``voice`` return the message)."""
        return self._last_update_id

    def push(self, update: dict[str, Any]) -> int:
        """Queue an update (polling) or hand it to the webhook; returns its update_id."""
        update_id = next(self._update_ids)
        self.updates.append({"update_id": update_id, **update})
        self.pushed_at[update_id] = time.monotonic()
        self._last_update_id = update_id
        self._arrived.set()
        return update_id

    async def _arrival(self, timeout: float, *also: asyncio.Future[None]) -> None:
        """Wait until an update arrives, ``timeout`` passes, or one of ``also`` is done."""
        self._arrived.clear()
        waiter = asyncio.ensure_future(self._arrived.wait())
        await asyncio.wait({waiter, *also}, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()

    def fail(self, method: str, status: int, description: str, *, retry_after: int | None = None,
             chat_id: int | None = None, times: int = 1, after: int = 0) -> None:
        """Answer ``times`` calls of ``method`` (to ``chat_id``), after letting ``after`` through, with this error."""
        self.failures.append(Failure(method, status, description, retry_after, chat_id, times, after))

    def hold(self, method: str) -> asyncio.Event:
        """Keep every answer to ``method`` waiting until the returned event is set: a slow Telegram (or network),
        which has already done what the request asked, as the real one has once it got the request."""
        gate = self.held[method] = asyncio.Event()
        return gate

    # ---- faults at start-up and poison updates -----------------------------------------------

    def answer_raw(self, method: str, result: Any, *, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` ``{"ok": true, "result": result}``, whatever type the Bot
        API documents for it (``getWebhookInfo`` answering ``true``, as a broken proxy or server may)."""
        self.raw_answers.append([method, result, times])

    def _raw_answer(self, method: str) -> web.Response | None:
        for entry in self.raw_answers:
            if entry[0] == method:
                entry[2] -= 1
                if entry[2] <= 0:
                    self.raw_answers.remove(entry)
                return _ok(entry[1])
        return None

    # ---- faults of the transport and the platform when the bot sends: one block, kept together -----------

    def fail_html(self, method: str, status: int = 502, *, times: int = 1) -> None:
        """Answer ``times`` calls of ``method`` with a proxy's HTML error page (no Bot API JSON)."""
        self.failures.append(Failure(method, status, "Bad Gateway", times=times, kind="html"))

    def reset(self, method: str, *, times: int = 1) -> None:
        """Read ``times`` calls of ``method`` whole, then drop the connection without doing or answering them."""
        self.failures.append(Failure(method, 0, "reset", times=times, kind="reset"))

    def hang(self, method: str, *, times: int = 1, done: bool = False) -> None:
        """Never answer ``times`` calls of ``method``; ``done``: do what they asked first (the message is in the
        chat, only the answer is lost), else leave them undone (lost on the way)."""
        self.failures.append(Failure(method, 0, "hang", times=times, kind="late" if done else "hang"))

    def fail_download(self, status: int = 404, *, times: int = 1, kind: str = "error") -> None:
        """Make the next ``times`` file downloads fail: ``status`` with an error page, or ``kind`` reset/hang."""
        self.failures.append(Failure("download", status, "Not Found", times=times, kind=kind))

    async def _misbehave(self, failure: Failure, request: web.Request, method: str, params: dict[str, Any],
                         files: dict[str, bytes], call: Call | None) -> web.Response:
        if call is not None:
            call.status = failure.status or 599  # not counted among the calls that were answered
        if failure.kind == "html":
            return web.Response(status=failure.status, content_type="text/html",
                                text=f"<html><body><h1>{failure.status} {failure.description}</h1></body></html>")
        if failure.kind == "error":
            return _error(failure.status, failure.description)
        if failure.kind == "late" and (handler := getattr(self, "_m_" + method, None)) is not None:
            await handler(params, files)
        if failure.kind == "reset":
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing is answered: the connection is gone
        await asyncio.Event().wait()  # hang: cancelled when the client gives up and closes the connection
        raise AssertionError("unreachable")

    # ---- inspection --------------------------------------------------------------------------

    def calls_to(self, *methods: str) -> list[Call]:
        return [c for c in self.calls if c.method in methods and c.status == 200]

    def messages_in(self, chat_id: int, thread_id: int | None = None) -> list[Sent]:
        return [s for s in self.sent if s.chat_id == chat_id and (thread_id is None or s.thread_id == thread_id)]

    def texts_in(self, chat_id: int) -> list[str]:
        return [s.text or s.caption or "" for s in self.messages_in(chat_id)]

    async def wait_for(self, predicate: Any, timeout: float = 20, what: str = "condition") -> None:
        """Wait until ``predicate()`` holds (checked every 20 ms)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.02)

    async def settled(self, chat_id: int, text: str = "marker", **kw: Any) -> list[Sent]:
        """What the chat received before the answer to one more message (``text``, sent with ``kw``): the bot
        answers a chat's messages in order, so whatever an earlier one still caused came before that answer.
        Used instead of waiting a fixed time for nothing more to come; the marker's answer is not returned."""
        before = len(self.messages_in(chat_id))
        self.message(chat_id, text, **kw)
        await self.wait_for(lambda: any((s.text or "").endswith(text) for s in self.messages_in(chat_id)[before:]),
                            what=f"the answer to {text!r}")
        *earlier, marker = self.messages_in(chat_id)
        assert (marker.text or "").endswith(text), "something came after the marker's answer"
        return earlier

    async def wait_sent(self, chat_id: int, count: int = 1, timeout: float = 20) -> list[Sent]:
        """Wait until the bot has sent ``count`` messages into ``chat_id``."""
        try:
            await self.wait_for(lambda: len(self.messages_in(chat_id)) >= count, timeout)
        except TimeoutError:
            raise AssertionError(f"expected {count} message(s) in chat {chat_id}, got "
                                 f"{[s.text for s in self.messages_in(chat_id)]}; calls: "
                                 f"{[c.method for c in self.calls]}; violations: {self.violations}") from None
        return self.messages_in(chat_id)

    # ---- the Bot API -------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        method = request.match_info["method"]
        try:
            params, files = await _read_params(request)
        except Problem as exc:
            return self._violation(method, str(exc))
        call = Call(method, params, files, time.monotonic())
        self.calls.append(call)
        for listener in self.listeners:
            listener(call)
        try:
            check_call(method, params, set(files))
            self._check_formatting(method, params)
        except Problem as exc:
            call.status = 400
            return self._violation(method, str(exc))
        failure = self._failure_for(method, params)
        if failure is not None and failure.kind != "error":
            return await self._misbehave(failure, request, method, params, files, call)
        if failure is not None:
            call.status = failure.status
            extra = {"parameters": {"retry_after": failure.retry_after}} if failure.retry_after else {}
            return _error(failure.status, failure.description, **extra)
        if (raw := self._raw_answer(method)) is not None:
            return raw
        handler = getattr(self, "_m_" + method, None)
        try:
            answer = _ok(True) if handler is None else await handler(params, files)
        except Problem as exc:
            answer = _error(400, str(exc))
        call.status = answer.status  # a handler may refuse too ("message is not modified")
        if (gate := self.held.get(method)) is not None:  # done, as Telegram does what it got; the answer is slow
            await gate.wait()
        return answer

    def _violation(self, method: str, what: str) -> web.Response:
        self.violations.append(f"{method}: {what}")
        return _error(400, what)

    def _failure_for(self, method: str, params: dict[str, Any]) -> Failure | None:
        for failure in self.failures:
            if failure.method == method and (failure.chat_id is None or failure.chat_id == params.get("chat_id")):
                if failure.after > 0:
                    failure.after -= 1
                    return None
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    def _check_formatting(self, method: str, params: dict[str, Any]) -> None:
        if "text" in params and method in ("sendMessage", "editMessageText", "sendMessageDraft"):
            text = rendered_text(params["text"], params.get("parse_mode"), params.get("entities"), f"{method}.text")
            check_length(text, TEXT_LIMIT, "message text", allow_empty=method == "sendMessageDraft")
        elif method in ("sendMessage",):
            raise Problem("Bad Request: message text is empty")
        if "caption" in params:
            caption = rendered_text(params["caption"], params.get("parse_mode"), params.get("caption_entities"),
                                    f"{method}.caption")
            check_length(caption, CAPTION_LIMIT, "message caption", allow_empty=True)
        for i, media in enumerate(params.get("media") or []):
            if isinstance(media, dict) and "caption" in media:
                caption = rendered_text(media["caption"], media.get("parse_mode"), media.get("caption_entities"),
                                        f"{method}.media[{i}].caption")
                check_length(caption, CAPTION_LIMIT, "media caption", allow_empty=True)

    # ---- methods -----------------------------------------------------------------------------

    async def _m_getMe(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return _ok(BOT)

    async def _m_getUpdates(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        if self.webhook.get("url"):
            return _error(409, "Conflict: can't use getUpdates method while webhook is active; "
                               "use deleteWebhook to delete the webhook first")
        if self._poller is not None and not self._poller.done():
            self._poller.set_result(None)  # like Telegram: the older request ends with 409
        mine = self._poller = asyncio.get_running_loop().create_future()
        offset = params.get("offset")
        if offset is not None:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while not self.updates and not mine.done() and time.monotonic() < deadline:
            await self._arrival(deadline - time.monotonic(), mine)
        if mine.done():
            return _error(409, "Conflict: terminated by other getUpdates request; "
                               "make sure that only one bot instance is running")
        mine.set_result(None)
        limit = int(params.get("limit") or 100)
        if "allowed_updates" in params:  # as Telegram does: remembered until the next call that gives it
            self.allowed_updates = params["allowed_updates"] or None
        wanted = [u for u in self.updates if self.allowed_updates is None
                  or any(kind in u for kind in self.allowed_updates)]
        return _ok(wanted[:limit])

    async def _m_setWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self.webhook = {"url": params["url"], "secret": params.get("secret_token"),
                        "allowed_updates": params.get("allowed_updates")}
        if params.get("drop_pending_updates"):
            self.updates.clear()
        if self._delivery is None or self._delivery.done():
            self._delivery = asyncio.create_task(self._deliver())
        return _ok(True)

    async def _m_deleteWebhook(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        self.webhook = {}
        if params.get("drop_pending_updates"):
            self.updates.clear()
        return _ok(True)

    async def _m_getWebhookInfo(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return _ok({"url": self.webhook.get("url", ""), "has_custom_certificate": False,
                    "pending_update_count": len(self.updates)})

    async def _m_getFile(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        stored = self.files.get(params["file_id"])
        if stored is None:
            return _error(400, "Bad Request: invalid file_id")
        path, data = stored
        if len(data) > 20 * 2**20:
            return _error(400, "Bad Request: file is too big")
        return _ok({"file_id": params["file_id"], "file_unique_id": "U" + params["file_id"], "file_size": len(data),
                    "file_path": path})

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        if (failure := self._failure_for("download", {})) is not None:
            return await self._misbehave(failure, request, "download", {}, {}, None)
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data)
        return _error(404, "Not Found")

    async def _m_setMessageReaction(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        chat = self.chats.get(params["chat_id"])
        if chat is None or not chat.has(params["message_id"]):
            raise Problem("Bad Request: message to react not found")
        return _ok(True)

    async def _m_answerCallbackQuery(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return _ok(True)

    async def _m_sendMessage(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return _ok(self._store("sendMessage", params, files, text=params["text"],
                               entities=params.get("entities") or []))

    async def _m_sendMessageDraft(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        chat = self.chats.get(params["chat_id"])
        if chat is None or chat.type != "private":
            return _error(400, "Bad Request: drafts can be sent only to private chats")
        if params["draft_id"] == 0:
            return _error(400, "Bad Request: draft_id must be non-zero")
        return _ok(True)

    async def _m_editMessageText(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        sent = self._sent_by_id.get((params.get("chat_id"), params.get("message_id")))  # type: ignore[arg-type]
        if sent is None:
            return _error(400, "Bad Request: message to edit not found")
        if sent.text == params["text"] and sent.entities == (params.get("entities") or []):
            return _error(400, "Bad Request: message is not modified: specified new message content and "
                               "reply markup are exactly the same as a current content and reply markup of "
                               "the message")
        sent.text, sent.entities = params["text"], params.get("entities") or []
        sent.edits += 1
        return _ok(self._message_json(sent))

    async def _m_sendMediaGroup(self, params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        out = []
        for media in params["media"]:
            ref = media["media"]
            data = {"file": files[ref.removeprefix("attach://")]} if ref.startswith("attach://") else {}
            sent = self._store("sendMediaGroup", {**params, "media": [media]}, data, caption=media.get("caption"))
            out.append(self._message_json(sent))
        return _ok(out)

    def __getattr__(self, name: str) -> Any:
        # sendPhoto, sendVoice, ... share one handler: store the upload, answer a message with the file.
        if name.startswith("_m_") and name[3:] in MEDIA_METHODS:
            method = name[3:]

            async def send_media(params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
                kind = MEDIA_METHODS[method]
                ref = params[kind]
                if not (isinstance(ref, str) and ref.startswith("attach://")):
                    raise Problem(f"Bad Request: {kind} must be uploaded in these tests")
                return _ok(self._store(method, params, {kind: files[ref.removeprefix("attach://")]},
                                       caption=params.get("caption")))

            return send_media
        raise AttributeError(name)

    def _store(self, method: str, params: dict[str, Any], files: dict[str, bytes], *, text: str | None = None,
               entities: list[dict[str, Any]] | None = None, caption: str | None = None) -> dict[str, Any]:
        chat_id = params["chat_id"]
        chat = self.chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise Problem("Bad Request: chat not found")
        thread = params.get("message_thread_id")
        if thread is not None and not chat.is_forum:
            raise Problem("Bad Request: message thread not found")
        reply = (params.get("reply_parameters") or {}).get("message_id")
        if reply is not None and not chat.has(reply):
            if not params["reply_parameters"].get("allow_sending_without_reply"):
                raise Problem("Bad Request: message to be replied not found")
            reply = None  # sent all the same, as a message of its own
        sent = Sent(chat_id, chat.next_message_id, method, text, entities or [], caption, thread, reply, params, files)
        chat.next_message_id += 1
        self.sent.append(sent)
        self._sent_by_id.setdefault((chat_id, sent.message_id), sent)
        return self._message_json(sent)

    def _message_json(self, sent: Sent) -> dict[str, Any]:
        out: dict[str, Any] = {"message_id": sent.message_id, "date": int(time.time()),
                               "chat": self.chats[sent.chat_id].as_api(), "from": BOT}
        if sent.text is not None:
            out["text"] = sent.text
        if sent.entities:
            out["entities"] = sent.entities
        if sent.thread_id:
            out["message_thread_id"] = sent.thread_id
            out["is_topic_message"] = True
        return out

    # ---- webhook delivery --------------------------------------------------------------------

    async def _deliver(self) -> None:
        """POST queued updates to the webhook as Telegram's server does (``WebhookActor`` in tdlib/telegram-bot-api):
        one queue per chat, each in order, its next update only once the last was answered 200; the chats' queues
        at the same time, up to ``max_connections`` (40)."""
        in_flight: dict[Any, asyncio.Task[None]] = {}
        while True:
            if self.webhook.get("url"):
                busy = set(in_flight)
                for update in list(self.updates):
                    key = _queue_of(update)
                    if key not in busy and len(in_flight) < MAX_CONNECTIONS:
                        in_flight[key] = asyncio.create_task(self._post(update, key, in_flight))
                    busy.add(key)  # a chat's later updates wait behind its first
            await self._arrival(0.2, *in_flight.values())

    async def _post(self, update: dict[str, Any], key: Any, in_flight: dict[Any, asyncio.Task[None]]) -> None:
        assert self._http is not None
        headers = {"X-Telegram-Bot-Api-Secret-Token": self.webhook["secret"]} if self.webhook.get("secret") else {}
        try:
            async with self._http.post(self.webhook["url"], json=update, headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=30)) as resp:
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            status = 0
        self.webhook_results.append((update["update_id"], status))
        if status == 200:
            self.updates = [u for u in self.updates if u is not update]
        else:
            await asyncio.sleep(0.2)  # then the same update again, the chat's later ones still behind it
        del in_flight[key]


# ---- helpers ---------------------------------------------------------------------------------


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parameters from a query string, JSON body, urlencoded or multipart form (as aiogram sends them)."""
    params: dict[str, Any] = {}
    files: dict[str, bytes] = {}
    raw: dict[str, str] = dict(request.query)
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise Problem("Bad Request: the JSON body must be an object")
        return body, files
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        async for part in reader:
            if part.filename is not None:
                files[part.name] = await part.read()
            else:
                raw[part.name] = await part.text()
    elif request.content_type == "application/x-www-form-urlencoded":
        raw.update({k: str(v) for k, v in (await request.post()).items()})
    method = request.match_info["method"]
    for key, value in raw.items():
        params[key] = decode_form_value(method, key, value)
    return params, files


def _queue_of(update: dict[str, Any]) -> Any:
    """The queue an update waits in: its chat's (Telegram's server keys them by chat)."""
    for value in update.values():
        if isinstance(value, dict) and isinstance(value.get("chat"), dict):
            return value["chat"].get("id")
    return update["update_id"]  # no chat: a queue of its own


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, **extra: Any) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description, **extra}, status=status)
