"""The Discord path end to end, in one process: fake Discord gateway/REST and fake OpenRouter on loopback,
the real adapter, dispatcher and agent between them.

Per turn: the first visible sign (the typing indicator, or the answer if that comes first) and the whole
answer, both from the moment the gateway delivers the user's message; and turns per second overall.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

from bot.agent import Agent
from bot.config import parse_config
from bot.dispatch import Dispatcher
from bot.channel_settings import discord_settings
from bot.runtime import Env
from bot.store import Inbox, Store
from channels.discord.channel import DiscordChannel
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.request import ProviderSettings
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import FakeOpenRouter

TURNS_PER_SESSION = 5


async def one_session(discord: FakeDiscord, firsts: list[float], wholes: list[float]) -> None:
    user = discord.user("bench")
    dm = discord.dm(user)
    for turn in range(TURNS_PER_SESSION):
        typed = discord.typing.get(dm["id"], 0)
        start = time.perf_counter()
        await discord.say(dm, user, f"turn {turn}")
        first = None
        while discord.posted.get(dm["id"], 0) <= turn:
            if first is None and discord.typing.get(dm["id"], 0) > typed:
                first = time.perf_counter()
            await asyncio.sleep(0.002)
        end = time.perf_counter()
        firsts.append((first or end) - start)
        wholes.append(end - start)


async def main() -> None:
    print(f"discord path: {TURNS_PER_SESSION} turns per session through the fake gateway and REST, model answers at once")
    print(f"{'sessions':>8} {'first sign med ms':>18} {'answer med ms':>14} {'answer p90 ms':>14} {'turns/s':>8}")
    async with FakeOpenRouter() as openrouter, FakeDiscord() as discord:
        raw = {"models": {"providers": {"openrouter": {"baseUrl": openrouter.base_url}}},
               "channels": {"discord": discord.config(dmPolicy="open")}}
        config, _ = parse_config(raw, env={})
        settings = discord_settings(config, Env().lookup)
        assert settings is not None
        with tempfile.TemporaryDirectory() as tmp:
            store = await Store.open(Path(tmp) / "bench.db")
            llm = OpenRouterClient(openrouter.api_key, ProviderSettings(base_url=openrouter.base_url))
            dispatcher = Dispatcher(Agent(config, store, llm), Inbox(store))
            channel = DiscordChannel(settings)
            task = asyncio.create_task(channel.run(partial(dispatcher.accept, channel=channel)))
            await discord.wait_for(lambda: discord.ready.is_set())
            try:
                for sessions in (1, 10, 50):
                    firsts: list[float] = []
                    wholes: list[float] = []
                    started = time.perf_counter()
                    await asyncio.gather(*(one_session(discord, firsts, wholes) for _ in range(sessions)))
                    wall = time.perf_counter() - started
                    p90 = sorted(wholes)[int(0.9 * (len(wholes) - 1))]
                    print(f"{sessions:>8} {statistics.median(firsts) * 1000:>18.1f} {statistics.median(wholes) * 1000:>14.1f} "
                          f"{p90 * 1000:>14.1f} {len(wholes) / wall:>8.1f}")
            finally:
                await dispatcher.drain()
                await channel.stop()
                await task
                await llm.aclose()
                await store.close()
