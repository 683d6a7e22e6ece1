"""A fake OpenRouter on 127.0.0.1 that speaks the contract (JSON, SSE, errors, media, OAuth)
and checks every request against it; tests script its answers.

A request that breaks the contract is answered 400 and recorded in ``violations``;
the ``fake_openrouter`` fixture fails the test if any were seen.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import secrets
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.fakes.tls import make_certificate

CHAT_KEYS = {
    "model", "messages", "tools", "tool_choice", "stream", "max_tokens", "temperature", "reasoning",
    "reasoning_effort", "provider", "plugins", "modalities", "image_config", "audio", "usage",
}
FORBIDDEN_KEYS = {"service_tier", "store", "prompt_cache_key", "prompt_cache_retention"}
STT_FORMATS = {"wav", "mp3", "flac", "m4a", "ogg", "webm", "aac"}


# ---- scripted answers ------------------------------------------------------------------------


@dataclass
class Text:
    text: str
    usage: dict[str, Any] | None = None
    reasoning: str | None = None
    delay: float = 0.0
    reasoning_details: list[dict[str, Any]] | None = None
    pace: float = 0.0  # seconds between stream chunks, for tests that watch an answer grow
    finish: str = "stop"  # "length": the output limit cut it; "content_filter": the provider's filter did


@dataclass
class ToolCalls:
    calls: list[tuple[str, dict[str, Any]]]
    content: str = ""
    reasoning: str | None = None
    reasoning_details: list[dict[str, Any]] | None = None  # streamed in pieces, joined by index
    ids: bool = True  # False: the calls come with no id, as some hosts stream them (Gemini, StepFun, vLLM)
    repeat_name: bool = False  # the id and whole name again with every piece (MiniMax on NVIDIA NIM, GLM on Fireworks)
    usage: dict[str, Any] | None = None
    # Arguments as hosts and models get them wrong: "again" sends the streamed arguments once more whole
    # (Mistral's API, some proxies), "placeholder" sends "{}" before them (Gemini), "one_index" puts every
    # call after the first under index 0, whole, with no id or name (Gemini 3, GPT-5), "cut" ends them
    # before their closing brace (the output limit fell inside the call).
    quirk: str = ""


@dataclass
class Error:
    status: int
    message: str
    code: Any = None
    retry_after: float | None = None
    metadata: dict[str, Any] | None = None  # as OpenRouter passes a provider's own error on: provider_name, raw


@dataclass
class EchoAuth:
    """An error whose body echoes the request's Authorization header and key, as a debugging proxy's may."""

    status: int = 401


@dataclass
class Stall:
    """Streams ``partial_text``, then stays silent for ``seconds`` (a slow model mid-answer), then ``rest``."""

    partial_text: str
    seconds: float
    rest: str = ""


@dataclass
class StreamError:
    partial_text: str
    message: str


@dataclass
class Hang:
    seconds: float


@dataclass
class Images:
    count: int = 1
    width: int = 64
    height: int = 36
    text: str = ""


@dataclass
class NoImages:
    text: str = "I can't draw that."


@dataclass
class Music:
    seconds: float = 2.0
    fmt: str = "mp3"
    lyrics: str = "la la la"


@dataclass
class NoAudio:
    text: str = "No music today."


@dataclass
class RawSSE:
    """A broken upstream: these SSE frames exactly (``data: …`` or ``: comment``), ``pause`` seconds apart,
    and nothing else (no ``[DONE]`` unless given); with ``drop``, the connection is then cut without ending the
    body (a reset, a proxy that died)."""

    frames: list[str]
    pause: float = 0.0
    drop: bool = False
    unended: bool = False  # the body ends right after the last frame, without the blank line that ends an event

    @staticmethod
    def content(text: str, finish: str | None = None) -> str:
        """A well-formed chunk frame carrying ``text``."""
        return "data: " + json.dumps({"id": "gen-raw", "model": "m", "choices": [
            {"index": 0, "delta": {"content": text}, "finish_reason": finish}]})


@dataclass(frozen=True)
class BenchPace:
    """A model as a benchmark wants it: every chat answer waits ``first_token`` seconds, then streams ``tokens``
    tokens at ``tokens_per_second``, in chunks ``chunk_seconds`` apart (a token is taken as 4 characters)."""

    first_token: float = 0.5
    tokens_per_second: float = 50.0
    tokens: int = 40
    chunk_seconds: float = 0.1

    @property
    def chunk_chars(self) -> int:
        return max(1, round(self.tokens_per_second * self.chunk_seconds) * 4)

    def answer(self) -> Text:
        words = ("Sure thing, here is a short answer that streams at a steady pace " * (self.tokens // 10 + 1)).split()
        text = " ".join(words)[: self.tokens * 4].rstrip() + "."
        return Text(text, delay=self.first_token, pace=self.chunk_seconds)


Answer = Text | ToolCalls | Error | EchoAuth | Stall | StreamError | Hang | Images | NoImages | Music | NoAudio | RawSSE


@dataclass
class VideoPlan:
    polls_until_done: int = 1
    outcome: str = "completed"  # completed | failed | cancelled | expired
    error: str | None = None


@dataclass
class FakeVideoJob:
    id: str
    plan: VideoPlan
    body: dict[str, Any]
    polls: int = 0


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    json: Any = None
    at: float = field(default_factory=time.monotonic)  # when it arrived
    first_token_at: float | None = None  # when the first content token of a stream was written
    done_at: float | None = None  # when the answer was complete


RECORDED = web.RequestKey("recorded", Recorded)


def default_models() -> list[dict[str, Any]]:
    def model(id: str, *, ctx: int = 128_000, out: tuple[str, ...] = ("text",), params: tuple[str, ...] = ("tools",),
              inp: tuple[str, ...] = ("text",)) -> dict[str, Any]:
        return {
            "id": id, "name": id, "context_length": ctx, "pricing": {"prompt": "0.000001", "completion": "0.000002"},
            "architecture": {"input_modalities": list(inp), "output_modalities": list(out)},
            "supported_parameters": list(params),
        }

    seeing = ("text", "image")
    return [
        model("openrouter/auto", ctx=2_000_000, params=("tools", "reasoning"), inp=seeing),
        model("openai/gpt-4o-mini", inp=seeing),
        model("anthropic/claude-sonnet-4.6", ctx=1_000_000, params=("tools", "reasoning"), inp=seeing),
        model("deepseek/deepseek-v4-flash", params=("tools", "reasoning")),
        model("moonshotai/kimi-k2.6", ctx=256_000, inp=seeing),
        model("openrouter/fusion", params=("tools",)),
        model("mistralai/mistral-7b-instruct", ctx=32_768, params=("temperature", "max_tokens")),  # no tool use
        model("mistralai/mistral-small-3.2-24b-instruct", ctx=131_072),
        model("google/gemini-3.1-flash-image-preview", out=("image", "text"), inp=seeing),
        model("google/veo-3.1-fast", out=("video",), params=()),
        model("google/lyria-3-pro-preview", out=("audio", "text"), params=()),
        model("hexgrad/kokoro-82m", out=("speech",), params=()),
        model("openai/whisper-large-v3-turbo", out=("transcription",), inp=("audio",), params=()),
    ]


class FakeOpenRouter:
    """The fake server; ``async with FakeOpenRouter() as fake:`` starts and stops it."""

    def __init__(self, *, api_key: str = "sk-or-test-0123456789abcdef") -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.answers: list[Answer] = []
        # Answers to a request whose last user text is the key, taken in turn before ``answers`` (a chat's own
        # script while other chats get the default).
        self.for_text: dict[str, list[Answer]] = {}
        self.models = default_models()
        self.transcripts: list[str | Error] = []
        self.speech_answers: list[Error] = []
        self.videos: dict[str, FakeVideoJob] = {}
        self.video_plan: list[VideoPlan] = []
        self.oauth_codes: dict[str, str] = {}
        self.oauth_key = "sk-or-oauth-fedcba9876543210"
        self.allowed_extra_keys: set[str] = set()
        self.chunk_size = 4
        self.pace: BenchPace | None = None
        self.lenient = False  # benchmarks of other clients: record contract problems instead of refusing
        self.tolerated: list[str] = []
        self.chunk_pause = 0.0  # seconds between streamed chunks: a model that writes slowly
        # Models served on Mistral's templates, which take only 9-character tool-call ids (and make such ids):
        # Mistral's own, and any a test adds (a host of its weights under another name).
        self.mistral_templates: set[str] = {m["id"] for m in self.models if m["id"].startswith("mistralai/")}
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record], client_max_size=200 * 2**20)
        app.add_routes([
            web.post("/api/v1/chat/completions", self._chat),
            web.get("/api/v1/models", self._models),
            web.get("/api/v1/key", self._key),
            web.post("/api/v1/audio/speech", self._speech),
            web.post("/api/v1/audio/transcriptions", self._transcriptions),
            web.post("/api/v1/videos", self._video_submit),
            web.get("/api/v1/videos/{id}", self._video_poll),
            web.get("/api/v1/videos/{id}/content", self._video_content),
            web.get("/files/{name}", self._file),
            web.get("/redirect", self._redirect),
            web.post("/api/v1/auth/keys", self._auth_keys),
        ])
        # Hung answers must not hold up teardown: cancel handlers whose client left, and do not wait long.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def dial_as(self, host: str, where: Path) -> dict[str, Any]:
        """``OpenRouterClient`` arguments through which ``https://{host}`` is this fake: the client dials a TLS
        port of it, whose certificate (made in ``where`` for this run) only these arguments trust."""
        cert, key = make_certificate(host, where)
        served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        served.load_cert_chain(cert, key)
        assert self._runner is not None
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=served)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return {"connect_to": ("127.0.0.1", port), "tls": ssl.create_default_context(cafile=str(cert))}

    async def __aenter__(self) -> FakeOpenRouter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api/v1"

    # ---- scripting and inspection ------------------------------------------------------------

    def queue(self, *answers: Answer) -> None:
        self.answers.extend(answers)

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/api/v1/chat/completions"]

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/v1" + path or r.path == path]

    def assert_clean(self) -> None:
        assert not self.violations, "contract violations:\n" + "\n".join(self.violations)

    def issue_oauth_code(self, challenge: str) -> str:
        code = "code-" + secrets.token_hex(8)
        self.oauth_codes[code] = challenge
        return code

    # ---- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        rec = Recorded(request.method, request.path, dict(request.query), CIMultiDict(request.headers), body)
        if body and request.content_type == "application/json":
            try:
                rec.json = json.loads(body)
            except ValueError:
                return self._violation("request body is not valid JSON")
        self.requests.append(rec)
        request[RECORDED] = rec
        # The catalog is public, as on OpenRouter: no key is needed, but a key that is sent must be right.
        public = request.path == "/api/v1/auth/keys" or (request.path == "/api/v1/models" and "Authorization" not in request.headers)
        if request.path.startswith("/api/v1/") and not public:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return _error(401, "No auth credentials found")
        try:
            return await handler(request)
        finally:
            rec.done_at = time.monotonic()

    def _violation(self, what: str) -> web.Response:
        self.violations.append(what)
        return _error(400, f"contract violation: {what}")

    # ---- chat completions --------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[RECORDED].json
        problem = self._check_chat(body)
        if problem and self.lenient and isinstance(body, dict) and body.get("messages"):
            self.tolerated.append(problem)
        elif problem:
            return self._violation(problem)
        if _sends_image(body["messages"]) and not self._takes(body["model"], image=True):
            # What OpenRouter answers when no provider of the model takes image input (or tools, below).
            return _error(404, "No endpoints found that support image input")
        if body.get("tools") and not self._takes(body["model"], tools=True):
            return _error(404, "No endpoints found that support tool use. Try disabling tools. To learn more "
                               "about provider routing, visit: https://openrouter.ai/docs/guides/routing/provider-selection")
        if not self._takes(body["model"], tools=True) and not _takes_turns(body["messages"]):
            # A model without tool use runs on a chat template that takes only user and assistant in turn; the
            # provider's template error comes back through OpenRouter as "Provider returned error".
            return _provider_error("Fake Provider", {"error": {"message": "Conversation roles must alternate "
                                                                         "user/assistant/user/assistant/..."}})
        if body["model"] in self.mistral_templates and (bad := _long_tool_id(body["messages"])):
            return _provider_error("Mistral", {"object": "error", "message": f"Tool call id was {bad} but must be a-z, "
                                               "A-Z, 0-9, with a length of 9.", "type": "invalid_function_call",
                                               "param": None, "code": "3280"})
        modalities = body.get("modalities") or []
        if scripted := self.for_text.get(_last_user_text(body["messages"])):
            answer = scripted.pop(0)
        elif self.answers:
            answer = self.answers.pop(0)
        elif "audio" in modalities:
            answer = Music()
        elif "image" in modalities:
            answer = Images()
        else:
            answer = self._default_text(body)
        while isinstance(answer, Hang):
            await asyncio.sleep(answer.seconds)
            answer = self.answers.pop(0) if self.answers else self._default_text(body)
        if isinstance(answer, Error):
            return _error(answer.status, answer.message, code=answer.code, retry_after=answer.retry_after,
                          metadata=answer.metadata)
        if isinstance(answer, EchoAuth):
            auth = request.headers.get("Authorization", "")
            return _error(answer.status, f"Authorization header {auth!r} was refused for key {auth.removeprefix('Bearer ')}")
        if isinstance(answer, RawSSE):
            return await self._raw_sse(request, answer)
        if getattr(answer, "delay", 0):
            await asyncio.sleep(answer.delay)  # type: ignore[union-attr]
        pause = None
        if isinstance(answer, Stall):
            pause = (1 + len(_pieces(answer.partial_text, self.chunk_size)), answer.seconds)
        chunks = self._chunks(answer, body)
        if body.get("stream"):
            return await self._sse(request, chunks, pause, pace=getattr(answer, "pace", 0.0))
        return web.json_response(_merge_chunks(chunks, body["model"]))

    def _takes(self, model_id: str, *, image: bool = False, tools: bool = False) -> bool:
        """Whether the model takes images or tools, as its catalog entry says (an empty list of inputs: it takes
        none; a model the catalog does not list, as behind a proxy: yes)."""
        found = next((m for m in self.models if m["id"] == model_id), None)
        if found is None:
            return True
        return ((not image or "image" in found["architecture"]["input_modalities"])
                and (not tools or "tools" in found["supported_parameters"]))

    def bench(self, pace: BenchPace) -> None:
        """Answer every unscripted chat request at ``pace`` (see ``BenchPace``)."""
        self.pace = pace
        self.chunk_size = pace.chunk_chars

    def _default_text(self, body: dict[str, Any]) -> Text:
        return self.pace.answer() if self.pace else Text("echo: " + _last_user_text(body["messages"]))

    def _check_chat(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "chat body must be a JSON object"
        for key in body:
            if key in FORBIDDEN_KEYS:
                return f"OpenAI-only field {key!r} must not be forwarded"
            if key not in CHAT_KEYS and key not in self.allowed_extra_keys:
                return f"unknown top-level field {key!r}"
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "model must be a non-empty string"
        deepseek = body["model"].startswith("deepseek/")
        if "reasoning_effort" in body and not deepseek:
            return "top-level reasoning_effort is OpenAI's form; OpenRouter takes reasoning.effort"
        if "stream" in body and not isinstance(body["stream"], bool):
            return "stream must be a boolean"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages must be a non-empty list"
        call_ids: set[str] = set()
        for i, m in enumerate(messages):
            problem = _check_message(m, call_ids) or _check_reasoning(m, deepseek)
            if problem:
                return f"messages[{i}]: {problem}"
        problem = _unanswered_tool_calls(messages)
        if problem:
            return problem
        for i, tool in enumerate(body.get("tools") or []):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                    or not isinstance(fn.get("parameters"), dict):
                return f"tools[{i}] must be {{type: function, function: {{name, description?, parameters}}}}"
        return None

    def _chunks(self, answer: Answer, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The answer as stream chunks; the non-streaming answer is their merge."""
        model = body["model"]
        prompt_tokens = sum(len(json.dumps(m.get("content"))) for m in body["messages"]) // 4 + 1

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": "gen-fake", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        def usage(completion: int, scripted: dict[str, Any] | None = None) -> dict[str, Any]:
            """The closing usage chunk: what the answer scripts, else counted from the request and the answer."""
            return {"id": "gen-fake", "model": model, "choices": [], "usage": scripted or {
                "prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion, "cost": (prompt_tokens + completion) * 0.00001}}

        out: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        if isinstance(answer, (Text, ToolCalls)):
            if answer.reasoning:
                out.append(chunk({"reasoning": answer.reasoning}))
            out += [chunk({"reasoning_details": [piece]}) for piece in _detail_pieces(answer.reasoning_details or [])]
        if isinstance(answer, Stall):  # the pause falls right after the partial text's pieces
            pieces = _pieces(answer.partial_text, self.chunk_size) + (_pieces(answer.rest, self.chunk_size) if answer.rest else [])
            out += [chunk({"content": p}) for p in pieces]
            out += [chunk({}, "stop"), usage(len(answer.partial_text + answer.rest) // 4 + 1)]
        elif isinstance(answer, Text):
            out += [chunk({"content": p}) for p in _pieces(answer.text, self.chunk_size)]
            out += [chunk({}, answer.finish),
                    usage(len(answer.text) // 4 + 1, answer.usage)]
        elif isinstance(answer, ToolCalls):
            if answer.content:
                out.append(chunk({"content": answer.content}))
            for index, (name, args) in enumerate(answer.calls):
                text = json.dumps(args)[:-1] if answer.quirk == "cut" else json.dumps(args)
                if answer.quirk == "one_index" and index:
                    out.append(chunk({"tool_calls": [{"index": 0, "function": {"name": "", "arguments": text}}]}))
                    continue
                cuts = (["{}"] if answer.quirk == "placeholder" else []) + _awkward_cuts(text)
                first, rest = cuts[0], cuts[1:]
                call_id = (f"T{len(self.requests):05d}c{index:02d}" if body["model"] in self.mistral_templates
                           else f"call_{len(self.requests)}_{index}")
                out.append(chunk({"tool_calls": [{"index": index, **({"id": call_id} if answer.ids else {}),
                                                  "type": "function", "function": {"name": name, "arguments": first}}]}))
                again = {**({"id": call_id} if answer.ids else {}), "type": "function"} if answer.repeat_name else {}
                out += [chunk({"tool_calls": [{"index": index, **again, "function": {
                    **({"name": name} if answer.repeat_name else {}), "arguments": piece}}]}) for piece in rest]
                if answer.quirk == "again":
                    out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": json.dumps(args, separators=(",", ":"))}}]}))
            out += [chunk({}, "tool_calls"), usage(20, answer.usage)]
        elif isinstance(answer, StreamError):
            out += [chunk({"content": p}) for p in _pieces(answer.partial_text, self.chunk_size)]
            out.append({"id": "gen-fake", "model": model, "error": {"code": 502, "message": answer.message},
                        "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
        elif isinstance(answer, Images):
            from tests.fakes.media import make_png

            images = [{"type": "image_url", "image_url": {
                "url": "data:image/png;base64," + base64.b64encode(make_png(answer.width, answer.height)).decode()}}
                for _ in range(answer.count)]
            out += [chunk({"content": answer.text, "images": images}), chunk({}, "stop"), usage(1290 * answer.count)]
        elif isinstance(answer, NoImages):
            out += [chunk({"content": answer.text}), chunk({}, "stop"), usage(10)]
        elif isinstance(answer, Music):
            from tests.fakes.media import make_audio

            audio = make_audio(answer.fmt, answer.seconds)
            step = 3000  # not a multiple of 3: every piece is base64 with its own padding
            words = answer.lyrics.split(" ")
            for i, start in enumerate(range(0, len(audio), step)):
                delta: dict[str, Any] = {"audio": {"data": base64.b64encode(audio[start:start + step]).decode()}}
                if i < len(words):
                    delta["audio"]["transcript"] = words[i] + (" " if i < len(words) - 1 else "")
                out.append(chunk(delta))
            out += [chunk({}, "stop"), usage(500)]
        elif isinstance(answer, NoAudio):
            out += [chunk({"content": answer.text}), chunk({}, "stop"), usage(5)]
        return out

    async def _sse(self, request: web.Request, chunks: list[dict[str, Any]],
                   pause: tuple[int, float] | None = None, pace: float = 0.0) -> web.StreamResponse:
        """The chunks as SSE; with ``pace``, that many seconds pass after each chunk that carries content."""
        rec = request[RECORDED]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b": OPENROUTER PROCESSING\n\n")
        for i, c in enumerate(chunks):
            if pause and i == pause[0]:
                await asyncio.sleep(pause[1])
            if i % 3 == 2:
                await resp.write(b": OPENROUTER PROCESSING\n\n")
            await resp.write(f"data: {json.dumps(c)}\n\n".encode())
            if _has_content(c):
                if rec.first_token_at is None:
                    rec.first_token_at = time.monotonic()
                if pace:
                    await asyncio.sleep(pace)
            if self.chunk_pause:
                await asyncio.sleep(self.chunk_pause)
        if not any("error" in c for c in chunks):
            await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _raw_sse(self, request: web.Request, answer: RawSSE) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for n, frame in enumerate(answer.frames, 1):
            end = "" if answer.unended and n == len(answer.frames) else "\n\n"
            await resp.write(f"{frame}{end}".encode())
            await asyncio.sleep(answer.pause)
        if answer.drop and request.transport is not None:
            request.transport.abort()
            raise asyncio.CancelledError  # nothing more can be written; aiohttp ends the handler quietly
        await resp.write_eof()
        return resp

    # ---- other endpoints ---------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        wanted = request.query.get("output_modalities")
        if not wanted:
            wanted = "text"  # OpenRouter's default: text-output models only
        data = self.models if wanted == "all" else [
            m for m in self.models if set(wanted.split(",")) & set(m["architecture"]["output_modalities"])
        ]
        return web.json_response({"data": data})

    async def _key(self, request: web.Request) -> web.Response:
        """``GET /key``: the calling key's details (a wrong key was already answered 401)."""
        return web.json_response({"data": {
            "label": self.api_key[:9] + "..." + self.api_key[-3:], "limit": 100, "limit_remaining": 74.5,
            "limit_reset": "monthly", "usage": 25.5, "is_free_tier": False, "is_provisioning_key": False,
        }})

    async def _speech(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) and body[k] for k in ("model", "input", "voice")):
            return self._violation("speech needs string model, input and voice")
        if body.get("response_format", "mp3") not in ("mp3", "pcm"):
            return self._violation(f"speech response_format {body.get('response_format')!r}")
        if set(body) - {"model", "input", "voice", "response_format", "provider", "speed"}:
            return self._violation(f"unknown speech fields {sorted(set(body) - {'model', 'input', 'voice', 'response_format', 'provider'})}")
        if self.speech_answers:
            err = self.speech_answers.pop(0)
            return _error(err.status, err.message)
        from tests.fakes.media import make_audio

        seconds = min(10.0, max(0.5, 0.06 * len(body["input"])))
        if body.get("response_format") == "pcm":
            return web.Response(body=make_audio("pcm", seconds), content_type="audio/pcm")
        return web.Response(body=make_audio("mp3", seconds), content_type="audio/mpeg")

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return self._violation(f"transcriptions take JSON, not {request.content_type}")
        body = request[RECORDED].json
        audio = body.get("input_audio") if isinstance(body, dict) else None
        if not isinstance(body.get("model"), str) or not isinstance(audio, dict):
            return self._violation("transcriptions need model and input_audio {data, format}")
        if audio.get("format") not in STT_FORMATS:
            return self._violation(f"input_audio.format {audio.get('format')!r} is not one of {sorted(STT_FORMATS)}")
        data = audio.get("data")
        if not isinstance(data, str) or data.startswith("data:"):
            return self._violation("input_audio.data must be bare base64 (no data: prefix)")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return self._violation("input_audio.data is not base64")
        if not raw:
            return self._violation("input_audio.data is empty")
        answer = self.transcripts.pop(0) if self.transcripts else "hello from the fake transcriber"
        if isinstance(answer, Error):
            return _error(answer.status, answer.message)
        return web.json_response({"text": answer, "usage": {"cost": 0.0001, "seconds": 1}})

    async def _video_submit(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json
        allowed = {"model", "prompt", "duration", "resolution", "aspect_ratio", "generate_audio", "seed",
                   "frame_images", "input_references", "provider"}
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not isinstance(body.get("prompt"), str):
            return self._violation("videos need model and prompt")
        if set(body) - allowed:
            return self._violation(f"unknown video fields {sorted(set(body) - allowed)}")
        if "resolution" in body and not re.fullmatch(r"\d+p|\dk", str(body["resolution"])):
            return self._violation(f"video resolution {body['resolution']!r} is not OpenRouter's spelling (720p, 1080p)")
        for frame in body.get("frame_images") or []:
            if frame.get("frame_type") not in ("first_frame", "last_frame") or not frame.get("image_url", {}).get("url"):
                return self._violation("frame_images entries need image_url.url and frame_type first_frame|last_frame")
        for ref in body.get("input_references") or []:
            if ref.get("type") != "image_url" or not ref.get("image_url", {}).get("url"):
                return self._violation("input_references entries need type image_url and image_url.url")
        job_id = "vid-" + secrets.token_hex(6)
        plan = self.video_plan.pop(0) if self.video_plan else VideoPlan()
        self.videos[job_id] = FakeVideoJob(job_id, plan, body)
        # On the origin the client asked (openrouter.ai itself when reached through ``dial_as``).
        polling_url = f"{request.scheme}://{request.host}/api/v1/videos/{job_id}"
        return web.json_response({"id": job_id, "polling_url": polling_url, "status": "pending"})

    async def _video_poll(self, request: web.Request) -> web.Response:
        job = self.videos.get(request.match_info["id"])
        if job is None:
            return _error(404, "video job not found")
        job.polls += 1
        if job.polls < job.plan.polls_until_done:
            return web.json_response({"id": job.id, "status": "pending" if job.polls == 1 else "in_progress"})
        if job.plan.outcome != "completed":
            return web.json_response({"id": job.id, "status": job.plan.outcome, "error": job.plan.error or job.plan.outcome})
        return web.json_response({"id": job.id, "status": "completed", "generation_id": "gen-" + job.id,
                                  "unsigned_urls": [f"{self.origin}/files/{job.id}.mp4"], "usage": {"cost": 0.5}})

    async def _video_content(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.videos:
            return _error(404, "video job not found")
        from tests.fakes.media import make_mp4

        return web.Response(body=make_mp4(), content_type="video/mp4")

    async def _file(self, request: web.Request) -> web.Response:
        from tests.fakes.media import make_mp4

        return web.Response(body=make_mp4(), content_type="video/mp4")

    async def _redirect(self, request: web.Request) -> web.Response:
        """``/redirect?to=URL``: a 302 there, as signed storage links often answer."""
        raise web.HTTPFound(request.query["to"])

    async def _auth_keys(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json
        if not isinstance(body, dict) or body.get("code_challenge_method") != "S256":
            return self._violation("auth/keys needs code, code_verifier and code_challenge_method S256")
        challenge = self.oauth_codes.pop(str(body.get("code")), None)
        verifier = str(body.get("code_verifier") or "")
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge is None or challenge != expected:
            return _error(403, "Invalid code or code_verifier")
        return web.json_response({"key": self.oauth_key, "user_id": "user_fake"})


# ---- helpers ---------------------------------------------------------------------------------


def _sends_image(messages: list[Any]) -> bool:
    return any(isinstance(part, dict) and part.get("type") == "image_url"
               for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list) for part in m["content"])


def _takes_turns(messages: list[Any]) -> bool:
    """Whether, after the system prompt, user and assistant strictly take turns, with no tool calls or results."""
    roles = [m.get("role") for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    return (all(role == ("user", "assistant")[i % 2] for i, role in enumerate(roles)) and roles[-1:] == ["user"]
            and not any(isinstance(m, dict) and m.get("tool_calls") for m in messages))


def _long_tool_id(messages: list[Any]) -> str | None:
    """The first tool-call id (of a call or of a result) that is not 9 letters or digits, as Mistral's templates demand."""
    for m in messages:
        if not isinstance(m, dict):
            continue
        for call_id in [c.get("id") for c in m.get("tool_calls") or [] if isinstance(c, dict)] + [m.get("tool_call_id")]:
            if call_id is not None and not re.fullmatch(r"[A-Za-z0-9]{9}", str(call_id)):
                return str(call_id)
    return None


def _provider_error(provider: str, raw: dict[str, Any]) -> web.Response:
    """A provider's refusal as OpenRouter passes it on: 400 "Provider returned error", the provider's own body
    as a JSON string in ``metadata.raw``."""
    return _error(400, "Provider returned error", metadata={"provider_name": provider, "raw": json.dumps(raw)})


def _error(status: int, message: str, *, code: Any = None, retry_after: float | None = None,
           metadata: dict[str, Any] | None = None) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    error = {"code": code or status, "message": message} | ({"metadata": metadata} if metadata else {})
    return web.json_response({"error": error}, status=status, headers=headers)


def _check_message(m: Any, call_ids: set[str]) -> str | None:
    if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool", "developer"):
        return "role must be system, user, assistant or tool"
    content = m.get("content")
    if isinstance(content, list):
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                continue
            if kind == "image_url" and isinstance(part.get("image_url", {}).get("url"), str):
                continue
            if kind == "input_audio" and {"data", "format"} <= set(part.get("input_audio", {})):
                continue
            return f"bad content part {json.dumps(part)[:80]}"
    elif content is not None and not isinstance(content, str):
        return "content must be a string, a list of parts, or null"
    if m["role"] == "assistant":
        for call in m.get("tool_calls") or []:
            fn = call.get("function") or {}
            if call.get("type") != "function" or not call.get("id") or not isinstance(fn.get("name"), str):
                return "tool_calls entries need id, type function, function.name"
            try:  # an object: Anthropic's and Gemini's APIs take the arguments as one, and refuse anything else
                if not isinstance(json.loads(fn.get("arguments")), dict):
                    raise ValueError
            except (TypeError, ValueError):
                return "tool_calls[].function.arguments must be a JSON string holding an object"
            call_ids.add(call["id"])
    if m["role"] == "tool" and m.get("tool_call_id") not in call_ids:
        return "tool message without a matching earlier tool call id"
    if m["role"] == "user" and content in (None, ""):
        return "user message without content"
    return None


def _unanswered_tool_calls(messages: list[dict[str, Any]]) -> str | None:
    """Every assistant ``tool_calls`` id must get its ``tool`` message right after that assistant message,
    before anything else; OpenAI-style providers refuse the whole request otherwise."""
    for i, m in enumerate(messages):
        wanted = [c.get("id") for c in (m.get("tool_calls") or [])] if m.get("role") == "assistant" else []
        answered = set()
        for follower in messages[i + 1:]:
            if follower.get("role") != "tool":
                break
            answered.add(follower.get("tool_call_id"))
        missing = [cid for cid in wanted if cid not in answered]
        if missing:
            return f"messages[{i}]: tool_calls id(s) {missing} have no tool message right after the call"
    return None


def _check_reasoning(m: dict[str, Any], deepseek: bool) -> str | None:
    """Replayed thoughts keep their shape: reasoning_content is DeepSeek's, reasoning_details are typed entries."""
    if "reasoning_content" in m and (not deepseek or not isinstance(m["reasoning_content"], str)):
        return "reasoning_content is DeepSeek's field, a string"
    details = m.get("reasoning_details")
    if details is not None and not (isinstance(details, list) and all(
            isinstance(d, dict) and str(d.get("type", "")).startswith("reasoning.") for d in details)):
        return "reasoning_details must be a list of {type: reasoning.*, ...} entries"
    return None


def _has_content(chunk: dict[str, Any]) -> bool:
    return any((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or [])


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (what the echo answers)."""
    return _last_user_text(messages)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            content = m["content"]
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            return content.rsplit("]: ", 1)[-1] if content.startswith("[") else content
    return ""


def _detail_pieces(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """reasoning_details as a stream carries them: each entry with its index, long text cut in two."""
    pieces = []
    for index, detail in enumerate(details):
        text = detail.get("text")
        if isinstance(text, str) and len(text) > 1:
            cut = len(text) // 2
            pieces += [{**{k: v for k, v in detail.items() if k != "signature"}, "text": text[:cut], "index": index},
                       {"type": detail["type"], "text": text[cut:], "index": index,
                        **({"signature": detail["signature"]} if "signature" in detail else {})}]
        else:
            pieces.append({**detail, "index": index})
    return pieces


def _pieces(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _awkward_cuts(text: str) -> list[str]:
    """Split JSON text mid-key, mid-string and next to escapes, as real streams do."""
    cuts = sorted({1, 2, len(text) // 3, len(text) // 2, len(text) - 2} & set(range(1, len(text))))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:]) if b > a] or [text]


def _merge_chunks(chunks: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The non-streaming body with the same content as the chunks."""
    message: dict[str, Any] = {"role": "assistant", "content": ""}
    finish, usage, calls = None, None, {}
    for c in chunks:
        if "error" in c:
            return {"id": "gen-fake", "model": model, "error": c["error"]}
        usage = c.get("usage") or usage
        for choice in c.get("choices", []):
            delta = choice.get("delta", {})
            message["content"] += delta.get("content") or ""
            for key in ("reasoning", "images"):
                if delta.get(key):
                    message[key] = delta[key]
            for piece in delta.get("reasoning_details") or []:
                details = message.setdefault("reasoning_details", [])
                if piece["index"] == len(details):
                    details.append(dict(piece))
                else:
                    details[piece["index"]]["text"] += piece.get("text", "")
                    details[piece["index"]].update({k: v for k, v in piece.items() if k not in ("text",)})
            for frag in delta.get("tool_calls") or []:
                slot = calls.setdefault(frag["index"], {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                slot["id"] = frag.get("id") or slot["id"]
                slot["function"]["name"] = frag.get("function", {}).get("name") or slot["function"]["name"]
                slot["function"]["arguments"] += frag.get("function", {}).get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return {"id": "gen-fake", "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": usage}
