"""Reply context through the real ``chorus run``: a reply (or a quote) on Telegram and Discord gives the model
what was replied to, whose it was, and whether it was the bot's own answer, marked as context and capped."""

from __future__ import annotations

from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import Text
from tests.fakes.telegram import BOT, user
from tests.telegram_service import running


def last_user(request) -> str:
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"][-1]


async def test_telegram_replies_and_quotes_carry_what_was_replied_to(home, fake_openrouter, fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5001
    async with running(home, tg, ai):
        ai.queue(Text("Paris is the capital of France.\nIt has 2.1 million people."))
        tg.message(chat, "capital of France?")
        (answer,) = await tg.wait_sent(chat)
        bots = {"message_id": answer.message_id, "date": 0, "chat": tg.chat(chat).as_api(), "from": BOT,
                "text": answer.text}
        tg.message(chat, "and Lyon?", reply_to_message=bots)
        await tg.wait_sent(chat, 2)
        tg.message(chat, "how many?", reply_to_message=bots, quote={"text": "2.1 million people", "position": 40})
        await tg.wait_sent(chat, 3)
        grace = {"message_id": 99, "date": 0, "chat": tg.chat(chat).as_api(), "from": user(7001, "Grace", None),
                 "text": "x" * 5000}
        tg.message(chat, "forwarded this", reply_to_message=grace)
        await tg.wait_sent(chat, 4)
    replied, quoted, long = (last_user(r) for r in ai.chat_requests()[1:])
    assert replied == ("[Replying to your own earlier answer - for context]\n"
                       "> Paris is the capital of France.\n> It has 2.1 million people.\n"
                       "[The user's message]\nand Lyon?")
    assert quoted == ("[Quoting part of your own earlier answer - for context]\n> 2.1 million people\n"
                      "[The user's message]\nhow many?")
    assert long.startswith("[Replying to a message from Grace - for context]\n> xxx")
    assert long.endswith("x…\n[The user's message]\nforwarded this") and len(long) < 700  # capped


async def test_discord_replies_carry_the_referenced_message(home, fake_openrouter):
    async with FakeDiscord(heartbeat_ms=500) as discord:
        from tests.test_discord_e2e import chorus_on_discord

        ann = discord.user("ann")
        dm = discord.dm(ann)
        async with chorus_on_discord(home, fake_openrouter, discord):
            fake_openrouter.queue(Text("The answer is 42."))
            await discord.say(dm, ann, "the question?")
            (answer,) = await discord.wait_sent(dm)
            await discord.say(dm, ann, "why?", reply_to=answer.data)
            await discord.wait_sent(dm, 2)
            earlier = discord.message(dm, discord.user("bob"), "bob's idea")
            await discord.say(dm, ann, "thoughts?", reply_to=earlier)
            await discord.wait_sent(dm, 3)
        discord.assert_clean()
    to_bot, to_bob = (last_user(r) for r in fake_openrouter.chat_requests()[1:])
    assert to_bot == "[Replying to your own earlier answer - for context]\n> The answer is 42.\n[The user's message]\nwhy?"
    assert to_bob == "[Replying to a message from Bob - for context]\n> bob's idea\n[The user's message]\nthoughts?"


async def test_telegram_reply_to_mode_decides_which_parts_reply_to_the_users_message(home, fake_openrouter,
                                                                                      fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5002
    long = "word " * 1000  # two messages on Telegram
    async with running(home, tg, ai, replyToMode="all"):
        ai.queue(Text(long))
        asked = tg.message(chat, "a long answer, please")
        parts = await tg.wait_sent(chat, 2)
    assert [p.reply_to for p in parts] == [asked["message_id"]] * 2  # "all": every part, in a private chat too


async def test_discord_reply_to_mode_off_sends_the_answer_without_a_reference(home, fake_openrouter):
    async with FakeDiscord(heartbeat_ms=500) as discord:
        from tests.test_discord_e2e import chorus_on_discord

        ann = discord.user("ann")
        room = discord.dm(ann)
        async with chorus_on_discord(home, fake_openrouter, discord, replyToMode="off"):
            fake_openrouter.queue(Text("Plain answer."))
            await discord.say(room, ann, "hello")
            (answer,) = await discord.wait_sent(room)
        discord.assert_clean()
    assert answer.content == "Plain answer." and "message_reference" not in answer.data


async def test_with_stt_echo_the_answer_to_a_voice_note_starts_with_what_was_heard(home, fake_openrouter,
                                                                                    fake_telegram):
    from tests.fakes.media import make_audio

    tg, ai, chat = fake_telegram, fake_openrouter, 5003
    async with running(home, tg, ai, config={"messages": {"stt": {"echo": True}}}):
        ai.transcripts.append("what is the capital of France")
        ai.queue(Text("Paris."))
        tg.voice(chat, make_audio("ogg_opus", 1.5), duration=2)
        (answer,) = await tg.wait_sent(chat)
    assert answer.text == '🎤 "what is the capital of France"\n\nParis.'
