"""Discord's gateway shards spread over instances sharing one PostgreSQL database: real ``chorus run``
processes against the fake Discord (two shards) and the fake OpenRouter. Each shard is held by one instance;
a killed instance's shard is taken over within the lease; an instance that holds no shard still sends. On
SQLite the one instance runs them all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yarl

from bot.channel_settings import discord_settings
from bot.cluster import SharedCluster
from bot.config import parse_config
from bot.kept import KeptValues
from bot.store import Store
from channels.base import ChatRef, Inbound, Reply
from channels.discord import client
from channels.discord.channel import DiscordChannel
from channels.discord.settings import DiscordSettings
from channels.discord.shards import lease_name
from tests.conftest import Home, new_home
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import FakeOpenRouter
from tests.service import Service, start_chorus
from tests.test_discord_e2e import discord_in_process

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


async def until(check: Any, what: str, timeout: float) -> None:
    """Wait until the coroutine function ``check()`` is true, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Instances:
    """``chorus run`` processes, each with a state directory of its own and the same config."""

    tmp_path: Path
    openrouter: FakeOpenRouter
    discord: FakeDiscord
    database: str
    services: list[Service] = field(default_factory=list)

    async def start(self) -> Service:
        home = new_home(self.tmp_path / f"instance-{len(self.services)}")
        configure(home, self.openrouter, self.discord, self.database)
        self.services.append(await start_chorus(home, "run", stdin=False))
        return self.services[-1]

    def running(self) -> list[Service]:
        return [s for s in self.services if s.proc.returncode is None]

    def by_instance(self, instance: str) -> Service:
        """The process of an instance id (it ends in ``-<pid>-<random>``)."""
        (found,) = [s for s in self.services if s.pid == int(instance.split("-")[-2])]
        return found

    async def ready(self) -> dict[int, Service]:
        """Each shard's holder, once every shard is held by a running instance that said it connected it;
        else an empty dict."""
        holders = {shard: self.by_instance(holder) for shard, holder in (await shard_holders(self.database)).items()}
        if self.discord.connected_shards() == set(range(self.discord.shards)) == set(holders) and all(
                s in self.running() and f"(gateway, shard {shard} of {self.discord.shards})" in s.output
                for shard, s in holders.items()):
            return holders
        return {}


@asynccontextmanager
async def instances(tmp_path: Path, openrouter: FakeOpenRouter, discord: FakeDiscord,
                    database: str) -> AsyncIterator[Instances]:
    """The instances started in the block, stopped after it; a failure shows what each logged."""
    made = Instances(tmp_path, openrouter, discord, database)
    try:
        yield made
    except AssertionError as exc:
        logs = "\n".join(f"--- instance {i} (pid {s.pid}) ---\n{s.output}" for i, s in enumerate(made.services))
        raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        for service in made.services:
            await service.stop()


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
    """Two instances, two shards: one each. One killed: the other takes its shard within the lease. A third
    joins: it gets a shard of the survivor's. It stops cleanly: its shard is given up as it leaves."""
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord:
        channels = [discord.text_channel(discord.guild(f"server {i}", shard=i)) for i in range(2)]
        ann = discord.user("ann")
        async with instances(tmp_path, fake_openrouter, discord, pg_url) as cluster:
            first = [await cluster.start(), await cluster.start()]

            async def spread(among: list[Service]) -> bool:  # the shards' holders, connected, are ``among``
                return sorted((await cluster.ready()).values(), key=id) == sorted(among, key=id)

            # an instance that started alone took both shards, and handed one over when the other joined
            await until(lambda: spread(first), "one shard connected on each instance", timeout=30)
            await ask_each_shard(discord, channels, ann, "hello from shard")

            killed = (await cluster.ready())[0]  # shard 0 also carries the DMs
            (survivor,) = [s for s in first if s is not killed]
            await killed.kill()
            gone = time.monotonic()
            await discord.wait_for(lambda: 0 not in discord.connected_shards())  # its connection died with it
            await until(lambda: spread([survivor, survivor]), "the survivor to take shard 0 over",
                        timeout=LEASE_MS / 1000 + 15)
            await ask_each_shard(discord, channels, ann, "again from shard")
            print(f"kill -9 to both shards answered again: {time.monotonic() - gone:.1f} s (lease {LEASE_MS} ms)")

            joined = await cluster.start()
            await until(lambda: spread([survivor, joined]), "the survivor to hand a shard to the new instance", timeout=30)
            await ask_each_shard(discord, channels, ann, "after the join from shard")
            assert (await joined.stop()).code == 0
            # given up as it left (the survivor may have taken it already), not held on until the lease runs out
            assert joined not in [cluster.by_instance(h) for h in (await shard_holders(pg_url)).values()]
            await until(lambda: spread([survivor, survivor]), "the survivor to take the left shard", timeout=30)
            await ask_each_shard(discord, channels, ann, "after the stop from shard")
        for channel in channels:  # each message answered once, in its own shard's server
            assert len(discord.bot_messages(channel)) == 4
        assert not discord.shard_conflicts  # never two connections on one shard at once
        password = yarl.URL(pg_url).password
        assert password and all(password not in s.output for s in cluster.services)
        discord.assert_clean()


