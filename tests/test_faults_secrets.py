"""Issue 8, "Secrets": no key or token ever reaches a chat, an error line or a log, and onboarding and
``doctor`` check the key with OpenRouter itself. Through the real CLI and the fake OpenRouter."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from tests.conftest import Home, chorus, onboarded
from tests.fakes.openrouter import EchoAuth, FakeOpenRouter

AUTH_ADVICE = "Run `chorus onboard` or `chorus models auth login --provider openrouter` to store a valid key."


async def test_an_error_body_echoing_the_key_reaches_the_chat_masked(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(EchoAuth(401))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (  # then, maybe, a note that the turn is left out of later requests
        "⚠️ OpenRouter did not accept the API key (it is wrong or was revoked) "
        f"(Authorization header 'Bearer ***' was refused for key ***). {AUTH_ADVICE}"
    )
    assert fake_openrouter.api_key not in result.out + result.err
    assert "0123456789abcdef" not in result.out + result.err  # no tail of the key either


async def test_a_key_of_any_shape_is_masked_because_chorus_knows_it(home):
    # A proxy's own key has no sk-or- shape: only knowing it as the configured key can mask it.
    async with FakeOpenRouter(api_key="proxy-7f3a9c21e8b4d605") as fake:
        home.write_config(fake, models={"providers": {"openrouter": {"apiKey": fake.api_key}}})
        fake.queue(EchoAuth(400))
        result = await chorus(home, "run", stdin="hi\n")
        fake.assert_clean()
    assert result.out.splitlines()[0] == (
        "⚠️ OpenRouter refused the request as malformed (Authorization header 'Bearer ***' was refused for key ***). "
        "Check the model name and the request settings in the config."
    )
    assert "proxy-7f3a9c21e8b4d605" not in result.out + result.err


HIDDEN = "found a value that looks like a key or token (not shown: was it pasted into the wrong place?)"


async def test_a_key_pasted_into_the_wrong_config_slot_is_never_echoed(home):
    key, token = "sk-or-v1-" + "0123456789abcdef" * 4, "x9Kq2mZ7vB4nR8tY1wE6uI3oP5aS0dF7gH2j"
    home.path.mkdir(parents=True)
    home.config.write_text(
        f'{{ models: {{ providers: {{ openrouter: {{ baseUrl: "{key}" }} }} }},\n'
        f'  agents: {{ defaults: {{ model: {{ primary: "{key}" }} }} }},\n'
        f'  channels: {{ discord: {{ dmPolicy: "{token}" }}, telegram: {{ allowFrom: [{{ id: "{token}" }}] }} }} }}\n'
    )
    result = await chorus(home, "config", "validate")
    assert result.code == 2
    assert result.err.splitlines()[1:] == [
        f"models.providers.openrouter.baseUrl: {HIDDEN}; must be an http(s) URL such as https://openrouter.ai/api/v1",
        f"agents.defaults.model.primary: {HIDDEN}; model ref '***' is not of the form openrouter/<model id> "
        "(known providers: openrouter)",
        "channels.telegram.allowFrom.0: found {'id': '***'} (object); input should be a valid string / "
        "found {'id': '***'} (object); input should be a valid integer",
        f"channels.discord.dmPolicy: {HIDDEN}; allowed: 'pairing', 'allowlist', 'open' or 'disabled'",
    ]
    assert key not in result.err and token not in result.err and "0123456789abcdef" not in result.err


@pytest.mark.parametrize("value, secret", [
    ("sk-or-v1-0123456789abcdef", True), ("123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw", True),
    ("MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.abcdefghijklmnopqrstuvwxyz0123", True),
    ("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", True),
    ("openrouter/google/gemini-3.1-flash-image-preview", False), ("https://openrouter.ai/api/v1", False),
    ("supercalifragilisticexpialidocious2024", False), ("You are Chorus, a helpful assistant.", False),
])
def test_what_looks_like_a_secret(value, secret):
    from providers.redact import looks_secret

    assert looks_secret(value) is secret


def doctor_line(out: str, name: str) -> str:
    (line,) = [ln for ln in out.splitlines() if ln.split(None, 1)[-1].startswith(f"{name}:")]
    return line


async def test_doctor_checks_that_openrouter_accepts_the_key(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    good = await chorus(home, "doctor")
    assert good.code == 0, good.out
    assert doctor_line(good.out, "base URL") == f"ok   base URL: {fake_openrouter.base_url} lists 10 models"
    assert doctor_line(good.out, "key") == "ok   key: accepted by OpenRouter ($74.50 of its $100.00 limit left)"
    assert [r.headers["Authorization"] for r in fake_openrouter.requests_to("/key")] == [f"Bearer {fake_openrouter.api_key}"] * 2

    revoked = "sk-or-v1-" + "ab" * 32
    home.env["OPENROUTER_API_KEY"] = revoked
    (home.path / "auth-profiles.json").unlink()
    bad = await chorus(home, "doctor")
    assert bad.code == 1
    assert doctor_line(bad.out, "key") == (
        "FAIL  key: OpenRouter refused the key from OPENROUTER_API_KEY (environment) (HTTP 401): store a valid key with "
        "`chorus onboard` or `chorus models auth login --provider openrouter` (keys: https://openrouter.ai/settings/keys)"
    )
    assert revoked not in bad.out + bad.err


FIX_BASE = "check the network, or set models.providers.openrouter.baseUrl to https://openrouter.ai/api/v1 (or your proxy's OpenRouter API URL)"


@pytest.mark.parametrize("path, status", [("/nothing-here", 404), ("/files", 200)])
async def test_doctor_fails_a_base_url_that_is_not_openrouter(home, fake_openrouter, path, status):
    await onboarded(home, fake_openrouter)
    asked = len(fake_openrouter.requests_to("/key"))  # once by onboarding
    base = fake_openrouter.origin + path  # a 404 page, and a server that answers 200 with a video file
    home.write_config(models={"providers": {"openrouter": {"baseUrl": base}}})
    result = await chorus(home, "doctor")
    assert result.code == 1
    assert doctor_line(result.out, "base URL") == (
        f"FAIL  base URL: {base}/models answered HTTP {status} without OpenRouter's model list: "
        f"this is not an OpenRouter API; {FIX_BASE}"
    )
    assert doctor_line(result.out, "key") == "FAIL  key: not checked: fix the base URL first"
    assert len(fake_openrouter.requests_to("/key")) == asked


async def test_doctor_explains_an_unreachable_base_url(home, unused_tcp_port):
    home.write_config(models={"providers": {"openrouter": {"baseUrl": f"http://127.0.0.1:{unused_tcp_port}/api/v1"}}})
    result = await chorus(home, "doctor")
    assert result.code == 1
    assert doctor_line(result.out, "base URL") == (
        f"FAIL  base URL: http://127.0.0.1:{unused_tcp_port}/api/v1 is unreachable (cannot connect to 127.0.0.1:{unused_tcp_port}: Connection refused): "
        f"{FIX_BASE}"
    )


# ---- onboarding --------------------------------------------------------------------------------

NOT_A_KEY = "that is not an OpenRouter API key (they look like sk-or-v1-…; copy yours from https://openrouter.ai/settings/keys)"
REFUSED = "OpenRouter did not accept that key (HTTP 401): it is wrong or was revoked (https://openrouter.ai/settings/keys)"


def onboard_args(key: str) -> tuple[str, ...]:
    return ("onboard", "--auth-choice", "openrouter-api-key", "--openrouter-api-key", key)


async def test_onboarding_on_a_pipe_refuses_a_malformed_or_refused_key(home, fake_openrouter):
    home.write_config(fake_openrouter)
    wrong_shape = await chorus(home, *onboard_args("hunter2-my-password"))
    assert (wrong_shape.code, wrong_shape.err) == (2, f"error: {NOT_A_KEY}; nothing was saved\n")
    assert not fake_openrouter.requests_to("/key")  # a malformed key is not even sent

    revoked = "sk-or-v1-" + "cd" * 32
    refused = await chorus(home, *onboard_args(revoked))
    assert (refused.code, refused.err) == (2, f"error: {REFUSED}; nothing was saved\n")
    assert [r.headers["Authorization"] for r in fake_openrouter.requests_to("/key")] == [f"Bearer {revoked}"]
    assert not (home.path / "auth-profiles.json").exists()
    assert "hunter2" not in wrong_shape.out + refused.out and revoked not in refused.out + refused.err

    accepted = await chorus(home, *onboard_args(fake_openrouter.api_key))
    assert accepted.code == 0, accepted.err
    assert json.loads((home.path / "auth-profiles.json").read_text())["profiles"]["openrouter:default"]["key"] == \
        fake_openrouter.api_key


async def test_onboarding_offline_saves_a_well_formed_key_with_a_warning(home, unused_tcp_port):
    base = f"http://127.0.0.1:{unused_tcp_port}/api/v1"
    home.write_config(models={"providers": {"openrouter": {"baseUrl": base}}})
    result = await chorus(home, *onboard_args("sk-or-v1-" + "ef" * 32))
    assert result.code == 0, result.err
    assert result.err == (f"warning: could not check the key with OpenRouter ({base} is unreachable); saving it anyway. "
                          "`chorus doctor` checks it once OpenRouter can be reached.\n")
    assert (home.path / "auth-profiles.json").exists()


def on_terminal(home: Home, *args: str, script: list[tuple[str, str]], timeout: float = 30) -> tuple[int, str]:
    """Run ``chorus`` on a pseudo-terminal, answering each prompt of ``script`` (expected text, answer)
    only once it has appeared (getpass flushes typed-ahead input). Returns (exit code, everything shown)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in home.env.items() if k != "CI"}
    proc = subprocess.Popen([sys.executable, "-m", "bot", *args], stdin=slave, stdout=slave, stderr=slave, env=env,
                            cwd=str(home.path.parent), start_new_session=True)  # no controlling tty: getpass uses stdin
    os.close(slave)
    shown, deadline = b"", time.monotonic() + timeout
    pending = list(script)
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in shown:
                shown = shown.replace(pending[0][0].encode(), b"<asked>", 1)  # so a repeated prompt is waited for anew
                os.write(master, pending.pop(0)[1].encode() + b"\n")
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            elif proc.poll() is not None and not pending:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert not pending, f"never asked {pending[0][0]!r}; the terminal showed:\n{shown.decode(errors='replace')}"
    return code, shown.decode(errors="replace").replace("\r\n", "\n")


