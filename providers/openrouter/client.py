"""The OpenRouter HTTP client: one aiohttp session (``net.http``: trust, proxy, deadlines), chat completions plain
and streamed, the catalog, and the one-off calls to OpenRouter's site (onboarding, doctor, OAuth) and downloads.

A plain request has a deadline (``ClientTimeout(total=...)``), stretched for an upload by its size; a streamed
answer is bounded by its first-byte and idle timeouts instead, each read timed, never the consumer's work.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import itertools
import json
import logging
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp

from net import http, wirejson
from net.deadline import MovingDeadline

from .errors import (
    ConnectionFailedError, EmptyAnswerError, IncompleteStreamError, OpenRouterError, RequestTimeoutError, StreamError,
    error_for_status, error_message,
)
from .request import ChatSpec, PreparedRequest, ProviderSettings, attribution_headers, build_chat_request
from .retry import OnWait, RetryPolicy, announce, with_retries
from .sse import DONE, SSEParser

log = logging.getLogger("chorus.openrouter")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Usage:
        raw = raw or {}
        return cls(
            int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0),
            int(raw.get("total_tokens") or 0), float(raw["cost"]) if raw.get("cost") is not None else None,
        )


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text as the model wrote it; the tool loop parses and validates it

    def to_api(self) -> dict[str, Any]:
        """The call as it goes back to the model. Arguments that are not a JSON object go back as ``{}``:
        providers refuse the whole request over them, and the tool's answer already says what was wrong."""
        arguments = self.arguments if _json_object(self.arguments) is not None else "{}"
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(slots=True)
class ChatResult:
    """A finished completion."""

    model: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    reasoning: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None  # structured thoughts (Gemini's signatures), replayed later
    images: list[str] = field(default_factory=list)  # data: or https URLs
    audio: bytes = b""
    transcript: str = ""
    latency: float = 0.0


OnText = Callable[[str], Awaitable[None]]  # told each piece of a streamed answer's text as it comes

MAX_REDIRECTS = 10  # as aiohttp and httpx allow


