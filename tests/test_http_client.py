"""The HTTP stack of the Bot API and OpenRouter clients against small misbehaving servers on 127.0.0.1: each defect
that retired net/http1.py (D1..D6 and the smaller ones) has its test here, beside the production
defaults and the ``unsent`` fate the outbox relies on."""

from __future__ import annotations

import asyncio
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from bot.config import ConfigError, load_dotenv, parse_config
from channels.telegram.api import InputFile, TelegramAPI, TelegramError
from net import http
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import ConnectionFailedError
from providers.openrouter.request import ProviderSettings
from providers.openrouter.retry import RetryPolicy
from tests.fakes.proxies import HTTPProxy, SOCKS5Proxy
from tests.fakes.tls import make_certificate

TOKEN = "123456:SECRET-token-value"
OK = b'{"ok":true,"result":{"message_id":1}}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A raw TCP server running ``handler`` per connection; yields its root URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (head and Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
    return head + await reader.readexactly(length)


def answer(body: bytes = OK, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


async def failure(api: TelegramAPI, method: str = "sendMessage", **params: object) -> TelegramError:
    """The ``TelegramError`` a call ends with, within a bound that only a hang reaches."""
    with pytest.raises(TelegramError) as caught:
        async with asyncio.timeout(30):
            await api.call(method, **(params or {"chat_id": 5, "text": "hi"}))
    await api.aclose()
    assert TOKEN.split(":")[1] not in str(caught.value)
    return caught.value


# ---- D1: a POST is sent once ------------------------------------------------------------------------------


async def test_a_post_is_sent_once_when_the_connection_drops_after_the_server_read_it():
    """D1: http1 sent it again on every idle connection and a fresh one (4 times); now it reaches the server once
    and its fate is told as unknown (not ``unsent``: it may have been delivered)."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await read_request(reader):
            received.append(request)
            if b"sendMessage" in request:
                return  # read whole, never answered: the connection closes
            writer.write(answer())
            await writer.drain()

    async with server(handler) as root:
        api = TelegramAPI(TOKEN, root)
        await asyncio.gather(*(api.call("getMe") for _ in range(3)))  # three idle connections kept for reuse
        error = await failure(api)
    assert [r.split(b" ")[1].rsplit(b"/", 1)[1] for r in received].count(b"sendMessage") == 1
    assert not error.answered and not error.unsent


# ---- D2 and the deadline of every call --------------------------------------------------------------------


async def test_an_upload_to_a_server_that_stops_reading_fails_by_its_deadline():
    """D2: an 8 MB sendDocument to a server that reads its head and nothing more is ended by its deadline (1 s,
    plus 8 MB at a rate given for the test) rather than waiting forever (http1 was still waiting after 20 s)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(3600)

    async with server(handler) as root:
        api = TelegramAPI(TOKEN, root, timeout=1, upload_rate=8_000_000)
        error = await failure(api, "sendDocument", chat_id=5, document=InputFile(b"x" * 8_000_000, "big.bin"))
    assert "deadline" in error.description and error.unsent  # the body never reached it whole


async def test_an_answer_that_trickles_is_ended_by_the_deadline_not_kept_alive_by_each_byte():
    """Issue 27 point 5: headers, then one byte every 0.3 s forever; a bound on silence would never fire."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
        while True:
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.3)

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root, timeout=1.5))
    assert "deadline" in error.description and not error.unsent and not error.answered


async def test_a_long_poll_is_given_its_timeout_plus_the_margin():
    """A getUpdates with timeout=1 answered after 1.5 s is an answer (the margin), not a failure, even with a
    0.5 s default deadline for other calls."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(1.5)
        writer.write(answer(b'{"ok":true,"result":[]}'))
        await writer.drain()

    async with server(handler) as root:
        api = TelegramAPI(TOKEN, root, timeout=0.5)
        assert await api.call("getUpdates", timeout=1) == []
        await api.aclose()


# ---- unsent: both sides ------------------------------------------------------------------------------------


async def test_unsent_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = await failure(TelegramAPI(TOKEN, f"http://127.0.0.1:{port}"))
    assert error.unsent and not error.answered and "Connection refused" in error.description


async def test_unsent_when_the_tls_handshake_fails(tmp_path):
    """A certificate nothing trusts: the handshake fails before a byte of the request is sent."""
    cert, key = make_certificate("localhost", tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(handler, tls) as root:
        error = await failure(TelegramAPI(TOKEN, root))
    assert error.unsent and "certificate" in error.description.lower()


async def test_unsent_when_the_proxy_refuses():
    async with HTTPProxy(login=("u", "right")) as proxy:
        error = await failure(TelegramAPI(TOKEN, "https://api.telegram.org",
                                          proxy=http.Proxy(proxy.url_with_login("u", "wrong"), "test")))
    assert error.unsent and "407" in error.description
    assert "wrong" not in str(error)


async def test_unsent_when_the_connection_is_reset_while_the_request_is_written():
    """The server resets the connection after the head, while 8 MB of body are still going out: the request
    never reached it whole, so it is certainly unsent."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
        writer.transport.abort()

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root), "sendDocument", chat_id=5,
                              document=InputFile(b"x" * 8_000_000, "big.bin"))
    assert error.unsent, error.description


async def test_not_unsent_when_the_server_read_it_and_closed_without_answering():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root))
    assert not error.unsent and not error.answered


async def test_an_answered_error_is_neither_unsent_nor_unknown():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = b'{"ok":false,"error_code":400,"description":"Bad Request: chat not found"}'
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root))
    assert error.answered and error.code == 400 and not error.unsent


# ---- the smaller defects ------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n",  # malformed length: http1 waited for the timeout
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
])
async def test_a_malformed_answer_fails_at_once_as_an_unanswered_call(head):
    """Refused as it arrives, within the deadline's bound of 30 s given (a hang fails the test)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(3600)

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root, timeout=30))
    assert not error.answered and "deadline" not in error.description


