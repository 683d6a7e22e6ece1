"""The fake Discord gateway shards as Discord does: /gateway/bot recommends a count, IDENTIFY names a shard,
a guild's events reach only the shard (guild_id >> 22) % count and DMs only shard 0; a dropped shard
resumes with what it missed. Unpatched discord.py clients (Client and AutoShardedClient), the shards split
between them as separate instances would hold them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

import aiohttp
import discord

from channels.discord.client import Rebase
from tests.fakes.discord import FakeDiscord


class Hears:
    """What a client heard, in order."""

    heard: list[str]

    async def on_message(self, message: discord.Message) -> None:
        self.heard.append(message.content)


class ShardClient(Hears, discord.Client):
    """The shards of one instance: ``shard_id`` of ``shard_count``."""


class AutoShards(Hears, discord.AutoShardedClient):
    """The shards of one instance: ``shard_ids`` of ``shard_count``, each on a connection of its own."""


Client = TypeVar("Client", bound=Hears)


def pointed(fake: FakeDiscord, cls: type[Client], **shards: Any) -> Client:
    """A ``cls`` with the intents of a chat bot, its REST and gateway pointed at ``fake``."""
    intents = discord.Intents.none()
    intents.guilds = intents.guild_messages = intents.dm_messages = intents.message_content = True
    # guild_ready_timeout: READY fires that long after the last GUILD_CREATE (2 s by default)
    client = cls(intents=intents, max_messages=None, guild_ready_timeout=0.1, **shards)
    Rebase(fake.api_base, fake.gateway_url).install(client.http)
    client.heard = []
    return client


@asynccontextmanager
async def running(fake: FakeDiscord, *clients: Hears) -> AsyncIterator[None]:
    """``clients`` started, as separate instances would run them, until every shard of the fake is
    connected and each client ready; closed after."""
    bots = [cast(discord.Client, c) for c in clients]
    runs = [asyncio.create_task(bot.start(fake.token)) for bot in bots]
    try:
        await fake.wait_for(lambda: fake.connected_shards() == set(range(fake.shards))
                            and all(b.is_ready() for b in bots) or any(r.done() for r in runs))
        for run in runs:
            if run.done():
                run.result()  # a client that stopped says why
        yield
    finally:
        for bot in bots:
            await bot.close()
        await asyncio.gather(*runs, return_exceptions=True)


def one_per_shard(fake: FakeDiscord) -> list[ShardClient]:
    return [pointed(fake, ShardClient, shard_id=i, shard_count=fake.shards) for i in range(fake.shards)]


async def test_gateway_bot_recommends_the_fake_s_shard_count() -> None:
    async with FakeDiscord(shards=3) as fake, aiohttp.ClientSession() as http:
        async with http.get(f"{fake.api_base}/gateway/bot", headers={"Authorization": f"Bot {fake.token}"}) as got:
            body = await got.json()
    assert body["shards"] == 3 and body["url"] == fake.gateway_url
    assert set(body["session_start_limit"]) == {"total", "remaining", "reset_after", "max_concurrency"}


async def test_each_shard_receives_only_its_guilds_and_dms_go_to_shard_zero() -> None:
    async with FakeDiscord(shards=2) as fake:
        guilds = [fake.guild("even", shard=0), fake.guild("odd", shard=1)]
        assert [fake.shard_of(g) for g in guilds] == [0, 1]
        channels = [fake.text_channel(g) for g in guilds]
        user = fake.user("ada")
        clients = one_per_shard(fake)
        async with running(fake, *clients):
            assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
            assert [[g.id for g in cast(discord.Client, c).guilds] for c in clients] == [[int(guilds[0]["id"])], [int(guilds[1]["id"])]]
            await fake.say(channels[0], user, "to the even server")
            await fake.say(channels[1], user, "to the odd server")
            await fake.say(fake.dm(user), user, "a direct message")
            for channel in channels:  # each shard's events arrive in order: its marker comes after the rest
                await fake.say(channel, user, "marker")
            await fake.wait_for(lambda: all(c.heard[-1:] == ["marker"] for c in clients))
        assert clients[0].heard == ["to the even server", "a direct message", "marker"]
        assert clients[1].heard == ["to the odd server", "marker"]
        assert not fake.shard_conflicts
        fake.assert_clean()


async def test_a_dropped_shard_resumes_with_what_it_missed_and_the_other_goes_on() -> None:
    async with FakeDiscord(shards=2) as fake:
        channels = [fake.text_channel(fake.guild(shard=i)) for i in range(2)]
        user = fake.user("ada")
        clients = one_per_shard(fake)
        async with running(fake, *clients):
            await fake.drop(shard=1, hold=True)  # its holder died, or its network did
            await fake.wait_for(lambda: fake.connected_shards() == {0})
            await fake.say(channels[1], user, "while shard 1 was away")
            await fake.say(channels[0], user, "shard 0 still here")
            await fake.wait_for(lambda: clients[0].heard == ["shard 0 still here"])
            fake.release()
            await fake.wait_for(lambda: clients[1].heard == ["while shard 1 was away"])
            assert fake.connected_shards() == {0, 1}
            (resume,) = fake.resumes
            assert resume["session_id"] == clients[1].ws.session_id  # shard 1's session, resumed
        assert len(fake.identifies) == 2  # not a new session


async def _identify(fake: FakeDiscord, shard: Any) -> tuple[str, Any]:
    """A raw IDENTIFY with ``shard``; what came back: ("closed", close code) or ("ready", READY's shard)."""
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{fake.gateway_url}?v=10&encoding=json") as ws:
        await ws.receive_json()  # HELLO
        await ws.send_json({"op": 2, "d": {"token": fake.token, "intents": 1, "shard": shard,
                                           "properties": {"os": "linux", "browser": "test", "device": "test"}}})
        msg = await ws.receive()
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return "closed", ws.close_code
        return "ready", json.loads(msg.data)["d"]["shard"]


async def test_an_identify_with_a_shard_discord_would_refuse_is_closed() -> None:
    async with FakeDiscord(shards=2) as fake:
        assert await _identify(fake, [2, 2]) == ("closed", 4010)  # id not below the count
        assert await _identify(fake, [-1, 2]) == ("closed", 4010)
        assert await _identify(fake, "0,2") == ("closed", 4010)
        assert await _identify(fake, [0, 1]) == ("closed", 4011)  # fewer shards than the bot needs
        assert await _identify(fake, [3, 4]) == ("ready", [3, 4])  # more than recommended is allowed
        assert fake.connected_shards() == set()  # that connection closed as the helper returned


async def test_a_shard_identified_twice_at_once_is_recorded() -> None:
    async with FakeDiscord(shards=2) as fake:
        async with running(fake, *one_per_shard(fake)):
            assert not fake.shard_conflicts
            assert await _identify(fake, [1, 2]) == ("ready", [1, 2])  # a second holder of shard 1
        assert fake.shard_conflicts == ["shard [1, 2] identified while another connection held it"]


async def test_auto_sharded_clients_holding_one_shard_each_hear_only_their_guilds() -> None:
    async with FakeDiscord(shards=2) as fake:
        channels = [fake.text_channel(fake.guild(shard=i)) for i in range(2)]
        user = fake.user("ada")
        clients = [pointed(fake, AutoShards, shard_ids=[i], shard_count=2) for i in range(2)]
        async with running(fake, *clients):  # each asks /gateway/bot where the gateway is
            for i, channel in enumerate(channels):
                await fake.say(channel, user, f"to shard {i}")
            for channel in channels:  # after the rest on each shard
                await fake.say(channel, user, "marker")
            await fake.wait_for(lambda: all(c.heard[-1:] == ["marker"] for c in clients))
        assert [c.heard for c in clients] == [["to shard 0", "marker"], ["to shard 1", "marker"]]
        assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
        assert not fake.shard_conflicts
        fake.assert_clean()
