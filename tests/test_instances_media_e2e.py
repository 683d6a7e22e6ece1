"""Real ``chorus run`` instances on one PostgreSQL database, the fake Telegram and the fake OpenRouter: what
one instance left when it was killed (an unsent part, a video still being made) reaches the chat once, sent
by another; a reminder fires once however many instances look at it.

Instances that take Telegram updates by long polling run one at a time here (which instance polls is
another part of issue 29); the reminder's two instances run side by side on webhooks."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from providers.openrouter.media import data_url
from tests.conftest import Home, eventually, new_home, onboarded
from tests.fakes.media import make_png
from tests.fakes.openrouter import FakeOpenRouter, Text, ToolCalls, VideoPlan
from tests.fakes.telegram import FakeTelegram
from tests.service import Service
from tests.telegram_service import free_port, start, telegram_config

USER = 4242
LEASE_MS = 3000
VIDEO = {"agents": {"defaults": {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast",
                                                          "pollIntervalMs": 1000}}}}


async def instance(tmp_path: Path, name: str, tg: FakeTelegram, ai: FakeOpenRouter, pg_url: str,
                   config: dict[str, Any] | None = None, *, ready: str = "setMyCommands", **telegram: Any) -> Service:
    """``chorus run`` with a state directory of its own on the shared database, started and receiving."""
    home: Home = new_home(tmp_path / name)
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg, streaming="off", **telegram),
                      storage={"url": pg_url, "leaseMs": LEASE_MS}, **(config or {}))
    return await start(home, tg, ready=ready)


async def behind_a_balancer(stack: AsyncExitStack, tmp_path: Path, tg: FakeTelegram, ai: FakeOpenRouter, pg_url: str,
                            configs: dict[str, dict[str, Any]]) -> tuple[list[Service], list[str]]:
    """An instance per name in ``configs`` on webhooks of its own (stopped with ``stack``), and their webhook
    URLs: a test routes updates to one by setting ``tg.webhook["url"]``, as a load balancer would."""
    services, urls = [], []
    for name, config in configs.items():
        port = free_port()
        urls.append(f"http://127.0.0.1:{port}/telegram-webhook")
        service = await instance(tmp_path, name, tg, ai, pg_url, config, ready="setWebhook", webhookPort=port,
                                 webhookUrl=urls[-1], webhookSecret="s3cret")
        stack.push_async_callback(service.stop)
        services.append(service)
    return services, urls


async def until_done(pg_url: str, timeout: float = 20) -> None:
    """Wait until every inbox message is done (its turn over)."""
    conn = await asyncpg.connect(pg_url)
    try:
        async with asyncio.timeout(timeout):
            while await conn.fetchval("SELECT COUNT(*) FROM inbox WHERE status <> 'done'"):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()


def no_password(pg_url: str, *services: Service) -> None:
    password = urlsplit(pg_url).password
    assert password
    for service in services:
        assert password not in service.output, "the database password leaked into an instance's output"


async def test_an_answer_a_killed_instance_could_not_send_is_sent_once_by_another(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    async with AsyncExitStack() as stack:
        a = await instance(tmp_path, "a", tg, ai, pg_url)
        stack.push_async_callback(a.stop)
        tg.fail("sendMessage", 500, "Internal Server Error", chat_id=USER, times=3)  # every attempt A makes
        ai.queue(Text("The answer left behind."))
        tg.message(USER, "hello")
        await eventually(lambda: "stays pending" in a.log, "A gave up sending for now")
        await until_done(pg_url)  # a turn cut off mid-way is answered again by design: not what this is about
        await a.kill()
        assert tg.messages_in(USER) == []

        b = await instance(tmp_path, "b", tg, ai, pg_url)
        stack.push_async_callback(b.stop)
        # B started while A still looked alive (its heartbeat younger than the lease): the part is taken over
        # by a heartbeat's sweep once A counts as dead.
        await tg.wait_sent(USER, timeout=LEASE_MS / 1000 + 10)
        earlier = await tg.settled(USER)
        assert [s.text for s in earlier] == ["The answer left behind."]
        assert "took over 1 unsent part(s)" in b.log
        await b.stop()
        no_password(pg_url, a, b)


async def test_a_video_that_finishes_while_its_instance_is_dead_is_delivered_once_by_another(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    ai.video_plan.append(VideoPlan(polls_until_done=10**6))
    ai.queue(ToolCalls([("video_generate", {"prompt": "waves"})]), Text("Your video is on its way."))
    async with AsyncExitStack() as stack:
        a = await instance(tmp_path, "a", tg, ai, pg_url, VIDEO)
        stack.push_async_callback(a.stop)
        tg.message(USER, "make a video of waves")
        await tg.wait_sent(USER)
        (job,) = ai.videos.values()
        await eventually(lambda: job.polls >= 1, "A polled the job")
        await until_done(pg_url)
        await a.kill()
        job.plan.polls_until_done = job.polls + 1  # made while no instance is running

        b = await instance(tmp_path, "b", tg, ai, pg_url, VIDEO)
        stack.push_async_callback(b.stop)
        await tg.wait_for(lambda: tg.calls_to("sendVideo"), timeout=LEASE_MS / 1000 + 15, what="the video sent")
        earlier = await tg.settled(USER)
        assert [(s.method, s.text or s.caption) for s in earlier] == [("sendMessage", "Your video is on its way."),
                                                         ("sendVideo", "waves")]
        (sent,) = tg.calls_to("sendVideo")
        assert sent.file("video")[4:8] == b"ftyp"
        await b.stop()
        no_password(pg_url, a, b)


async def test_a_reminder_fires_once_with_two_instances_watching_it(tmp_path, fake_telegram, fake_openrouter, pg_url):
    """Both instances wake at the job's time (each saw it within its 5 s look): one conditional UPDATE claims
    the firing; the run then waits for the session's lease, wherever the chat's last turn ran."""
    tg, ai = fake_telegram, fake_openrouter
    remind = {"action": "add", "name": "stretch", "schedule": {"kind": "at", "at": "+8s"},
              "message": "Remind the user to stretch"}
    ai.queue(ToolCalls([("cron", remind)]), Text("I will remind you."), Text("⏰ Time to stretch!"))
    async with AsyncExitStack() as stack:
        services, _ = await behind_a_balancer(stack, tmp_path, tg, ai, pg_url, {"a": {}, "b": {}})
        tg.message(USER, "remind me in 8 seconds to stretch")
        await tg.wait_for(lambda: any(s.text == "⏰ Time to stretch!" for s in tg.messages_in(USER)), timeout=30,
                          what="the reminder")
        earlier = await tg.settled(USER)
        assert [s.text for s in earlier] == ["I will remind you.", "⏰ Time to stretch!"]
        fired = [s for s in services if "cron job #1 “stretch” firing" in s.log]
        assert len(fired) == 1
        for service in services:
            await service.stop()
        no_password(pg_url, *services)


async def test_a_reminder_waits_for_the_turn_another_instance_is_running_in_its_chat(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    """A fires the reminder while B answers the chat slowly: the scheduled turn waits for the session's lease
    (B gives it back once its lane is empty) and comes after B's answer, never beside it."""
    tg, ai = fake_telegram, fake_openrouter
    remind = {"action": "add", "name": "stretch", "schedule": {"kind": "at", "at": "+6s"},
              "message": "Remind the user to stretch"}
    ai.queue(ToolCalls([("cron", remind)]), Text("I will remind you."), Text("The long answer.", delay=9),
             Text("⏰ Time to stretch!"))
    async with AsyncExitStack() as stack:
        services, urls = await behind_a_balancer(stack, tmp_path, tg, ai, pg_url, {  # only A fires jobs
            "a": {"cron": {"enabled": True}}, "b": {"cron": {"enabled": False}}})
        a, b = services
        tg.webhook["url"] = urls[0]  # the balancer sends this one to A, which makes the job
        tg.message(USER, "remind me in 6 seconds to stretch")
        await tg.wait_sent(USER)
        tg.webhook["url"] = urls[1]  # and this one to B, which answers slowly
        tg.message(USER, "tell me something long")
        await tg.wait_for(lambda: len(tg.messages_in(USER)) >= 3, timeout=30, what="the reminder")
        await eventually(lambda: "cron job #1 “stretch” firing" in a.log, "A fired the reminder")
        earlier = await tg.settled(USER)
        assert [s.text for s in earlier] == ["I will remind you.", "The long answer.", "⏰ Time to stretch!"]
        assert "firing" not in b.log
        for service in services:
            await service.stop()
        no_password(pg_url, *services)


async def test_an_image_sent_to_one_instance_is_seen_by_the_model_in_a_turn_another_answers(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    ai.queue(Text("A small picture."), Text("Mostly one colour."))
    png = make_png(48, 32)
    async with AsyncExitStack() as stack:
        services, urls = await behind_a_balancer(stack, tmp_path, tg, ai, pg_url, {"a": {}, "b": {}})
        tg.webhook["url"] = urls[0]
        tg.photo(USER, png, width=48, height=32, caption="what is this?")
        await tg.wait_sent(USER)
        tg.webhook["url"] = urls[1]  # the next turn is answered by B, whose media directory never saw the image
        tg.message(USER, "and its colours?")
        await tg.wait_sent(USER, 2)
        first, second = ai.chat_requests()
        sent = [[p["image_url"]["url"] for m in r.json["messages"] if isinstance(m["content"], list)
                 for p in m["content"] if p["type"] == "image_url"] for r in (first, second)]
        assert sent == [[data_url(png, "image/png")]] * 2
        for service in services:
            await service.stop()
        no_password(pg_url, *services)