async def test_a_flood_of_interim_heads_is_survived_and_ended_by_the_deadline():
    """20,000 ``100 Continue`` heads and then nothing: http1 recursed once per head until RecursionError."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 20000)
        await writer.drain()
        await asyncio.sleep(3600)

    async with server(handler) as root:
        error = await failure(TelegramAPI(TOKEN, root, timeout=2))
    assert "deadline" in error.description and not error.unsent


def test_a_line_break_in_a_secret_is_refused_when_the_config_is_loaded_naming_the_key():
    for section, key in ((("channels", "telegram"), "botToken"), (("models", "providers", "openrouter"), "apiKey"),
                         (("channels", "discord"), "token")):
        raw: dict = {}
        node = raw
        for part in section:
            node = node.setdefault(part, {})
        node[key] = "123:abc\r\nX-Injected: yes"
        with pytest.raises(ConfigError) as refused:
            parse_config(raw, env={})
        assert f"{'.'.join(section)}.{key}: found a value (hidden: it is a secret); holds a line break" in str(refused.value)
        assert "X-Injected" not in str(refused.value)


def test_a_proxy_url_is_checked_at_load_and_its_login_never_shown():
    with pytest.raises(ConfigError) as refused:
        parse_config({"channels": {"telegram": {"proxy": "ftp://me:hunter2@proxy:21"}}}, env={})
    assert "channels.telegram.proxy" in str(refused.value) and "hunter2" not in str(refused.value)
    config, _ = parse_config({"channels": {"telegram": {"proxy": "socks5h://me:hunter2@proxy:1080"}}}, env={})
    assert http.Proxy(config.channels.telegram.proxy, "x").shown == "socks5h://***@proxy:1080"


def test_dotenv_values_lose_their_quotes_and_comments(tmp_path):
    env = tmp_path / ".env"
    env.write_text('TOKEN="123:abc" # the bot\nexport KEY=\'sk-or-1\'\nPLAIN=value # note\nHASH="a#b"\n')
    assert load_dotenv(env) == {"TOKEN": "123:abc", "KEY": "sk-or-1", "PLAIN": "value", "HASH": "a#b"}


# ---- production defaults --------------------------------------------------------------------------------------


async def test_the_production_session_verifies_tls_and_closes_idle_connections():
    """What ``chorus run`` gets, not what tests pass in: verification on, host names checked, certifi's bundle
    loaded, idle connections closed after a bounded time, no cap that would make a turn wait for a connection."""
    session = http.session("https://api.telegram.org", proxy=None)
    try:
        connector = session.connector
        context = connector._ssl  # type: ignore[union-attr]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
        assert context.cert_store_stats()["x509_ca"] > 100  # certifi's bundle, not an empty store
        assert connector._keepalive_timeout == http.KEEPALIVE_TIMEOUT < 60  # type: ignore[union-attr]
        assert connector.limit == 0 and connector.limit_per_host == 0
    finally:
        await session.close()


async def test_a_private_ca_named_by_ssl_cert_file_is_trusted_by_both_clients(tmp_path, monkeypatch, fake_openrouter):
    """D5: a company's own CA, given only as SSL_CERT_FILE (no tls argument): the OpenRouter client reaches
    https://openrouter.ai (its fake) and the Telegram client an https Bot API root; without it, neither does."""
    dial = await fake_openrouter.dial_as("openrouter.ai", tmp_path)
    bundle = tmp_path / "company-ca.pem"
    cert, key = make_certificate("localhost", tmp_path)
    bundle.write_bytes((tmp_path / "openrouter.ai-cert.pem").read_bytes() + cert.read_bytes())
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def bot_api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer())
        await writer.drain()

    async with server(bot_api, served) as root:
        for trusted in (False, True):
            monkeypatch.setenv("SSL_CERT_FILE", str(bundle) if trusted else "")
            async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(), retry=RetryPolicy(attempts=1),
                                        connect_to=dial["connect_to"]) as client:
                if trusted:
                    assert await client.models()
                else:
                    with pytest.raises(ConnectionFailedError, match="certificate"):
                        await client.models()
            api = TelegramAPI(TOKEN, root.replace("127.0.0.1", "localhost"))
            if trusted:
                assert await api.call("sendMessage", chat_id=5, text="hi") == {"message_id": 1}
                await api.aclose()
            else:
                assert (await failure(api)).unsent


