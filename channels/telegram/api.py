"""A small typed client for the Telegram Bot API: ``await api.call("sendMessage", chat_id=5, text="hi")``.

Plain calls go as JSON bodies; a call with files (``InputFile`` values) goes as multipart/form-data, each file
referenced as ``attach://NAME`` and every other non-string value JSON-encoded, as the Bot API reads forms.
Answers are the decoded ``result``: plain dicts and lists (``Update``, ``Message`` ... below type them), so
nothing builds a model per request. An error is a ``TelegramError`` with the Bot API's code, description and
parameters. The bot token is part of every URL: it is masked in every error text this module makes.

Cross-cutting concerns (flood control, logging) are middlewares: ``(request, send) -> result``, applied in
order around the HTTP call, so no ``send_*`` call site has to care.

The HTTP underneath is ``http1``, a lean keep-alive client for one origin: a bot makes several Bot API calls
per turn (chat action, drafts, the message, the poll), and each costs a third of the CPU it did on aiohttp's
``ClientSession`` (see that module for the figures), and ~0.7 ms on httpx.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict
from urllib.parse import quote, urlsplit

from net import wirejson
from net.http1 import ConnectError, HTTPError, Origin

log = logging.getLogger("chorus.telegram")
DEFAULT_ROOT = "https://api.telegram.org"
MASK = "***"

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
    ``answered`` is false when something else answered (an HTTP status, but no Bot API JSON); ``unsent`` is true
    only when the request certainly never reached Telegram (no connection was made), so sending it again
    cannot make it arrive twice."""

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
                 timeout: float = 60.0) -> None:
        self.root = (api_root or DEFAULT_ROOT).rstrip("/")
        self._prefix = urlsplit(self.root).path  # a self-hosted server may sit under a path
        self._token = token
        # Silence, not a total: a 50 MB upload may take minutes, a stalled one is given up.
        self._timeout = timeout
        self._origin: Origin | None = None  # made on first use, in the running loop
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
        target = f"{self._prefix}/file/bot{self._token}/{quote(path, safe='/%')}"
        try:
            response = await self._http("download").request("GET", target, timeout=self._timeout)
        except HTTPError as exc:
            raise self._unreachable("download", exc) from None
        if response.status != 200:
            raise TelegramError("download", response.status, f"HTTP {response.status} for the file")
        return response.body

    async def aclose(self) -> None:
        """Close the connections; a call after this fails with a ``TelegramError``."""
        self._closed = True
        if self._origin is not None:
            await self._origin.aclose()

    def mask(self, text: str) -> str:
        """``text`` with the bot token (and its secret half alone) masked."""
        return text.replace(self._token, MASK).replace(self._token.partition(":")[2] or self._token, MASK)

    def _http(self, method: str) -> Origin:
        if self._closed:  # the channel has stopped: a late reply fails like any unsendable one
            raise TelegramError(method, 0, "the Telegram channel is stopped", unsent=True)
        if self._origin is None:
            try:
                self._origin = Origin(self.root)
            except ValueError as exc:
                raise TelegramError(method, 0, f"the Bot API root {self.root} is not a usable URL: {exc}",
                                    unsent=True) from None
        return self._origin

    async def _request(self, request: Request) -> Any:
        target = f"{self._prefix}/bot{self._token}/{request.method}"
        if any(isinstance(v, InputFile) for v in request.params.values()):
            body, content_type = _form(request.params)
        else:
            body, content_type = wirejson.dumps(request.params), "application/json"
        timeout = self._timeout if request.timeout is None else request.timeout
        try:
            response = await self._http(request.method).request(
                "POST", target, body=body, headers=f"Content-Type: {content_type}\r\n", timeout=timeout)
        except HTTPError as exc:
            raise self._unreachable(request.method, exc) from None
        status, raw = response.status, response.body
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

    def _unreachable(self, method: str, exc: HTTPError) -> TelegramError:
        # An error's text might quote the URL, token and all: only its masked text goes on (raised ``from None``).
        detail = self.mask(str(exc)) or "no answer"
        return TelegramError(method, 0, f"{self.root} unreachable: {detail}", unsent=isinstance(exc, ConnectError))


def _wrap(middleware: Middleware, send: Send) -> Send:
    async def wrapped(request: Request) -> Any:
        return await middleware(request, send)

    return wrapped


def _form(params: dict[str, Any]) -> tuple[bytes, str]:
    """A multipart call's body and content type: files as parts named ``fileN``, referenced as ``attach://fileN``;
    strings as they are, everything else (numbers, booleans, entities, reply parameters) as JSON, as the Bot API
    reads form fields."""
    boundary = secrets.token_hex(16)
    parts: list[bytes] = []
    files = 0
    for key, value in params.items():
        if isinstance(value, InputFile):
            name, files = f"file{files}", files + 1
            parts.append(_part(boundary, name, value.data, f'; filename="{_quoted(value.filename)}"', value.mime))
            value = f"attach://{name}"
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        parts.append(_part(boundary, key, text.encode()))
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _part(boundary: str, name: str, data: bytes, filename: str = "", mime: str = "text/plain; charset=utf-8") -> bytes:
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\nContent-Type: {mime}\r\n\r\n'
    return head.encode() + data + b"\r\n"


def _quoted(filename: str) -> str:
    """A file name inside a quoted header parameter, escaped as browsers do (WHATWG multipart/form-data)."""
    return filename.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
