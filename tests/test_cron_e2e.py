"""Reminders and scheduled prompts end to end: the real ``chorus run`` console, a fake model that calls the
``cron`` tool, and the job firing later as a turn of its own in the same chat."""

from __future__ import annotations

import json
import time

from tests.conftest import chorus, eventually, onboarded
from tests.fakes.openrouter import FakeOpenRouter, Text, ToolCalls
from tests.service import Service, start_chorus
from tests.telegram_service import running as on_telegram
from tests.test_discord_e2e import chorus_on_discord, fake_discord  # noqa: F401 (a fixture)

STRETCH = {"action": "add", "name": "stretch", "schedule": {"kind": "at", "at": "+3s"},
           "message": "Remind the user to stretch"}


async def printed(service: Service, needle: str, count: int = 1, timeout: float = 30) -> None:
    await eventually(lambda: service.out.count(needle) >= count, f"{needle!r} printed {count}x", timeout=timeout)


def tool_result(fake: FakeOpenRouter, request: int) -> str:
    """The last tool message of chat request ``request`` (what the tool answered the model)."""
    return [m["content"] for m in fake.chat_requests()[request].json["messages"] if m["role"] == "tool"][-1]


def last_user(fake: FakeOpenRouter, request: int = -1) -> str:
    return [m["content"] for m in fake.chat_requests()[request].json["messages"] if m["role"] == "user"][-1]