CHOICE = "Sign in with OpenRouter in the browser (o) or paste an API key (k)? [k] "
KEY_PROMPT = "OpenRouter API key (input hidden; from https://openrouter.ai/settings/keys): "


async def test_onboarding_on_a_terminal_asks_again_until_the_answers_are_usable(home, fake_openrouter):
    home.write_config(fake_openrouter)
    revoked = "sk-or-v1-" + "cd" * 32
    code, shown = await asyncio.to_thread(on_terminal, home, "onboard", script=[
        (CHOICE, "maybe"), (CHOICE, "k"),
        (KEY_PROMPT, "not a key"), (KEY_PROMPT, revoked), (KEY_PROMPT, fake_openrouter.api_key),
    ])
    assert code == 0, shown
    assert "Please answer o (browser) or k (API key), not 'maybe'." in shown
    assert "that key contains spaces; paste it exactly as OpenRouter shows it. Try again." in shown
    assert f"{REFUSED}. Try again." in shown
    assert "Saved the OpenRouter key in profile openrouter:default" in shown
    assert revoked not in shown and fake_openrouter.api_key not in shown  # hidden input is not echoed
    profile = json.loads((home.path / "auth-profiles.json").read_text())["profiles"]["openrouter:default"]
    assert (profile["key"], profile["method"]) == (fake_openrouter.api_key, "api-key")


