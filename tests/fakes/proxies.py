"""Two small proxies on 127.0.0.1 that log what passes: an HTTP proxy (CONNECT tunnels and plain requests by whole
URL) and a SOCKS5 one (RFC 1928, with RFC 1929's username/password). Each records every target it was asked for
and the login it was given; ``dial`` maps a name to a local port, so a client asking for ``api.telegram.org:443``
reaches a fake."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import struct
from dataclasses import dataclass, field


@dataclass
class Passed:
    """One connection through the proxy: what was asked for (``host:port``, or a whole URL), the login."""

    target: str
    login: str | None
    headers: str = ""  # a plain request's head, as the proxy got it


@dataclass
class _Proxy:
    dial: dict[str, tuple[str, int]] = field(default_factory=dict)  # "host:port" or "host" -> where to connect
    login: tuple[str, str] | None = None  # required when set
    passed: list[Passed] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    scheme = ""

    def url_with_login(self, user: str, password: str) -> str:
        return f"{self.scheme}://{user}:{password}@127.0.0.1:{self.port}"

    def where(self, host: str, port: int) -> tuple[str, int]:
        return self.dial.get(f"{host}:{port}") or self.dial.get(host) or (host, port)

    async def __aenter__(self) -> _Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int,
                    first: bytes = b"") -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.where(host, port))
        upstream_writer.write(first)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.write_eof()

        try:
            await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))
        finally:
            upstream_writer.close()


class HTTPProxy(_Proxy):
    """CONNECT host:port -> a tunnel; GET http://host/path -> forwarded. ``Proxy-Authorization`` is checked when
    ``login`` is set (407 otherwise)."""

    scheme = "http"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
        lines = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)}
        login = None
        if auth := lines.get("proxy-authorization"):
            login = base64.b64decode(auth.removeprefix("Basic ")).decode()
        self.passed.append(Passed(target, login, head if method != "CONNECT" else ""))
        if self.login and login != ":".join(self.login):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await self._pipe(reader, writer, host.strip("[]"), int(port))
            return
        url = target.removeprefix("http://")
        authority, _, path = url.partition("/")
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "80")
        # One request per connection (each is logged): forwarded in origin form with "Connection: close", its
        # proxy headers dropped (the origin never sees the login).
        kept = [line for line in head.split("\r\n")[1:] if line and not line.lower().startswith(("proxy-", "connection:"))]
        forwarded = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "Connection: close", "", ""])
        await self._pipe(reader, writer, host, int(port), forwarded.encode("latin-1"))


class SOCKS5Proxy(_Proxy):
    """SOCKS5 CONNECT by name (socks5h) or by IP address (socks5: the client resolved it)."""

    scheme = "socks5"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        login = None
        if self.login or (2 in methods and 0 not in methods):
            writer.write(b"\x05\x02")
            await writer.drain()
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            login = f"{user}:{(await reader.readexactly(plen)).decode()}"
            ok = not self.login or login == ":".join(self.login)
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            await writer.drain()
            if not ok:
                self.passed.append(Passed("(refused login)", login))
                return
        else:
            writer.write(b"\x05\x00")
            await writer.drain()
        _, command, _, kind = await reader.readexactly(4)
        if kind == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        elif kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        else:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        self.passed.append(Passed(f"{host}:{port}", login))
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", self.port))
        await writer.drain()
        await self._pipe(reader, writer, host, port)
