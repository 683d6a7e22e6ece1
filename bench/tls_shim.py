"""A CONNECT proxy that plays ``api.telegram.org`` for a peer that cannot be given a Bot API base URL.

nanobot 0.3.5 builds its python-telegram-bot ``Application`` without ``base_url``, so it always dials
``https://api.telegram.org``; what it does take is an HTTP ``proxy``. This shim is that proxy: it accepts
``CONNECT api.telegram.org:443`` only, answers the TLS handshake itself with a certificate made for this run
(the peer trusts it through ``SSL_CERT_FILE``), and pipes the decrypted bytes to the fake Telegram's plain port.
The peer's code is not touched; it pays for TLS as it would against the real host. Every other host is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

from tests.fakes.tls import make_certificate

HOST = "api.telegram.org"


class TelegramShim:
    """``async with TelegramShim(fake_port, workdir) as shim:``, then point the peer at ``shim.proxy_url`` and
    have it trust ``shim.cert``."""

    def __init__(self, upstream_port: int, where: Path) -> None:
        self.upstream_port = upstream_port
        self.cert, key = make_certificate(HOST, where)
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(self.cert, key)
        self._server: asyncio.Server | None = None
        self.refused: list[str] = []  # CONNECT targets other than HOST (the peer tried to reach elsewhere)

    @property
    def proxy_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> TelegramShim:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server:
            self._server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if method != "CONNECT" or target.rsplit(":", 1)[0] != HOST:
                self.refused.append(f"{method} {target}")
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await writer.start_tls(self._tls)
            up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            # HTTP/1.1 needs no half-close: when either side ends the connection, end both.
            pipes = [asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(_pipe(up_reader, writer))]
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            for pipe in pipes:
                pipe.cancel()
        except (OSError, ValueError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # the peer hung up or gave up on a connection: nothing to report
        finally:
            for w in (writer, upstream):
                if w is not None:
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream."""
    with contextlib.suppress(OSError, ssl.SSLError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
