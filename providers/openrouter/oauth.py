"""OpenRouter sign-in with OAuth PKCE (S256): browser + local callback listener, or a pasted redirect."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

from net.http import Proxy

from .client import OpenRouterClient
from .errors import OpenRouterError
from .request import ProviderSettings
from .retry import RetryPolicy

SITE = "https://openrouter.ai"
CALLBACK_PATH = "/openrouter-oauth/callback"
RERUN = "Run `chorus onboard --auth-choice openrouter-oauth` again"


class OAuthError(Exception):
    """Sign-in failed; the message says what happened and what to do."""


class StateMismatchError(OAuthError):
    pass


class AuthorizationDeniedError(OAuthError):
    pass


class CallbackTimeoutError(OAuthError):
    pass


class ExchangeError(OAuthError):
    pass


@dataclass(frozen=True, slots=True)
class PkcePair:
    verifier: str = field(repr=False)
    challenge: str

    @classmethod
    def new(cls) -> PkcePair:
        """A random verifier (64 URL-safe chars) and its S256 challenge."""
        verifier = secrets.token_urlsafe(48)
        return cls(verifier, s256(verifier))


@dataclass(frozen=True, slots=True)
class OAuthResult:
    key: str = field(repr=False)
    user_id: str | None = None


def s256(verifier: str) -> str:
    """The PKCE S256 challenge: base64url(sha256(verifier)) without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def redirect_uri(state: str, port: int = 3000) -> str:
    return f"http://localhost:{port}{CALLBACK_PATH}?{urlencode({'state': state})}"


def authorize_url(redirect: str, challenge: str, *, site: str = SITE) -> str:
    """The page the user signs in on."""
    query = urlencode({"callback_url": redirect, "code_challenge": challenge, "code_challenge_method": "S256"})
    return f"{site.rstrip('/')}/auth?{query}"


def is_headless(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> bool:
    """No browser can open here: an SSH session, or Linux without a display."""
    if env.get("SSH_CONNECTION") or env.get("SSH_TTY"):
        return True
    return platform.startswith("linux") and not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"))


def code_from_query(query: Mapping[str, list[str]], expected_state: str) -> str:
    """The authorization code from a callback's query, after checking state and errors."""
    if query.get("error"):
        reason = (query.get("error_description") or query["error"])[0]
        raise AuthorizationDeniedError(f"OpenRouter did not authorize Chorus ({reason}). {RERUN} and approve the request.")
    if (query.get("state") or [""])[0] != expected_state:
        raise StateMismatchError(
            f"The sign-in answer does not belong to this sign-in (state mismatch), so it was refused. {RERUN}."
        )
    code = (query.get("code") or [""])[0]
    if not code:
        raise OAuthError(f"The sign-in answer carried no code. {RERUN}.")
    return code


def parse_pasted_redirect(text: str, expected_state: str) -> str:
    """The code from a pasted redirect URL, or just its query string."""
    text = text.strip()
    query = urlsplit(text).query if "://" in text else text.lstrip("?")
    return code_from_query(parse_qs(query), expected_state)


_PAGE = "<!doctype html><meta charset=utf-8><title>Chorus</title><p style='font:16px sans-serif'>{}</p>"


class CallbackListener:
    """The localhost listener the browser is redirected to; bound on enter, so it is ready before the browser opens."""

    def __init__(self, state: str, *, port: int = 3000) -> None:
        self.state = state
        self.port = port
        self._outcome: asyncio.Future[str] | None = None
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> CallbackListener:
        self._outcome = asyncio.get_running_loop().create_future()
        try:
            self._server = await asyncio.start_server(self._serve, "localhost", self.port)
        except OSError as exc:
            raise OAuthError(
                f"Port {self.port} is busy ({exc.strerror}), so the sign-in callback cannot be received: "
                "stop what uses it, or use --headless to paste the redirect URL instead."
            ) from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def code(self, timeout: float = 300.0) -> str:
        """The code of the first real callback (state checked), or a sentence saying why there is none."""
        assert self._outcome is not None, "use the listener as an async context manager"
        try:
            return await asyncio.wait_for(asyncio.shield(self._outcome), timeout)
        except asyncio.TimeoutError:
            minutes = f"{timeout / 60:g} minutes" if timeout >= 60 else f"{timeout:g} seconds"
            raise CallbackTimeoutError(
                f"Sign-in timed out after {minutes} with no answer from the browser. {RERUN}, "
                "or use --headless to paste the redirect URL."
            ) from None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        outcome = self._outcome
        assert outcome is not None
        try:
            request_line = (await asyncio.wait_for(reader.readline(), 10)).decode("latin-1")
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # headers: nothing in them matters here
            parts = request_line.split(" ")
            target = urlsplit(parts[1]) if len(parts) > 1 else urlsplit("/")
            if target.path != CALLBACK_PATH or outcome.done():
                await _answer(writer, 404, "Not found.")
                return
            try:
                code = code_from_query(parse_qs(target.query), self.state)
            except OAuthError as exc:
                await _answer(writer, 400, f"Sign-in failed: {exc}")
                outcome.set_exception(exc)
                return
            await _answer(writer, 200, "Chorus is signed in to OpenRouter. You can close this window.")
            outcome.set_result(code)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


async def wait_for_callback(state: str, *, port: int = 3000, timeout: float = 300.0) -> str:
    """Listen on localhost for the browser's redirect and return its code."""
    async with CallbackListener(state, port=port) as listener:
        return await listener.code(timeout)


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = _PAGE.format(text.replace("<", "&lt;")).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
    )
    await writer.drain()


