"""End to end: the real ``chorus`` process, its console on a pipe, and the fake OpenRouter on loopback."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sqlite3
import stat
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import json5

from tests.conftest import chorus, eventually, onboarded
from tests.fakes.openrouter import Error, Hang, Text, ToolCalls
from tests.service import start_chorus


def user_texts(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"]


async def test_onboarding_writes_a_private_profile_and_a_starter_config(home, fake_openrouter):
    result = await chorus(
        home, "onboard", "--auth-choice", "openrouter-api-key", "--openrouter-api-key", fake_openrouter.api_key
    )
    assert result.code == 0, result.err
    profiles = home.path / "auth-profiles.json"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    assert json.loads(profiles.read_text())["profiles"]["openrouter:default"]["key"] == fake_openrouter.api_key
    assert json5.loads(home.config.read_text())["agents"]["defaults"]["model"]["primary"] == "openrouter/auto"
    assert fake_openrouter.api_key not in result.out + result.err

    status = await chorus(home, "models", "status")
    assert "openrouter:default" in status.out and "openrouter/auto" in status.out
    assert fake_openrouter.api_key not in status.out + status.err


async def test_console_streams_the_answer_from_piped_input(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Text("Hello there, how can I help?"))
    result = await chorus(home, "run", stdin="hello\n/quit\n")
    assert result.code == 0, result.err
    assert "Hello there, how can I help?" in result.out
    (request,) = fake_openrouter.chat_requests()
    assert request.json["stream"] is True
    assert request.json["model"] == "openrouter/auto"
    assert request.headers["Authorization"] == f"Bearer {fake_openrouter.api_key}"
    assert user_texts(request) == ["hello"]


async def test_the_service_runs_on_uvloop_where_it_is_installed(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Text("answered on the fast loop"))
    result = await chorus(home, "-v", "run", stdin="hello\n")
    assert result.code == 0, result.err
    assert result.out.strip() == "answered on the fast loop"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"  # a dependency on Linux and macOS
    assert f"event loop: {loop}\n" in result.err


async def test_messages_answered_over_a_week_ago_leave_the_inbox_and_stay_in_the_history(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    assert (await chorus(home, "run", stdin="an old message\n")).code == 0
    db = home.path / "chorus.db"
    with sqlite3.connect(db) as conn:  # as if it had been answered eight days ago
        conn.execute("UPDATE inbox SET done_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-8 days')")
    service = await start_chorus(home, "-v", "run")
    await eventually(lambda: "forgot 1 inbox message(s) answered over 7 days ago" in service.log, "the prune at start")
    await service.say("a new message")
    result = await service.finish()
    assert result.code == 0, result.err
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT text FROM inbox")] == ["a new message"]
        said = [r[0] for r in conn.execute("SELECT content FROM messages WHERE role = 'user' ORDER BY id")]
    assert said == ["an old message", "a new message"]


async def test_history_survives_a_restart_and_new_starts_fresh(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    first = await chorus(home, "run", stdin="my name is Ada\n")
    assert "echo: my name is Ada" in first.out
    second = await chorus(home, "run", stdin="what is my name?\n/new\nand now?\n")
    assert second.code == 0, second.err
    before_new, after_new = fake_openrouter.chat_requests()[1:]
    messages = [(m["role"], m["content"]) for m in before_new.json["messages"][1:]]
    assert messages == [
        ("user", "my name is Ada"), ("assistant", "echo: my name is Ada"), ("user", "what is my name?"),
    ]
    assert user_texts(after_new) == ["and now?"]
    assert "Started a new conversation" in second.out


async def test_model_command_changes_this_chats_model(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    result = await chorus(home, "run", stdin="/model openrouter/moonshotai/kimi-k2.6\nhi\n/model nonsense\n/model\n")
    assert "set to openrouter/moonshotai/kimi-k2.6" in result.out
    assert fake_openrouter.chat_requests()[-1].json["model"] == "moonshotai/kimi-k2.6"
    assert "not of the form openrouter/<model id>" in result.out
    assert "Model: openrouter/moonshotai/kimi-k2.6" in result.out


async def test_upstream_errors_reach_the_user_as_sentences_and_lose_nothing(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(
        Error(401, "User not found."), Error(402, "Insufficient credits"),
        Error(429, "Rate limit exceeded"), Error(500, "Internal Server Error"),
    )
    result = await chorus(home, "run", stdin="one\ntwo\nthree\nfour\nfive\n")
    assert result.code == 0, result.err
    out = result.out
    assert "did not accept the API key" in out and "chorus onboard" in out
    assert "out of credits" in out
    assert "rate limiting" in out
    assert "down or sent a broken answer" in out
    assert fake_openrouter.api_key not in out + result.err
    # None of these is the message's fault (a key, credits, a rate limit, a provider down): each stays in
    # the conversation, so the next turn still carries it.
    assert user_texts(fake_openrouter.chat_requests()[-1]) == ["one", "two", "three", "four", "five"]
    assert "I will leave it out of our conversation" not in out
    with sqlite3.connect(home.path / "chorus.db") as db:
        kept = db.execute("SELECT content, excluded FROM messages WHERE role = 'user' ORDER BY id").fetchall()
    assert kept == [("one", 0), ("two", 0), ("three", 0), ("four", 0), ("five", 0)]
    assert "echo: five" in out


async def test_retry_asks_again_for_the_last_unanswered_message_once(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Error(402, "Insufficient credits"))
    result = await chorus(home, "run", stdin="what is the capital of Peru?\n/retry\n/retry\n")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "out of credits" in lines[0]
    assert lines[1:] == ["echo: what is the capital of Peru?",
                         "There is no unanswered message to ask again; the last one was answered."]
    asked, again = fake_openrouter.chat_requests()
    assert user_texts(asked) == user_texts(again) == ["what is the capital of Peru?"]  # asked, not stored, again
    with sqlite3.connect(home.path / "chorus.db") as db:
        stored = db.execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert stored == [("user", "what is the capital of Peru?"), ("assistant", "echo: what is the capital of Peru?")]


async def test_a_rate_limited_request_is_retried_after_retry_after(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, models={"providers": {"openrouter": {"maxRetries": 2}}})
    fake_openrouter.queue(Error(429, "slow down", retry_after=0), Text("made it"))
    result = await chorus(home, "run", stdin="hi\n")
    assert "made it" in result.out
    assert len(fake_openrouter.chat_requests()) == 2


async def test_malformed_config_names_the_bad_key(home):
    home.write_config(agents={"defaults": {"model": {"primary": 5}}}, messages={"tts": {"auto": "sometimes"}})
    result = await chorus(home, "config", "validate")
    assert result.code == 2
    assert "agents.defaults.model.primary" in result.err
    assert "messages.tts.auto" in result.err and "'inbound'" in result.err

    home.write_config(agents={"defaults": {"model": {"primery": "openrouter/auto"}}})
    result = await chorus(home, "run", stdin="hi\n")
    assert result.code == 2 and "did you mean 'primary'" in result.err


async def test_no_key_and_no_terminal_explains_instead_of_prompting(home, fake_openrouter):
    home.write_config(fake_openrouter)
    result = await chorus(home, "run", stdin="hello\n")
    assert result.code == 2
    assert "chorus onboard" in result.err
    assert fake_openrouter.chat_requests() == []


async def test_key_from_environment_and_infer_json(home, fake_openrouter):
    home.write_config(fake_openrouter)
    home.env["OPENROUTER_API_KEY"] = fake_openrouter.api_key
    fake_openrouter.queue(Text("FUSION_OK"))
    result = await chorus(home, "infer", "model", "run", "--local", "--model", "openrouter/openrouter/fusion",
                          "--prompt", "Reply with exactly: FUSION_OK", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["text"] == "FUSION_OK" and data["finish_reason"] == "stop"
    assert data["usage"]["total_tokens"] > 0 and data["latency_ms"] >= 0
    assert fake_openrouter.chat_requests()[0].json["model"] == "openrouter/fusion"
    status = await chorus(home, "models", "status")
    assert "OPENROUTER_API_KEY (environment)" in status.out


async def test_models_set_keeps_a_backup_and_doctor_checks_everything(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    result = await chorus(home, "models", "set", "openrouter/anthropic/claude-sonnet-4.6")
    assert result.code == 0, result.err
    assert json5.loads(home.config.read_text())["agents"]["defaults"]["model"]["primary"] == "openrouter/anthropic/claude-sonnet-4.6"
    assert (home.path / "chorus.json5.bak").exists()
    bad = await chorus(home, "models", "set", "claude")
    assert bad.code == 2 and "known providers: openrouter" in bad.err

    doctor = await chorus(home, "doctor")
    assert doctor.code == 0, doctor.out + doctor.err
    for name in ("config", "credential", "state dir", "database", "base URL"):
        assert f"ok   {name}:" in doctor.out


async def test_a_turn_cut_by_a_crash_is_answered_once_after_the_restart(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Hang(60))
    service = await start_chorus(home, "run")
    await service.say("tell me a story")
    await eventually(fake_openrouter.chat_requests, "the turn to reach the model")
    await service.kill()  # SIGKILL: no chance to clean up, as in a power cut

    fake_openrouter.queue(Text("Once upon a time."))
    restarted = await chorus(home, "run", stdin="")
    assert restarted.code == 0, restarted.err
    assert restarted.out.count("Once upon a time.") == 1
    assert user_texts(fake_openrouter.chat_requests()[1]) == ["tell me a story"]

    again = await chorus(home, "run", stdin="")
    assert "Once upon a time." not in again.out
    assert len(fake_openrouter.chat_requests()) == 2


async def test_auth_login_rotates_the_stored_key(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.api_key = "sk-or-v1-rotated-key-0000000000"  # rotated on openrouter.ai: only the new one works
    rotated = await chorus(home, "models", "auth", "login", "--provider", "openrouter", "--method", "api-key",
                           "--openrouter-api-key", "sk-or-v1-rotated-key-0000000000")
    assert rotated.code == 0, rotated.err
    profile = json.loads((home.path / "auth-profiles.json").read_text())["profiles"]["openrouter:default"]
    assert profile["key"] == "sk-or-v1-rotated-key-0000000000"
    assert "rotated-key" not in rotated.out + rotated.err
    result = await chorus(home, "run", stdin="hi\n")  # the fake knows only the new key: it is the one used
    assert "echo: hi" in result.out


async def test_commands_cap_and_trimming_through_the_console(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, agents={"defaults": {"maxToolIterations": 1, "contextTokens": 300}})
    for model in fake_openrouter.models:
        if model["id"] == "openrouter/auto":
            model["context_length"] = None  # unknown to the catalog: agents.defaults.contextTokens applies
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "x", "count": 9})]))
    long_turns = "".join(f"turn {i} {'x' * 150}\n" for i in range(6))
    script = "/think high\n/tts always\n/tts off\ndraw\n" + long_turns
    result = await chorus(home, "run", stdin=script)
    assert result.code == 0, result.err
    # /status while a turn runs answers at once; after the restart nothing runs, so it goes in order.
    status = await chorus(home, "run", stdin="/status\n/reset\n/status\n")
    assert status.code == 0, status.err
    out = result.out + status.out
    assert "Thinking for this chat: high." in out and "Spoken replies for this chat: off." in out
    assert "stopped after 1 rounds of tool use" in out
    # The capped turn is history: its tool error is what the next turn's model call sees.
    assert tool_messages(fake_openrouter.chat_requests()[1]) == ["error: 'count' must be one of 1, 2, 3, 4, not 9"]
    last = fake_openrouter.chat_requests()[-1].json["messages"]
    assert last[0]["role"] == "system" and last[-1]["content"].startswith("turn 5 ")
    assert not any(m["content"].startswith("turn 0 ") for m in last if m["role"] == "user")
    assert "Thinking: high" in out and "Spoken replies: off" in out and "0 messages" in out.split("Started a new")[1]


def tool_messages(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "tool"]


@asynccontextmanager
async def forward_proxy(seen: list[str]):
    """An HTTP forward proxy on loopback: it notes each connection's first request line (absolute-form, as a
    client speaks to a proxy) and pipes the bytes both ways to the host that line names."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0].decode()
        seen.append(line)
        target = urlsplit(line.split()[1])
        up_reader, up_writer = await asyncio.open_connection(target.hostname, target.port)
        up_writer.write(head)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def test_the_model_is_reached_through_the_proxy_the_environment_names(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    seen: list[str] = []
    async with forward_proxy(seen) as proxy:
        fake_openrouter.queue(Text("through the proxy"))
        home.env.update(HTTP_PROXY=proxy)
        result = await chorus(home, "run", stdin="hello\n")
        assert result.code == 0, result.err
        assert result.out.strip() == "through the proxy"
        # Each connection's first request: the catalog's, then the chat's on the same kept-alive connection.
        assert seen and all(line.split()[1].startswith(fake_openrouter.base_url + "/") for line in seen), seen
        seen.clear()
        fake_openrouter.queue(Text("straight there"))
        home.env.update(NO_PROXY="127.0.0.1")  # exempted: the proxy sees nothing
        result = await chorus(home, "run", stdin="hello again\n")
        assert result.out.strip() == "straight there" and seen == []


async def test_a_model_no_provider_serves_is_told_as_such_not_as_a_moment_to_wait(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Error(404, "No endpoints found for acme/retired-model."))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        "⚠️ OpenRouter has no provider that serves this request (No endpoints found for acme/retired-model.). "
        "The model may be retired, or none of its providers meets the account's settings (privacy, provider "
        "order); pick another model with /model (`chorus models list` shows them).")
