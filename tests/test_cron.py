"""The cron runner and tool against a real database, with a clock the test moves (no waiting for real time)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pytest

from bot.access import AccessPolicy
from bot.config import parse_config
from bot.cron.jobs import CronJob, CronJobs
from bot.cron.runner import CronRunner
from bot.cron.tool import CronTool
from bot.store import Store
from bot.tools import ToolContext, ToolRegistry
from channels.base import ChatRef, Inbound

CHAT = ChatRef("console", "local")


class Clock:
    """Unix time that moves only when told."""

    def __init__(self, at: datetime) -> None:
        self.t = at.timestamp()

    def __call__(self) -> float:
        return self.t

    def at(self, when: datetime) -> None:
        self.t = when.timestamp()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)  # type: ignore[misc]


class Rig:
    """A store, the tool and a runner sharing one clock; ``fired`` lists each run's (job id, late)."""

    def __init__(self, store: Store, clock: Clock, config: dict[str, Any] | None = None) -> None:
        self.store, self.clock = store, clock
        self.config = parse_config(config or {}, env={})[0]
        self.jobs = CronJobs(store)
        self.fired: list[tuple[int, float | None]] = []
        self.outcomes: list[bool] = []
        self.runner = CronRunner(self.jobs, self.fire, lambda: {"console"}, grace=3600, clock=clock)
        self.tools = ToolRegistry([CronTool(self.jobs, self.config, AccessPolicy(store, self.config), self.runner.wake, clock)])

    async def fire(self, job: CronJob, late: float | None) -> bool:
        self.fired.append((job.id, late))
        return self.outcomes.pop(0) if self.outcomes else True

    async def cron(self, inbound: Inbound | None = None, **args: Any) -> dict[str, Any]:
        inbound = inbound or Inbound(CHAT, "local", "local", "hi")
        result = await self.tools.call("cron", json.dumps(args), ToolContext(chat=inbound.chat, session_id=1, inbound=inbound))
        return json.loads(result.content) if result.content.startswith("{") else {"error": result.content}

    async def tick(self) -> list[int]:
        """Fire what is due now and wait for those runs; returns the ids fired."""
        before = len(self.fired)
        await asyncio.gather(*await self.runner.run_due())
        return [job_id for job_id, _ in self.fired[before:]]


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "chorus.db")
    yield store
    await store.close()


async def test_a_cron_expression_fires_at_the_same_wall_clock_time_across_a_dst_change(store):
    clock = Clock(utc(2026, 3, 28, 12))  # Saturday; Berlin moves from CET to CEST on Sunday 29 March at 02:00
    rig = Rig(store, clock)
    made = await rig.cron(action="add", schedule={"kind": "cron", "expr": "0 8 * * *", "tz": "Europe/Berlin"},
                          message="Morning summary")
    assert made["job"]["nextRun"] == "2026-03-29T08:00:00+02:00"  # 06:00 UTC: the answer states the absolute time
    clock.at(utc(2026, 3, 29, 5, 59, 59))
    assert await rig.tick() == []
    clock.at(utc(2026, 3, 29, 6))  # 08:00 in Berlin (CEST); a fixed CET offset would say 07:00 UTC
    assert await rig.tick() == [1]
    clock.at(utc(2026, 3, 29, 7))
    assert await rig.tick() == []  # not again at the old offset's 08:00
    (job,) = await rig.jobs.of_chat(CHAT)
    assert job.next_run_at == utc(2026, 3, 30, 6).timestamp()


async def test_an_every_job_fires_repeatedly_until_removed(store):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock)
    made = await rig.cron(action="add", schedule={"kind": "every", "everyMs": 120_000}, message="Check the oven")
    job_id = made["job"]["id"]
    for minute in (2, 4, 6):
        clock.at(utc(2026, 6, 1, 9, minute))
        assert await rig.tick() == [1]
    assert await rig.tick() == []  # due only once per interval
    assert (await rig.cron(action="remove", id=job_id)) == {"ok": True, "removed": "1"}
    clock.at(utc(2026, 6, 1, 9, 30))
    assert await rig.tick() == []
    assert (await rig.cron(action="list"))["jobs"] == []
    assert rig.fired == [(1, None)] * 3


