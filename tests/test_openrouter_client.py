"""The OpenRouter client against the fake: tool calls both ways, stream failures, retries, headers, no leaked key."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
import time

import pytest

from bot.redact import RedactingFilter
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import (
    AuthError, ConnectionFailedError, IncompleteStreamError, OpenRouterError, RateLimitError, RequestTimeoutError,
    StreamError,
)
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ChatSpec, ProviderSettings
from providers.openrouter.retry import RetryPolicy
from providers.openrouter.speech import synthesize
from providers.openrouter.transcription import transcribe
from providers.openrouter.video import poll_video, submit_video
from tests.conftest import chorus, onboarded
from tests.fakes.openrouter import Error, Hang, RawSSE, StreamError as FakeStreamError, Text, ToolCalls

NO_WAIT = RetryPolicy(attempts=3, base_delay=0.001)
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "d", "parameters": {"type": "object"}}}]
CALLS = [("lookup", {"q": "caf\u00e9 \"quoted\" \\ back", "n": [1, 2]}), ("lookup", {"q": "second"})]


def spec(**kw) -> ChatSpec:
    return ChatSpec(ModelRef.parse("openrouter/openai/gpt-4o-mini"), [{"role": "user", "content": "hi"}], **kw)


@pytest.fixture
async def client(fake_openrouter):
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url), retry=NO_WAIT) as c:
        yield c


async def stream_all(client, s):
    deltas = []

    async def heard(text):
        deltas.append(text)

    result = await client.stream(s, on_text=heard)
    return deltas, result


async def test_tool_calls_non_streaming(client, fake_openrouter):
    fake_openrouter.queue(ToolCalls(CALLS))
    result = await client.chat(spec(tools=TOOLS))
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == CALLS
    assert result.finish_reason == "tool_calls" and result.usage.total_tokens > 0
    assert fake_openrouter.chat_requests()[0].json["tools"] == TOOLS


async def test_tool_calls_streamed_in_awkward_fragments_are_joined_by_index(client, fake_openrouter):
    fake_openrouter.queue(ToolCalls(CALLS, content="Let me look."))
    deltas, result = await stream_all(client, spec(tools=TOOLS))
    assert "".join(deltas) == "Let me look."
    assert [(c.name, json.loads(c.arguments)) for c in result.tool_calls] == CALLS
    assert len({c.id for c in result.tool_calls}) == 2


async def test_stream_keeps_alive_and_counts_usage_last(client, fake_openrouter):
    fake_openrouter.queue(Text("a fairly long answer in many pieces"))
    deltas, result = await stream_all(client, spec())
    assert len(deltas) > 3 and result.text == "a fairly long answer in many pieces"
    assert result.usage.cost and result.usage.cost > 0 and result.finish_reason == "stop"


async def test_a_mid_stream_error_fails_the_turn_with_its_message(client, fake_openrouter):
    fake_openrouter.queue(FakeStreamError("partial ans", "provider overloaded"))
    with pytest.raises(StreamError, match="provider overloaded"):
        await stream_all(client, spec())
    assert len(fake_openrouter.chat_requests()) == 1  # output had started: never retried


async def test_429_is_retried_after_retry_after_then_succeeds(client, fake_openrouter):
    fake_openrouter.queue(Error(429, "slow down", retry_after=0), Error(503, "no provider"), Text("fine"))
    deltas, result = await stream_all(client, spec())
    assert result.text == "fine" and len(fake_openrouter.chat_requests()) == 3
    fake_openrouter.queue(Error(429, "still slow", retry_after=0), Error(429, "still slow", retry_after=0), Error(429, "x"))
    with pytest.raises(RateLimitError, match="rate limiting"):
        await client.chat(spec())


async def test_the_key_never_reaches_logs_or_errors(fake_openrouter, caplog):
    key = "sk-or-v1-secret-never-print-0123456789"
    logger = logging.getLogger("chorus")
    redactor = RedactingFilter()
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    try:
        with caplog.at_level(logging.DEBUG):
            async with OpenRouterClient(key, ProviderSettings(base_url=fake_openrouter.base_url), retry=NO_WAIT) as c:
                with pytest.raises(AuthError) as err:
                    await c.chat(spec())
            logger.debug("header was Bearer %s", key)
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(redactor)
    assert key not in str(err.value) and key not in repr(err.value)
    assert "chorus onboard" in str(err.value)
    assert key not in caplog.text and "Bearer ***" in caplog.text


async def test_a_custom_base_url_gets_no_attribution_or_cache_headers(client, fake_openrouter):
    settings = ProviderSettings(base_url=fake_openrouter.base_url,
                                model_params={"openrouter/openai/gpt-4o-mini": {"responseCache": True}})
    async with OpenRouterClient(fake_openrouter.api_key, settings, retry=NO_WAIT) as c:
        await c.chat(spec())
    headers = fake_openrouter.chat_requests()[0].headers
    assert not [h for h in headers if h.lower().startswith(("x-openrouter", "x-title", "http-referer"))]


async def test_fusion_from_the_cli_with_its_panel(home, fake_openrouter):
    panel = {"plugins": [{"id": "fusion", "analysis_models": ["anthropic/claude-sonnet-4.6", "moonshotai/kimi-k2.6"],
                          "model": "openai/gpt-4o-mini"}]}
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, agents={"defaults": {"models": {"openrouter/openrouter/fusion": {"params": {"extraBody": panel}}}}})
    fake_openrouter.queue(Text("FUSION_OK"))
    result = await chorus(home, "infer", "model", "run", "--local", "--model", "openrouter/openrouter/fusion",
                          "--prompt", "Reply with exactly: FUSION_OK", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["text"] == "FUSION_OK"
    body = fake_openrouter.chat_requests()[0].json
    assert body["model"] == "openrouter/fusion" and body["plugins"] == panel["plugins"]
    assert "kimi-k2.6" in body["messages"][0]["content"] and "tool_choice" not in body


async def test_models_list_filters_by_modality_and_set_warns_on_unknown(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    listed = await chorus(home, "models", "list", "--modality", "image")
    assert listed.code == 0, listed.err
    assert listed.out.split() [0] == "openrouter/google/gemini-3.1-flash-image-preview" and "kimi" not in listed.out
    everything = await chorus(home, "models", "list")
    assert "openrouter/auto" in everything.out and "openrouter/moonshotai/kimi-k2.6" in everything.out
    assert len(fake_openrouter.requests_to("/models")) == 1  # the second listing came from the day's cache
    await chorus(home, "models", "list", "--refresh")
    assert len(fake_openrouter.requests_to("/models")) == 2
    unknown = await chorus(home, "models", "set", "openrouter/nobody/nothing")
    assert unknown.code == 0 and "not in OpenRouter's model catalog" in unknown.err
    known = await chorus(home, "models", "set", "openrouter/moonshotai/kimi-k2.6")
    assert "warning" not in known.err


ATTRIBUTION = {"http-referer": "https://github.com/chorus-bot/chorus", "x-openrouter-title": "Chorus", "x-title": "Chorus",
               "x-openrouter-categories": "general-chat,personal-agent"}


async def _every_kind_of_request(c: OpenRouterClient) -> None:
    await synthesize(c, model="hexgrad/kokoro-82m", text="hi", voice="af_alloy")
    await transcribe(c, model="openai/whisper-large-v3-turbo", data=b"RIFF", fmt="wav")
    job = await submit_video(c, ModelRef.parse("openrouter/google/veo-3.1-fast"), "waves")
    await poll_video(c, job)
    await c.models()
    await c.chat(spec())


async def test_attribution_on_every_request_to_openrouter_ai(fake_openrouter, tmp_path):
    """The default base URL, https://openrouter.ai, reached over TLS at the fake (only the name's address and
    the certificate's trust are test-made): every kind of request carries the attribution headers."""
    dial = await fake_openrouter.dial_as("openrouter.ai", tmp_path)
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(), retry=NO_WAIT, **dial) as c:
        await _every_kind_of_request(c)
    [job] = fake_openrouter.videos  # polled at the polling URL the fake gave: on openrouter.ai, so it may carry the key
    assert [(r.method, r.path) for r in fake_openrouter.requests] == [
        ("POST", "/api/v1/audio/speech"), ("POST", "/api/v1/audio/transcriptions"), ("POST", "/api/v1/videos"),
        ("GET", f"/api/v1/videos/{job}"), ("GET", "/api/v1/models"), ("POST", "/api/v1/chat/completions")]
    for request in fake_openrouter.requests:
        assert request.headers["Host"] == "openrouter.ai", request.path
        assert {k.lower(): v for k, v in request.headers.items() if k.lower() in ATTRIBUTION} == ATTRIBUTION, request.path


