"""A small typed client for the Telegram Bot API, on httpx: ``await api.call("sendMessage", chat_id=5, text="hi")``.

Plain calls go as JSON bodies; a call with files (``InputFile`` values) goes as multipart/form-data, each file
referenced as ``attach://NAME`` and every other non-string value JSON-encoded, as the Bot API reads forms.
Answers are the decoded ``result``: plain dicts and lists (``Update``, ``Message`` ... below type them), so
nothing builds a model per request. An error is a ``TelegramError`` with the Bot API's code, description and
parameters. The bot token is part of every URL: it is masked in every error text this module makes.

Cross-cutting concerns (flood control, logging) are middlewares: ``(request, send) -> result``, applied in
order around the HTTP call, so no ``send_*`` call site has to care.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import httpx

DEFAULT_ROOT = "https://api.telegram.org"
MASK = "***"
CONNECTIONS = 16

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
    """The Bot API refused a call (``code`` is its ``error_code``), or it could not be reached (``code`` 0)."""

    def __init__(self, method: str, code: int, description: str, *, retry_after: float | None = None,
                 migrate_to_chat_id: int | None = None) -> None:
        super().__init__(f"{method}: {description} ({code})" if code else f"{method}: {description}")
        self.method = method
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

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
    timeout: float | None = None  # seconds to wait for the answer; None: the client's default


Send = Callable[[Request], Awaitable[Any]]
Middleware = Callable[[Request, Send], Awaitable[Any]]


class TelegramAPI:
    """One bot's connection to the Bot API (or a self-hosted Bot API server at ``api_root``)."""

    def __init__(self, token: str, api_root: str | None = None, *, middlewares: Sequence[Middleware] = (),
                 timeout: float = 60.0) -> None:
        self.root = (api_root or DEFAULT_ROOT).rstrip("/")
        self._token = token
        # One pool for the whole channel, all its connections kept alive (a new one costs a TLS handshake). Few
        # of them: a Bot API call takes milliseconds, so a handful carry hundreds of chats, while httpcore's pool
        # does work per open connection on every request (measured against the fake at 50 calls in flight: 1.2 ms
        # of CPU per call with 16 connections, 3 ms with 100).
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10.0),
                                       limits=httpx.Limits(max_connections=CONNECTIONS,
                                                           max_keepalive_connections=CONNECTIONS))
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
        try:
            response = await self._http.get(f"{self.root}/file/bot{self._token}/{path}")
        except httpx.HTTPError as exc:
            raise self._unreachable("download", exc) from None
        if response.status_code != 200:
            raise TelegramError("download", response.status_code, f"HTTP {response.status_code} for the file")
        return response.content

    async def aclose(self) -> None:
        await self._http.aclose()

    def mask(self, text: str) -> str:
        """``text`` with the bot token (and its secret half alone) masked."""
        return text.replace(self._token, MASK).replace(self._token.partition(":")[2] or self._token, MASK)

    async def _request(self, request: Request) -> Any:
        if self._http.is_closed:  # the channel has stopped: a late reply fails like any unsendable one
            raise TelegramError(request.method, 0, "the Telegram channel is stopped")
        url = f"{self.root}/bot{self._token}/{request.method}"
        timeout = httpx.USE_CLIENT_DEFAULT if request.timeout is None else \
            httpx.Timeout(request.timeout, connect=10.0)
        files = {k: v for k, v in request.params.items() if isinstance(v, InputFile)}
        try:
            if files:
                data, uploads = _form(request.params)
                response = await self._http.post(url, data=data, files=uploads, timeout=timeout)
            else:
                response = await self._http.post(url, json=request.params, timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._unreachable(request.method, exc) from None
        try:
            body = response.json()
            ok = body["ok"]
        except (ValueError, KeyError, TypeError):
            raise TelegramError(request.method, response.status_code,
                                f"HTTP {response.status_code}, not a Bot API answer") from None
        if ok:
            return body.get("result")
        parameters = body.get("parameters") or {}
        raise TelegramError(request.method, int(body.get("error_code") or response.status_code),
                            self.mask(str(body.get("description") or "no description")),
                            retry_after=parameters.get("retry_after"),
                            migrate_to_chat_id=parameters.get("migrate_to_chat_id"))

    def _unreachable(self, method: str, exc: httpx.HTTPError) -> TelegramError:
        # httpx's own text may quote the URL, token and all: only its masked text goes on (raised ``from None``).
        detail = self.mask(str(exc)) or "no answer"
        return TelegramError(method, 0, f"{self.root} unreachable: {type(exc).__name__}: {detail}")


def _wrap(middleware: Middleware, send: Send) -> Send:
    async def wrapped(request: Request) -> Any:
        return await middleware(request, send)

    return wrapped


def _form(params: dict[str, Any]) -> tuple[dict[str, str], dict[str, tuple[str, bytes, str]]]:
    """A multipart call: files as parts named ``fileN``, referenced as ``attach://fileN``; strings as they are,
    everything else (numbers, booleans, entities, reply parameters) as JSON, as the Bot API reads form fields."""
    data: dict[str, str] = {}
    uploads: dict[str, tuple[str, bytes, str]] = {}
    for key, value in params.items():
        if isinstance(value, InputFile):
            name = f"file{len(uploads)}"
            uploads[name] = (value.filename, value.data, value.mime)
            data[key] = f"attach://{name}"
        elif isinstance(value, str):
            data[key] = value
        else:
            data[key] = json.dumps(value, ensure_ascii=False)
    return data, uploads
