"""The real ``chorus run`` process talking to the fake Telegram and the fake OpenRouter, driven by a test."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import Home, onboarded
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram
from tests.service import Service, start_chorus


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
    service = await start_chorus(home, "run", stdin=False)
    proc = service.proc
    try:
        await tg.wait_for(lambda: any(c.method == ready for c in tg.calls[before:]) or proc.returncode is not None,
                          timeout=30)
    except TimeoutError:
        raise AssertionError(f"chorus did not start: {(await service.stop()).err}") from None
    assert proc.returncode is None, (await service.stop()).err
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
        log = (await service.stop()).err
        assert tg.token not in log and tg.token.split(":")[1] not in log, "the bot token leaked into the log"
