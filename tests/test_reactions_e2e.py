"""Reactions as status through the real ``chorus run`` (``messages.ackReaction``): in a group, where no draft
shows, the message being answered wears the reaction until the answer is out."""

from __future__ import annotations

from urllib.parse import unquote

from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import Text
from tests.fakes.telegram import user
from tests.telegram_service import running


async def test_telegram_a_group_message_wears_the_ack_reaction_while_it_is_answered(home, fake_openrouter,
                                                                                     fake_telegram):
    tg, ai, group = fake_telegram, fake_openrouter, -1003001
    tg.chat(group, "supergroup", title="Team")
    async with running(home, tg, ai, config={"messages": {"ackReaction": "👀"}}, groups={str(group): {"requireMention": False}}):
        ai.queue(Text("On it."))
        asked = tg.message(group, "what's new?", sender=user(42, "Ada"), chat_type="supergroup")
        await tg.wait_sent(group)
        await tg.wait_for(lambda: len(tg.calls_to("setMessageReaction")) == 2)
        tg.message(5301, "hello")  # a private chat: no reaction (the draft shows the answer coming)
        await tg.wait_sent(5301)
    put, taken = tg.calls_to("setMessageReaction")
    assert (put.params["message_id"], put.params["reaction"]) == (asked["message_id"], [{"type": "emoji", "emoji": "👀"}])
    assert (taken.params["message_id"], taken.params["reaction"]) == (asked["message_id"], [])
    (answer,) = [c for c in tg.calls_to("sendMessage") if c.params["chat_id"] == group]
    assert put.at <= answer.at <= taken.at  # on while answered, off once the answer is out


async def test_discord_a_server_message_wears_the_ack_reaction_while_it_is_answered(home, fake_openrouter):
    async with FakeDiscord(heartbeat_ms=500) as discord:
        from tests.test_discord_e2e import chorus_on_discord

        ann = discord.user("ann")
        general = discord.text_channel(discord.guild())
        async with chorus_on_discord(home, fake_openrouter, discord, messages={"ackReaction": "👀"}):
            fake_openrouter.queue(Text("On it."))
            asked = await discord.say(general, ann, f"<@{discord.bot['id']}> what's new?", mentions=[discord.bot])
            await discord.wait_sent(general)
            await discord.wait_for(lambda: any(c.method == "DELETE" and "/reactions/" in c.path for c in discord.calls))
        discord.assert_clean()
    reactions = [(c.method, unquote(c.path)) for c in discord.calls if "/reactions/" in c.path]
    where = f"/channels/{general['id']}/messages/{asked['id']}/reactions/👀/@me"
    assert reactions == [("PUT", where), ("DELETE", where)]
