"""The fake Discord gateway shards as Discord does: /gateway/bot recommends a count, IDENTIFY names a shard,
a guild's events reach only the shard (guild_id >> 22) % count and DMs only shard 0; a dropped shard
resumes with what it missed. Unpatched discord.py clients, one per shard as separate instances would run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import discord

from channels.discord.client import Rebase
from tests.fakes.discord import FakeDiscord


class ShardClient(discord.Client):
    """One shard of the bot, pointed at the fake; keeps what it heard, and the servers it was told of."""

    def __init__(self, fake: FakeDiscord, shard_id: int, shard_count: int) -> None:
        intents = discord.Intents.none()
        intents.guilds = intents.guild_messages = intents.dm_messages = intents.message_content = True
        # guild_ready_timeout: READY fires that long after the last GUILD_CREATE (2 s by default)
        super().__init__(intents=intents, shard_id=shard_id, shard_count=shard_count, max_messages=None,
                         guild_ready_timeout=0.1)
        Rebase(fake.api_base, fake.gateway_url).install(self.http)
        self.heard: list[str] = []

    async def on_message(self, message: discord.Message) -> None:
        self.heard.append(message.content)


@asynccontextmanager
async def shard_clients(fake: FakeDiscord, count: int) -> AsyncIterator[list[ShardClient]]:
    """One connected client per shard, as separate instances would hold them; closed after."""
    clients = [ShardClient(fake, i, count) for i in range(count)]
    runs = [asyncio.create_task(client.start(fake.token)) for client in clients]
    try:
        await fake.wait_for(lambda: fake.connected_shards() == set(range(count))
                            and all(c.is_ready() for c in clients) or any(r.done() for r in runs))
        for run in runs:
            if run.done():
                run.result()  # a client that stopped says why
        yield clients
    finally:
        for client in clients:
            await client.close()
        await asyncio.gather(*runs, return_exceptions=True)


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
        async with shard_clients(fake, 2) as clients:
            assert sorted(tuple(i["shard"]) for i in fake.identifies) == [(0, 2), (1, 2)]
            assert [[g.id for g in c.guilds] for c in clients] == [[int(guilds[0]["id"])], [int(guilds[1]["id"])]]
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
        async with shard_clients(fake, 2) as clients:
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
        async with shard_clients(fake, 2):
            assert not fake.shard_conflicts
            assert await _identify(fake, [1, 2]) == ("ready", [1, 2])  # a second holder of shard 1
        assert fake.shard_conflicts == ["shard [1, 2] identified while another connection held it"]