async def test_the_environment_s_proxy_carries_every_request(monkeypatch):
    """HTTP_PROXY (as a user behind one sets it) gets the whole URL; the API's own host is never dialled."""
    asked: list[str] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")[0])
        body = json.dumps({"data": [{"id": "seen/through-the-proxy"}]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        async with OpenRouterClient("sk-or-test", ProviderSettings(base_url="http://openrouter.invalid/api/v1"),
                                    retry=NO_WAIT) as c:
            assert await c.models() == [{"id": "seen/through-the-proxy"}]
    finally:
        server.close()
    assert asked == ["GET http://openrouter.invalid/api/v1/models HTTP/1.1"]


async def test_a_custom_base_url_gets_no_attribution_on_any_request(fake_openrouter):
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url), retry=NO_WAIT) as c:
        await _every_kind_of_request(c)
    assert len(fake_openrouter.requests) == 6
    assert [r.path for r in fake_openrouter.requests if set(ATTRIBUTION) & {h.lower() for h in r.headers}] == []


async def test_openai_only_extra_body_and_hunter_alpha_reasoning_never_reach_the_wire(fake_openrouter):
    extra = {"prompt_cache_retention": "24h", "reasoning_effort": "high", "text": {"verbosity": "low"}}
    settings = ProviderSettings(base_url=fake_openrouter.base_url, model_params={"openrouter/openai/gpt-4o-mini": {"extraBody": extra}})
    async with OpenRouterClient(fake_openrouter.api_key, settings, retry=NO_WAIT) as c:
        assert (await c.chat(spec(thinking="high"))).text == "echo: hi"
        hunter = ChatSpec(ModelRef.parse("openrouter/openrouter/hunter-alpha"), [{"role": "user", "content": "hi"}], thinking="high")
        assert (await c.chat(hunter)).text == "echo: hi"
    first, second = (r.json for r in fake_openrouter.chat_requests())
    assert set(first) == {"model", "messages", "usage", "reasoning"} and first["reasoning"] == {"effort": "high"}
    assert set(second) == {"model", "messages", "usage"}


