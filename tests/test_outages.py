"""Background work through a database outage: cron and the video jobs say it once when it begins and once when
it ends, without a traceback, however often they look meanwhile; then they work again by themselves."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.cron.jobs import CronJobs
from bot.cron.runner import CronRunner
from bot.media.jobs import MediaJobs
from bot.store import Store
from channels.base import ChatRef, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.request import ProviderSettings
from tests.conftest import eventually


async def test_cron_and_video_jobs_say_an_outage_once_when_it_begins_and_once_when_it_ends(
        pg_url, pg_server, fake_openrouter, caplog: pytest.LogCaptureFixture) -> None:
    """Mutation: the outage logged at each failed look (a line, or a traceback, every poll)."""
    caplog.set_level(logging.INFO, logger="chorus")
    store = await Store.open(pg_url)

    async def fire(job: object, late: float | None) -> bool:
        return True

    async def deliver(chat: ChatRef, reply: Reply) -> None:
        pass

    async with OpenRouterClient(None, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        cron = CronRunner(CronJobs(store), fire, lambda: {"telegram"}, grace=60, poll=0.05)
        videos = MediaJobs(store, llm, deliver, poll_interval=0.05)
        await cron.start()
        await videos.start()
        try:
            await asyncio.to_thread(pg_server.kill)
            try:  # each looks again and again while the database is away
                await eventually(lambda: cron.outage.tries >= 5 and videos.outage.tries >= 5, "looks during the outage")
            finally:
                await asyncio.to_thread(pg_server.start)
            await eventually(lambda: cron.outage.since is None and videos.outage.since is None,
                             "both to find the database again", timeout=30)
        finally:
            await cron.stop()
            await videos.stop()
            await store.close()
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("chorus")]
    for what in ("cron", "video jobs"):
        said = [(level, text.split(" (")[0]) for level, text in lines if text.startswith(f"{what}: ")]
        assert said == [("WARNING", f"{what}: the database cannot be used now"),
                        ("INFO", f"{what}: the database answers again")], lines
    # no traceback, ours or the scheduler's (asyncpg's pool is quiet below ERROR outside tests: bot.redact)
    ours = [r for r in caplog.records if r.name.startswith(("chorus", "apscheduler"))]
    assert not [r for r in ours if r.exc_info or r.levelno >= logging.ERROR], caplog.text
