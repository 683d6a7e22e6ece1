"""The lean HTTP/1.1 client under the Bot API and OpenRouter clients, against a raw server on loopback whose
every answer is scripted byte for byte: framing (length, chunked, until close), keep-alive and its races,
silence, the connection limit, cancellation, TLS, streamed answers and their deadlines, and proxies."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from net.http1 import DeadlineError, HTTPError, Origin
from tests.fakes.tls import make_certificate


@dataclass
class Seen:
    connection: int
    head: str
    body: bytes

    @property
    def target(self) -> str:
        return self.head.split(" ")[1]


Answer = Callable[[asyncio.StreamWriter, Seen], Awaitable[bool | None]]  # False: close after answering


@dataclass
class Server:
    """Reads each request whole, then lets the test's ``answer`` write whatever bytes it likes."""

    answer: Answer
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    open: int = 0
    most_open: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number, self.open = self.connections, self.open + 1
        self.most_open = max(self.most_open, self.open)
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next((int(line.split(":")[1]) for line in head.split("\r\n")
                               if line.lower().startswith("content-length:")), 0)
                seen = Seen(number, head, await reader.readexactly(length))
                self.requests.append(seen)
                if await self.answer(writer, seen) is False:
                    return
                await writer.drain()
        finally:
            self.open -= 1
            writer.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def echo_target(writer: asyncio.StreamWriter, seen: Seen) -> None:
    writer.write(answer(seen.target.encode()))


@pytest.fixture
async def serve():
    servers: list[asyncio.Server] = []

    async def start(respond: Answer, tls: ssl.SSLContext | None = None) -> tuple[Server, str]:
        server = Server(respond)
        listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        return server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    yield start
    for listening in servers:
        listening.close()


async def test_requests_share_one_kept_alive_connection_and_go_as_written(serve):
    server, url = await serve(echo_target)
    origin = Origin(url)
    try:
        first = await origin.request("POST", "/a", body=b'{"x": 1}', headers="Content-Type: application/json\r\n",
                                     timeout=5)
        second = await origin.request("GET", "/b?c=1", timeout=5)
    finally:
        await origin.aclose()
    assert (first.status, first.body, second.body) == (200, b"/a", b"/b?c=1")
    assert first.headers == {"content-length": "2"}
    assert server.connections == 1
    host = url.removeprefix("http://")
    assert server.requests[0].head == (f"POST /a HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Chorus\r\n"
                                       "Content-Length: 8\r\nContent-Type: application/json\r\n\r\n")
    assert server.requests[0].body == b'{"x": 1}'
    assert server.requests[1].head == f"GET /b?c=1 HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Chorus\r\n\r\n"


async def test_a_chunked_answer_in_pieces_is_read_exactly_and_the_connection_goes_on(serve):
    """Split inside a size line, inside data and inside the end; extensions and trailers ignored."""
    async def chunked(writer: asyncio.StreamWriter, seen: Seen) -> None:
        if seen.target == "/plain":
            writer.write(answer(b"after"))
            return
        pieces = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n", b"5\r\nhel",
                  b"lo\r\n1", b"0;ext=1\r\n", b"0123456789abcdef\r\n", b"0\r\nTrailer: t\r\n", b"\r\n"]
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.01)

    server, url = await serve(chunked)
    origin = Origin(url)
    try:
        got = await origin.request("GET", "/chunked", timeout=5)
        after = await origin.request("GET", "/plain", timeout=5)
    finally:
        await origin.aclose()
    assert got.body == b"hello0123456789abcdef"
    assert got.headers["x-a"] == "1, 2"
    assert after.body == b"after" and server.connections == 1


