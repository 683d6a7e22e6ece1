"""A real host's name on loopback, over TLS: for a client that must believe it talks to that host (openrouter.ai)
while only a fake on 127.0.0.1 answers. A certificate made for the run, and a resolver that sends every name to
a local port; the client's own code, headers and TLS stay as they are in production."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

from aiohttp.abc import AbstractResolver, ResolveResult


def make_certificate(host: str, where: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for ``host`` (trusted by the client as its only CA); returns (cert, key)."""
    where.mkdir(parents=True, exist_ok=True)
    cert, key = where / f"{host}-cert.pem", where / f"{host}-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={host}",
                        "-addext", f"subjectAltName=DNS:{host}"], check=True, capture_output=True)
    return cert, key


class LoopbackResolver(AbstractResolver):
    """Every name resolves to 127.0.0.1 at ``port``: nothing leaves the machine."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=self.port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None
