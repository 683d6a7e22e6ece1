"""Shared fixtures: an isolated state dir, the fake OpenRouter server, and the real ``chorus`` process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator

import pytest

from tests.fakes.openrouter import FakeOpenRouter

if TYPE_CHECKING:
    from tests.pgserver import PgServer

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Home:
    """A state directory and environment of one's own, as a new user would have."""

    path: Path
    env: dict[str, str]

    @property
    def config(self) -> Path:
        return self.path / "chorus.json5"

    def write_config(self, fake: FakeOpenRouter | None = None, **sections: Any) -> Path:
        """Write a config pointing at ``fake``, merged with ``sections`` (JSON is valid JSON5)."""
        cfg: dict[str, Any] = {}
        if fake is not None:
            cfg["models"] = {"providers": {"openrouter": {"baseUrl": fake.base_url, "maxRetries": 0}}}
        _merge(cfg, sections)
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(cfg, indent=2))
        return self.config


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def new_home(tmp_path: Path) -> Home:
    """A state dir under ``tmp_path`` and a child-process environment with no key or config from this machine."""
    state = tmp_path / "chorus-home"
    leave_out = {"OPENROUTER_API_KEY", "CHORUS_CONFIG", "CHORUS_HOME", "TELEGRAM_BOT_TOKEN", "DISCORD_BOT_TOKEN"}
    # A proxy of the machine running the tests would carry the fakes' loopback traffic off somewhere else.
    leave_out |= {f"{name}_proxy" for name in ("http", "https", "all", "no")}
    env = {k: v for k, v in os.environ.items() if k not in leave_out and k.lower() not in leave_out}
    env.update(CHORUS_HOME=str(state), HOME=str(tmp_path), CI="true", PYTHONUNBUFFERED="1")
    return Home(state, env)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A fresh state dir; no key or config leaks in from the machine running the tests."""
    made = new_home(tmp_path)
    state = made.path
    for key in ("OPENROUTER_API_KEY", "CHORUS_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CHORUS_HOME", str(state))
    monkeypatch.chdir(tmp_path)  # so no .env from the checkout is read
    return made


@pytest.fixture
async def fake_openrouter():
    """The fake OpenRouter on 127.0.0.1; a contract violation in any request fails the test."""
    async with FakeOpenRouter() as fake:
        yield fake
        fake.assert_clean()


@dataclass
class Result:
    code: int
    out: str
    err: str


async def chorus(home: Home, *args: str, stdin: str = "", timeout: float = 60) -> Result:
    """Run the real ``chorus`` CLI in a child process (``python -m bot``) with piped stdin."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=home.env, cwd=str(home.path.parent),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    return Result(proc.returncode or 0, out.decode(), err.decode())


async def onboarded(home: Home, fake: FakeOpenRouter) -> None:
    """Store the fake's key the way a user would: through onboarding."""
    home.write_config(fake)
    result = await chorus(home, "onboard", "--auth-choice", "openrouter-api-key", "--openrouter-api-key", fake.api_key)
    assert result.code == 0, result.err


async def eventually(check: Any, what: str, timeout: float = 20) -> None:
    """Wait until ``check()`` is true (polling), or fail naming ``what``."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


# Runs ``python -m bot`` as its child and reports the child's peak RSS (KiB) on its last stderr line.
_MEASURE = ("import resource, subprocess, sys; code = subprocess.run([sys.executable, '-m', 'bot', *sys.argv[1:]]).returncode; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)")


async def chorus_peak_rss(home: Home, *args: str, stdin: str = "", timeout: float = 60) -> tuple[Result, float]:
    """``chorus(...)``, and the peak memory (RSS, MB) of the ``chorus`` process over its whole run."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _MEASURE, *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=home.env, cwd=str(home.path.parent),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout)
    *rest, peak = err.decode().rstrip("\n").split("\n")
    return Result(proc.returncode or 0, out.decode(), "\n".join(rest)), int(peak) / 1024


@pytest.fixture
async def fake_telegram():
    """The fake Telegram Bot API on 127.0.0.1; a call Telegram would refuse fails the test."""
    from tests.fakes.telegram import FakeTelegram

    async with FakeTelegram() as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of this pytest worker (tests/pgserver.py), stopped and removed at the end."""
    from tests.pgserver import start_postgres

    base = Path(tempfile.mkdtemp(prefix="chorus-pg-"))  # under /tmp: the postgres user can reach it
    try:
        server = start_postgres(base)
        yield server
        server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """The URL of a new empty database on ``pg_server``, owned by the ``chorus`` role; dropped after the test."""
    async with pg_server.database() as url:
        yield url