async def test_reasoning_details_are_read_streamed_and_not(client, fake_openrouter):
    details = [{"type": "reasoning.text", "text": "thinking it over", "signature": "c2ln", "format": "google-gemini-v1"},
               {"type": "reasoning.encrypted", "data": "ZW5j", "format": "google-gemini-v1"}]
    expected = [{**d, "index": i} for i, d in enumerate(details)]
    fake_openrouter.queue(Text("a", reasoning="thinking it over", reasoning_details=details),
                          Text("a", reasoning="thinking it over", reasoning_details=details))
    _, streamed = await stream_all(client, spec())
    plain = await client.chat(spec())
    assert (streamed.reasoning, streamed.reasoning_details) == ("thinking it over", expected)
    assert (plain.reasoning, plain.reasoning_details) == ("thinking it over", expected)


async def test_streamed_pieces_as_real_hosts_send_them_null_fields_and_deepseek_s_reasoning(client, fake_openrouter):
    """OpenRouter sends every field in every piece, most of them null or empty; DeepSeek names its thoughts
    ``reasoning_content``, and one that sends both names is read once."""
    def piece(delta: dict, finish: str | None = None) -> str:
        return "data: " + json.dumps({"id": "gen-1", "provider": "DeepSeek", "model": "deepseek/deepseek-v4-flash",
                                      "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {
                                          "role": "assistant", "content": "", "reasoning": None, "refusal": None,
                                          "reasoning_details": [], "tool_calls": None, **delta},
                                          "finish_reason": finish, "native_finish_reason": finish}]})
    fake_openrouter.queue(RawSSE([piece({"reasoning_content": "first, "}), piece({"reasoning_content": "then"}),
                                  piece({"reasoning": "once", "reasoning_content": "once"}),
                                  piece({"content": "Héllo"}), piece({"content": " there"}), piece({}, "stop")]))
    deltas, result = await stream_all(client, spec())
    assert deltas == ["Héllo", " there"]
    assert (result.text, result.reasoning, result.finish_reason) == ("Héllo there", "first, thenonce", "stop")
    assert (result.tool_calls, result.images, result.reasoning_details) == ([], [], None)