async def test_remind_me_in_3_seconds_arrives_in_the_same_chat_unasked(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."), Text("⏰ Time to stretch!"))
    service = await start_chorus(home, "run")
    await service.say("remind me in 3 seconds to stretch")
    await printed(service, "I will remind you.")
    asked = fake_openrouter.chat_requests()[0].at
    job = json.loads(tool_result(fake_openrouter, 1))["job"]
    assert job["name"] == "stretch" and job["schedule"]["kind"] == "at"
    assert job["nextRun"][:4] == time.strftime("%Y") and job["nextRunText"]  # the absolute time, to say back
    await printed(service, "⏰ Time to stretch!")
    result = await service.finish()
    fired = fake_openrouter.chat_requests()[2]
    assert fired.at - asked >= 2.5  # not before it was due
    prompt = last_user(fake_openrouter, 2)
    assert prompt.startswith("[Scheduled run of job #1 “stretch”") and prompt.endswith("Remind the user to stretch")
    assert "late" not in prompt
    users = [m for m in fired.json["messages"] if m["role"] == "user"]
    assert len(users) == 2  # the request, then the scheduled run: no user message in between
    assert result.out.count("⏰ Time to stretch!") == 1
    listed = await chorus(home, "cron", "list", "--all")
    assert listed.out.strip() == "No scheduled jobs."  # a one-shot is removed once it ran


async def test_a_reminder_made_in_a_telegram_forum_topic_arrives_in_that_topic(home, fake_openrouter, fake_telegram):
    tg, forum = fake_telegram, -1004242
    tg.chat(forum, "supergroup", title="Forum", is_forum=True)
    fake_openrouter.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."), Text("⏰ Time to stretch!"))
    async with on_telegram(home, tg, fake_openrouter, groups={str(forum): {"requireMention": False}}):
        asked = tg.message(forum, "remind me in 3 seconds to stretch", chat_type="supergroup", message_thread_id=7,
                           is_topic_message=True)
        made, reminder = await tg.wait_sent(forum, 2)
    assert (made.text, made.thread_id, made.reply_to) == ("I will remind you.", 7, asked["message_id"])
    assert (reminder.text, reminder.thread_id, reminder.reply_to) == ("⏰ Time to stretch!", 7, None)  # unasked
    assert len(tg.messages_in(forum)) == 2


async def test_a_reminder_made_in_a_discord_thread_arrives_in_that_thread(home, fake_openrouter, fake_discord):
    ann, guild = fake_discord.user("ann"), fake_discord.guild()
    general = fake_discord.text_channel(guild)
    thread = fake_discord.thread(general, "plans")
    fake_openrouter.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."), Text("⏰ Time to stretch!"))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, requireMention=False):
        await fake_discord.say(thread, ann, "remind me in 3 seconds to stretch")
        await fake_discord.wait_sent(thread, 2)
    assert [m.content for m in fake_discord.bot_messages(thread)] == ["I will remind you.", "⏰ Time to stretch!"]
    assert fake_discord.bot_messages(general) == []


async def test_the_cron_command_and_the_cli_list_the_same_jobs_and_both_remove_and_run(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    oven = {"action": "add", "name": "oven", "schedule": {"kind": "every", "everyMs": 600_000}, "message": "Check the oven"}
    news = {"action": "add", "name": "news", "schedule": {"kind": "cron", "expr": "0 8 * * 1-5", "tz": "Europe/Berlin"},
            "message": "Summarize the news"}
    fake_openrouter.queue(ToolCalls([("cron", oven), ("cron", news)]), Text("Both set."))
    service = await start_chorus(home, "run")
    await service.say("check the oven every 10 minutes, and news on weekdays at 8")
    await printed(service, "Both set.")
    await service.say("/cron")
    await printed(service, "Remove one with /cron rm ID.")
    shown = service.out.split("Scheduled jobs in this chat:\n", 1)[1].split("\nRemove one")[0].splitlines()
    assert [line.split(" — ")[:2] for line in shown] == [["#1 “oven”", "every 10 min"],
                                                          ["#2 “news”", "cron 0 8 * * 1-5 (Europe/Berlin)"]]
    listed = (await chorus(home, "cron", "list")).out.splitlines()
    assert listed == [f"console:local  {line}" for line in shown]  # the same ids, schedules, next runs
    await service.say("/cron rm 1")
    await printed(service, "Removed job #1.")
    assert [line.split("  ", 1)[1] for line in (await chorus(home, "cron", "list")).out.splitlines()] == shown[1:]
    ran = await chorus(home, "cron", "run", "2")
    assert ran.code == 0 and "Job #2 is due now" in ran.out
    await eventually(lambda: "Summarize the news" in str(fake_openrouter.chat_requests()[-1].json), "the run", timeout=20)
    await printed(service, "echo: [Scheduled run of job #2 “news”")
    removed = await chorus(home, "cron", "rm", "2")
    assert removed.code == 0 and removed.out.strip() == "Removed job #2."
    await service.say("/cron")
    await printed(service, "No scheduled jobs in this chat.")
    await service.finish()
    gone = await chorus(home, "cron", "rm", "2")
    assert gone.code == 1 and "there is no job #2" in gone.err


async def test_a_reminder_is_spoken_when_the_chat_wants_spoken_replies(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("cron", STRETCH)]), Text("I will remind you."), Text("Time to stretch!"))
    service = await start_chorus(home, "run")
    await service.say("/tts always")
    await printed(service, "Spoken replies for this chat: always.")
    await service.say("remind me in 3 seconds to stretch")
    await printed(service, "[voice saved:", count=2)  # the answer, then the reminder
    await service.finish()
    spoken = [r.json["input"] for r in fake_openrouter.requests_to("/audio/speech")]
    assert spoken == ["I will remind you.", "Time to stretch!"]


async def test_tz_sets_the_zone_a_time_without_offset_is_read_in(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    party = {"action": "add", "schedule": {"kind": "at", "at": "2099-12-24T18:00"}, "message": "Remind me of the party"}
    fake_openrouter.queue(ToolCalls([("cron", party)]), Text("Noted."))
    result = await chorus(home, "run", stdin="/tz Mars/Olympus\n/tz Asia/Tokyo\n/tz\nremind me at 18:00 on 24 December 2099\n")
    assert "Not changed: unknown time zone 'Mars/Olympus'; use an IANA name such as Europe/Berlin" in result.out
    assert "Time zone for this chat: Asia/Tokyo." in result.out and "Time zone: Asia/Tokyo (it is " in result.out
    assert json.loads(tool_result(fake_openrouter, 1))["job"]["nextRun"] == "2099-12-24T18:00:00+09:00"