async def test_a_failing_recurring_job_backs_off_then_returns_to_its_schedule(store):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock)
    await rig.cron(action="add", schedule={"kind": "every", "everyMs": 60_000}, message="Ping")
    rig.outcomes = [False, False, False, True]
    start = utc(2026, 6, 1, 9, 1).timestamp()
    clock.t = start
    assert await rig.tick() == [1]
    (job,) = await rig.jobs.all()
    assert (job.failures, job.next_run_at) == (1, start + 60)  # 30 s backoff, but never sooner than its schedule
    clock.t = start + 60
    assert await rig.tick() == [1]
    (job,) = await rig.jobs.all()
    assert (job.failures, job.next_run_at) == (2, start + 120)  # 1 min
    clock.t = start + 120
    assert await rig.tick() == [1]
    (job,) = await rig.jobs.all()
    assert (job.failures, job.next_run_at) == (3, start + 120 + 300)  # 5 min: longer than the minute it repeats
    clock.t = start + 420
    assert await rig.tick() == [1]  # it works again
    (job,) = await rig.jobs.all()
    assert (job.failures, job.next_run_at, job.last_status) == (0, start + 480, "ok")  # back on its minute


async def test_two_instances_on_one_database_fire_a_job_once(store, tmp_path):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock)
    other_store = await Store.open(tmp_path / "chorus.db")  # a second instance's own connection
    try:
        other = Rig(other_store, clock)
        await rig.cron(action="add", schedule={"kind": "at", "at": "+5m"}, message="Once")
        clock.t += 300
        # Both have read the job as due before either claims it: the claim itself must decide.
        (seen,), (also_seen,) = await rig.jobs.due(clock(), {"console"}), await other.jobs.due(clock(), {"console"})
        assert await other.jobs.move(also_seen, None) is True
        assert await rig.jobs.move(seen, None) is False
        mine, theirs = await asyncio.gather(rig.tick(), other.tick())
        assert mine + theirs == []  # claimed once, by the claim above
    finally:
        await other_store.close()


async def test_a_one_shot_time_without_offset_is_read_in_the_chats_zone(store):
    clock = Clock(utc(2026, 12, 6, 12))
    rig = Rig(store, clock, {"agents": {"defaults": {"timezone": "America/New_York"}}})
    made = await rig.cron(action="add", schedule={"kind": "at", "at": "2026-12-06T18:30"}, message="Call Ann")
    assert made["job"]["nextRun"] == "2026-12-06T18:30:00-05:00"
    await store.set_chat_setting(CHAT, "tz", "Asia/Tokyo")  # /tz Asia/Tokyo
    made = await rig.cron(action="add", schedule={"kind": "at", "at": "2026-12-07T09:00"}, message="Standup")
    assert made["job"]["nextRun"] == "2026-12-07T09:00:00+09:00"
    assert made["job"]["nextRunText"] == "Mon 7 Dec 2026, 09:00:00 JST (Asia/Tokyo)"


async def test_limits_and_bad_schedules_are_refused_with_a_sentence(store):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock, {"cron": {"maxJobsPerChat": 1}})
    every = {"kind": "every", "everyMs": 30_000}
    assert (await rig.cron(action="add", schedule=every, message="x"))["error"] == (
        "error: not scheduled: an interval under one minute is not allowed (everyMs 30000 is below 60000)")
    past = await rig.cron(action="add", schedule={"kind": "at", "at": "2026-06-01T08:00Z"}, message="x")
    assert past["error"].startswith("error: not scheduled: that time has already passed")
    zone = await rig.cron(action="add", schedule={"kind": "cron", "expr": "0 8 * * *", "tz": "Mars/Olympus"}, message="x")
    assert "unknown time zone 'Mars/Olympus'" in zone["error"]
    assert "ok" in await rig.cron(action="add", schedule={"kind": "at", "at": "+1h"}, message="first")
    full = await rig.cron(action="add", schedule={"kind": "at", "at": "+2h"}, message="second")
    assert full["error"] == ("error: not scheduled: this chat already has 1 jobs, the most allowed "
                             "(cron.maxJobsPerChat); remove one first")


