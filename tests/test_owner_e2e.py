"""What the owner sees in the log of the real ``chorus run``: the channel's start line, pairing requests,
refused senders and groups with their ids, stops; how ``-v`` / ``-vv`` widen it; global options anywhere."""

from __future__ import annotations

import re

from tests.conftest import onboarded
from tests.fakes.telegram import user
from tests.service import start_chorus
from tests.telegram_service import telegram_config


async def test_the_owner_sees_the_bot_come_up_who_asks_to_pair_and_which_group_was_ignored(
        home, fake_openrouter, fake_telegram):
    tg = fake_telegram
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, **telegram_config(tg, dmPolicy="pairing", groupPolicy="allowlist"))
    service = await start_chorus(home, "run", stdin=False)
    try:
        await tg.wait_for(lambda: "ready (long polling)" in service.log, timeout=30)
        assert "INFO chorus.telegram: Telegram: @chorus_test_bot (id 123456789) ready (long polling)\n" in service.log
        tg.message(5001, "hello?", sender=user(5001, "Grace", "grace"))
        (sent,) = await tg.wait_sent(5001)
        code = re.search(r"Your pairing code: (\w+)", sent.text or "")[1]
        tg.message(-100777, "anyone here?", chat_type="supergroup", sender=user(6001, "Bob", None))
        tg.message(-100777, "hello bot", chat_type="supergroup", sender=user(6001, "Bob", None))
        tg.message(5001, "marker", sender=user(5001, "Grace", "grace"))  # after the group's: all three were handled
        await tg.wait_for(lambda: "waits for approval" in service.log, timeout=10)
    finally:
        result = await service.stop()
    log = result.err
    assert (f"telegram: Grace (5001) asked to pair: code {code} "
            f"(approve with: chorus pairing approve telegram {code})") in log
    group_lines = [line for line in log.splitlines() if "ignored a message from group -100777" in line]
    assert len(group_lines) == 1, log  # named once, not for every message said there
    assert "sender Bob (6001)" in group_lines[0] and "channels.telegram.groupAllowFrom" in group_lines[0]
    assert "INFO chorus.telegram: Telegram: stopped" in log
    assert " DEBUG " not in log  # neither Chorus's debug lines nor the libraries' without -v


async def test_v_shows_chorus_debug_lines_and_vv_the_libraries_and_options_go_after_the_subcommand(
        home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    elsewhere = home.path.parent / "elsewhere.json5"
    home.config.rename(elsewhere)  # found only through --config, given after the subcommand
    for flags, libraries in ((["-v"], False), (["-vv"], True), (["-v", "-v"], True)):
        service = await start_chorus(home, "run", "--config", str(elsewhere), *flags)
        await service.say("hello")
        result = await service.finish()
        assert result.code == 0, result.err
        assert "echo: hello" in result.out
        assert "DEBUG chorus: event loop:" in result.err
        assert (" DEBUG aiosqlite: " in result.err) is libraries, (flags, result.err)
    again = await start_chorus(home, "-v", "run", "--config", str(elsewhere))
    await again.say("hi")
    result = await again.finish()
    assert "echo: hi" in result.out and "DEBUG chorus: event loop:" in result.err


async def test_the_discord_start_line_names_the_bot_and_its_gateway_and_the_stop_is_logged(home, fake_openrouter):
    from tests.fakes.discord import FakeDiscord
    from tests.service import running
    from tests.test_discord_e2e import configure

    async with FakeDiscord(heartbeat_ms=500) as discord:
        configure(home, fake_openrouter, discord)
        async with running(home) as service:
            await discord.wait_for(lambda: "ready in" in service.log, timeout=30)
        discord.assert_clean()
    bot = discord.bot
    assert (f"INFO chorus.discord: Discord: {bot['username']} (id {bot['id']}) ready in 0 server(s) (gateway, 1 shard)"
            in service.log), service.log
    assert "INFO chorus.discord: Discord: stopped" in service.log
