"""The fake OpenRouter in a process of its own, so that the bench process's CPU is Chorus's work alone.

``python -m bench.model_process`` prints the fake's port on its first line and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tests.fakes.openrouter import FakeOpenRouter


@dataclass(frozen=True)
class ModelProcess:
    """Where the fake listens and the key it takes (what ``FakeOpenRouter`` offers a client), and its pid."""

    base_url: str
    api_key: str
    pid: int


@asynccontextmanager
async def fake_model() -> AsyncIterator[ModelProcess]:
    """The fake OpenRouter in a child process for the length of the block."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.model_process",
                                                 stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None and child.stdin is not None
    try:
        port = int((await asyncio.wait_for(child.stdout.readline(), 30)).decode())
        yield ModelProcess(f"http://127.0.0.1:{port}/api/v1", FakeOpenRouter().api_key, child.pid)
    finally:
        child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()


async def _serve() -> None:
    async with FakeOpenRouter() as fake:
        print(fake.port, flush=True)
        # Served until the parent closes our stdin (or dies): nothing of ours outlives the bench.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(_serve())
