"""A lean HTTP/1.1 client for one origin: keep-alive connections, whole or streamed answers, one timer per request.

The Bot API client and the OpenRouter client run on this rather than on aiohttp's ``ClientSession``. A turn makes
about five Bot API calls and streams one answer in many small pieces, and most of its CPU at light load went to
the HTTP client: a Bot API call cost ~250 µs on aiohttp against ~100 µs on this (3 times that when the loop had
slept before it, on cold caches), and each piece of a streamed answer ~200 Python calls against ~150. The savings
come from doing less: no task per request, no timeout context or timer per read, no cookie jar, header multidicts
or payload objects. A body is decoded as bytes arrive, in the protocol's callback, with no task in between.

What it leaves out, because neither API needs it: redirects, cookies, compression, HTTP/2, pipelining. A proxy
(``HTTPS_PROXY`` style, ``http://[user:pass@]host:port``) is tunnelled through with CONNECT for https, or sent
whole URLs for http.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import aiohappyeyeballs
import certifi

SLICE = 256 * 1024  # a large body goes out in slices this size, so a slow upload still shows progress
HEAD_LIMIT = 65536
USER_AGENT = "User-Agent: Chorus\r\n"  # some fronts (Cloudflare's, before OpenRouter) turn away a request without one


class HTTPError(Exception):
    """No complete HTTP answer: the connection was refused or lost, it stayed silent too long, or it did not
    speak HTTP/1.x."""


class Timeout(HTTPError, TimeoutError):
    """No connection, or nothing moved, within the time given."""


class ConnectError(HTTPError):
    """No connection was made (refused, DNS, TLS, connect timeout, the client closed): nothing was sent."""


class ConnectTimeout(ConnectError, Timeout):
    """No connection within the connect timeout."""


class DeadlineError(Timeout):
    """A streamed read's own deadline passed while it waited (see ``Stream.read``)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header's values joined with ", "
    body: bytes