@dataclass(frozen=True, slots=True)
class Response:
    """A whole answer, read inside the call: nothing outside this module holds a connection."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    content: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return wirejson.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class OpenRouterClient:
    """Talks to one OpenRouter base URL with one key; create once, ``aclose()`` at shutdown."""

    def __init__(
        self,
        api_key: str | None,
        settings: ProviderSettings | None = None,
        *,
        timeout: float = 120.0,
        first_byte_timeout: float = 90.0,
        idle_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        proxy: http.Proxy | None = None,
        connect_to: tuple[str, int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``proxy``: the one to go through (``net.http.choose_proxy`` picks the configured or the environment's).
        ``connect_to`` dials another address for the base URL's host and ``tls`` trusts other certificates:
        tests reach their fake as ``https://openrouter.ai`` with them."""
        self.settings = settings or ProviderSettings()
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.base_url = self.settings.base_url.rstrip("/") + "/"
        # Attribution goes on every request to the real openrouter.ai: speech, videos, polls, models too.
        self.headers = {**attribution_headers(self.settings), **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self.proxy = proxy if proxy is not None else http.choose_proxy(None, self.base_url)
        self._connect_to = connect_to
        self._tls = tls
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session to the base URL's origin, made at first use (in the running loop)."""
        if self._session is None:
            # One answer holds one connection for its whole length, so chats answered at once need as many
            # connections: no limit, and idle ones are kept for the next turn rather than paying a new handshake.
            self._session = http.session(self.base_url, proxy=self.proxy, tls=self._tls, headers=self.headers,
                                         connect_to=self._connect_to)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def warm_up(self) -> None:
        """Make the session (and load the CA bundles) now, rather than in the first turn."""
        _ = self.session

    async def __aenter__(self) -> OpenRouterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the base URL's origin: only then may it carry the key."""
        a, b = urlsplit(self.base_url), urlsplit(url)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    async def request(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Response:
        """One request with retries, its body read whole; an error status becomes a typed ``OpenRouterError``.

        ``path`` is relative to the base URL, or a whole URL on its origin; ``kw``: ``json``, ``params``,
        ``headers`` (which add to or replace the client's own).
        """

        async def once() -> Response:
            answer = await self.fetch(method, path, timeout=timeout, **kw)
            if answer.status >= 400:
                raise _error_from(answer)
            return answer

        return await with_retries(once, self.retry)

    async def fetch(self, method: str, path: str, *, timeout: float | None = None, **kw: Any) -> Response:
        """One try, its body read whole, whatever its status; a transport failure is a typed ``OpenRouterError``
        (``ConnectionFailedError``, ``RequestTimeoutError``)."""
        with _transport_errors():
            return await self._send(method, path, timeout=timeout, **kw)

    async def chat(self, spec: ChatSpec, *, timeout: float | None = None) -> ChatResult:
        """A non-streaming completion."""
        spec = dataclasses.replace(spec, stream=False)
        req = build_chat_request(spec, self.settings)
        started = time.monotonic()
        resp = await self.request("POST", req.path, json=req.body, headers=req.headers, timeout=timeout)
        data = _json(resp)
        if isinstance(data.get("error"), dict):
            raise StreamError(error_message(data["error"]))
        choice = (data.get("choices") or [{}])[0]
        msg = choice.get("message") or {}
        return ChatResult(
            model=data.get("model") or spec.ref.slug,
            text=msg.get("content") or "",
            tool_calls=[call for c in msg.get("tool_calls") or []
                        for call in _tool_calls(c.get("id"), c["function"]["name"], c["function"].get("arguments") or "")],
            usage=Usage.parse(data.get("usage")),
            finish_reason=choice.get("finish_reason"),
            reasoning=msg.get("reasoning") or msg.get("reasoning_content"),
            reasoning_details=msg.get("reasoning_details") or None,
            images=[i["image_url"]["url"] for i in msg.get("images") or [] if i.get("image_url")],
            latency=time.monotonic() - started,
        )

    async def stream(self, spec: ChatSpec, *, on_text: OnText | None = None,
                     on_wait: OnWait | None = None) -> ChatResult:
        """A streamed completion: each piece of its text handed to ``on_text`` as it comes, the whole result
        returned.

        A try that fails before any text came out is tried again (backoff, ``Retry-After``, the
        policy's time budget; ``on_wait`` hears of each wait); once text is out, a failure is final.
        Only a complete stream counts: one that ends without a finish reason or ``[DONE]``, sends
        malformed data, stays silent past the first-byte or idle timeout (keep-alive comments do
        not count), or says nothing at all raises instead. A callback rather than an async iterator: each
        piece of an answer then costs a call, not a trip through a generator per layer.
        """
        spec = dataclasses.replace(spec, stream=True)
        req = build_chat_request(spec, self.settings)
        started = time.monotonic()
        for attempt in itertools.count():
            acc = _StreamAccumulator(ChatResult(model=spec.ref.slug))
            try:
                await self._read_stream(req, acc, on_text)
                break
            except OpenRouterError as exc:
                shown = on_text is not None and bool(acc.text)  # a try whose text went out is not made again
                wait = None if shown else self.retry.wait_before_retry(attempt, exc, time.monotonic() - started)
                if wait is None:
                    raise
                await announce(wait, exc, attempt, self.retry, on_wait)
                await asyncio.sleep(wait)
        acc.result.latency = time.monotonic() - started
        return acc.finish()

    async def _read_stream(self, req: PreparedRequest, acc: _StreamAccumulator, on_text: OnText | None) -> None:
        """One try: open the stream and hand its text on, each wait bounded by the first-byte, then the idle, timeout.

        The timeouts bound the waits for the answer only, never ``on_text``: the consumer's own work is not timed.
        One ``MovingDeadline`` times the whole try, not a timer per read.
        """
        loop = asyncio.get_running_loop()
        waiting_first = True

        def nothing_yet() -> RequestTimeoutError:  # made only when raised: an error's text is masked and composed
            return RequestTimeoutError(f"nothing within {self.first_byte_timeout:g} s")

        with MovingDeadline(loop.time() + self.first_byte_timeout) as deadline:
            try:
                stream = await deadline.wait(self._open_stream(req))
            except TimeoutError:
                raise nothing_yet() from None
            parser, done = SSEParser(), False
            try:
                while True:
                    try:
                        piece = await deadline.wait(stream.content.readany())
                    except TimeoutError:
                        if waiting_first:
                            raise nothing_yet() from None
                        raise IncompleteStreamError(f"no data for {self.idle_timeout:g} s") from None
                    except http.TRANSPORT_ERRORS as exc:  # reset, closed early, a broken chunked body
                        raise IncompleteStreamError(f"connection lost: {http.describe(exc)}") from None
                    for payload in parser.feed(piece) if piece else parser.end():
                        deadline.move(loop.time() + self.idle_timeout)
                        waiting_first = False
                        if payload == DONE:
                            done = True
                            continue
                        try:  # bytes that are not UTF-8 become U+FFFD, as a text decoder would have made them
                            chunk = wirejson.loads(payload, "replace")
                        except ValueError:
                            raise IncompleteStreamError("the provider sent malformed data") from None
                        if (text := acc.feed(chunk if isinstance(chunk, dict) else {})) and on_text is not None:
                            await on_text(text)
                    if not piece:
                        break
            finally:
                stream.release()  # back to the pool when the body was read to its end, else closed
        if not (done or acc.result.finish_reason):
            raise IncompleteStreamError("the stream ended without a finish reason")
        if acc.empty:  # a thinking model can spend its whole output limit before the first word of the answer
            raise EmptyAnswerError("its output limit ran out while it was thinking; /think low leaves more for the answer"
                                   if acc.result.finish_reason == "length" else "")

    async def download(self, url: str, *, timeout: float | None = None) -> bytes:
        """A file a response pointed at, redirects followed; the key goes along only to the base URL's own origin."""
        for _ in range(MAX_REDIRECTS):
            if not self.same_origin(url):
                break
            resp = await self.request("GET", url, timeout=timeout)
            if resp.status not in (301, 302, 303, 307, 308) or "location" not in resp.headers:
                return resp.content
            url = urljoin(url, resp.headers["location"])
        else:
            raise ConnectionFailedError(f"download failed: more than {MAX_REDIRECTS} redirects")
        # A session of its own, without the client's headers (nor key); aiohttp follows redirects.
        async with one_off_session(url, proxy=self.proxy) as plain:
            try:
                async with plain.get(url, timeout=http.deadline(timeout or self.timeout)) as answer:
                    resp = Response(answer.status, answer.headers, await answer.read())
            except http.TRANSPORT_ERRORS as exc:
                raise ConnectionFailedError(f"download failed: {http.describe(exc)}") from exc
        if resp.status >= 400:
            raise _error_from(resp)
        return resp.content

    async def models(self, output_modality: str | None = None) -> list[dict[str, Any]]:
        """The catalog from ``GET /models``."""
        params = {"output_modalities": output_modality} if output_modality else None
        resp = await self.request("GET", "models", params=params)
        return list(_json(resp).get("data") or [])

    async def _open_stream(self, req: PreparedRequest) -> aiohttp.ClientResponse:
        """The answer with its head read and its body still to come; the caller releases it."""
        with _transport_errors():
            stream = await self._send("POST", req.path, json=req.body, headers=req.headers, stream=True)
            if stream.status < 400:
                return stream
            async with stream:
                error = Response(stream.status, stream.headers, await stream.read())
        raise _error_from(error)

    async def _send(self, method: str, path: str, *, timeout: float | None = None, json: Any = None,
                    params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                    stream: bool = False) -> Any:
        """Send a request; the whole answer, or with ``stream`` the response with its body still to come (no
        deadline: the stream's own first-byte and idle timeouts bound it).

        ``path`` is joined to the base URL (as httpx's ``base_url`` did) unless it is a whole URL on its origin.
        """
        if "://" in path and not self.same_origin(path):  # the key must not leave the base URL's origin
            raise OpenRouterError("a whole URL given to the client must be on the base URL's origin")
        url = path if "://" in path else self.base_url + path.lstrip("/")
        body: bytes | None = None
        extra = dict(headers or {})
        if json is not None:
            body = wirejson.dumps(json)
            extra["Content-Type"] = "application/json"
        seconds = http.upload_deadline(timeout or self.timeout, len(body or b""))
        resp = await self.session.request(
            method, url, data=body, params=params, headers=extra or None,
            timeout=_STREAM_TIMEOUT if stream else http.deadline(seconds))
        # Method, path and status only: never headers, which carry the key.
        log.debug("%s %s -> %s", method, urlsplit(url).path, resp.status)
        if stream:
            return resp
        async with resp:
            return Response(resp.status, resp.headers, await resp.read())


_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=http.CONNECT_TIMEOUT)


class _StreamAccumulator:
    """Joins stream chunks into one result: text, reasoning, tool-call fragments by index, audio, usage."""

    def __init__(self, result: ChatResult) -> None:
        self.result = result
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.details: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: dict[str, Any]) -> str:
        """Take one chunk; return its new text."""
        if isinstance(chunk.get("error"), dict):
            raise StreamError(error_message(chunk["error"]) or "unknown error", code=chunk["error"].get("code"))
        if chunk.get("model"):
            self.result.model = chunk["model"]
        if chunk.get("usage"):
            self.result.usage = Usage.parse(chunk["usage"])
        text = ""
        for choice in chunk.get("choices") or ():
            if reason := choice.get("finish_reason"):
                self.result.finish_reason = reason
                if reason == "error":
                    raise StreamError("the provider ended the answer with an error")
            delta = choice.get("delta") or {}
            # By the fields a piece carries: nearly every one is a few words of text, and its other fields
            # (reasoning, tool calls, audio) come empty or null, so looking each one up cost every piece.
            for key, value in delta.items():
                if not value:
                    continue
                if key == "content":
                    # A lone surrogate (a "\\ud800" escape) cannot be stored or printed: replace it here.
                    text += value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
                elif key == "reasoning" or (key == "reasoning_content" and not delta.get("reasoning")):
                    self.reasoning.append(value)  # reasoning_content: DeepSeek's own name for it
                elif key == "reasoning_details":
                    _join_details(self.details, value)
                elif key == "tool_calls":
                    self._join_calls(value)
                elif key == "images":
                    self.result.images += [image["image_url"]["url"] for image in value]
                elif key == "audio":
                    if value.get("data"):  # each piece carries its own padding: decode one by one
                        self.result.audio += base64.b64decode(value["data"])
                    if value.get("transcript"):
                        self.result.transcript += value["transcript"]
        if text:
            self.text.append(text)
        return text

    def _join_calls(self, fragments: list[dict[str, Any]]) -> None:
        for frag in fragments:
            slot = self.calls.setdefault(frag.get("index", 0), {"id": None, "name": "", "arguments": []})
            slot["id"] = frag.get("id") or slot["id"]
            fn = frag.get("function") or {}
            slot["name"] = fn.get("name") or slot["name"]  # whole in one piece; some hosts send it with every one
            slot["arguments"].append(fn.get("arguments") or "")

    @property
    def empty(self) -> bool:
        """Nothing a user could see or a tool could run came back."""
        r = self.result
        return not (any(self.text) or self.calls or r.images or r.audio)

    def finish(self) -> ChatResult:
        self.result.text = "".join(self.text)
        self.result.reasoning = "".join(self.reasoning) or None
        self.result.reasoning_details = list(self.details.values()) or None
        self.result.tool_calls = [call for _, c in sorted(self.calls.items())
                                  for call in _tool_calls(c["id"], c["name"], "".join(c["arguments"]))]
        return self.result


