"""Edited messages through the real ``chorus run``: Telegram's ``edited_message`` and Discord's message edits
(``messages.edits``: ``answer`` | ``ignore``)."""

from __future__ import annotations

from bot.dispatch import EDITED
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import Hang, Text
from tests.telegram_service import running


def last_user(request) -> str:
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"][-1]


async def test_telegram_an_edit_is_answered_as_a_correction_and_replaces_a_message_being_answered(
        home, fake_openrouter, fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5101
    async with running(home, tg, ai):
        typo = tg.message(chat, "capital of Frnace?")
        await tg.wait_sent(chat)
        tg.edit(typo, "capital of France?")
        await tg.wait_sent(chat, 2)
        ai.queue(Hang(60), Text("The new answer."))
        slow = tg.message(chat, "write an essay on cats")
        await tg.wait_for(lambda: len(ai.chat_requests()) == 3)  # the model is answering the first version
        tg.edit(slow, "write an essay on dogs")
        await tg.wait_sent(chat, 4)
    assert tg.texts_in(chat) == ["echo: capital of Frnace?", f"echo: {EDITED}\ncapital of France?", "⏹ Stopped.",
                                 "The new answer."]
    assert last_user(ai.chat_requests()[1]) == f"{EDITED}\ncapital of France?"
    assert last_user(ai.chat_requests()[-1]) == f"{EDITED}\nwrite an essay on dogs"


async def test_telegram_edits_can_be_ignored(home, fake_openrouter, fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5102
    async with running(home, tg, ai, config={"messages": {"edits": "ignore"}}):
        first = tg.message(chat, "hello")
        await tg.wait_sent(chat)
        tg.edit(first, "hello there")
        tg.message(chat, "marker")  # after the edit: once it is answered, the edit was seen and left alone
        await tg.wait_sent(chat, 2)
    assert tg.texts_in(chat) == ["echo: hello", "echo: marker"]


async def test_discord_an_edited_message_is_answered_as_a_correction(home, fake_openrouter):
    async with FakeDiscord(heartbeat_ms=500) as discord:
        from tests.test_discord_e2e import chorus_on_discord

        ann = discord.user("ann")
        dm = discord.dm(ann)
        async with chorus_on_discord(home, fake_openrouter, discord):
            typo = await discord.say(dm, ann, "capital of Frnace?")
            await discord.wait_sent(dm)
            await discord.edit(typo, "capital of France?")
            await discord.wait_sent(dm, 2)
        discord.assert_clean()
    assert [m.content for m in discord.bot_messages(dm)][1] == f"echo: {EDITED}\ncapital of France?"


async def test_telegram_an_edit_of_a_message_still_waiting_replaces_it_in_the_queue(home, fake_openrouter,
                                                                                    fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5103
    async with running(home, tg, ai):
        ai.queue(Text("First answer.", delay=1.5))
        tg.message(chat, "first")
        await tg.wait_for(lambda: len(ai.chat_requests()) == 1)  # answering "first"; the next one waits
        waiting = tg.message(chat, "secnod")
        tg.edit(waiting, "second")
        await tg.wait_sent(chat, 2)
        tg.message(chat, "marker")  # answered after whatever the edit left in the queue
        await tg.wait_sent(chat, 3)
    assert tg.texts_in(chat) == ["First answer.", f"echo: {EDITED}\nsecond", "echo: marker"]
    assert len(ai.chat_requests()) == 3  # the first version was never answered
