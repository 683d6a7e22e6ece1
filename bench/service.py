"""A product running as a real process under the bench: started, watched through /proc, stopped."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.telegram import FakeTelegram

from . import procstat
from .products import Launch


_PR_SET_PDEATHSIG = 1


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when ``parent`` ends (Linux; ``None`` elsewhere).

    ``Service.stop`` runs in a ``finally``, which a SIGKILL, or a SIGTERM or SIGHUP Python does not handle,
    skips: the service would go on for hours, ~100 MB and its CPU taken from later runs. SIGKILL rather than
    SIGTERM because a service stuck in a loop that never yields would not act on a SIGTERM.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent ended before the signal was armed
            os._exit(1)

    return arm


@dataclass
class Service:
    """One started process (its own process group, so helpers it forks are stopped with it)."""

    proc: asyncio.subprocess.Process
    started: float
    log: Path

    @classmethod
    async def start(cls, launch: Launch, log: Path) -> Service:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                *launch.argv, env=launch.env, cwd=launch.cwd, stdin=asyncio.subprocess.DEVNULL,
                stdout=out, stderr=out, start_new_session=True,
                preexec_fn=_dies_with(os.getpid()))
        return cls(proc, started, log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def cpu(self) -> procstat.CpuReading:
        """CPU used so far by the process tree (subtract an earlier reading for the seconds in between)."""
        return procstat.CpuReading.of(self.pid)

    def peak_mib(self) -> float:
        """Peak resident memory (VmHWM) of the process tree so far, in MiB."""
        return procstat.memory_kib(self.pid, "VmHWM") / 1024 if self.alive else float("nan")

    async def ready(self, tg: FakeTelegram, timeout: float = 120) -> float:
        """Wait until it polls for updates (it is receiving); returns seconds since start."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive:
            if any(c.method == "getUpdates" and c.at >= self.started for c in tg.calls[-200:]):
                return time.monotonic() - self.started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"did not start polling within {timeout:.0f} s (exit code {self.proc.returncode}); "
                           f"see {self.log}")

    async def stop(self) -> None:
        """SIGTERM to its group, then SIGKILL if it has not ended within 15 s."""
        if not self.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            await self.proc.wait()


async def settle(tg: FakeTelegram, quiet: float = 1.0, limit: float = 30.0) -> bool:
    """Wait until the bot has made no call but polling for ``quiet`` seconds; ``False`` if it never did."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy = [c for c in tg.calls[-50:] if c.method != "getUpdates" and c.at > time.monotonic() - quiet]
        if not busy:
            return True
        await asyncio.sleep(0.2)
    return False