_JOINED_FIELDS = ("text", "summary", "data", "signature")


def _tool_calls(call_id: str | None, name: str, arguments: str) -> list[ToolCall]:
    """One call as the model sent it, or several when its arguments are JSON objects back to back.

    Hosts glue together what should be apart: Mistral's API and some proxies send the streamed arguments
    again whole (``{A}{A}``), Gemini sends an empty placeholder first (``{}{A}``), and Gemini and GPT-5 have
    put a second call's arguments under the first one's index (``{A}{B}``). Repeats and placeholders are
    dropped and each distinct object becomes a call of its own; anything else goes to the tool as it came,
    to be refused there in words the model can act on.
    """
    objects = _objects_back_to_back(arguments)
    if objects is None:
        return [ToolCall(call_id or _new_call_id(), name, arguments or "{}")]
    distinct: list[dict[str, Any]] = []
    for obj in objects:
        if obj not in distinct:
            distinct.append(obj)
    distinct = [obj for obj in distinct if obj] or distinct
    return [ToolCall((i == 0 and call_id) or _new_call_id(), name, json.dumps(obj, ensure_ascii=False))
            for i, obj in enumerate(distinct)]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _objects_back_to_back(text: str) -> list[dict[str, Any]] | None:
    """The JSON objects ``text`` holds one after another, when it is two or more of them and nothing else."""
    decoder, objects, at = json.JSONDecoder(), [], 0
    while (at := _NOT_SPACE.search(text, at).start()) < len(text):
        try:
            obj, at = decoder.raw_decode(text, at)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
        objects.append(obj)
    return objects if len(objects) > 1 else None


