"""OAuth PKCE sign-in: the real callback listener driven over HTTP, the exchange against the fake OpenRouter."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
import sys
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from providers.openrouter import oauth
from tests.conftest import chorus
from tests.fakes.openrouter import FakeOpenRouter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pkce_pair_is_random_s256_and_hides_the_verifier():
    pair = oauth.PkcePair.new()
    assert 43 <= len(pair.verifier) <= 128 and pair.verifier != oauth.PkcePair.new().verifier
    assert len(pair.challenge) == 43 and "=" not in pair.challenge and pair.challenge == oauth.s256(pair.verifier)
    assert pair.verifier not in repr(pair)
    # The exchange test below proves the challenge against the fake's own S256 check.


def test_authorize_url_carries_the_callback_and_challenge():
    url = oauth.authorize_url(oauth.redirect_uri("st4te"), "chal")
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://openrouter.ai/auth?")
    assert query["callback_url"] == ["http://localhost:3000/openrouter-oauth/callback?state=st4te"]
    assert query["code_challenge"] == ["chal"] and query["code_challenge_method"] == ["S256"]


def test_pasted_redirects_full_url_or_query_string():
    assert oauth.parse_pasted_redirect("http://localhost:3000/openrouter-oauth/callback?state=s&code=abc", "s") == "abc"
    assert oauth.parse_pasted_redirect("  ?code=abc&state=s ", "s") == "abc"
    assert oauth.parse_pasted_redirect("code=abc&state=s", "s") == "abc"
    with pytest.raises(oauth.StateMismatchError, match="state mismatch"):
        oauth.parse_pasted_redirect("code=abc&state=other", "s")
    with pytest.raises(oauth.AuthorizationDeniedError, match="user said no"):
        oauth.parse_pasted_redirect("error=access_denied&error_description=user+said+no&state=s", "s")


def test_headless_detection():
    assert oauth.is_headless({"SSH_CONNECTION": "1 2 3 4"}, "darwin")
    assert oauth.is_headless({}, "linux")
    assert not oauth.is_headless({"DISPLAY": ":0"}, "linux")
    assert not oauth.is_headless({}, "darwin")


async def test_listener_takes_the_callback_and_answers_the_browser():
    port = free_port()
    async with oauth.CallbackListener("s1", port=port) as listener, httpx.AsyncClient() as browser:
        base = f"http://localhost:{port}"
        assert (await browser.get(base + "/favicon.ico")).status_code == 404
        page = await browser.get(base + "/openrouter-oauth/callback?state=s1&code=the-code")
        assert page.status_code == 200 and "You can close this window" in page.text
        assert await listener.code(5) == "the-code"


@pytest.mark.parametrize("query, error, words", [
    ("state=wrong&code=c", oauth.StateMismatchError, "state mismatch"),
    ("state=s1&error=access_denied", oauth.AuthorizationDeniedError, "access_denied"),
])
async def test_listener_refuses_a_foreign_or_failed_callback(query, error, words):
    port = free_port()
    async with oauth.CallbackListener("s1", port=port) as listener, httpx.AsyncClient() as browser:
        page = await browser.get(f"http://localhost:{port}/openrouter-oauth/callback?{query}")
        assert page.status_code == 400 and "Sign-in failed" in page.text
        with pytest.raises(error, match=words):
            await listener.code(5)


async def test_listener_times_out_and_a_busy_port_is_explained():
    port = free_port()
    with pytest.raises(oauth.CallbackTimeoutError, match="timed out after 0.2 seconds"):
        await oauth.wait_for_callback("s", port=port, timeout=0.2)
    with socket.socket() as taken:
        taken.bind(("localhost", port))
        taken.listen()
        with pytest.raises(oauth.OAuthError, match=f"Port {port} is busy"):
            await oauth.wait_for_callback("s", port=port, timeout=1)


def sign_in(fake: FakeOpenRouter, url: str) -> asyncio.Task:
    """Play the user at the sign-in URL: sign in at OpenRouter (the fake issues a code), follow the redirect."""
    query = parse_qs(urlsplit(url).query)
    code = fake.issue_oauth_code(query["code_challenge"][0])

    async def follow() -> None:
        async with httpx.AsyncClient() as http:
            await http.get(f"{query['callback_url'][0]}&code={code}")

    return asyncio.get_running_loop().create_task(follow())


async def never(prompt: str) -> str:
    raise AssertionError("not headless: nothing should be read")


async def test_browser_login_end_to_end(fake_openrouter: FakeOpenRouter):
    port = free_port()
    visits: list[asyncio.Task] = []

    def browser(url: str) -> bool:
        visits.append(sign_in(fake_openrouter, url))
        return True

    said: list[str] = []
    result = await oauth.login(base_url=fake_openrouter.base_url, open_browser=browser, read_line=never,
                               say=said.append, headless=False, port=port, timeout=5)
    await asyncio.gather(*visits)
    assert result.key == fake_openrouter.oauth_key and result.user_id == "user_fake"
    assert result.key not in repr(result)
    (exchange,) = fake_openrouter.requests_to("/auth/keys")
    assert exchange.json["code_challenge_method"] == "S256"


@pytest.mark.parametrize("failure", ["refused", "unreachable"])
async def test_a_failed_exchange_says_what_to_do(fake_openrouter, failure):
    if failure == "refused":
        coro = oauth.exchange_code("unknown-code", "verifier", base_url=fake_openrouter.base_url)
    else:
        coro = oauth.exchange_code("c", "v", base_url="http://127.0.0.1:9/api/v1", timeout=2)  # nothing listens
    with pytest.raises(oauth.ExchangeError, match="chorus onboard --auth-choice openrouter-oauth"):
        await coro


async def test_headless_onboarding_through_the_cli(home, fake_openrouter):
    home.write_config(fake_openrouter)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "onboard", "--auth-choice", "openrouter-oauth", "--headless",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=home.env, cwd=str(home.path.parent),
    )
    url = ""
    while not url:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line, "the CLI ended before printing the sign-in URL"
        if "/auth?" in line:
            url = line.strip()
    query = parse_qs(urlsplit(url).query)
    code = fake_openrouter.issue_oauth_code(query["code_challenge"][0])
    pasted = f"{query['callback_url'][0]}&code={code}\n"
    out, err = await asyncio.wait_for(proc.communicate(pasted.encode()), 30)
    assert proc.returncode == 0, err.decode()
    profiles = home.path / "auth-profiles.json"
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    profile = json.loads(profiles.read_text())["profiles"]["openrouter:default"]
    assert profile["key"] == fake_openrouter.oauth_key and profile["method"] == "oauth"
    assert fake_openrouter.oauth_key not in out.decode() + err.decode()
    status = await chorus(home, "models", "status")
    assert "openrouter/auto" in status.out and "openrouter:default" in status.out


async def test_the_sign_in_url_is_shown_even_when_the_opener_claims_success(fake_openrouter: FakeOpenRouter):
    port = free_port()
    said: list[str] = []
    visits: list[asyncio.Task] = []

    def silent_opener(url: str) -> bool:
        return True  # reports success, but no browser ever appears

    def user_reads(line: str) -> None:
        """Play the user: copy the printed URL into a browser by hand, sign in, follow the redirect."""
        said.append(line)
        printed = [word for word in line.split() if word.startswith("https://openrouter.ai/auth?")]
        visits.extend(sign_in(fake_openrouter, url) for url in printed)

    result = await oauth.login(base_url=fake_openrouter.base_url, open_browser=silent_opener, read_line=never,
                               say=user_reads, headless=False, port=port, timeout=5)
    await asyncio.gather(*visits)
    assert result.key == fake_openrouter.oauth_key
    assert said[0].startswith("A browser window should open; if none does, open this URL in your browser to sign in:")
    assert said[1] == "Waiting for you to sign in in the browser…"
