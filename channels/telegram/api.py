"""A small typed client for the Telegram Bot API: ``await api.call("sendMessage", chat_id=5, text="hi")``.

Plain calls go as JSON bodies; a call with files (``InputFile`` values) goes as multipart/form-data, each file
referenced as ``attach://NAME`` and every other non-string value JSON-encoded, as the Bot API reads forms.
Answers are the decoded ``result``: plain dicts and lists (``Update``, ``Message`` ... below type them), so
nothing builds a model per request. An error is a ``TelegramError`` with the Bot API's code, description and
parameters. The bot token is part of every URL: it is masked in every error text this module makes.

Cross-cutting concerns (flood control, logging) are middlewares: ``(request, send) -> result``, applied in
order around the HTTP call, so no ``send_*`` call site has to care.

The HTTP underneath is one aiohttp session per API root (``net.http``: trust, proxy, deadlines). Every call has a
deadline, not a bound on silence: its own (a long poll's ``timeout`` plus ``POLL_MARGIN``), stretched for an
upload by the body's size; a stalled answer is ended by it. A failure that certainly never reached Telegram is
marked ``unsent``, so a caller may send it again without risking a duplicate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote, urlsplit

import aiohttp

from net import http, wirejson

log = logging.getLogger("chorus.telegram")
DEFAULT_ROOT = "https://api.telegram.org"
MASK = "***"
POLL_MARGIN = 15.0  # seconds a long poll's answer may take beyond its own ``timeout``

# ---- the parts of the Bot API's types that Chorus reads (updates are plain dicts, typed by these) ----------


class User(TypedDict):
    id: int
    is_bot: bool
    first_name: str
    last_name: NotRequired[str]
    username: NotRequired[str]


class Chat(TypedDict):
    id: int
    type: Literal["private", "group", "supergroup", "channel"]
    title: NotRequired[str]
    is_forum: NotRequired[bool]


class MessageEntity(TypedDict):
    type: str
    offset: int
    length: int
    url: NotRequired[str]
    user: NotRequired[User]
    language: NotRequired[str]


class File(TypedDict):
    """PhotoSize, Voice, Audio, Video, VideoNote and Document share these fields (the rest is optional)."""

    file_id: str
    file_unique_id: str
    file_size: NotRequired[int]
    file_path: NotRequired[str]  # getFile
    duration: NotRequired[int]
    mime_type: NotRequired[str]
    file_name: NotRequired[str]


Message = TypedDict("Message", {
    "message_id": int, "date": int, "chat": Chat, "from": NotRequired[User],
    "message_thread_id": NotRequired[int], "is_topic_message": NotRequired[bool],
    "text": NotRequired[str], "caption": NotRequired[str], "entities": NotRequired[list[MessageEntity]],
    "caption_entities": NotRequired[list[MessageEntity]], "reply_to_message": NotRequired["Message"],
    "media_group_id": NotRequired[str], "migrate_from_chat_id": NotRequired[int],
    "photo": NotRequired[list[File]], "voice": NotRequired[File], "audio": NotRequired[File],
    "video": NotRequired[File], "video_note": NotRequired[File], "document": NotRequired[File],
})


class Update(TypedDict):
    update_id: int
    message: NotRequired[Message]


# ---- errors ------------------------------------------------------------------------------------------------


class TelegramError(Exception):
    """The Bot API refused a call (``code`` is its ``error_code``), or it could not be reached (``code`` 0);
    ``answered`` is false when something else answered (an HTTP status, but no Bot API JSON). ``unsent`` is true
    only when the request certainly did not reach Telegram (no connection, proxy or TLS; broken while still
    being written): sending it again cannot duplicate it. Unanswered and not ``unsent``: its fate is unknown."""

    def __init__(self, method: str, code: int, description: str, *, retry_after: float | None = None,
                 migrate_to_chat_id: int | None = None, answered: bool = True, unsent: bool = False) -> None:
        super().__init__(f"{method}: {description} ({code})" if code else f"{method}: {description}")
        self.method = method
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id
        self.answered = answered and code != 0
        self.unsent = unsent

    @property
    def bad_request(self) -> bool:
        return self.code == 400

    @property
    def unauthorized(self) -> bool:
        """The token was refused: nothing will work until it is replaced."""
        return self.code == 401

    @property
    def forbidden(self) -> bool:
        """The user blocked the bot, or it was removed from the group: retrying cannot help."""
        return self.code == 403

    @property
    def conflict(self) -> bool:
        """Another getUpdates (another process) or a webhook takes this bot's updates."""
        return self.code == 409

    @property
    def flood(self) -> bool:
        """Too many requests: ``retry_after`` says when to send again."""
        return self.code == 429


@dataclass(frozen=True, slots=True)
class InputFile:
    """Bytes to upload as a file parameter (``voice=InputFile(data, "voice.ogg")``)."""

    data: bytes
    filename: str
    mime: str = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Request:
    """One Bot API call as middlewares see it; ``None`` parameters are already left out."""

    method: str
    params: dict[str, Any]
    timeout: float | None = None  # seconds the answer may take to come; None: the client's default


Send = Callable[[Request], Awaitable[Any]]
Middleware = Callable[[Request, Send], Awaitable[Any]]