async def exchange_code(
    code: str, verifier: str, *, base_url: str = SITE + "/api/v1", timeout: float = 30.0, proxy: Proxy | None = None
) -> OAuthResult:
    """Trade the code for a key at ``POST /auth/keys``."""
    body = {"code": code, "code_verifier": verifier, "code_challenge_method": "S256"}
    try:  # the client every call to OpenRouter takes: its attribution headers, trust and proxy; tried once
        async with OpenRouterClient(None, ProviderSettings(base_url=base_url), timeout=timeout, proxy=proxy,
                                    retry=RetryPolicy(attempts=1)) as client:
            resp = await client.fetch("POST", "auth/keys", json=body)
    except OpenRouterError as exc:
        raise ExchangeError(f"Could not reach OpenRouter to finish sign-in ({exc}). {RERUN}.") from None
    status, answer = resp.status, resp.content
    if status != 200:
        raise ExchangeError(
            f"OpenRouter refused the sign-in code (HTTP {status}); codes work once and expire quickly. {RERUN}."
        )
    try:
        data = json.loads(answer)
        key = data["key"]
    except (ValueError, KeyError, TypeError):
        raise ExchangeError(f"OpenRouter's answer to the sign-in had no key. {RERUN}.") from None
    return OAuthResult(str(key), data.get("user_id"))


async def login(
    *,
    base_url: str,
    open_browser: Callable[[str], bool],
    read_line: Callable[[str], Awaitable[str]],
    say: Callable[[str], None],
    headless: bool,
    port: int = 3000,
    timeout: float = 300.0,
    site: str = SITE,
    proxy: Proxy | None = None,
) -> OAuthResult:
    """The whole sign-in: browser and local listener, or (headless) a pasted redirect URL."""
    pkce = PkcePair.new()
    state = secrets.token_urlsafe(16)
    url = authorize_url(redirect_uri(state, port), pkce.challenge, site=site)
    if headless:
        say(f"Open this URL in a browser on any machine and sign in:\n\n  {url}\n")
        say("The browser then tries to open a localhost page that will not load; copy that page's full URL.")
        code = parse_pasted_redirect(await read_line("Paste the redirect URL here: "), state)
    else:
        async with CallbackListener(state, port=port) as listener:
            # An opener may report success while no browser appears (remote desktop, no default browser set):
            # the URL is always shown, so the user can open it by hand.
            lead = "A browser window should open; if none does, open" if open_browser(url) else "Open"
            say(f"{lead} this URL in your browser to sign in:\n\n  {url}\n")
            say("Waiting for you to sign in in the browser…")
            code = await listener.code(timeout)
    return await exchange_code(code, pkce.verifier, base_url=base_url, proxy=proxy)