def settings_for(discord: FakeDiscord) -> DiscordSettings:
    config, _ = parse_config({"channels": {"discord": discord.config(dmPolicy="open")}}, env={})
    settings = discord_settings(config, lambda name, cfg: None)
    assert settings is not None
    return settings


@asynccontextmanager
async def two_instances(database: str) -> AsyncIterator[tuple[SharedCluster, SharedCluster]]:
    """Two instances' clusters in this process (this one, the other), joined on ``database``."""
    stores = [await Store.open(database) for _ in range(2)]
    clusters = [SharedCluster(store.db, LEASE_MS / 1000, url=database) for store in stores]

    async def heard(word: str) -> None:
        pass

    try:
        for cluster in clusters:
            await cluster.start(heard)
        yield clusters[0], clusters[1]
    finally:
        for cluster in clusters:
            await cluster.stop()
        for store in stores:
            await store.close()


async def test_an_instance_holding_no_shard_still_sends_and_edits(pg_url: str) -> None:
    """The turn runs wherever its session's lease is: its answer goes out by REST, no gateway needed."""
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord, two_instances(pg_url) as (this, other):
        ann = discord.user("ann")
        dm = discord.dm(ann)
        assert all([await other.take(lease_name(shard, 2)) for shard in range(2)])  # the other runs both
        channel = DiscordChannel(settings_for(discord), leases=this)
        running = asyncio.create_task(channel.run(lambda inbound: asyncio.sleep(0)))
        try:
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
        finally:
            await channel.stop()
            assert await running is None
        discord.assert_clean()