async def test_a_proxy_login_goes_to_the_proxy_only_never_inside_the_tunnel(tmp_path, fake_openrouter):
    """An https origin through an HTTP proxy with a login: the proxy gets it on CONNECT, the origin never sees it;
    the proxy is asked for the origin's name, which it resolves."""
    dial = await fake_openrouter.dial_as("openrouter.ai", tmp_path)
    async with HTTPProxy(login=("me", "s3cret"), dial={"openrouter.ai:443": dial["connect_to"]}) as proxy:
        async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(), retry=RetryPolicy(attempts=1),
                                    tls=dial["tls"], proxy=http.Proxy(proxy.url_with_login("me", "s3cret"), "t")) as c:
            assert await c.models()
    assert [(p.target, p.login) for p in proxy.passed] == [("openrouter.ai:443", "me:s3cret")]
    [request] = fake_openrouter.requests
    assert not any(k.lower().startswith("proxy-") for k in request.headers)


async def test_socks5h_carries_the_name_and_socks5_the_address(fake_telegram):
    """socks5h://: the proxy resolves (it is asked for the name); socks5://: Chorus resolves (asked for the address)."""
    root = fake_telegram.api_root.replace("127.0.0.1", "localhost")
    port = int(root.rsplit(":", 1)[1])
    async with SOCKS5Proxy(login=("me", "pw")) as proxy:
        for scheme in ("socks5h", "socks5"):
            url = proxy.url_with_login("me", "pw").replace("socks5", scheme, 1)
            api = TelegramAPI(fake_telegram.token, root, proxy=http.Proxy(url, "t"))
            assert (await api.call("getMe"))["is_bot"]
            await api.aclose()
    assert [(p.target, p.login) for p in proxy.passed] == [(f"localhost:{port}", "me:pw"), (f"127.0.0.1:{port}", "me:pw")]


def test_the_environment_s_proxy_is_chosen_unless_no_proxy_exempts_the_host_and_a_key_wins():
    env = {"HTTPS_PROXY": "http://corp:3128", "ALL_PROXY": "socks5h://corp:1080", "NO_PROXY": "localhost,.internal"}
    assert http.choose_proxy(None, "https://api.telegram.org", env) == http.Proxy("http://corp:3128", "HTTPS_PROXY")
    assert http.choose_proxy(None, "http://bot-api.internal:8081", env) is None
    assert http.choose_proxy(None, "http://self-hosted:8081", env) == http.Proxy("socks5h://corp:1080", "ALL_PROXY")
    assert http.choose_proxy("socks5://me:pw@there:1", "https://x", env, key="k") == http.Proxy("socks5://me:pw@there:1", "k")
    with pytest.raises(ValueError) as bad:
        http.choose_proxy(None, "https://x", {"HTTPS_PROXY": "gopher://me:pw@x:1"})
    assert "pw" not in str(bad.value) and "HTTPS_PROXY" in str(bad.value)
