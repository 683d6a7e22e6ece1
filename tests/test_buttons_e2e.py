"""Buttons through the real ``chorus run``: /model, /think and /tts with no argument offer their choices as
Telegram inline keyboards, and pressing one does what typing its command does."""

from __future__ import annotations

from tests.telegram_service import running
from tests.test_discord_e2e import chorus_on_discord, fake_discord  # noqa: F401 (a fixture)


async def test_model_and_think_offer_buttons_and_a_press_switches(home, fake_openrouter, fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5201
    async with running(home, tg, ai):
        tg.message(chat, "/model", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
        (menu,) = await tg.wait_sent(chat)
        offered = tg.buttons(menu)
        assert ("✓ auto 🖼", "/model openrouter/auto") in offered
        assert ("moonshotai/kimi-k2.6 🖼", "/model openrouter/moonshotai/kimi-k2.6") in offered
        tg.press(menu, "moonshotai/kimi-k2.6 🖼")
        (_, switched) = await tg.wait_sent(chat, 2)
        tg.message(chat, "/think", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
        (*_, thinking) = await tg.wait_sent(chat, 3)
        tg.press(thinking, "high")
        await tg.wait_sent(chat, 4)
        tg.message(chat, "hi")
        await tg.wait_sent(chat, 5)
    assert switched.text == "Model for this chat set to openrouter/moonshotai/kimi-k2.6."
    assert [label for label, _ in tg.buttons(thinking)] == ["✓ off", "minimal", "low", "medium", "high", "xhigh"]
    assert tg.texts_in(chat)[3] == "Thinking for this chat: high."
    assert ai.chat_requests()[-1].json["model"] == "moonshotai/kimi-k2.6"
    assert len(tg.calls_to("answerCallbackQuery")) == 2  # each press is answered: its spinner stops


async def test_discord_think_and_tts_have_choices_and_model_autocompletes_from_the_catalog(home, fake_openrouter):
    from tests.fakes.discord import FakeDiscord
    from tests.test_discord_e2e import chorus_on_discord

    async with FakeDiscord(heartbeat_ms=500) as discord:
        ann = discord.user("ann")
        dm = discord.dm(ann)
        async with chorus_on_discord(home, fake_openrouter, discord):
            suggested = await discord.autocomplete(dm, ann, "model", "ref", "kimi")
        discord.assert_clean()
    commands = {c["name"]: c for c in discord.commands["global"]}
    assert [c["value"] for c in commands["think"]["options"][0]["choices"]] == [
        "off", "minimal", "low", "medium", "high", "xhigh"]
    assert [c["value"] for c in commands["tts"]["options"][0]["choices"]] == ["off", "always", "inbound", "tagged", "status"]
    assert commands["model"]["options"][0]["autocomplete"] is True
    assert [c["value"] for c in suggested] == ["openrouter/moonshotai/kimi-k2.6", "openrouter/moonshotai/kimi-k2.5"]


async def test_discord_model_offers_a_select_menu_and_picking_one_switches(home, fake_openrouter, fake_discord):
    discord, ann = fake_discord, fake_discord.user("ann")
    dm = discord.dm(ann)
    async with chorus_on_discord(home, fake_openrouter, discord):
        await discord.slash(dm, ann, "model")
        (menu,) = await discord.wait_sent(dm)
        await discord.choose(menu, ann, "moonshotai/kimi-k2.6 🖼")
        (_, switched) = await discord.wait_sent(dm, 2)
        await discord.say(dm, ann, "/think")  # typed: the same choices; six levels make a menu too
        (*_, thinking) = await discord.wait_sent(dm, 3)
        await discord.choose(thinking, ann, "high")
        await discord.wait_sent(dm, 4)
        await discord.say(dm, ann, "hi")
        (*_, answer) = await discord.wait_sent(dm, 5)
    ((select,),) = [[c["type"] for c in row["components"]] for row in menu.data["components"]]
    assert select == 3  # a select menu
    assert ("✓ auto 🖼", "/model openrouter/auto") in discord.choices(menu)
    assert switched.content == "Model for this chat set to openrouter/moonshotai/kimi-k2.6."
    assert [label for label, _ in discord.choices(thinking)] == ["✓ off", "minimal", "low", "medium", "high", "xhigh"]
    assert answer.content == "echo: hi"
    assert fake_openrouter.chat_requests()[-1].json["model"] == "moonshotai/kimi-k2.6"
    presses = [c for c in discord.calls if c.template.endswith("/callback") and c.json["type"] == 6]
    assert len(presses) == 2  # each pick is acknowledged at once, leaving the menu's message as it was
