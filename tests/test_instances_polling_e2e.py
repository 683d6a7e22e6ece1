"""Telegram long polling with several instances on one PostgreSQL database: one polls, the others stand by.

Real ``chorus run`` processes, each with a state directory of its own and the same config (the fake Bot API,
the fake OpenRouter, ``storage.url``), as an operator runs them on several hosts. The fake Bot API answers a
second ``getUpdates`` in flight with 409 Conflict, as Telegram does: none may be seen.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import asyncpg
import pytest

from bot.cluster import SharedCluster
from bot.leases import SharedLeases
from bot.store import Store
from channels.telegram.poller import PollerSeat
from tests.conftest import chorus, eventually, new_home
from tests.fakes.openrouter import FakeOpenRouter, Hang, last_user_text
from tests.fakes.telegram import BOT, FakeTelegram
from tests.service import Service, start_chorus
from tests.telegram_service import telegram_config

if TYPE_CHECKING:
    from tests.pgserver import PgServer

pytestmark = pytest.mark.asyncio
POLLS = "this instance polls for updates now"
STANDS_BY = "another instance polls for updates"
LEASE, OFFSET = f"telegram:poller:{BOT['id']}", f"telegram:offset:{BOT['id']}"


async def start_instances(count: int, where: Path, tg: FakeTelegram, ai: FakeOpenRouter, pg_url: str,
                          lease_ms: int) -> list[Service]:
    """``count`` instances of one bot on one database, started together; returned once each polls or stands by."""
    services = []
    for n in range(count):
        home = new_home(where / f"instance{n}")
        home.write_config(ai, **telegram_config(tg, streaming="off"), storage={"url": pg_url, "leaseMs": lease_ms},
                          models={"providers": {"openrouter": {"apiKey": ai.api_key}}})
        services.append(await start_chorus(home, "run", stdin=False))
    await eventually(lambda: all(POLLS in s.log or STANDS_BY in s.log or s.proc.returncode is not None
                                 for s in services), "every instance to poll or stand by", timeout=60)
    assert all(s.proc.returncode is None for s in services), [s.log for s in services]
    return services


async def poller(services: list[Service]) -> Service:
    """The one running instance that polls (it said so last), once there is one."""
    def polling() -> list[Service]:
        return [s for s in services if s.proc.returncode is None and s.log.rfind(POLLS) > s.log.rfind(STANDS_BY)]

    await eventually(lambda: len(polling()) == 1, "one instance to poll")
    return polling()[0]


async def stored_offset(pg_url: str) -> int | None:
    conn = await asyncpg.connect(pg_url)
    try:
        value = await conn.fetchval("SELECT value FROM shared_values WHERE name = $1", OFFSET)
    finally:
        await conn.close()
    return None if value is None else json.loads(value)["offset"]


async def kept_past(pg_url: str, update_id: int, timeout: float = 20) -> int:
    """Wait until the stored offset confirms ``update_id``; returns it."""
    async with asyncio.timeout(timeout):
        while (offset := await stored_offset(pg_url)) is None or offset <= update_id:
            await asyncio.sleep(0.05)
    return offset


async def lease_holder(pg_url: str) -> str | None:
    """The instance the poller lease names (alive or not)."""
    conn = await asyncpg.connect(pg_url)
    try:
        return await conn.fetchval("SELECT instance FROM leases WHERE name = $1", LEASE)
    finally:
        await conn.close()


def instance_id(service: Service) -> str:
    """The id an instance joined with (its first log line says)."""
    found = re.search(r"instance (\S+) joined", service.log)
    assert found, service.log
    return found.group(1)


async def all_done(pg_url: str, timeout: float = 20) -> None:
    """Wait until every accepted message is marked answered. A stop is sent only then: a turn cut between its
    answer going out and being marked answered is answered again by the next instance (the dispatcher's window,
    not the poller's, which these tests are about)."""
    conn = await asyncpg.connect(pg_url)
    try:
        async with asyncio.timeout(timeout):
            while await conn.fetchval("SELECT count(*) FROM inbox WHERE status = 'pending'"):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


def conflicts(tg: FakeTelegram) -> list[float]:
    return [c.at for c in tg.calls if c.method == "getUpdates" and c.status == 409]


async def answered(tg: FakeTelegram, chats: dict[int, list[str]]) -> None:
    """Wait until every chat has an answer for each of its messages."""
    await eventually(lambda: all(len(tg.messages_in(chat)) >= len(texts) for chat, texts in chats.items()),
                     f"answers to {chats}", timeout=40)


async def stop_all(services: list[Service], tg: FakeTelegram, pg_url: str) -> None:
    logs = [(await s.stop()).err for s in services]
    password = urlsplit(pg_url).password
    assert password and all(password not in log for log in logs), "the database password leaked into a log"
    assert all(tg.token.split(":")[1] not in log for log in logs), "the bot token leaked into a log"


async def test_one_instance_polls_and_another_takes_over_from_a_killed_one(
        tmp_path: Path, fake_telegram: FakeTelegram, fake_openrouter: FakeOpenRouter, pg_url: str) -> None:
    tg, ai = fake_telegram, fake_openrouter
    services = await start_instances(3, tmp_path, tg, ai, pg_url, lease_ms=3000)
    try:
        sent = {7001: ["a1", "a2"], 7002: ["b1", "b2"], 7003: ["c1"]}
        for chat, texts in sent.items():
            for text in texts:
                tg.message(chat, text)
        await answered(tg, sent)
        assert conflicts(tg) == []  # never two getUpdates at once
        first = await poller(services)
        assert sum(STANDS_BY in s.log for s in services) == 2
        # The doctor of any instance names the poller rather than probing getUpdates (a 409 for the poller).
        doctor = await chorus(new_home(tmp_path / "instance2"), "doctor")
        assert (f"ok   telegram updates: polled by instance {instance_id(first)} (host {socket.gethostname()}, "
                f"pid {first.pid}) (no webhook)") in doctor.out, doctor.out
        await kept_past(pg_url, tg.last_update_id)  # kept once accepted, for whoever polls next

        # The poller runs a slow turn in 7001 while two more messages wait behind it (accepted); then it dies.
        ai.queue(Hang(20))
        tg.message(7001, "slow")
        await eventually(lambda: any(last_user_text(r.json["messages"]) == "slow" for r in ai.chat_requests()),
                         "the slow turn to start")
        tg.message(7001, "a3")
        tg.message(7001, "a4")
        kept = await kept_past(pg_url, tg.last_update_id)
        await first.kill()
        killed_at = time.monotonic()
        for chat, text in ((7002, "b3"), (7003, "c2"), (7001, "a5")):
            tg.message(chat, text)

        # Another instance polls within the lease (and a few seconds), from the offset the dead one kept.
        await tg.wait_for(lambda: any(c.method == "getUpdates" and c.at > killed_at for c in tg.calls), timeout=3 + 10)
        after = next(c for c in tg.calls if c.method == "getUpdates" and c.at > killed_at)
        assert after.params.get("offset") == kept
        second = await poller(services)
        assert second is not first
        expected = {7001: ["a1", "a2", "slow", "a3", "a4", "a5"], 7002: ["b1", "b2", "b3"], 7003: ["c1", "c2"]}
        await answered(tg, expected)

        # A clean stop lets the lease go at once: the third instance polls.
        third = next(s for s in services if s not in (first, second))
        await all_done(pg_url)
        await second.stop()
        assert await lease_holder(pg_url) in (None, instance_id(third))
        await eventually(lambda: POLLS in third.log, "the third instance to poll")
        for chat, texts in expected.items():
            earlier = await tg.settled(chat)
            assert [s.text for s in earlier] == [f"echo: {t}" for t in texts], chat
        assert conflicts(tg) == []
    finally:
        await stop_all(services, tg, pg_url)


async def test_a_stopped_poller_hands_over_at_once_with_the_default_lease(
        tmp_path: Path, fake_telegram: FakeTelegram, fake_openrouter: FakeOpenRouter, pg_url: str) -> None:
    """With the production lease (15 s) a clean stop must not leave the bot unpolled until the lease runs out:
    the stopped poller's last heartbeat counts for at least 10 s more, so a take-over within 8 s was handed."""
    tg, ai = fake_telegram, fake_openrouter
    services = await start_instances(2, tmp_path, tg, ai, pg_url, lease_ms=15_000)
    try:
        first = await poller(services)
        other = next(s for s in services if s is not first)
        tg.message(7101, "before")
        await answered(tg, {7101: ["before"]})
        await all_done(pg_url)
        await first.stop()
        assert await lease_holder(pg_url) in (None, instance_id(other))
        await eventually(lambda: POLLS in other.log, "the other instance to poll", timeout=8)
        earlier = await tg.settled(7101)
        assert [s.text for s in earlier] == ["echo: before"]
        assert conflicts(tg) == []
    finally:
        await stop_all(services, tg, pg_url)


async def test_a_poller_cut_off_from_the_database_stops_polling_until_a_heartbeat_passes(
        pg_url: str, pg_server: PgServer) -> None:
    """Once its last heartbeat is a lease old, the others count an instance dead and one of them polls: the
    cut-off one must stop by then (two pollers answer each other 409), knowing it without the database."""
    store = await Store.open(pg_url)
    cluster = SharedCluster(store.db, 1.0, url=pg_url)

    async def heard(word: str) -> None:
        pass

    await cluster.start(heard)
    seat = PollerSeat(SharedLeases(cluster, store.db), BOT["id"])
    try:
        assert await seat.take() and seat.held()
        await asyncio.to_thread(pg_server.kill)
        try:
            await eventually(lambda: not seat.held(), "the lease to lapse", timeout=10)
            assert not await seat.take()  # the database cannot tell: not polling
        finally:
            await asyncio.to_thread(pg_server.start)
        await eventually(seat.held, "a heartbeat to bring the lease back", timeout=20)
    finally:
        await cluster.stop()
        await store.close()
