"""Telegram and Discord side by side in one ``chorus run``: both answer, and each reconnects on its own."""

from __future__ import annotations

from tests.conftest import onboarded
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import Text
from tests.service import running
from tests.telegram_service import telegram_config

USER = 7001


async def test_telegram_and_discord_run_together_and_a_discord_drop_leaves_telegram_answering(
        home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with FakeDiscord(heartbeat_ms=500) as dc:
        await onboarded(home, ai)
        telegram = telegram_config(tg, streaming="off")["channels"]["telegram"]
        discord = dc.config(dmPolicy="open")
        # Both tokens come from the state dir's .env, as a user keeps them out of the config file.
        (home.path / ".env").write_text(f"TELEGRAM_BOT_TOKEN={telegram.pop('botToken')}\n"
                                        f"DISCORD_BOT_TOKEN={discord.pop('token')}\n")
        home.write_config(ai, channels={"telegram": telegram, "discord": discord})
        async with running(home) as service:
            await dc.wait_for(lambda: dc.ready.is_set(), timeout=30)
            await tg.wait_for(lambda: tg.calls_to("setMyCommands"), what="Telegram to start")

            ai.queue(Text("Hello from Telegram."), Text("Hello from Discord."))
            tg.message(USER, "hi on telegram")
            await tg.wait_sent(USER)
            ann = dc.user("ann")
            dm = dc.dm(ann)
            await dc.say(dm, ann, "hi on discord")
            await dc.wait_sent(dm)

            await dc.drop(hold=True)  # Discord is down; Telegram goes on answering meanwhile
            ai.queue(Text("Still here on Telegram."))
            tg.message(USER, "still there?")
            await tg.wait_sent(USER, count=2)
            dc.release()
            await dc.wait_for(lambda: dc.ready.is_set(), timeout=30)
            ai.queue(Text("Back on Discord."))
            await dc.say(dm, ann, "and now?")
            await dc.wait_sent(dm, 2)

        assert tg.texts_in(USER) == ["Hello from Telegram.", "Still here on Telegram."]
        assert [m.content for m in dc.bot_messages(dm)] == ["Hello from Discord.", "Back on Discord."]
        assert [r.json["messages"][-1]["content"] for r in ai.chat_requests()] == [
            "hi on telegram", "hi on discord", "still there?", "and now?"]
        assert tg.token not in service.output and dc.token not in service.output
        dc.assert_clean()