async def test_in_a_group_only_senders_the_group_policy_names_may_make_jobs(store):
    clock = Clock(utc(2026, 6, 1, 9))
    config = {"channels": {"telegram": {"allowFrom": ["111"], "groups": {"-100": {}}}}}
    rig = Rig(store, clock, config)
    group = ChatRef("telegram", "-100", None, "group")
    stranger = Inbound(group, "222", "Eve", "remind us")
    refused = await rig.cron(stranger, action="add", schedule={"kind": "at", "at": "+1h"}, message="x")
    assert refused["error"] == ("error: not scheduled: only people listed in channels.telegram.groupAllowFrom "
                                "(or allowFrom) may schedule jobs in this group; Eve (222) is not")
    owner = Inbound(group, "111", "Ann", "remind us")
    assert "ok" in await rig.cron(owner, action="add", schedule={"kind": "at", "at": "+1h"}, message="x")
    removal = await rig.cron(stranger, action="remove", id="1")
    assert removal["error"].startswith("error: not removed: only people listed in channels.telegram.groupAllowFrom")
    assert len(await rig.jobs.all()) == 1
    run = Inbound(group, "111", "Ann", "…", scheduled=True)
    again = await rig.cron(run, action="add", schedule={"kind": "at", "at": "+1h"}, message="x")
    assert again["error"] == "error: not scheduled: a scheduled run cannot make new jobs"


async def test_a_job_of_a_channel_that_is_not_running_waits_and_does_not_busy_the_runner(store):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock)
    telegram = Inbound(ChatRef("telegram", "42"), "42", "Ann", "hi")
    await rig.cron(telegram, action="add", schedule={"kind": "at", "at": "+1m"}, message="x")
    clock.t += 120
    assert await rig.tick() == []  # only the console runs here: kept for when Telegram runs
    assert await rig.jobs.next_due({"console"}) is None  # so the loop sleeps its poll interval, not zero
    assert await rig.jobs.next_due({"console", "telegram"}) == utc(2026, 6, 1, 9, 1).timestamp()


async def test_a_recurring_job_still_running_skips_the_firing_that_comes_due_meanwhile(store):
    clock = Clock(utc(2026, 6, 1, 9))
    rig = Rig(store, clock)
    release = asyncio.Event()
    runs = []

    async def slow(job: CronJob, late: float | None) -> bool:
        runs.append(clock())
        await release.wait()
        return True

    rig.runner.fire = slow
    await rig.cron(action="add", schedule={"kind": "every", "everyMs": 60_000}, message="Slow")
    clock.at(utc(2026, 6, 1, 9, 1))
    first = await rig.runner.run_due()
    await asyncio.sleep(0)
    clock.at(utc(2026, 6, 1, 9, 2))
    assert await rig.runner.run_due() == []  # not a second run queued behind the first
    (job,) = await rig.jobs.all()
    assert job.next_run_at == utc(2026, 6, 1, 9, 3).timestamp()  # moved on: nothing left due to spin on
    release.set()
    await asyncio.gather(*first)
    clock.at(utc(2026, 6, 1, 9, 3))
    await asyncio.gather(*await rig.runner.run_due())
    assert runs == [utc(2026, 6, 1, 9, 1).timestamp(), utc(2026, 6, 1, 9, 3).timestamp()]  # the next one runs again