class Origin:
    """Keep-alive connections to one ``scheme://host[:port]``, at most ``limit`` open at once (None: no limit;
    more requests wait their turn, first come first served).

    ``connect_to`` dials another address for the same origin (TLS still checks the origin's name), as curl's
    ``--connect-to`` does."""

    def __init__(self, url: str, *, tls: ssl.SSLContext | None = None, limit: int | None = 100,
                 connect_timeout: float = 10.0, idle_timeout: float = 15.0, proxy: str | None = None,
                 connect_to: tuple[str, int] | None = None) -> None:
        self.host, self.port, https = _address(url)
        self._authority = urlsplit(url).netloc.rpartition("@")[2]
        self._tls = (tls or tls_context()) if https else None
        self._dial = connect_to or (self.host, self.port)
        self._proxy: tuple[str, int, str] | None = None  # host, port, Proxy-Authorization header line
        if proxy:
            try:
                host, port, _ = _address(proxy)
            except ValueError:
                raise ValueError(f"the proxy must be http://[user:password@]host:port, not {proxy.split('@')[-1]!r}") from None
            user = urlsplit(proxy)
            login = f"{unquote(user.username or '')}:{unquote(user.password or '')}" if user.username else ""
            auth = f"Proxy-Authorization: Basic {base64.b64encode(login.encode()).decode()}\r\n" if login else ""
            self._proxy = (host, port, auth)
            self._dial = connect_to or (host, port)
        self._limit = limit
        self._connect_timeout = connect_timeout
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def request(self, method: str, target: str, *, body: bytes = b"", headers: str = "",
                      timeout: float) -> Response:
        """Send ``method target`` (``headers``: extra ``Name: value\\r\\n`` lines) and return the whole answer.

        ``timeout`` is silence, not a total: the request fails once nothing has moved for that long (a 50 MB
        upload may take minutes). Raises ``HTTPError`` (``Timeout`` when it was the time)."""
        conn = await self._exchange(method, target, body, headers, timeout, stream=False)
        response = conn.response()
        self._release(conn)
        return response

    async def stream(self, method: str, target: str, *, body: bytes = b"", headers: str = "",
                     timeout: float) -> Stream:
        """Like ``request``, but return once the answer's head is in: its body is read with ``Stream.read``,
        and the stream must be closed (``async with``)."""
        return Stream(self, await self._exchange(method, target, body, headers, timeout, stream=True))

    async def aclose(self) -> None:
        """Close every idle connection now, every busy one as its request ends; later requests fail."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._wake(everyone=True)  # each sees the client closed

    async def _exchange(self, method: str, target: str, body: bytes, headers: str, timeout: float,
                        stream: bool) -> _Connection:
        if self._proxy and not self._tls:
            target = f"http://{self._authority}{target}"  # a plain-HTTP proxy is asked for the whole URL
            headers += self._proxy[2]
        length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self._authority}\r\n{USER_AGENT}{length}{headers}\r\n".encode()
        while True:
            conn, reused = await self._acquire()
            try:
                await conn.exchange(head, body, timeout, stream)
            except _Stale:
                self._drop(conn)
                if reused:  # the server had closed it while idle, and answered nothing: a fresh one will do
                    continue
                raise HTTPError("the server closed the connection without answering") from None
            except BaseException:
                self._drop(conn)
                raise
            return conn

    async def _acquire(self) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        woken = False
        while True:
            if self._closed:
                raise ConnectError("the client is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.usable and loop.time() - conn.idle_since < self._idle_timeout:
                    return conn, True
                self._drop(conn)
            if self._limit is None or self._open < self._limit:
                self._open += 1
                try:
                    return await self._connect(loop), False
                except BaseException:
                    self._open -= 1
                    self._wake()
                    raise
            waiter = loop.create_future()
            # Woken before but beaten to the connection by a newcomer: wait at the front, not the back.
            (self._waiters.appendleft if woken else self._waiters.append)(waiter)
            woken = True
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        where = f"{self._proxy[0]}:{self._proxy[1]} (the proxy)" if self._proxy else f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._proxy and self._tls:
                    return await self._tunnel(loop)
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), sock=await _dial(loop, *self._dial), ssl=self._tls,
                    server_hostname=self.host if self._tls else None)
                return conn
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {where} within {self._connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise ConnectError(f"cannot connect to {where}: {_why(exc)}") from None

    async def _tunnel(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        """CONNECT through the proxy, then TLS with the origin inside the tunnel."""
        assert self._proxy is not None and self._tls is not None
        sock = await _dial(loop, *self._dial)
        transport, conn = await loop.create_connection(lambda: _Connection(loop), sock=sock)
        authority = f"{self.host}:{self.port}"
        conn.tunnelling()
        try:
            await conn.exchange(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{self._proxy[2]}\r\n"
                                .encode("latin-1"), b"", self._connect_timeout, True)
            if conn.status != 200:
                raise HTTPError(f"the proxy refused the tunnel to {authority}: HTTP {conn.status}")
            conn.tunnelled()
            tls = await loop.start_tls(transport, conn, self._tls, server_hostname=self.host)
        except _Stale:
            transport.close()
            raise HTTPError(f"the proxy closed the connection instead of a tunnel to {authority}") from None
        except BaseException:
            transport.close()
            raise
        assert tls is not None
        conn.connection_made(tls)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.usable and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
            self._wake()
        else:
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open -= 1
        self._wake()

    def _wake(self, everyone: bool = False) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return


class Stream:
    """An answer whose head is in and whose body is still coming."""

    def __init__(self, origin: Origin, conn: _Connection) -> None:
        self._origin: Origin | None = origin
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self, deadline: float | None = None) -> bytes:
        """The body's bytes that came since the last read, waiting for some if none did; ``b""`` at its end.

        ``deadline`` (the loop's clock) bounds this wait, on top of the silence timeout: past it, raises
        ``DeadlineError`` and the connection is given up."""
        return await self._conn.read(deadline)

    async def whole(self) -> bytes:
        """The rest of the body, read to its end."""
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Back to the pool if the body was read to its end, else the connection is closed."""
        if self._origin is not None:
            origin, self._origin = self._origin, None
            self._conn.end_stream()
            origin._release(self._conn)

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _address(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not http(s)://host")
    https = parts.scheme == "https"
    return parts.hostname, parts.port or (443 if https else 80), https  # .port: ValueError when out of range


def tls_context() -> ssl.SSLContext:
    """Certificates checked against certifi's CA bundle (as httpx and aiogram do), so a slim container without
    system CAs still reaches Telegram and OpenRouter. Loading it takes ~16 ms: make one and keep it."""
    return ssl.create_default_context(cafile=certifi.where())


async def _dial(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    """A connected socket to ``host``, its addresses tried as RFC 8305 says (IPv6 and IPv4 in turn, the next
    one started when the last has not connected within 250 ms), so a host with a broken IPv6 route is reached
    over IPv4 at once rather than after the connect timeout. Done here rather than by ``create_connection``,
    which on uvloop tries the addresses one after another."""
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=0.25, interleave=1, loop=loop)


def _why(exc: OSError) -> str:
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not exc.errno:
        return str(exc)  # "[Errno -2] Name or service not known", "[SSL: CERTIFICATE_VERIFY_FAILED] ..."
    return os.strerror(exc.errno)  # asyncio's own text for a refusal names only the address


class _Stale(Exception):
    """The connection ended before any byte of the answer came."""


INF = float("inf")
_FIELD = re.compile(r"([^:\r\n]+):[ \t]*([^\r\n]*?)[ \t]*\r\n")


class _Connection(asyncio.Protocol):
    """One socket; one exchange at a time. The answer is parsed and its body decoded as bytes arrive."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()  # bytes not yet parsed
        self._waiter: asyncio.Future[None] | None = None  # the exchange (head, or whole answer) or a read
        self._ready: Callable[[], bool] = bool  # what the waiter waits for
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._last = 0.0  # when bytes last moved, for the silence timeout
        self._deadline = INF  # a waiting read's own deadline
        self._armed = INF  # when the timer fires
        self._error: BaseException | None = None
        self._lost = False
        self._reusable = True
        self._busy = False
        self._tunnelling = False  # a CONNECT answer has no body
        self.idle_since = 0.0
        # the answer being read
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_done = False
        self._left = -1  # body bytes still to come by Content-Length; -1: until the connection closes
        self._chunk = 0  # chunked: data left in this chunk (>0), or -1 size line, -2 CRLF after data, -3 trailers
        self._chunked = False
        self._body = bytearray()  # decoded body not yet handed out
        self._complete = False

    @property
    def usable(self) -> bool:
        return (self._reusable and not self._lost and not self._busy and self._transport is not None
                and not self._transport.is_closing())

    async def exchange(self, head: bytes, body: bytes, timeout: float, stream: bool) -> None:
        """Send a request; return once the answer's head (``stream``) or the whole answer is in."""
        if not self.usable:
            raise _Stale
        assert self._transport is not None
        self._reset()
        self._busy = True
        self._timeout, self._last = timeout, self._loop.time()
        self._arm(self._last + timeout)
        if len(body) <= SLICE:
            self._transport.write(head + body)
        else:
            self._transport.write(head)
            view = memoryview(body)
            for at in range(0, len(body), SLICE):
                if self._lost:  # answered early (413) and closed, or reset: the rest has nowhere to go
                    break
                self._transport.write(view[at:at + SLICE])
                if self._drained is not None:
                    await self._drained
        await self._wait(lambda: self._head_done if stream else self._complete)
        if not stream:
            self._end()

    def response(self) -> Response:
        body, self._body = bytes(self._body), bytearray()
        return Response(self.status, self.headers, body)

    async def read(self, deadline: float | None) -> bytes:
        if not self._body and not self._complete:
            if deadline is not None:
                if self._loop.time() >= deadline:
                    raise DeadlineError("the read's deadline passed")
                self._deadline = deadline
                if deadline < self._armed:
                    self._arm(deadline)
            try:
                await self._wait(lambda: bool(self._body) or self._complete)
            finally:
                self._deadline = INF
        if self._complete:
            self._end()
        chunk = bytes(self._body)
        self._body.clear()
        return chunk

    def end_stream(self) -> None:
        self._end()  # still busy unless the body came to its end: the pool then closes it, never reuses it

    def tunnelling(self) -> None:
        self._tunnelling = True

    def tunnelled(self) -> None:
        """The CONNECT succeeded: the bytes that follow belong to TLS, started on this protocol."""
        self._end()
        self._tunnelling = False

    def close(self) -> None:
        self._reusable = False
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()

    async def _wait(self, ready: Callable[[], bool]) -> None:
        while True:
            if self._error is not None:  # first: a failure outranks what a later close seemed to complete
                raise self._error
            if ready():
                return
            self._waiter, self._ready = self._loop.create_future(), ready
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _end(self) -> None:
        self._stop_timer()
        if self._complete:
            self._busy = False

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._armed = None, INF

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._complete:  # bytes nobody asked for: never trust this connection again
            self.close()
            return
        self._buffer += data
        self._last = self._loop.time()
        try:
            self._parse()
        except HTTPError as exc:
            self._fail(exc)
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if not self._busy or self._complete:
            return
        if not self._head_done and not self._buffer:
            self._fail(_Stale())
        elif self._head_done and self._left < 0 and not self._chunked:  # a body that ends with the connection
            self._complete = True
            self._wake()
        else:
            self._fail(HTTPError(f"the connection was lost mid-answer ({exc or 'closed by the server'})"))

    def pause_writing(self) -> None:
        self._drained = self._loop.create_future()

    def resume_writing(self) -> None:
        self._last = self._loop.time()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self._drained = None

    # ---- reading the answer ------------------------------------------------------------------

    def _parse(self) -> None:
        buffer = self._buffer
        if not self._head_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HEAD_LIMIT:
                    raise HTTPError("the answer's head is over 64 KiB")
                return
            self._read_head(bytes(buffer[:end]).decode("latin-1"))
            del buffer[:end + 4]
            if 100 <= self.status < 200:  # an interim answer (100 Continue): the real one follows
                self._head_done = False
                return self._parse()
            if self.status in (204, 304) or self._tunnelling:
                self._left, self._chunked = 0, False
        if self._chunked:
            self._dechunk()
        elif self._left >= 0:
            if len(buffer) >= self._left:
                self._body += buffer[:self._left]
                if len(buffer) > self._left:
                    self._reusable = False  # more than the answer: out of step, never reuse
                buffer.clear()
                self._left, self._complete = 0, True
            else:
                self._body += buffer
                self._left -= len(buffer)
                buffer.clear()
        else:
            self._body += buffer
            buffer.clear()

    def _read_head(self, head: str) -> None:
        status_line, _, fields = head.partition("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise HTTPError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        self.status, self._head_done = int(rest[:3]), True
        pairs = _FIELD.findall(fields + "\r\n") if fields else []
        if len(pairs) != fields.count("\r\n") + bool(fields):  # a line that is not "Name: value"
            raise HTTPError(f"malformed header in: {fields[:80]!r}")
        headers: dict[str, str] = {}
        for name, value in pairs:  # one regex for all the lines: a response has several, and there are many
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers = headers
        if self._tunnelling:
            return  # a CONNECT answer has no body, and the connection goes on as the tunnel
        connection = headers.get("connection", "").lower()
        if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self._reusable = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked, self._chunk = True, -1
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise HTTPError(f"bad Content-Length: {headers['content-length'][:20]!r}") from None
        else:
            self._reusable = False  # the body ends when the server closes

    def _dechunk(self) -> None:
        buffer = self._buffer
        while buffer:
            if self._chunk > 0:
                data = buffer[:self._chunk]
                self._body += data
                del buffer[:len(data)]
                self._chunk -= len(data)
                if self._chunk == 0:
                    self._chunk = -2
                continue
            if self._chunk == -2:  # the CRLF that closes a chunk's data
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    raise HTTPError("malformed chunked body")
                del buffer[:2]
                self._chunk = -1
                continue
            eol = buffer.find(b"\r\n")
            if eol < 0:
                if len(buffer) > HEAD_LIMIT:
                    raise HTTPError("malformed chunked body")
                return
            line = bytes(buffer[:eol])
            del buffer[:eol + 2]
            if self._chunk == -3:  # trailers, up to an empty line
                if not line:
                    if buffer:
                        self._reusable = False
                    buffer.clear()
                    self._complete = True
                    return
                continue
            try:
                size = int(line.partition(b";")[0], 16)
            except ValueError:
                raise HTTPError("malformed chunked body") from None
            self._chunk = size if size > 0 else -3

    def _wake(self) -> None:
        # Only when what it waits for came (or a failure): a large whole answer arrives in hundreds of
        # packets, and waking the task for each would be a trip through the loop for nothing.
        if self._waiter is not None and not self._waiter.done() and (self._error is not None or self._ready()):
            self._waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        self.close()
        if self._error is None:  # the first failure is the one to tell (a loss that follows it is its echo)
            self._error = exc
        self._wake()

    def _reset(self) -> None:
        self._buffer.clear()
        self._error = None
        self.status, self.headers, self._head_done = 0, {}, False
        self._left, self._chunk, self._chunked, self._complete = -1, 0, False, False
        self._body = bytearray()

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._armed = self._loop.call_at(when, self._check_silence), when

    def _check_silence(self) -> None:
        """One timer per request: re-armed from the last time bytes moved, fired only after real silence
        (or once a waiting read's deadline passed)."""
        now = self._loop.time()
        if now >= self._deadline:
            self._fail(DeadlineError("the read's deadline passed"))
        elif now < self._last + self._timeout:
            self._arm(min(self._last + self._timeout, self._deadline))
        else:
            self._fail(Timeout(f"timed out: nothing moved for {self._timeout:g} s"))
