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
from typing import Protocol

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


class ModelServer(Protocol):
    """Where a fake OpenRouter listens (in process, or ``bench.model_process``'s child)."""

    base_url: str
    api_key: str


async def baseline(fake: ModelServer, sessions: int, turns: int = TURNS_PER_SESSION) -> list[float]:
    """Bare streamed completions: the floor any client pays for HTTP + SSE on loopback."""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {fake.api_key}"}) as http:

        async def one(i: int) -> list[float]:
            times = []
            for t in range(turns):
                body = {"model": "openrouter/auto", "stream": True, "messages": [{"role": "user", "content": f"s{i} t{t}"}]}
                start = time.perf_counter()
                async with http.post(fake.base_url + "/chat/completions", json=body) as resp:
                    async for _ in resp.content.iter_any():
                        pass
                times.append(time.perf_counter() - start)
            return times

        return [t for ts in await asyncio.gather(*(one(i) for i in range(sessions))) for t in ts]


def chorus(fake: ModelServer, store: Store) -> tuple[Dispatcher, NullChannel, OpenRouterClient]:
    """The real dispatcher and agent on ``store``, answering through ``fake`` into a channel that swallows replies."""
    config, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake.base_url}}}}, env={})
    llm = OpenRouterClient(fake.api_key, ProviderSettings(base_url=fake.base_url))
    return Dispatcher(Agent(config, store, llm), Inbox(store)), NullChannel(), llm


async def turns_through(dispatcher: Dispatcher, channel: NullChannel, sessions: int, turns: int = TURNS_PER_SESSION,
                        accepts: list[float] | None = None, tag: str = "") -> list[float]:
    """``turns`` turns in each of ``sessions`` chats at once: the times from handing a message to the dispatcher
    to its reply closing (``accepts``: until it is accepted). ``tag`` keeps chats and message ids of one run
    apart from another's on the same store."""

    async def one(i: int) -> list[float]:
        chat = ChatRef("bench", f"{tag}chat{i}")
        times = []
        for t in range(turns):
            inbound = Inbound(chat=chat, sender_id="u", sender_name="u", text=f"s{i} t{t}", message_id=f"{tag}{i}-{t}")
            answered = channel.answered[inbound.message_id] = asyncio.get_running_loop().create_future()
            start = time.perf_counter()
            await dispatcher.accept(inbound, channel)
            if accepts is not None:
                accepts.append(time.perf_counter() - start)
            await answered
            times.append(time.perf_counter() - start)
        return times

    return [t for ts in await asyncio.gather(*(one(i) for i in range(sessions))) for t in ts]


async def chorus_turns(fake: ModelServer, sessions: int, db: Path | str, accepts: list[float] | None = None) -> list[float]:
    """Times from handing a message to the dispatcher to its reply closing (``accepts``: until it is accepted),
    on a store opened at ``db`` (a SQLite file, or a PostgreSQL URL)."""
    store = await Store.open(db)
    dispatcher, channel, llm = chorus(fake, store)
    try:
        return await turns_through(dispatcher, channel, sessions, accepts=accepts)
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
