"""The real ``chorus`` process left running while a test drives it: feed its stdin, read what it wrote,
stop it as a supervisor would (SIGTERM), end its input, or kill it as a power cut would."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.conftest import Home, Result


class Service:
    """A running ``chorus`` child; stdout and stderr are read as they come, so a long run never blocks on a
    full pipe and a test can look at them while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._out, self._err = bytearray(), bytearray()
        self._readers = [asyncio.create_task(self._pump(stream, into))
                         for stream, into in ((proc.stdout, self._out), (proc.stderr, self._err)) if stream]

    @staticmethod
    async def _pump(stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into += chunk

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def out(self) -> str:
        return self._out.decode(errors="replace")

    @property
    def log(self) -> str:
        """What it logged (stderr)."""
        return self._err.decode(errors="replace")

    @property
    def output(self) -> str:
        return self.out + self.log

    async def say(self, *lines: str | bytes) -> None:
        """Type lines on its stdin (the console channel reads them)."""
        assert self.proc.stdin is not None
        for line in lines:
            self.proc.stdin.write((line.encode() if isinstance(line, str) else line) + b"\n")
        await self.proc.stdin.drain()

    async def finish(self, timeout: float = 60) -> Result:
        """End its input (the console answers what it holds and exits) and wait for it."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return await self._ended(timeout)

    async def stop(self, timeout: float = 20) -> Result:
        """SIGTERM and wait (killed if it does not stop within ``timeout``)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await self._ended(timeout)
        except TimeoutError:
            return await self.kill()

    async def kill(self) -> Result:
        """SIGKILL: no chance to clean up."""
        if self.proc.returncode is None:
            self.proc.kill()
        return await self._ended(None)

    async def _ended(self, timeout: float | None) -> Result:
        await asyncio.wait_for(self.proc.wait(), timeout)
        await asyncio.gather(*self._readers)
        return Result(self.proc.returncode or 0, self.out, self.log)


async def start_chorus(home: Home, *args: str, stdin: bool = True) -> Service:
    """Start ``python -m bot ARGS`` in the background (``stdin``: a pipe for ``say``, else nothing)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=home.env, cwd=str(home.path.parent),
    )
    return Service(proc)


@asynccontextmanager
async def running(home: Home, *args: str, stop_timeout: float = 20) -> AsyncIterator[Service]:
    """``chorus run ARGS`` for the block, stopped with SIGTERM after it."""
    service = await start_chorus(home, "run", *args, stdin=False)
    try:
        yield service
    finally:
        await service.stop(stop_timeout)
