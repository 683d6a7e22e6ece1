"""Discord's gateway shards spread over instances sharing one PostgreSQL database: real ``chorus run``
processes against the fake Discord (two shards) and the fake OpenRouter. Each shard is held by one instance;
a killed instance's shard is taken over within the lease; an instance that holds no shard still sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import yarl

from bot.channel_settings import discord_settings
from bot.cluster import SharedCluster
from bot.config import parse_config
from bot.store import Store
from channels.base import ChatRef, Reply
from channels.discord.channel import DiscordChannel
from channels.discord.shards import lease_name
from tests.conftest import Home, new_home
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import FakeOpenRouter, Text
from tests.service import Service, start_chorus

LEASE_MS = 3000  # short, so the takeover is quick; the production default is 15 s


def configure(home: Home, openrouter: FakeOpenRouter, discord: FakeDiscord, database: str) -> None:
    """The same config on every instance: the shared database, the fake Discord, open to everyone."""
    home.write_config(openrouter, models={"providers": {"openrouter": {"apiKey": openrouter.api_key}}},
                      channels={"discord": discord.config(dmPolicy="open", groupPolicy="open")},
                      storage={"url": database, "leaseMs": LEASE_MS})


async def shard_holders(database: str) -> dict[int, str]:
    """Which instance holds each Discord shard's lease (the instance's id ends in ``-<pid>-<random>``)."""
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch("SELECT name, instance FROM leases WHERE name LIKE 'discord:shard:%'")
    except asyncpg.UndefinedTableError:  # the first instance has not migrated the database yet
        return {}
    finally:
        await conn.close()
    return {int(r["name"].removeprefix("discord:shard:").split("/")[0]): r["instance"] for r in rows}


def pid_of(instance: str) -> int:
    return int(instance.split("-")[-2])


async def until(check: Any, what: str, timeout: float) -> None:
    """Wait until the coroutine function ``check()`` is true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def instances(tmp_path: Path, count: int, openrouter: FakeOpenRouter, discord: FakeDiscord,
                    database: str) -> AsyncIterator[list[Service]]:
    """``count`` ``chorus run`` processes, each with a state directory of its own and the same config."""
    async with AsyncExitStack() as stack:
        services: list[Service] = []
        for i in range(count):
            home = new_home(tmp_path / f"instance-{i}")
            configure(home, openrouter, discord, database)
            service = await start_chorus(home, "run", stdin=False)
            stack.push_async_callback(service.stop)
            services.append(service)
        try:
            yield services
        except AssertionError as exc:
            logs = "\n".join(f"--- instance {i} (pid {s.pid}) ---\n{s.output}" for i, s in enumerate(services))
            raise AssertionError(f"{exc}\n{logs}") from None


async def ask_each_shard(discord: FakeDiscord, channels: list[dict[str, Any]], user: dict[str, Any],
                         text: str) -> None:
    """A message mentioning the bot in each server; waits until each is answered."""
    asked = [await discord.say(channel, user, f"<@{discord.bot['id']}> {text} {i}", mentions=[discord.bot])
             for i, channel in enumerate(channels)]
    for i, (channel, question) in enumerate(zip(channels, asked)):
        await discord.wait_for(lambda: any(m.data.get("message_reference", {}).get("message_id") == question["id"]
                                           for m in discord.bot_messages(channel)), timeout=LEASE_MS / 1000 + 15)
        (answer,) = [m for m in discord.bot_messages(channel)
                     if m.data.get("message_reference", {}).get("message_id") == question["id"]]
        assert f"{text} {i}" in answer.content


