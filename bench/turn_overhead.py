"""The service's own overhead per turn at 1, 10 and 100 concurrent sessions.

Each turn goes through the real agent (store, history, streaming, SQLite writes)
to the fake OpenRouter on loopback, which answers at once. The baseline is the
same streamed completion made with a bare aiohttp session (the client Chorus uses) against the same fake
in the same run, so ``overhead = turn − baseline`` is what Chorus itself adds.
"""

from __future__ import annotations

import asyncio
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import aiohttp

from bot.agent import Agent
from bot.config import parse_config
from bot.dispatch import Dispatcher
from bot.store import Inbox, Store
from channels.base import Capabilities, ChatRef, Inbound, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.request import ProviderSettings
from tests.fakes.openrouter import FakeOpenRouter

TURNS_PER_SESSION = 5


class NullChannel:
    """A channel that swallows replies, so only Chorus's own work is timed; ``answered`` resolves per message."""

    name = "bench"
    capabilities = Capabilities(streams_text=True)

    def __init__(self) -> None:
        self.answered: dict[str | None, asyncio.Future[None]] = {}

    async def run(self, on_message):  # pragma: no cover - not used
        return None

    async def stop(self) -> None:
        return None

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        return None

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> NullChannel:
        return self

    async def delta(self, text: str) -> None:
        return None

    async def close(self, reply: Reply) -> None:
        if (waiter := self.answered.pop(reply.reply_to, None)) is not None:
            waiter.set_result(None)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def baseline(fake: FakeOpenRouter, sessions: int) -> list[float]:
    """Bare streamed completions: the floor any client pays for HTTP + SSE on loopback."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {fake.api_key}"}) as http:

        async def one(i: int) -> list[float]:
            times = []
            for t in range(TURNS_PER_SESSION):
                body = {"model": "openrouter/auto", "stream": True, "messages": [{"role": "user", "content": f"s{i} t{t}"}]}
                start = time.perf_counter()
                async with http.post(fake.base_url + "/chat/completions", json=body) as resp:
                    async for _ in resp.content.iter_any():
                        pass
                times.append(time.perf_counter() - start)
            return times

        return [t for ts in await asyncio.gather(*(one(i) for i in range(sessions))) for t in ts]


async def chorus_turns(fake: FakeOpenRouter, sessions: int, db: Path, accepts: list[float] | None = None) -> list[float]:
    """Times from handing a message to the dispatcher to its reply closing (``accepts``: until it is accepted)."""
    config, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake.base_url}}}}, env={})
    store = await Store.open(db)
    llm = OpenRouterClient(fake.api_key, ProviderSettings(base_url=fake.base_url))
    dispatcher = Dispatcher(Agent(config, store, llm), Inbox(store))
    channel = NullChannel()

    async def one(i: int) -> list[float]:
        chat = ChatRef("bench", f"chat{i}")
        times = []
        for t in range(TURNS_PER_SESSION):
            inbound = Inbound(chat=chat, sender_id="u", sender_name="u", text=f"s{i} t{t}", message_id=f"{i}-{t}")
            answered = channel.answered[inbound.message_id] = asyncio.get_running_loop().create_future()
            start = time.perf_counter()
            await dispatcher.accept(inbound, channel)
            if accepts is not None:
                accepts.append(time.perf_counter() - start)
            await answered
            times.append(time.perf_counter() - start)
        return times

    try:
        return [t for ts in await asyncio.gather(*(one(i) for i in range(sessions))) for t in ts]
    finally:
        await dispatcher.drain()  # the last inbox writes follow the replies
        await llm.aclose()
        await store.close()


async def main() -> None:
    print(f"turn overhead: {TURNS_PER_SESSION} turns per session, fake model answers at once (python {sys.version.split()[0]})")
    print(f"{'sessions':>8} {'base med ms':>12} {'turn med ms':>12} {'turn p99 ms':>12} {'overhead med':>13} "
          f"{'accept med ms':>14} {'turns/s':>9} {'peak MiB':>9}")
    async with FakeOpenRouter() as fake:
        for sessions in (1, 10, 100):
            base = await baseline(fake, sessions)
            with tempfile.TemporaryDirectory() as tmp:
                started = time.perf_counter()
                accepts: list[float] = []
                turns = await chorus_turns(fake, sessions, Path(tmp) / "timed.db", accepts)
                wall = time.perf_counter() - started
                # Memory in a second pass: tracemalloc slows every allocation and would skew the times.
                tracemalloc.start()
                await chorus_turns(fake, sessions, Path(tmp) / "traced.db")
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            med_b, med_t = statistics.median(base), statistics.median(turns)
            print(
                f"{sessions:>8} {med_b * 1000:>12.2f} {med_t * 1000:>12.2f} {pct(turns, 0.99) * 1000:>12.2f} "
                f"{(med_t - med_b) * 1000:>11.2f}ms {statistics.median(accepts) * 1000:>14.2f} "
                f"{len(turns) / wall:>9.1f} {peak / 2**20:>9.1f}"
            )
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