async def test_doctor_on_a_proxy_without_a_key_endpoint_says_the_key_was_not_checked(home):
    """A proxy may speak the chat API without OpenRouter's /key: that is not a failure of the key."""
    from aiohttp import web

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "openai/gpt-4o-mini"}]})

    app = web.Application()
    app.add_routes([web.get("/v1/models", models)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1"  # type: ignore[union-attr]
    try:
        home.write_config(models={"providers": {"openrouter": {"baseUrl": base, "apiKey": "sk-or-v1-" + "12" * 32}}})
        result = await chorus(home, "doctor")
    finally:
        await runner.cleanup()
    assert doctor_line(result.out, "base URL") == f"ok   base URL: {base} lists 1 model"
    assert doctor_line(result.out, "key") == (
        f"ok   key: not checked: {base} has no /key endpoint (a proxy?); the first chat will tell")


async def test_run_without_a_key_onboards_and_goes_straight_into_the_console(home, fake_openrouter):
    home.write_config(fake_openrouter)
    code, shown = await asyncio.to_thread(on_terminal, home, "run", script=[
        (CHOICE, "k"), (KEY_PROMPT, fake_openrouter.api_key), ("you> ", "/quit")])
    assert code == 0, shown
    assert "Saved the OpenRouter key in profile openrouter:default" in shown
    assert "Starting Chorus now." in shown
    assert "Next:" not in shown, shown  # not "run it next" while the console is already opening


async def test_doctor_does_not_advise_setting_the_base_url_to_the_value_it_has(home, unused_tcp_port):
    """The default URL unreachable (here: through a proxy that is down, so nothing leaves this machine)."""
    home.write_config(models={"providers": {"openrouter": {"apiKey": "sk-or-v1-" + "12" * 32}}})
    home.env["HTTPS_PROXY"] = f"http://127.0.0.1:{unused_tcp_port}"
    result = await chorus(home, "doctor")
    line = doctor_line(result.out, "base URL")
    assert line.startswith("FAIL  base URL: https://openrouter.ai/api/v1 is unreachable ("), line
    assert line.endswith("): check the network, and HTTPS_PROXY if this machine needs a proxy"), line