async def test_a_shard_taken_over_while_its_holder_was_cut_off_is_disconnected_there(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """An instance silent for a whole lease (cut off from the database) is dead to the others, who take its
    shard; once it hears again it learns so, and disconnects the shard rather than run it twice."""
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord, two_instances(pg_url) as (this, other):
        assert await other.take(lease_name(1, 2))
        channel = DiscordChannel(settings_for(discord), leases=this)
        running = asyncio.create_task(channel.run(lambda inbound: asyncio.sleep(0)))
        try:
            await discord.wait_for(lambda: discord.connected_shards() == {0})  # its share: the free one

            async def silent_then_taken() -> bool:  # as the others see an instance cut off for the lease
                await other.db.write(lambda tx: tx.execute(
                    "UPDATE instances SET heartbeat_at = heartbeat_at - 60 WHERE id = ?", this.id))
                return await other.take(lease_name(0, 2))

            await until(silent_then_taken, "the other instance to take shard 0", timeout=10)
            await discord.wait_for(lambda: discord.connected_shards() == set())
            assert "shard 0 of 2 was taken over by another instance" in caplog.text
        finally:
            await channel.stop()
            assert await running is None
        assert not discord.shard_conflicts
        discord.assert_clean()


async def test_one_instance_runs_every_shard_discord_recommends_spacing_their_identifies(
        tmp_path: Path, fake_openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite the one instance connects all the shards GET /gateway/bot recommends (no shardCount set), one
    IDENTIFY per 5 s as Discord allows (shortened here), and answers in the servers of each and in DMs."""
    monkeypatch.setattr(client, "IDENTIFY_SPACING", 1.0)
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord:
        channels = [discord.text_channel(discord.guild(f"server {i}", shard=i)) for i in range(2)]
        ann = discord.user("ann")
        async with discord_in_process(tmp_path, fake_openrouter, discord, dmPolicy="open", groupPolicy="open") as channel:
            assert channel.settings.shard_count is None  # no shardCount: Discord's recommended count
            await discord.wait_for(lambda: len(discord.identifies) == 2)
            assert sorted(i["shard"] for i in discord.identifies) == [[0, 2], [1, 2]]
            # sent a second apart (their arrival can differ by the loopback's jitter, far below half of that)
            assert discord.identified_at[1] - discord.identified_at[0] >= 0.5
            await discord.wait_for(lambda: discord.connected_shards() == {0, 1})
            await ask_each_shard(discord, channels, ann, "one instance, shard")
            dm = discord.dm(ann)
            await discord.say(dm, ann, "and a DM")  # DMs ride on shard 0
            (answer,) = await discord.wait_sent(dm)
            assert answer.content == "echo: and a DM"
        assert not discord.shard_conflicts
        discord.assert_clean()


async def test_a_slash_command_is_answered_by_follow_up_from_the_instance_that_runs_its_turn(
        pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The instance holding the shard receives a slash command and defers it ("thinking…"); its turn runs on the
    other instance, which answers it as the interaction's follow-up, once: the token waited in the database,
    never in a log. A token Discord no longer takes (15 minutes on) costs the follow-up, not the answer.
    Two instances' channels in this process are enough: the answering one never sees the interaction, only what
    the database keeps (the dispatch of a turn to the lease holder is the failover tests' own).
    Mutation: the token kept in the receiving instance's memory only (the answer posted as a plain message)."""
    caplog.set_level(logging.INFO, logger="chorus")
    async with FakeDiscord(shards=1, heartbeat_ms=500) as discord, two_instances(pg_url) as (this, other):
        ann = discord.user("ann")
        dm = discord.dm(ann)
        assert await this.take(lease_name(0, 1))  # this instance receives everything
        heard: list[Inbound] = []

        async def accepted(inbound: Inbound) -> None:  # its turn runs on the other instance
            heard.append(inbound)

        receiving = DiscordChannel(settings_for(discord), leases=this, kept=KeptValues(this.db))
        answering = DiscordChannel(settings_for(discord), leases=other, kept=KeptValues(other.db))
        running = [asyncio.create_task(receiving.run(accepted)),
                   asyncio.create_task(answering.run(lambda inbound: asyncio.sleep(0)))]
        followups = lambda: discord.calls_to("POST", "/webhooks/{webhook_id}/{webhook_token}")  # noqa: E731
        try:
            await discord.wait_for(lambda: discord.connected_shards() == {0} and discord.commands.get("global"))
            interaction = await discord.slash(dm, ann, "status")
            await discord.wait_for(lambda: len(heard) == 1)
            await asyncio.wait_for(answering.send(heard[0].chat, Reply("Model: kimi", reply_to=heard[0].message_id)), 20)
            (followup,) = followups()
            assert followup.path == f"/webhooks/{discord.application_id}/{interaction['token']}"
            assert [m.content for m in discord.bot_messages(dm)] == ["Model: kimi"]
            assert await other.db.fetchval("SELECT count(*) FROM shared_values") == 0  # answered: forgotten

            late = await discord.slash(dm, ann, "status")
            await discord.wait_for(lambda: len(heard) == 2)
            discord.expire(late)
            await asyncio.wait_for(answering.send(heard[1].chat, Reply("Model: still kimi", reply_to=heard[1].message_id)), 20)
            assert [m.content for m in discord.bot_messages(dm)] == ["Model: kimi", "Model: still kimi"]
            assert len(followups()) == 2  # the refused one, then the answer in the chat itself
            assert interaction["token"] not in caplog.text and late["token"] not in caplog.text
        finally:
            for channel in (receiving, answering):
                await channel.stop()
            assert await asyncio.gather(*running) == [None, None]
        discord.assert_clean()


async def test_a_slash_command_reaching_the_shard_holder_is_answered_by_the_instance_holding_its_chat(
        tmp_path: Path, pg_url: str, fake_openrouter: FakeOpenRouter) -> None:
    """Two ``chorus run`` on one database: the one holding the shard receives /status and defers it, while the
    other holds the chat's lease; that one runs the command and answers it as the interaction's follow-up, once.
    Mutation: the runtime not handing the database's ``shared_values`` to the channel (the token in the receiver's
    memory only): no follow-up, which also shows that the answer came from the other instance."""
    async with FakeDiscord(shards=2, heartbeat_ms=500) as discord:
        ann = discord.user("ann")
        dm = discord.dm(ann)
        async with instances(tmp_path, fake_openrouter, discord, pg_url) as cluster:
            both = [await cluster.start(), await cluster.start()]

            async def spread() -> bool:
                return sorted((await cluster.ready()).values(), key=id) == sorted(both, key=id)

            await until(spread, "one shard connected on each instance", timeout=30)
            receiving = (await cluster.ready())[0]  # shard 0 carries the DMs
            (answering,) = [s for s in both if s is not receiving]
            conn = await asyncpg.connect(pg_url)
            try:
                async def listening() -> bool:  # both joined, and hear the other's words
                    return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                               " AND query LIKE 'LISTEN %'") == 2
                await until(listening, "both instances to listen", timeout=30)
                answerer = await conn.fetchval("SELECT id FROM instances WHERE pid = $1", answering.pid)
                await conn.execute("INSERT INTO leases (name, instance, taken_at)"
                                   " VALUES ($1, $2, extract(epoch from clock_timestamp()))",
                                   f"session:discord:{dm['id']}", answerer)  # the chat is the other's now
            finally:
                await conn.close()
            await discord.wait_for(lambda: discord.commands.get("global"))
            interaction = await discord.slash(dm, ann, "status")
            followed = f"/webhooks/{discord.application_id}/{interaction['token']}"
            await discord.wait_for(lambda: any(c.path == followed for c in discord.calls), timeout=30)
            await discord.say(dm, ann, "and then")  # a later marker: nothing more comes of the command
            await discord.wait_for(lambda: len(discord.bot_messages(dm)) == 2, timeout=30)
            status, echo = [m.content for m in discord.bot_messages(dm)]
            assert "Model" in status and echo == "echo: and then", (status, echo)
            assert len([c for c in discord.calls if c.path == followed]) == 1
            assert all(interaction["token"] not in s.output for s in cluster.services)
        discord.assert_clean()
