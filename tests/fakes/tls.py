"""A real host's name on loopback, over TLS: for a client that must believe it talks to that host (openrouter.ai)
while only a fake on 127.0.0.1 answers. A certificate made for the run; the client dials the fake's port for that
name (``connect_to``), and its own code, headers and TLS stay as they are in production."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certificate(host: str, where: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for ``host`` (trusted by the client as its only CA); returns (cert, key)."""
    where.mkdir(parents=True, exist_ok=True)
    cert, key = where / f"{host}-cert.pem", where / f"{host}-key.pem"
    if not cert.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={host}",
                        "-addext", f"subjectAltName=DNS:{host}"], check=True, capture_output=True)
    return cert, key