async def test_a_connection_is_not_reused_after_close_an_open_ended_body_or_more_than_the_answer(serve):
    async def closing(writer: asyncio.StreamWriter, seen: Seen) -> bool:
        if seen.target == "/eof":
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            return False
        if seen.target == "/extra":  # out of step: what follows the answer must never pass for the next one
            writer.write(answer(b"one") + answer(b"smuggled"))
        else:
            writer.write(answer(b"bye", "Connection: close"))  # said, though the socket stays open
        return True

    server, url = await serve(closing)
    origin = Origin(url)
    try:
        eof = await origin.request("GET", "/eof", timeout=5)
        close = await origin.request("GET", "/close", timeout=5)
        extra = await origin.request("GET", "/extra", timeout=5)
        after = await origin.request("GET", "/close", timeout=5)
    finally:
        await origin.aclose()
    assert (eof.body, close.body, extra.body, after.body) == (b"until the end", b"bye", b"one", b"bye")
    assert [r.connection for r in server.requests] == [1, 2, 3, 4]


async def test_a_kept_alive_connection_the_server_dropped_is_replaced_and_the_request_still_answered(serve):
    """The server closes an idle connection just as the next request arrives on it (it answered nothing):
    the request goes again on a new connection. On a new connection that happens, it is an error."""
    async def drop_second(writer: asyncio.StreamWriter, seen: Seen) -> bool:
        if seen.target == "/again" and seen.connection == 1:
            return False  # read it, answer nothing, close
        if seen.target == "/never":
            return False
        writer.write(answer(seen.target.encode()))
        return True

    server, url = await serve(drop_second)
    origin = Origin(url)
    try:
        assert (await origin.request("GET", "/first", timeout=5)).body == b"/first"
        assert (await origin.request("GET", "/again", timeout=5)).body == b"/again"
        assert [(r.connection, r.target) for r in server.requests] == [(1, "/first"), (1, "/again"), (2, "/again")]
        fresh = Origin(url)
        with pytest.raises(HTTPError, match="closed the connection without answering"):
            await fresh.request("GET", "/never", timeout=5)
        await fresh.aclose()
    finally:
        await origin.aclose()
    assert [r.target for r in server.requests].count("/never") == 1


async def test_silence_times_out_but_a_slow_steady_answer_does_not(serve):
    async def trickle(writer: asyncio.StreamWriter, seen: Seen) -> None:
        if seen.target == "/silent":
            await asyncio.sleep(5)
            return
        body = b"0123456789"
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        for byte in body:  # 0.6 s in all, never 0.3 s without a byte
            await asyncio.sleep(0.06)
            writer.write(bytes([byte]))
            await writer.drain()

    _, url = await serve(trickle)
    origin = Origin(url)
    try:
        assert (await origin.request("GET", "/slow", timeout=0.3)).body == b"0123456789"
        started = time.monotonic()
        with pytest.raises(HTTPError, match=r"timed out: nothing moved for 0.3 s"):
            await origin.request("GET", "/silent", timeout=0.3)
        assert 0.3 <= time.monotonic() - started < 1.0
    finally:
        await origin.aclose()


async def test_no_more_than_limit_connections_and_every_waiting_request_is_answered(serve):
    async def slow(writer: asyncio.StreamWriter, seen: Seen) -> None:
        await asyncio.sleep(0.05)
        writer.write(answer(seen.target.encode()))

    server, url = await serve(slow)
    origin = Origin(url, limit=2)
    try:
        got = await asyncio.gather(*(origin.request("GET", f"/{n}", timeout=5) for n in range(7)))
    finally:
        await origin.aclose()
    assert [r.body for r in got] == [f"/{n}".encode() for n in range(7)]
    assert (server.connections, server.most_open) == (2, 2)


async def test_a_cancelled_request_never_hands_its_late_answer_to_the_next(serve):
    async def late_first(writer: asyncio.StreamWriter, seen: Seen) -> None:
        if seen.target == "/late":
            await asyncio.sleep(0.2)
        writer.write(answer(seen.target.encode()))

    server, url = await serve(late_first)
    origin = Origin(url, limit=1)
    try:
        late = asyncio.ensure_future(origin.request("GET", "/late", timeout=5))
        await asyncio.sleep(0.05)
        late.cancel()
        next_one = await origin.request("GET", "/next", timeout=5)
        await asyncio.sleep(0.3)  # the late answer would have come by now
        last = await origin.request("GET", "/last", timeout=5)
    finally:
        await origin.aclose()
    assert (next_one.body, last.body) == (b"/next", b"/last")
    assert server.connections == 2