async def test_two_instances_hold_a_shard_each_and_the_survivor_takes_over_a_killed_one(
        tmp_path: Path, pg_url: str, fake_openrouter: FakeOpenRouter) -> None:
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord:
        channels = [discord.text_channel(discord.guild(f"server {i}", shard=i)) for i in range(2)]
        ann = discord.user("ann")
        async with instances(tmp_path, 2, fake_openrouter, discord, pg_url) as services:
            pids = {s.pid for s in services}

            def ready(holders: dict[int, str]) -> bool:
                """Each shard's holder has said it connected it (and the fake has a connection on each)."""
                return discord.connected_shards() == {0, 1} and all(
                    f"(gateway, shard {shard} of 2)" in s.output
                    for shard, holder in holders.items() for s in services if s.pid == pid_of(holder))

            async def one_each() -> bool:  # an instance that started alone took both, then handed one over
                holders = await shard_holders(pg_url)
                return {pid_of(h) for h in holders.values()} == pids and ready(holders)

            await until(one_each, "one shard connected on each instance", timeout=30)
            holders = await shard_holders(pg_url)
            await ask_each_shard(discord, channels, ann, "hello from shard")

            killed = next(s for s in services if s.pid == pid_of(holders[0]))  # shard 0 also carries the DMs
            survivor = next(s for s in services if s is not killed)
            await killed.kill()
            gone = time.monotonic()
            print("DEBUG shard 0 left after", time.monotonic() - gone)

            async def survivor_holds_both() -> bool:
                now = await shard_holders(pg_url)
                return set(now.values()) == {holders[1]} and ready(now)

            await until(survivor_holds_both, "the survivor to take shard 0 over", timeout=LEASE_MS / 1000 + 15)
            await ask_each_shard(discord, channels, ann, "again from shard")
            print(f"kill -9 to both shards answered again: {time.monotonic() - gone:.1f} s (lease {LEASE_MS} ms)")
            assert survivor.output.count("(gateway, shard 0 of 2)") == 1 + ("handing shard 0" in survivor.output)
        for channel in channels:  # each message answered once, in its own shard's server
            assert len(discord.bot_messages(channel)) == 2
        assert not discord.shard_conflicts  # never two connections on one shard at once
        password = yarl.URL(pg_url).password
        assert password and all(password not in s.output for s in services)
        discord.assert_clean()


async def test_an_instance_holding_no_shard_still_sends_and_edits(pg_url: str) -> None:
    """The turn runs wherever its session's lease is: its answer goes out by REST, no gateway needed."""
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord:
        ann = discord.user("ann")
        dm = discord.dm(ann)
        config, _ = parse_config({"channels": {"discord": discord.config(dmPolicy="open")}, "storage": {"url": pg_url}},
                                 env={})
        settings = discord_settings(config, lambda name, cfg: None)
        assert settings is not None
        stores = [await Store.open(pg_url) for _ in range(2)]
        other, this = [SharedCluster(store.db, LEASE_MS / 1000, url=pg_url) for store in stores]

        async def heard(word: str) -> None:
            pass

        channel = DiscordChannel(settings, leases=this)
        try:
            for cluster in (other, this):
                await cluster.start(heard)
            assert all([await other.take(lease_name(shard, 2)) for shard in range(2)])  # the other runs both
            running = asyncio.create_task(channel.run(lambda inbound: asyncio.sleep(0)))
            chat = ChatRef("discord", dm["id"])
            await asyncio.wait_for(channel.send(chat, Reply("a whole answer")), 20)
            stream = channel.open_stream(chat)
            while len(discord.bot_messages(dm)) < 2:  # shown once the stream's throttle has passed
                await stream.delta("first words" if not stream.text else "")
                await asyncio.sleep(0.1)
            await stream.close(Reply("first words, then the rest"))
            await discord.wait_for(lambda: discord.bot_messages(dm)[-1].content == "first words, then the rest")
            assert [m.content for m in discord.bot_messages(dm)] == ["a whole answer", "first words, then the rest"]
            assert discord.bot_messages(dm)[1].history  # the streamed message was edited, not posted again
            assert not discord.identifies  # it never connected to the gateway
            await channel.stop()
            assert await running is None
        finally:
            for cluster in (this, other):
                await cluster.stop()
            for store in stores:
                await store.close()
        discord.assert_clean()