class TelegramAPI:
    """One bot's connection to the Bot API (or a self-hosted Bot API server at ``api_root``)."""

    def __init__(self, token: str, api_root: str | None = None, *, middlewares: Sequence[Middleware] = (),
                 timeout: float = 60.0, proxy: http.Proxy | None = None, upload_rate: float = http.UPLOAD_RATE) -> None:
        """``timeout``: a call's deadline (an upload gets ``upload_rate`` bytes/s more); ``proxy``: the one
        to go through (``net.http.choose_proxy`` picks the configured or the environment's)."""
        self.root = (api_root or DEFAULT_ROOT).rstrip("/")
        self._token = token
        self._timeout = timeout
        self._upload_rate = upload_rate
        self.proxy = proxy
        self._session: aiohttp.ClientSession | None = None  # made on first use, in the running loop
        self._closed = False
        self._send: Send = self._request
        for middleware in reversed(middlewares):
            self._send = _wrap(middleware, self._send)

    async def call(self, method: str, /, *, request_timeout: float | None = None, **params: Any) -> Any:
        """Call ``method`` with ``params`` (``None`` values left out) and return its decoded ``result``."""
        return await self._send(Request(method, {k: v for k, v in params.items() if v is not None}, request_timeout))

    async def download(self, file_id: str) -> bytes:
        """A file a user sent, by its ``file_id`` (getFile, then the file itself)."""
        file: File = await self.call("getFile", file_id=file_id)
        path = file.get("file_path")
        if not path:
            raise TelegramError("getFile", 400, "the file has no file_path (too big for the Bot API to hand out?)")
        url = f"{self.root}/file/bot{self._token}/{quote(path, safe='/%')}"
        deadline = http.deadline(http.upload_deadline(self._timeout, file.get("file_size") or 0, self._upload_rate))
        try:
            async with self._http("download").get(url, timeout=deadline) as response:
                if response.status != 200:
                    raise TelegramError("download", response.status, f"HTTP {response.status} for the file")
                return await response.read()
        except http.TRANSPORT_ERRORS as exc:
            raise self._unreachable("download", exc, None) from None

    async def aclose(self) -> None:
        """Close the connections; a call after this fails with a ``TelegramError``."""
        self._closed = True
        if self._session is not None:
            await self._session.close()

    def mask(self, text: str) -> str:
        """``text`` with the bot token (and its secret half alone) masked."""
        return text.replace(self._token, MASK).replace(self._token.partition(":")[2] or self._token, MASK)

    def _http(self, method: str) -> aiohttp.ClientSession:
        if self._closed:  # the channel has stopped: a late reply fails like any unsendable one
            raise TelegramError(method, 0, "the Telegram channel is stopped", unsent=True)
        if self._session is None:
            try:
                parts = urlsplit(self.root)
                parts.port  # noqa: B018 (raises ValueError when out of range)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ValueError("an http(s) URL is needed")
            except ValueError as exc:
                raise TelegramError(method, 0, f"the Bot API root {self.root} is not a usable URL: {exc}",
                                    unsent=True) from None
            self._session = http.session(self.root, proxy=self.proxy)
        return self._session

    def _deadline(self, request: Request, size: int) -> aiohttp.ClientTimeout:
        if request.timeout is not None:
            seconds = request.timeout
        elif request.method == "getUpdates":  # a long poll is answered after its own timeout at the latest
            seconds = float(request.params.get("timeout") or 0) + POLL_MARGIN
        else:
            seconds = self._timeout
        return http.deadline(http.upload_deadline(seconds, size, self._upload_rate))

    async def _request(self, request: Request) -> Any:
        url = f"{self.root}/bot{self._token}/{request.method}"
        files = [v for v in request.params.values() if isinstance(v, InputFile)]
        if files:
            form = _form(request.params)()
            body = http.Body(await form.as_bytes(), form.content_type)
        else:
            body = http.Body(wirejson.dumps(request.params), "application/json")
        try:
            async with self._http(request.method).post(url, data=body, timeout=self._deadline(request, body.size or 0)) as response:
                status, raw = response.status, await response.read()
        except http.TRANSPORT_ERRORS as exc:
            raise self._unreachable(request.method, exc, body) from None
        log.debug("%s -> %s", request.method, status)  # the method only: the URL holds the token
        try:
            body = wirejson.loads(raw)
            ok = body["ok"]
        except (ValueError, KeyError, TypeError):
            raise TelegramError(request.method, status, f"HTTP {status}, not a Bot API answer", answered=False) from None
        if ok:
            return body.get("result")
        parameters = body.get("parameters") or {}
        raise TelegramError(request.method, int(body.get("error_code") or status),
                            self.mask(str(body.get("description") or "no description")),
                            retry_after=parameters.get("retry_after"),
                            migrate_to_chat_id=parameters.get("migrate_to_chat_id"))

    def _unreachable(self, method: str, exc: BaseException, body: http.Body | None) -> TelegramError:
        # An error's text might quote the URL, token and all: only its masked text goes on (raised ``from None``).
        detail = self.mask(http.describe(exc)) or "no answer"
        via = f" through the proxy {self.proxy.shown}" if self.proxy else ""
        log.debug("telegram %s failed%s: %s", method, via, detail)
        return TelegramError(method, 0, f"{self.root} unreachable{via}: {detail}", unsent=http.unsent(body))


def _wrap(middleware: Middleware, send: Send) -> Send:
    async def wrapped(request: Request) -> Any:
        return await middleware(request, send)

    return wrapped


def _form(params: dict[str, Any]) -> aiohttp.FormData:
    """A multipart call's body: files as parts named ``fileN``, referenced as ``attach://fileN``; strings as they
    are, everything else (numbers, booleans, entities, reply parameters) as JSON, as the Bot API reads form fields."""
    form = aiohttp.FormData(quote_fields=False, charset="utf-8")
    files = 0
    for key, value in params.items():
        if isinstance(value, InputFile):
            name, files = f"file{files}", files + 1
            # A line break cannot stand in a header (aiohttp refuses it): escaped as browsers do (WHATWG).
            filename = value.filename.replace("\r", "%0D").replace("\n", "%0A")
            form.add_field(name, value.data, filename=filename, content_type=value.mime)
            value = f"attach://{name}"
        form.add_field(key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
    return form