async def test_interim_answers_are_skipped_and_a_large_body_goes_whole(serve):
    async def continue_first(writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(str(len(seen.body)).encode(), status="201 Created"))

    server, url = await serve(continue_first)
    origin = Origin(url)
    big = bytes(range(256)) * 8192  # 2 MiB: written in slices
    try:
        got = await origin.request("POST", "/upload", body=big, timeout=5)
    finally:
        await origin.aclose()
    assert (got.status, got.body) == (201, b"2097152")
    assert server.requests[0].body == big


async def test_what_is_not_http_is_an_error_and_a_closed_origin_refuses(serve, unused_tcp_port):
    wrong = {"/rtsp": b"RTSP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "/ssh": b"SSH-2.0-OpenSSH\r\n\r\n",
             "/chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
             "/field": b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nno colon here\r\n\r\n"}

    async def other(writer: asyncio.StreamWriter, seen: Seen) -> bool:
        writer.write(wrong[seen.target])
        return False

    _, url = await serve(other)
    origin = Origin(url)
    for target, error in (("/rtsp", "not an HTTP/1.x answer: 'RTSP/1.0 200 OK'"),
                          ("/ssh", "not an HTTP/1.x answer: 'SSH-2.0-OpenSSH'"),
                          ("/chunk", "malformed chunked body"),  # a chunk longer than its size says
                          ("/field", "malformed header in: 'Content-Length: 0\\\\r\\\\nno colon here'")):
        with pytest.raises(HTTPError, match=error):
            await origin.request("GET", target, timeout=5)
    await origin.aclose()
    with pytest.raises(HTTPError, match="the client is closed"):
        await origin.request("GET", "/", timeout=5)
    nowhere = Origin(f"http://127.0.0.1:{unused_tcp_port}")
    with pytest.raises(HTTPError, match=f"cannot connect to 127.0.0.1:{unused_tcp_port}: Connection refused"):
        await nowhere.request("GET", "/", timeout=5)
    with pytest.raises(ValueError):
        Origin("ftp://127.0.0.1/")


async def test_https_checks_the_certificate_against_the_host_name(serve, tmp_path):
    cert, key = make_certificate("localhost", tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    _, url = await serve(echo_target, tls=server_tls)
    port = url.rpartition(":")[2]
    trusting = ssl.create_default_context(cafile=str(cert))
    origin = Origin(f"https://localhost:{port}", tls=trusting)
    try:
        assert (await origin.request("GET", "/secure", timeout=5)).body == b"/secure"
    finally:
        await origin.aclose()
    wrong_name = Origin(f"https://127.0.0.1:{port}", tls=trusting)  # the certificate names localhost only
    with pytest.raises(HTTPError, match="CERTIFICATE_VERIFY_FAILED"):
        await wrong_name.request("GET", "/", timeout=5)
    await wrong_name.aclose()


# ---- streamed answers --------------------------------------------------------------------------------------


async def pieces_apart(writer: asyncio.StreamWriter, seen: Seen) -> None:
    """A chunked answer in three pieces 0.1 s apart (or, for /plain, a small whole one)."""
    if seen.target == "/plain":
        writer.write(answer(b"plain"))
        return
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
    for piece in (b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0.1)
    writer.write(b"0\r\n\r\n")


async def test_a_streamed_answer_comes_piece_by_piece_and_its_connection_goes_on(serve):
    """Each piece reaches the reader before the server writes the next: the server waits for the reader to have
    it (a client that held pieces back would leave the server waiting, and the pieces would not come apart)."""
    read: list[asyncio.Event] = [asyncio.Event() for _ in range(3)]
    held_back: list[int] = []

    async def piece_after_piece(writer: asyncio.StreamWriter, seen: Seen) -> None:
        if seen.target == "/plain":
            writer.write(answer(b"plain"))
            return
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n")
        for i, piece in enumerate((b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n")):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            try:
                await asyncio.wait_for(read[i].wait(), 2)
            except TimeoutError:
                held_back.append(i)
        writer.write(b"0\r\n\r\n")

    server, url = await serve(piece_after_piece)
    origin = Origin(url)
    try:
        async with await origin.stream("POST", "/stream", body=b"{}", timeout=10) as stream:
            assert (stream.status, stream.headers["content-type"]) == (200, "text/event-stream")
            got = []
            while piece := await stream.read():
                got.append(piece)
                read[len(got) - 1].set()
        after = await origin.request("GET", "/plain", timeout=5)
    finally:
        await origin.aclose()
    assert got == [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"] and held_back == []
    assert after.body == b"plain" and server.connections == 1


async def test_a_stream_left_before_its_end_never_hands_the_rest_to_the_next_request(serve):
    server, url = await serve(pieces_apart)
    origin = Origin(url)
    try:
        async with await origin.stream("GET", "/stream", timeout=5) as stream:
            assert await stream.read() == b"data: 1\n\n"
        after = await origin.request("GET", "/plain", timeout=5)
    finally:
        await origin.aclose()
    assert after.body == b"plain" and server.connections == 2


async def test_a_read_deadline_ends_the_wait_long_before_the_silence_timeout(serve):
    async def head_only(writer: asyncio.StreamWriter, seen: Seen) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    _, url = await serve(head_only)
    origin = Origin(url)
    loop = asyncio.get_running_loop()
    try:
        stream = await origin.stream("GET", "/", timeout=5)
        with pytest.raises(DeadlineError):
            await stream.read(loop.time() - 1)  # already passed: no wait at all
        started = loop.time()
        with pytest.raises(DeadlineError):
            await stream.read(started + 0.2)
        assert 0.2 <= loop.time() - started < 0.6
        stream.close()
    finally:
        await origin.aclose()


# ---- through a proxy ---------------------------------------------------------------------------------------


@dataclass
class Proxy:
    """CONNECT tunnels (checking the login) to 127.0.0.1; a plain-HTTP request is answered with its own
    request line, so a test sees what the proxy was asked."""

    login: str | None = None
    asked: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        self.asked.append(head)
        line = head.split("\r\n")[0]
        expected = f"Proxy-Authorization: Basic {base64.b64encode(self.login.encode()).decode()}" if self.login else ""
        if expected and expected not in head.split("\r\n"):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if not line.startswith("CONNECT "):
            writer.write(answer(line.encode()))
            await writer.drain()
            writer.close()
            return
        port = int(line.split()[1].rpartition(":")[2])
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)


@pytest.fixture
async def proxy():
    made: list[asyncio.Server] = []

    async def start(login: str | None = None) -> tuple[Proxy, int]:
        running = Proxy(login)
        server = await asyncio.start_server(running.handle, "127.0.0.1", 0)
        made.append(server)
        return running, server.sockets[0].getsockname()[1]

    yield start
    for server in made:
        server.close()


async def test_https_through_a_proxy_is_one_tunnel_with_the_login_and_tls_to_the_origin(serve, proxy, tmp_path):
    cert, key = make_certificate("localhost", tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    server, url = await serve(echo_target, tls=server_tls)
    port = url.rpartition(":")[2]
    tunnel, proxy_port = await proxy(login="user:pa ss")
    origin = Origin(f"https://localhost:{port}", tls=ssl.create_default_context(cafile=str(cert)),
                    proxy=f"http://user:pa%20ss@127.0.0.1:{proxy_port}")
    try:
        first = await origin.request("GET", "/one", timeout=5)
        second = await origin.request("GET", "/two", timeout=5)
    finally:
        await origin.aclose()
    assert (first.body, second.body) == (b"/one", b"/two")
    assert tunnel.asked == [f"CONNECT localhost:{port} HTTP/1.1\r\nHost: localhost:{port}\r\n"
                            f"Proxy-Authorization: Basic {base64.b64encode(b'user:pa ss').decode()}\r\n\r\n"]
    assert server.connections == 1

    refused = Origin(f"https://localhost:{port}", tls=ssl.create_default_context(cafile=str(cert)),
                     proxy=f"http://127.0.0.1:{proxy_port}")  # no login
    with pytest.raises(HTTPError, match=f"the proxy refused the tunnel to localhost:{port}: HTTP 407"):
        await refused.request("GET", "/", timeout=5)
    await refused.aclose()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    silent = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    closing = Origin(f"https://localhost:{port}", proxy=f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}")
    with pytest.raises(HTTPError, match=f"the proxy closed the connection instead of a tunnel to localhost:{port}"):
        await closing.request("GET", "/", timeout=5)
    silent.close()


async def test_plain_http_through_a_proxy_asks_it_for_the_whole_url(proxy):
    """The origin's name need not resolve here: only the proxy is dialled."""
    seen, proxy_port = await proxy()
    origin = Origin("http://origin.invalid:8080", proxy=f"http://127.0.0.1:{proxy_port}")
    try:
        got = await origin.request("GET", "/path?q=1", timeout=5)
    finally:
        await origin.aclose()
    assert got.body == b"GET http://origin.invalid:8080/path?q=1 HTTP/1.1"
    assert "Host: origin.invalid:8080\r\n" in seen.asked[0]


async def test_an_answer_before_the_upload_ends_is_the_answer_and_nothing_is_written_after_the_close(serve, caplog):
    """A server may refuse a large body before reading it (413) and hang up: that answer is what the caller
    gets, and the rest of the body is not pushed at a closed socket (asyncio would log a warning per write)."""
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"too large", status="413 Request Entity Too Large"))
        await writer.drain()
        writer.close()

    listening = await asyncio.start_server(refuse, "127.0.0.1", 0)
    origin = Origin(f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}")
    try:
        got = await origin.request("POST", "/upload", body=bytes(64 * 2**20), timeout=5)
    finally:
        await origin.aclose()
        listening.close()
    assert (got.status, got.body) == (413, b"too large")
    assert not [r for r in caplog.records if "socket.send() raised exception" in r.getMessage()]


async def test_a_name_whose_first_address_never_answers_is_reached_at_the_next(serve, monkeypatch):
    """RFC 8305: the next address is dialled 250 ms after the last one started, not once it timed out (a host
    with a broken IPv6 route would otherwise wait out the connect timeout on every new connection)."""
    server, url = await serve(echo_target)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_server(("127.0.0.1", 0), backlog=0) as silent:
        # One connection waits unaccepted; with that queue full the kernel drops every further SYN.
        with socket.create_connection(silent.getsockname()):
            loop = asyncio.get_running_loop()
            real = loop.getaddrinfo  # uvloop resolves each address again (numeric) as it dials it

            async def resolve(host: str, *args: object, **kwargs: object) -> list[tuple]:
                if host != "bot.example":
                    return await real(host, *args, **kwargs)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", addr)
                        for addr in (silent.getsockname(), ("127.0.0.1", port))]

            monkeypatch.setattr(loop, "getaddrinfo", resolve)  # the resolver: the network's edge, faked
            origin = Origin(f"http://bot.example:{port}", connect_timeout=3)
            response = await origin.request("GET", "/over-the-second-address", timeout=5)
            await origin.aclose()
    assert response.body == b"/over-the-second-address"
    assert [seen.head.split("\r\n")[1] for seen in server.requests] == [f"Host: bot.example:{port}"]