async def test_models_list_falls_back_to_the_bundled_catalog_and_says_so(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    live = await chorus(home, "models", "list", "--modality", "video")
    assert live.err == "1 models with video output, from OpenRouter's live catalog\n"
    with socket.socket() as s:  # a loopback port nothing listens on: OpenRouter is unreachable
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/api/v1"
    home.config.write_text(json.dumps({"models": {"providers": {"openrouter": {"baseUrl": closed, "maxRetries": 0}}}}))
    def cached(sql: str) -> int:
        """Rows of the catalog's cache in the state's database that ``sql`` changed."""
        db = sqlite3.connect(home.path / "chorus.db")
        try:
            with db:
                return db.execute(sql).rowcount
        finally:
            db.close()

    assert cached("UPDATE shared_values SET kept_at = kept_at - 3 * 86400") == 1  # stale, still better than bundled
    stale = await chorus(home, "models", "list", "--modality", "video")
    assert stale.err == "1 models with video output, from a stale cache (OpenRouter's could not be reached: Could not reach OpenRouter)\n"
    assert cached("DELETE FROM shared_values") == 1
    bundled = await chorus(home, "models", "list")
    assert bundled.code == 0, bundled.err
    assert bundled.out.splitlines() == [  # the provider page's four refs and the media defaults
        "openrouter/google/gemini-3.1-flash-image-preview          131,072  image,text",
        "openrouter/google/lyria-3-clip-preview                          -  audio,text",
        "openrouter/google/lyria-3-pro-preview                           -  audio,text",
        "openrouter/google/veo-3.1-fast                                  -  video",
        "openrouter/hexgrad/kokoro-82m                                   -  speech",
        "openrouter/moonshotai/kimi-k2.5                           262,144  text",
        "openrouter/moonshotai/kimi-k2.6                           262,144  text",
        "openrouter/openai/whisper-large-v3-turbo                        -  transcription",
        "openrouter/auto                                         2,000,000  text",
        "openrouter/openrouter/fusion                              262,144  text",
        "openrouter/openrouter/healer-alpha                        262,144  text",
        "openrouter/openrouter/hunter-alpha                      1,048,576  text",
    ]
    assert bundled.err == "12 models, from the bundled catalog (OpenRouter's could not be reached: Could not reach OpenRouter)\n"


# ---- transport failures, over the wire --------------------------------------------------------


async def test_a_connection_dropped_mid_stream_is_connection_lost_and_retried_only_before_text(client, fake_openrouter):
    fake_openrouter.queue(RawSSE([RawSSE.content("Half an ans")], drop=True))
    with pytest.raises(IncompleteStreamError, match="connection lost"):
        await stream_all(client, spec())
    assert len(fake_openrouter.chat_requests()) == 1  # text was out: never retried
    fake_openrouter.queue(RawSSE([": OPENROUTER PROCESSING"], drop=True), Text("whole"))
    deltas, result = await stream_all(client, spec())
    assert result.text == "whole" and len(fake_openrouter.chat_requests()) == 3


async def test_an_unreachable_or_silent_server_becomes_a_typed_retryable_error(fake_openrouter, unused_tcp_port):
    once = RetryPolicy(attempts=1)
    async with OpenRouterClient("sk-or-test", ProviderSettings(base_url=f"http://127.0.0.1:{unused_tcp_port}/api/v1"),
                                retry=once) as closed:
        with pytest.raises(ConnectionFailedError, match="Could not reach OpenRouter"):
            await closed.chat(spec())
    fake_openrouter.queue(Hang(5))
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url), retry=once) as c:
        started = time.monotonic()
        with pytest.raises(RequestTimeoutError, match="took too long"):
            await c.chat(spec(), timeout=0.3)
        assert time.monotonic() - started < 3


