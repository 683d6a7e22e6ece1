"""Reminders across restarts: the real ``chorus run`` stopped and started again around a job's time."""

from __future__ import annotations

import sqlite3
import time

from tests.conftest import Home, chorus, eventually, onboarded
from tests.fakes.openrouter import FakeOpenRouter, Hang, Text, ToolCalls
from tests.service import start_chorus
from tests.test_cron_e2e import STRETCH, last_user, printed


async def made_and_stopped(home: Home, fake: FakeOpenRouter, **config: object) -> float:
    """Make the 3 s reminder, then stop the service before it is due; returns when it was due (unix time)."""
    await onboarded(home, fake)
    home.write_config(fake, **config)
    fake.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."))
    first = await start_chorus(home, "run")
    await first.say("remind me in 3 seconds to stretch")
    await printed(first, "I will remind you.")
    await first.stop()
    (row,) = sqlite3.connect(home.path / "chorus.db").execute("SELECT next_run_at FROM cron_jobs").fetchall()
    assert row[0] > time.time()  # stopped before it was due
    return float(row[0])


async def test_a_job_due_while_stopped_fires_once_at_the_next_start_marked_late(home, fake_openrouter):
    due = await made_and_stopped(home, fake_openrouter)
    await eventually(lambda: time.time() > due + 0.5, "the reminder's time to pass", timeout=10)
    fake_openrouter.queue(Text("⏰ Sorry this is late: stretch!"))
    second = await start_chorus(home, "run")
    await printed(second, "stretch!")
    await second.say("thanks")
    await printed(second, "echo: thanks")
    out = (await second.finish()).out
    assert out.count("stretch!") == 1
    prompt = last_user(fake_openrouter, 2)
    assert "Scheduled run of job #1" in prompt and "[It is late: it was due" in prompt
    third = await start_chorus(home, "run")
    await third.say("still there?")
    await printed(third, "echo: still there?")
    await third.finish()
    assert last_user(fake_openrouter) == "still there?"
    assert len(fake_openrouter.chat_requests()) == 5  # made, its answer, the late run, "thanks", "still there?"


async def test_a_job_missed_past_the_grace_window_is_skipped_and_logged(home, fake_openrouter):
    due = await made_and_stopped(home, fake_openrouter, cron={"misfireGraceMs": 500})
    await eventually(lambda: time.time() > due + 1.5, "the grace window to pass", timeout=10)
    second = await start_chorus(home, "run")
    await second.say("hello")
    await printed(second, "echo: hello")
    result = await second.finish()
    assert "Scheduled run" not in str([r.json for r in fake_openrouter.chat_requests()])
    assert "cron job #1 “stretch” skipped" in result.err and "past cron.misfireGraceMs" in result.err
    assert (await chorus(home, "cron", "list", "--all")).out.strip() == "No scheduled jobs."


async def test_a_run_cut_off_by_a_stop_is_given_back_and_fires_once_after_the_restart(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."), Hang(60))
    first = await start_chorus(home, "run")
    await first.say("remind me in 3 seconds to stretch")
    await eventually(lambda: len(fake_openrouter.chat_requests()) == 3, "the run to reach the model", timeout=20)
    await first.stop()  # SIGTERM while the model is still writing the reminder
    assert "stretch" not in first.out.split("I will remind you.", 1)[1]
    fake_openrouter.answers.clear()
    fake_openrouter.queue(Text("⏰ Stretch, a little late!"))
    second = await start_chorus(home, "run")
    await printed(second, "⏰ Stretch, a little late!")
    await second.say("thanks")
    await printed(second, "echo: thanks")
    assert (await second.finish()).out.count("Stretch, a little late!") == 1
    assert "[It is late" in last_user(fake_openrouter, 3)
    assert (await chorus(home, "cron", "list", "--all")).out.strip() == "No scheduled jobs."

