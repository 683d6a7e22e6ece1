"""Three real ``chorus run`` on one PostgreSQL database behind a round-robin balancer, Telegram in webhook mode,
when something fails: an instance killed mid-turn (another answers within the lease; ``chorus doctor`` lists who
is alive), the database gone for 10 s (webhooks refused meanwhile, nothing accepted lost, every instance back by
itself)."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from bot.agent import CRASHED
from tests.conftest import chorus
from tests.fakes.openrouter import Hang, Text
from tests.instances import LEASE_MS, instances


async def test_a_killed_instances_turn_is_answered_by_another_within_the_lease(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    chat = 7100
    ai.for_text["slow question"] = [Hang(3600)]  # the first try never ends; the next is answered at once
    async with instances(tmp_path, tg, ai, pg_url) as cluster:
        await cluster.query("INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES ('ancient-1-0',"
                            " 'ancient', 1, 0, extract(epoch from now()) - 172800)")  # killed 2 days ago: forgotten
        tg.message(chat, "slow question")
        await tg.wait_for(lambda: any(r.json and r.json["messages"][-1]["content"] == "slow question"
                                      for r in ai.chat_requests()), what="the slow turn began")
        holder = await cluster.holder(f"telegram:{chat}")
        assert holder is not None
        await holder.service.kill()
        killed = time.monotonic()
        await tg.wait_for(lambda: tg.texts_in(chat), timeout=LEASE_MS / 1000 + 5, what="the answer from another")
        took = time.monotonic() - killed
        texts = [s.text for s in await tg.settled(chat)]
        survivor = next(n for n in cluster.nodes if n is not holder)
        doctor = await chorus(survivor.home, "doctor")
    assert texts == ["echo: slow question"], texts
    # chorus doctor lists the instances: the survivors alive, the killed one silent; the password masked
    lines = doctor.out.splitlines()
    db = urlsplit(pg_url)
    assert f"ok   database: postgresql://chorus:***@{db.hostname}:{db.port}{db.path} at schema version" in doctor.out
    assert "ok   instances: 2 alive, 1 silent" in doctor.out and "ancient" not in doctor.out, doctor.out
    for node in cluster.nodes:
        (line,) = [line for line in lines if f", pid {node.service.pid}, " in line]
        assert line.startswith("ok   instance ") and ("(dead)" if node is holder else "last heartbeat") in line, line
    assert db.password not in doctor.out + doctor.err and "service:" not in doctor.out  # no SQLite lock check
    assert took < LEASE_MS / 1000 + 5
    assert len([r for r in ai.chat_requests() if r.json["messages"][-1]["content"] == "slow question"]) == 2


async def test_the_database_gone_for_10_s_means_5xx_meanwhile_then_every_message_answered_once(
        tmp_path, fake_telegram, fake_openrouter, pg_url, pg_server):
    tg, ai = fake_telegram, fake_openrouter
    chats = [7300 + i for i in range(6)]
    flight = 7399
    async with instances(tmp_path, tg, ai, pg_url) as cluster:
        for chat in chats:
            tg.message(chat, f"before {chat}")
        await tg.wait_for(lambda: all(tg.texts_in(c) for c in chats), what="the answers before the outage")
        # A turn under way when the database goes: its answer cannot be stored, so it is answered again after.
        ai.for_text["in flight"] = [Text("never stored", delay=3)]
        tg.message(flight, "in flight")
        await tg.wait_for(lambda: any(r.json["messages"][-1]["content"] == "in flight" for r in ai.chat_requests()),
                          what="the turn under way")
        await asyncio.to_thread(pg_server.kill)
        down = time.monotonic()
        try:
            during = []
            for chat in chats:
                tg.message(chat, f"during {chat}")
                during.append(tg.last_update_id)
            refused = lambda u: any(i == u and status >= 500 for i, status in tg.webhook_results)  # noqa: E731
            await tg.wait_for(lambda: all(refused(u) for u in during), what="every update refused with a 5xx")
            await asyncio.sleep(max(0.0, 10 - (time.monotonic() - down)))  # the outage lasts its 10 s
            assert all(f"echo: during {c}" not in tg.texts_in(c) for c in chats)
        finally:
            await asyncio.to_thread(pg_server.start)
        await tg.wait_for(lambda: all(f"echo: during {c}" in tg.texts_in(c) for c in chats)
                          and "echo: in flight" in tg.texts_in(flight), timeout=30,
                          what="every message of the outage answered")
        for node in cluster.nodes:  # each instance takes and answers messages again by itself, no restart
            cluster.balancer.pin = lambda update, port=node.port: port
            tg.message(chats[0], f"after {node.port}")
            await tg.wait_for(lambda port=node.port: f"echo: after {port}" in tg.texts_in(chats[0]),
                              what=f"an answer through the instance on {node.port}")
        cluster.balancer.pin = lambda update: None
        for _ in range(50):  # and each beats its heart again
            if await cluster.alive() == len(cluster.nodes):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("not every instance is alive again")
        listening = await cluster.query("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                        " AND query LIKE 'LISTEN %'")  # each listens again for the others' words
        assert listening == 3, f"{listening} of the 3 instances listen"
        settled = {chat: [s.text for s in await tg.settled(chat)] for chat in chats}
        flown = [s.text for s in await tg.settled(flight)]
    assert flown[-1] == "echo: in flight" and flown.count("echo: in flight") == 1, flown
    assert all(t == CRASHED for t in flown[:-1]), flown  # said when its answer could not be stored
    for chat, texts in settled.items():
        answers = [t for t in texts if t.startswith("echo: ")]
        told = [t for t in texts if not t.startswith("echo: ")]
        after = [f"echo: after {n.port}" for n in cluster.nodes] if chat == chats[0] else []
        assert answers == [f"echo: before {chat}", f"echo: during {chat}", *after], texts
        # while the database is away the user hears that their message was not saved, at most once per instance
        assert all(t.startswith("⚠️ I could not save your message") for t in told) and len(told) <= 3, told
    assert tg.updates == []
