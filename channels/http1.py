"""A lean HTTP/1.1 client for one origin: keep-alive connections, whole answers, one timer per request.

The Bot API client (``telegram_api``) runs on this rather than on aiohttp's ``ClientSession``. A bot makes about
five Bot API calls per turn (the poll, the chat action, drafts, the answer), and each cost ~250 µs of CPU on
aiohttp against ~100 µs on this, and 3 times that when the loop had slept before it (cold caches): most of a
turn's CPU at light load. The savings come from doing less: no per-request task, timeout context, cookie jar,
header multidicts or payload objects, and a silence timeout that is one timer re-armed lazily, not one per read.

What it leaves out, because the Bot API needs none of it: proxies, redirects, cookies, compression, HTTP/2,
pipelining. A request is written in one piece (large bodies in slices, waiting for the socket to drain); the
answer is read whole (``Content-Length``, chunked, or until the server closes).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

SLICE = 256 * 1024  # a large body goes out in slices this size, so a slow upload still shows progress


class HTTPError(Exception):
    """No complete HTTP answer: the connection was refused or lost, it stayed silent too long, or it did not
    speak HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased; a repeated header's values joined with ", "
    body: bytes


class Origin:
    """Keep-alive connections to one ``scheme://host[:port]``, at most ``limit`` open at once (more requests wait
    their turn, first come first served)."""

    def __init__(self, url: str, *, tls: ssl.SSLContext | None = None, limit: int = 100,
                 connect_timeout: float = 10.0, idle_timeout: float = 15.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not http(s)://host")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)  # ValueError: port out of range
        self._authority = parts.netloc.rpartition("@")[2]
        self._tls = (tls or ssl.create_default_context()) if parts.scheme == "https" else None
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
        upload may take minutes). Raises ``HTTPError`` (``TimeoutError`` when silent)."""
        length = f"Content-Length: {len(body)}\r\n" if body or method == "POST" else ""
        head = f"{method} {target} HTTP/1.1\r\nHost: {self._authority}\r\n{length}{headers}\r\n".encode("latin-1")
        while True:
            conn, reused = await self._acquire()
            try:
                response = await conn.exchange(head, body, timeout)
            except _Stale:
                self._drop(conn)
                if reused:  # the server had closed it while idle, and answered nothing: a fresh one will do
                    continue
                raise HTTPError("the server closed the connection without answering") from None
            except BaseException:
                self._drop(conn)
                raise
            self._release(conn)
            return response

    async def aclose(self) -> None:
        """Close every idle connection now, every busy one as its request ends; later requests fail."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        self._wake(everyone=True)  # each sees the client closed

    async def _acquire(self) -> tuple[_Connection, bool]:
        loop = asyncio.get_running_loop()
        woken = False
        while True:
            if self._closed:
                raise HTTPError("the client is closed")
            while self._idle:
                conn = self._idle.pop()
                if conn.usable and loop.time() - conn.idle_since < self._idle_timeout:
                    return conn, True
                self._drop(conn)
            if self._open < self._limit:
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
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), self.host, self.port, ssl=self._tls,
                    server_hostname=self.host if self._tls else None, happy_eyeballs_delay=0.25)
        except TimeoutError:
            raise HTTPError(f"no connection within {self._connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise HTTPError(f"cannot connect to {self.host}:{self.port}: {_why(exc)}") from None
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.usable and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            self._drop(conn)
            return
        self._wake()

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


def _why(exc: OSError) -> str:
    if isinstance(exc, (socket.gaierror, ssl.SSLError)) or not exc.errno:
        return str(exc)  # "[Errno -2] Name or service not known", "[SSL: CERTIFICATE_VERIFY_FAILED] ..."
    return os.strerror(exc.errno)  # asyncio's own text for a refusal names only the address


class _Stale(Exception):
    """The connection ended before any byte of the answer came."""


class _Connection(asyncio.Protocol):
    """One socket; one exchange at a time. The answer is parsed as bytes arrive, with no task in between."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[Response] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timeout = 0.0
        self._last = 0.0  # when bytes last moved, for the silence timeout
        self._lost = False
        self._reusable = True
        self.idle_since = 0.0
        # the answer being read: its head once parsed, then how its body ends
        self._status = 0
        self._headers: dict[str, str] = {}
        self._body_at = -1  # where the body starts in the buffer; -1 while the head is incomplete
        self._length = -1  # Content-Length, or -1
        self._chunked = False
        self._chunks = bytearray()
        self._scan = 0  # the next chunk's size line, in a chunked body

    @property
    def usable(self) -> bool:
        return self._reusable and not self._lost and self._transport is not None and not self._transport.is_closing()

    async def exchange(self, head: bytes, body: bytes, timeout: float) -> Response:
        if not self.usable:
            raise _Stale
        assert self._transport is not None
        self._answer = answer = self._loop.create_future()
        self._timeout, self._last = timeout, self._loop.time()
        self._timer = self._loop.call_at(self._last + timeout, self._check_silence)
        try:
            if len(body) <= SLICE:
                self._transport.write(head + body)
            else:
                self._transport.write(head)
                view = memoryview(body)
                for at in range(0, len(body), SLICE):
                    self._transport.write(view[at:at + SLICE])
                    if self._drained is not None:
                        await self._drained
            return await answer
        finally:
            self._timer.cancel()
            self._answer = None

    def close(self) -> None:
        self._reusable = False
        if self._transport is not None:
            self._transport.close()

    # ---- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._answer is None or self._answer.done():  # bytes nobody asked for: never trust this one again
            self.close()
            return
        self._last = self._loop.time()
        try:
            response = self._parse()
        except HTTPError as exc:
            self._fail(exc)
            return
        if response is not None:
            self._finish(response)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._answer is None or self._answer.done():
            return
        if not self._buffer:
            self._fail(_Stale())
        elif self._body_at >= 0 and self._length < 0 and not self._chunked:  # a body that ends with the connection
            self._finish(Response(self._status, self._headers, bytes(self._buffer[self._body_at:])))
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

    def _parse(self) -> Response | None:
        """The whole answer once it is in the buffer, else None (called again as more arrives)."""
        buffer = self._buffer
        if self._body_at < 0:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > 65536:
                    raise HTTPError("the answer's head is over 64 KiB")
                return None
            self._read_head(bytes(buffer[:end]).decode("latin-1"))
            self._body_at = end + 4
            if 100 <= self._status < 200:  # an interim answer (100 Continue): the real one follows
                del buffer[:self._body_at]
                self._body_at = -1
                return self._parse()
            if self._status in (204, 304):
                self._length = 0
        if self._chunked:
            return self._read_chunks()
        if self._length >= 0 and len(buffer) - self._body_at >= self._length:
            if len(buffer) - self._body_at > self._length:
                self._reusable = False  # more than the answer: out of step, never reuse
            return Response(self._status, self._headers, bytes(buffer[self._body_at:self._body_at + self._length]))
        return None

    def _read_head(self, head: str) -> None:
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise HTTPError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        self._status = int(rest[:3])
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise HTTPError(f"malformed header line: {line[:40]!r}")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._headers = headers
        connection = headers.get("connection", "").lower()
        if "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection):
            self._reusable = False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise HTTPError(f"bad Content-Length: {headers['content-length'][:20]!r}") from None
        else:
            self._reusable = False  # the body ends when the server closes

    def _read_chunks(self) -> Response | None:
        buffer, at = self._buffer, max(self._scan, self._body_at)
        while True:
            self._scan = at
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                return None
            try:
                size = int(bytes(buffer[at:eol]).partition(b";")[0], 16)
            except ValueError:
                raise HTTPError("malformed chunked body") from None
            if size == 0:
                end = buffer.find(b"\r\n\r\n", eol)  # the empty line after any trailers
                if end < 0:
                    return None
                if len(buffer) > end + 4:
                    self._reusable = False
                return Response(self._status, self._headers, bytes(self._chunks))
            if len(buffer) < eol + 2 + size + 2:
                return None
            self._chunks += buffer[eol + 2:eol + 2 + size]
            at = eol + 2 + size + 2

    def _finish(self, response: Response) -> None:
        self._reset()
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(response)

    def _fail(self, exc: BaseException) -> None:
        self.close()
        self._reset()
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)

    def _reset(self) -> None:
        self._buffer.clear()
        self._body_at, self._length, self._chunked, self._scan = -1, -1, False, 0
        self._chunks = bytearray()

    def _check_silence(self) -> None:
        """One timer per request: re-armed from the last time bytes moved, fired only after real silence."""
        due = self._last + self._timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_silence)
        else:
            self._fail(HTTPError(f"timed out: nothing moved for {self._timeout:g} s"))
