"""The real ``chorus run`` as a background service, stopped by SIGTERM as a supervisor would."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tests.conftest import Home


@dataclass
class Service:
    proc: asyncio.subprocess.Process
    log: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.log)


@asynccontextmanager
async def running(home: Home, *args: str, stop_timeout: float = 20) -> AsyncIterator[Service]:
    """``chorus run`` in a child process for the block; its stdout and stderr are collected in ``log``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "run", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=home.env, cwd=str(home.path.parent),
    )
    service = Service(proc)

    async def pump() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            service.log.append(line.decode(errors="replace"))

    reader = asyncio.create_task(pump())
    try:
        yield service
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), stop_timeout)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await reader