async def test_an_idle_connection_the_server_closed_is_never_reused():
    """A request right after the server dropped a kept-alive connection goes out on a new one (ported from
    corecpu's test of httpcore's pool: aiohttp's connector must not hand out the dead connection either)."""
    opened: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        opened.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # no "Connection: close": the client keeps the connection, which is now dead

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/api/v1"
    async with server, OpenRouterClient("sk-or-test", ProviderSettings(base_url=base), retry=RetryPolicy(attempts=1)) as c:
        for _ in range(3):
            assert (await c.request("GET", "models")).json() == {}
            await asyncio.sleep(0.05)  # the server's close reaches the client's socket
    assert len(opened) == 3


async def test_a_whole_url_elsewhere_is_refused_not_sent_to_the_base_url_s_host(client, fake_openrouter):
    with pytest.raises(OpenRouterError, match="must be on the base URL's origin"):
        await client.request("GET", "http://elsewhere.invalid/api/v1/models")
    assert fake_openrouter.requests == []


async def test_a_last_event_the_body_ends_without_a_blank_line_still_counts(client, fake_openrouter):
    fake_openrouter.queue(RawSSE([RawSSE.content("all "), RawSSE.content("there", finish="stop")], unended=True))
    deltas, result = await stream_all(client, spec())
    assert (result.text, result.finish_reason) == ("all there", "stop")


async def test_a_request_s_own_key_replaces_the_client_s_on_the_wire(fake_openrouter):
    """Text-to-speech may have a key of its own: that request carries it, and only that one."""
    async with OpenRouterClient("sk-or-v1-the-chat-key-not-the-fake-s", ProviderSettings(base_url=fake_openrouter.base_url),
                                retry=NO_WAIT) as c:
        spoken = await synthesize(c, model="hexgrad/kokoro-82m", text="hi", voice="af_alloy",
                                  api_key=fake_openrouter.api_key)
        with pytest.raises(AuthError):
            await c.models()
    assert spoken.data
    assert [r.headers["Authorization"] for r in fake_openrouter.requests] == [
        f"Bearer {fake_openrouter.api_key}", "Bearer sk-or-v1-the-chat-key-not-the-fake-s"]


async def test_the_result_names_the_model_that_answered(client, fake_openrouter):
    """With openrouter/auto or provider routing the model that answered is not the one asked for; the
    stream's ``model`` says which, and that is what is stored."""
    fake_openrouter.queue(RawSSE([RawSSE.content("hi", finish="stop")]))
    deltas, result = await stream_all(client, spec())
    assert (result.text, result.model) == ("hi", "m")