_NOT_SPACE = re.compile(r"\S|\Z")


def _new_call_id() -> str:
    """An id for a tool call that came without one (Gemini has sent "", some hosts send none). Unique in the
    whole conversation, as Anthropic's models require of every tool_use id in it; ``call_0`` each round was not."""
    return f"call_{secrets.token_hex(12)}"


def _join_details(joined: dict[int, dict[str, Any]], fragments: object) -> None:
    """Streamed ``reasoning_details`` fragments joined by their index: text pieces appended, other fields kept."""
    for fragment in fragments if isinstance(fragments, list) else ():
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index")
        slot = joined.setdefault(index if isinstance(index, int) else -1 - len(joined), {})
        for key, value in fragment.items():
            if key in _JOINED_FIELDS and isinstance(value, str) and isinstance(slot.get(key), str):
                slot[key] += value
            elif value is not None:
                slot[key] = value


def one_off_session(url: str, *, proxy: http.Proxy | None = None) -> aiohttp.ClientSession:
    """A session for a call or two to ``url``'s host (a download elsewhere): none of the client's headers, the
    same trust, and ``proxy`` (else the environment's)."""
    return http.session(url, proxy=proxy or http.choose_proxy(None, url))


@contextlib.contextmanager
def _transport_errors() -> Iterator[None]:
    """A request that could not be made or answered becomes a typed, retryable error."""
    try:
        yield
    except TimeoutError as exc:  # no connection, or no whole answer, by the deadline
        raise RequestTimeoutError(f"no answer in time ({http.describe(exc)})", status=None) from exc
    except http.TRANSPORT_ERRORS as exc:
        raise ConnectionFailedError(http.describe(exc)) from exc


def _json(resp: Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError as exc:
        raise OpenRouterError("the answer was not JSON", status=resp.status) from exc
    if not isinstance(data, dict):
        raise OpenRouterError("the answer had an unexpected shape", status=resp.status)
    return data


def _error_from(resp: Response) -> OpenRouterError:
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.text
    return error_for_status(resp.status, body, resp.headers.get("retry-after"))
