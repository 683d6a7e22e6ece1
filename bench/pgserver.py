"""A throwaway PostgreSQL server for the bench, from the machine's own PostgreSQL binaries.

Production settings (``fsync`` and ``synchronous_commit`` on, the defaults): a commit waits for its WAL to
reach the disk, as it would for a real bot. The server listens on 127.0.0.1 only, with trust authentication,
in a temporary directory removed at the end. ``BENCH_POSTGRES_URL`` names a server of one's own instead (its
CPU is then not read, unless ``BENCH_POSTGRES_PID`` gives its postmaster's pid).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# Where distributions put the server's binaries (Debian/Ubuntu, RHEL's PGDG packages, source builds, Homebrew).
_BINDIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/opt/postgresql*/bin")


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl`` of the newest PostgreSQL on this machine, if any."""
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "pg_ctl").exists():
            return Path(out.stdout.strip())
    found = [Path(d) for pattern in _BINDIRS for d in glob.glob(pattern) if (Path(d) / "pg_ctl").exists()]

    def version(d: Path) -> tuple[int, ...]:
        digits = "".join(c if c.isdigit() else " " for c in str(d)).split()
        return tuple(int(x) for x in digits)

    return max(found, key=version, default=None)


@dataclass(frozen=True)
class Server:
    """A running server: the URL of the ``chorus`` role's database, and the postmaster's pid when known."""

    admin_url: str  # the superuser's, for creating a fresh database per run
    pid: int | None

    def url(self, database: str) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + database

    async def fresh_database(self, name: str) -> str:
        """An empty database ``name`` (dropped first if a run left it); returns its URL."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


def fresh_database_now(admin_url: str, name: str) -> str:
    """``Server.fresh_database`` for synchronous code that may run on an event loop's thread (in one of its own)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, Server(admin_url, None).fresh_database(name)).result()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as ``owner``."""
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextmanager
def running() -> Iterator[Server | None]:
    """A server for the length of the block; ``None`` (and a line saying why) when there is none to be had."""
    if url := os.environ.get("BENCH_POSTGRES_URL"):
        pid = os.environ.get("BENCH_POSTGRES_PID")
        yield Server(url, int(pid) if pid else None)
        return
    bindir = find_bindir()
    if bindir is None:
        print("PostgreSQL: no server binaries on this machine (install postgresql, or set BENCH_POSTGRES_URL)")
        yield None
        return
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres").pw_name
        except KeyError:
            print("PostgreSQL: running as root and there is no 'postgres' user to run the server as")
            yield None
            return
    with tempfile.TemporaryDirectory(prefix="chorus-bench-pg-") as tmp:
        data, port = Path(tmp) / "data", _free_port()
        if owner:
            shutil.chown(tmp, owner)
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                  "--no-sync"], owner), check=True, capture_output=True)
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1"
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", f"{tmp}/log",
                                  "-w", "start"], owner), check=True, capture_output=True)
        try:
            pid = int((data / "postmaster.pid").read_text().split()[0])
            yield Server(f"postgresql://postgres@127.0.0.1:{port}/postgres", pid)
        finally:
            subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], owner),
                           capture_output=True)
