"""The real ``chorus run`` process talking to the fake Telegram and the fake OpenRouter, driven by a test."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import Home, onboarded
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram


class Service:
    """A running ``chorus run``; what it logs is read as it comes (``log``), so a long run never blocks on a
    full pipe and tests can look at the log while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._err = bytearray()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._err += chunk

    @property
    def log(self) -> str:
        return self._err.decode(errors="replace")

    async def stop(self) -> str:
        """SIGTERM, wait, and return what it logged."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self._reader
        return self.log

    async def kill(self) -> None:
        """kill -9: no shutdown at all."""
        self.proc.kill()
        await self.proc.wait()
        await self._reader


def telegram_config(tg: FakeTelegram, **telegram: Any) -> dict[str, Any]:
    """``channels.telegram`` pointing at the fake, with short poll and throttle times so tests are quick."""
    return {"channels": {"telegram": {"botToken": tg.token, "apiRoot": tg.api_root, "pollTimeoutSeconds": 1,
                                      "streamThrottleMs": 150, "dmPolicy": "open", "groupPolicy": "open",
                                      **telegram}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start(home: Home, tg: FakeTelegram, *, ready: str = "setMyCommands") -> Service:
    """Start ``chorus run`` and wait until it has called ``ready`` on the fake (it is receiving)."""
    before = len(tg.calls)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=home.env, cwd=str(home.path.parent))
    service = Service(proc)
    try:
        await tg.wait_for(lambda: any(c.method == ready for c in tg.calls[before:]) or proc.returncode is not None,
                          timeout=30)
    except TimeoutError:
        raise AssertionError(f"chorus did not start: {await service.stop()}") from None
    assert proc.returncode is None, await service.stop()
    return service


@asynccontextmanager
async def running(home: Home, tg: FakeTelegram, ai: FakeOpenRouter, config: dict[str, Any] | None = None,
                  *, ready: str = "setMyCommands", **telegram: Any) -> AsyncIterator[Service]:
    """Onboarded, configured for the fake Telegram (``telegram``: keys of ``channels.telegram``; ``config``: other
    sections), started; stopped (SIGTERM) afterwards."""
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg, **telegram), **(config or {}))
    service = await start(home, tg, ready=ready)
    try:
        yield service
    finally:
        log = await service.stop()
        assert tg.token not in log and tg.token.split(":")[1] not in log, "the bot token leaked into the log"
