"""One channel's fault stops only that channel; no update blocks the ones after it.

The real ``chorus run`` against the fake Bot API and the fake Discord, which inject faults per method: start-up
failures that pass (``getMe`` 500, a result of the wrong type), ones that do not (a refused token, a busy webhook
port, a refused ``setWebhook``, Discord's gateway closing with 4004), and updates that cannot be read, each
followed by a normal message that must be answered.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from tests.conftest import Home, chorus, onboarded
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import FakeOpenRouter, Text
from tests.fakes.telegram import FakeTelegram, user
from tests.service import Service, running
from tests.telegram_service import free_port, telegram_config

USER, OTHER = 7001, 7002
TELEGRAM_TOKEN_LINE = "Put the token @BotFather gave you in channels.telegram.botToken (or TELEGRAM_BOT_TOKEN) and restart"
DISCORD_TOKEN_LINE = "Discord refused the bot token; the Discord channel stops."


@asynccontextmanager
async def both(home: Home, tg: FakeTelegram, ai: FakeOpenRouter, **telegram: Any) -> AsyncIterator[tuple[Service, FakeDiscord]]:
    """``chorus run`` with Telegram (``telegram``: its keys) and Discord configured, Discord connected."""
    async with FakeDiscord(heartbeat_ms=500) as dc:
        await onboarded(home, ai)
        home.write_config(ai, channels={"telegram": telegram_config(tg, streaming="off", **telegram)["channels"]["telegram"],
                                        "discord": dc.config(dmPolicy="open")})
        async with running(home) as service:
            try:
                await dc.wait_for(lambda: dc.ready.is_set() or service.proc.returncode is not None, timeout=30)
            except AssertionError:
                raise AssertionError("Discord never connected:\n" + service.output) from None
            try:
                yield service, dc
            except (AssertionError, TimeoutError) as exc:
                raise AssertionError(f"{exc}\n--- the service's log:\n{service.log}") from exc
        assert tg.token not in service.output and tg.token.split(":")[1] not in service.output
        assert dc.token not in service.output
        dc.assert_clean()


async def discord_answers(dc: FakeDiscord, ai: FakeOpenRouter, text: str) -> None:
    """A user writes to the bot on Discord and gets ``text`` back: the channel is undisturbed."""
    ann = dc.user("ann")
    dm = dc.dm(ann)
    before = len(dc.bot_messages(dm))
    ai.queue(Text(text))
    await dc.say(dm, ann, "are you there?")
    sent = await dc.wait_sent(dm, before + 1)
    assert sent[-1].content == text


async def telegram_answers(tg: FakeTelegram, ai: FakeOpenRouter, text: str, chat: int = USER) -> None:
    before = len(tg.messages_in(chat))
    ai.queue(Text(text))
    tg.message(chat, "hello?")
    await tg.wait_sent(chat, before + 1)
    assert tg.texts_in(chat)[-1] == text


async def logged(service: Service, text: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while text not in service.log:
            await asyncio.sleep(0.05)


# ---- start-up ------------------------------------------------------------------------------------------------


async def test_getme_failing_leaves_discord_answering_and_telegram_answers_once_it_starts(
        home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    tg.fail("getMe", 500, "Internal Server Error", times=1000)  # Telegram has a bad minute
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: len([c for c in tg.calls if c.method == "getMe"]) >= 2)
        await discord_answers(dc, ai, "Discord is fine.")
        assert not tg.calls_to("setMyCommands")  # Telegram is still not up
        tg.failures.clear()  # Telegram is back
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        await telegram_answers(tg, ai, "Telegram is back.")
        await discord_answers(dc, ai, "Still fine.")
        assert service.proc.returncode is None
    assert service.log.count("Telegram start failed (getMe: Internal Server Error (500))") == 1  # said once, not per try
    assert "Traceback" not in service.log


@pytest.mark.parametrize("status,description", [(401, "Unauthorized"), (404, "Not Found")])
async def test_a_refused_telegram_token_stops_only_telegram_with_one_line(
        home, fake_telegram, fake_openrouter, status, description):
    tg, ai = fake_telegram, fake_openrouter
    tg.fail("getMe", status, description, times=1000)  # 404: a malformed token, as Telegram answers it
    async with both(home, tg, ai) as (service, dc):
        await logged(service, TELEGRAM_TOKEN_LINE)
        await discord_answers(dc, ai, "Discord is fine.")
        assert service.proc.returncode is None  # a channel is left: the service goes on
    assert service.proc.returncode == 0  # stopped by SIGTERM while Discord ran: not a failure
    assert service.log.count(TELEGRAM_TOKEN_LINE) == 1
    assert f"Telegram refused the bot token ({description}, {status})" in service.log
    assert len([c for c in tg.calls if c.method == "getMe"]) == 1  # not retried: waiting cannot fix a token
    assert "Traceback" not in service.log


async def test_a_token_revoked_while_running_stops_telegram_after_a_few_tries(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        tg.fail("getUpdates", 401, "Unauthorized", times=1000)
        await logged(service, TELEGRAM_TOKEN_LINE)
        refused = len([c for c in tg.calls if c.method == "getUpdates" and c.status == 401])
        await discord_answers(dc, ai, "Discord is fine.")
        assert len([c for c in tg.calls if c.method == "getUpdates" and c.status == 401]) == refused == 3
    assert service.log.count(TELEGRAM_TOKEN_LINE) == 1
    assert "retrying" not in service.log.split(TELEGRAM_TOKEN_LINE)[1]  # nothing after the channel stopped


async def test_a_result_of_the_wrong_type_is_retried_like_an_outage(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    tg.answer_raw("getWebhookInfo", True, times=2)  # a broken proxy or Bot API server
    async with both(home, tg, ai) as (service, dc):
        await discord_answers(dc, ai, "Discord is fine.")
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        await telegram_answers(tg, ai, "Telegram is up.")
    assert service.log.count("Telegram start failed (getWebhookInfo: answered with an unexpected result (True))") == 1
    assert "Traceback" not in service.log and "AttributeError" not in service.log


@pytest.mark.parametrize("fault", ["busy port", "refused setWebhook"])
async def test_a_webhook_that_cannot_be_set_up_stops_only_telegram(home, fake_telegram, fake_openrouter, fault):
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    with socket.socket() as squatter:
        if fault == "busy port":
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            expected = "Set channels.telegram.webhookPort to a free port"
        else:
            tg.fail("setWebhook", 400, "Bad Request: bad webhook: HTTPS url must be provided for webhook", times=1000)
            expected = "Check channels.telegram.webhookUrl and restart"
        async with both(home, tg, ai, webhookUrl=f"http://127.0.0.1:{port}/tg", webhookHost="127.0.0.1",
                        webhookPort=port, webhookSecret="s3cret") as (service, dc):
            await logged(service, expected)
            await discord_answers(dc, ai, "Discord is fine.")
            assert service.proc.returncode is None
    assert service.log.count(expected) == 1
    assert "Traceback" not in service.log


async def test_discord_gateway_closing_with_4004_stops_only_discord(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        await dc.close_gateway(4004, "Authentication failed.")  # the token was reset in the Developer Portal
        await logged(service, DISCORD_TOKEN_LINE)
        await telegram_answers(tg, ai, "Telegram is fine.")
        assert service.proc.returncode is None
    assert service.log.count(DISCORD_TOKEN_LINE) == 1
    assert "channels.discord.token" in service.log and "Traceback" not in service.log


async def test_anything_else_a_channel_raises_stops_only_that_channel(home, fake_telegram, fake_openrouter):
    """No channel code expects a 403 on Discord's login: the runtime's supervisor stops Discord alone, in one line."""
    tg, ai = fake_telegram, fake_openrouter
    async with FakeDiscord(heartbeat_ms=500) as dc:
        dc.answer_raw("GET", "/users/@me", {"message": "Missing Access", "code": 50001}, status=403, times=1000)
        await onboarded(home, ai)
        home.write_config(ai, channels={"telegram": telegram_config(tg, streaming="off")["channels"]["telegram"],
                                        "discord": dc.config(dmPolicy="open")})
        async with running(home) as service:
            await logged(service, "the discord channel stopped on an unexpected error (Forbidden: 403")
            await telegram_answers(tg, ai, "Telegram is fine.")
            assert service.proc.returncode is None
    assert service.log.count("the discord channel stopped on an unexpected error") == 1
    assert "the other channels go on. Run `chorus doctor`" in service.log and "Traceback" not in service.log


async def test_slash_commands_discord_cannot_parse_leave_discord_answering(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with FakeDiscord(heartbeat_ms=500) as dc:
        dc.answer_raw("PUT", "/applications/{application_id}/commands", [{"name": "new"}])  # no id, no type...
        await onboarded(home, ai)
        home.write_config(ai, channels={"discord": dc.config(dmPolicy="open")})
        async with running(home) as service:
            await dc.wait_for(lambda: dc.ready.is_set(), timeout=30)
            await discord_answers(dc, ai, "Here anyway.")
    assert service.log.count("Discord slash commands not registered (KeyError") == 1
    assert "the bot still answers messages" in service.log


# ---- poison updates ------------------------------------------------------------------------------------------


def poison(tg: FakeTelegram, shape: str) -> int:
    """Push one update of ``shape`` that cannot be read as it is; returns its update id."""
    chat = tg.chat(USER).as_api()
    base = {"message_id": 900, "date": 1700000000, "from": user(USER)}
    if shape == "no chat":
        return tg.push({"message": {**base, "text": "hi"}})
    if shape == "chat without type":  # the sample update of Telegram's own docs
        return tg.push({"message": {**base, "chat": {"id": USER, "first_name": "Ada"}, "text": "hi"}})
    if shape == "not a message":
        return tg.push({"message": "hello"})
    if shape == "surrogate username":
        return tg.push({"message": {**base, "chat": chat, "from": {**user(USER), "first_name": "\ud83d", "username": "a\udc00"},
                                    "text": "hi from a broken client"}})
    assert shape == "surrogate file name"
    file_id = tg.upload(b"minutes of the meeting", "documents/file_1.txt")
    return tg.push({"message": {**base, "chat": chat, "caption": "look", "document": {
        "file_id": file_id, "file_unique_id": "U" + file_id, "file_name": "report\udcff.txt", "mime_type": "text/plain"}}})


@pytest.mark.parametrize("shape", ["no chat", "chat without type", "not a message", "surrogate username",
                                   "surrogate file name"])
async def test_an_update_that_cannot_be_read_blocks_nothing_after_it(home, fake_telegram, fake_openrouter, shape):
    tg, ai = fake_telegram, fake_openrouter
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        update_id = poison(tg, shape)
        if shape.startswith("surrogate"):  # readable once the broken characters are replaced: answered
            ai.queue(Text("Hi, Ada."))
            await tg.wait_sent(USER)
        await telegram_answers(tg, ai, "Hello, Bob.", chat=OTHER)  # someone else, within seconds
        await tg.wait_for(lambda: not tg.updates)  # confirmed: it will not come again
        await discord_answers(dc, ai, "Discord is fine.")
    if shape.startswith("surrogate"):
        assert tg.texts_in(USER)[-1] == "Hi, Ada."
    else:
        assert service.log.count(f"Telegram update {update_id} cannot be read and is skipped") == 1
    assert "Traceback" not in service.log


async def test_a_note_the_group_refuses_blocks_nothing(home, fake_telegram, fake_openrouter):
    """The "I can't read report.zip" note goes out after accepting: a group refusing it costs only the note."""
    tg, ai = fake_telegram, fake_openrouter
    group = -100500
    tg.fail("sendMessage", 400, "Bad Request: not enough rights to send text messages to the chat",
            chat_id=group, times=1000)
    async with both(home, tg, ai, groups={"*": {"requireMention": False}}) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        file_id = tg.upload(b"PK\x03\x04", "documents/file_2.zip")
        tg.message(group, None, chat_type="group", sender=user(42, "Bob", "bob"),
                   document={"file_id": file_id, "file_unique_id": "U" + file_id, "file_name": "report.zip",
                             "mime_type": "application/zip"})
        await tg.wait_for(lambda: any(c.method == "sendMessage" and c.params.get("chat_id") == group for c in tg.calls))
        await telegram_answers(tg, ai, "Hello, Ada.")
    assert "a part was refused and is dropped" in service.log and "not enough rights" in service.log


# ---- webhook bodies ------------------------------------------------------------------------------------------


async def test_webhook_bodies_that_can_never_be_accepted_get_400_or_413(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    url = f"http://127.0.0.1:{port}/tg"
    async with both(home, tg, ai, webhookUrl=url, webhookPath="/tg", webhookHost="127.0.0.1", webhookPort=port,
                    webhookSecret="s3cret") as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("setWebhook"), timeout=30)
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
        async with aiohttp.ClientSession() as http:
            statuses = []
            for body in (b"{not json", b"[1, 2]", b'{"message": {}}', b'{"update_id": 1, "x": "' + b"a" * 2**21 + b'"}'):
                async with http.post(url, data=body, headers=headers) as resp:
                    statuses.append(resp.status)
        assert statuses == [400, 400, 400, 413]
        update_id = poison(tg, "no chat")  # a well-formed update that cannot be read: confirmed (200), logged
        await telegram_answers(tg, ai, "Hello, Bob.", chat=OTHER)
        await tg.wait_for(lambda: (update_id, 200) in tg.webhook_results)
    assert f"Telegram update {update_id} cannot be read and is skipped" in service.log


# ---- Discord's slash commands and typing ---------------------------------------------------------------------


async def test_switching_between_global_and_per_server_commands_removes_the_other_set(home, fake_openrouter):
    async with FakeDiscord(heartbeat_ms=500) as dc:
        await switch_commands(home, fake_openrouter, dc)


async def switch_commands(home: Home, ai: FakeOpenRouter, dc: FakeDiscord) -> None:
    server = dc.guild("Team")["id"]
    await onboarded(home, ai)
    for guilds, listed, emptied in (({server: {}}, server, "global"), (None, "global", server), ({server: {}}, server, "global")):
        dc.ready.clear()
        home.write_config(ai, channels={"discord": dc.config(dmPolicy="open", groupPolicy="open",
                                                             **({"guilds": guilds} if guilds else {}))})
        async with running(home) as service:
            try:
                await dc.wait_for(lambda: dc.ready.is_set() and bool(dc.commands.get(listed))
                                  and dc.commands.get(emptied) == [], timeout=30)
            except AssertionError:
                raise AssertionError(f"{dc.commands}\n{service.output}") from None
        assert "new" in [c["name"] for c in dc.commands[listed]]
    dc.assert_clean()


async def test_typing_only_where_an_answer_follows_and_once_per_turn(home, fake_openrouter):
    """A server message that names the bot from someone the group policy leaves out gets no "typing" (no answer
    follows); a DM's turn shows it once, from the answer's stream."""
    ai = fake_openrouter
    async with FakeDiscord(heartbeat_ms=500) as dc:
        ann = dc.user("ann")
        general, dm = dc.text_channel(dc.guild()), dc.dm(ann)
        await onboarded(home, ai)
        home.write_config(ai, channels={"discord": dc.config(dmPolicy="open", groupPolicy="allowlist",
                                                             groupAllowFrom=["123"])})
        async with running(home) as service:
            await dc.wait_for(lambda: dc.ready.is_set(), timeout=30)
            ai.queue(Text("Hi, Ann."))
            await dc.say(general, ann, f"<@{dc.bot['id']}> hello", mentions=[dc.bot])
            await dc.say(dm, ann, "hello")  # events arrive in order: once this is answered, the first was handled
            await dc.wait_sent(dm)
        assert [m.content for m in dc.bot_messages(dm)] == ["Hi, Ann."]
        assert dc.bot_messages(general) == [] and dc.typing.get(general["id"], 0) == 0
        assert dc.typing.get(dm["id"]) == 1
        dc.assert_clean()


# ---- config --------------------------------------------------------------------------------------------------


TG_TOKEN = "123456789:AAFakeTokenForTestsOnly_abcdefghijklmn"
DC_TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.mark.parametrize("command", [("config", "validate"), ("doctor",)])
async def test_addresses_must_be_urls_and_a_token_pasted_there_is_never_shown(home, fake_openrouter, command):
    home.write_config(fake_openrouter, channels={
        "telegram": {"botToken": TG_TOKEN, "apiRoot": TG_TOKEN},  # the token pasted twice, once in the wrong key
        "discord": {"token": DC_TOKEN, "apiBase": "discord.com/api/v10", "gatewayUrl": DC_TOKEN}})
    result = await chorus(home, *command)
    output = result.out + result.err
    assert result.code != 0
    assert "channels.telegram.apiRoot: found a value that looks like a key or token" in output
    assert "channels.discord.apiBase: found 'discord.com/api/v10' (string); must be a URL (https or http)" in output
    assert "channels.discord.gatewayUrl: found a value that looks like a key or token" in output
    for secret in (TG_TOKEN, TG_TOKEN.split(":")[1], DC_TOKEN, DC_TOKEN.split(".")[-1]):
        assert secret not in output


async def test_config_validate_names_model_params_it_never_sends(home, fake_openrouter):
    home.write_config(fake_openrouter, agents={"defaults": {"models": {"openrouter/openai/gpt-5": {
        "params": {"serviceTier": "flex", "promptCacheKey": "k", "temperature": 0.2}}}}})
    result = await chorus(home, "config", "validate")
    assert result.code == 0, result.err
    assert ("warning: agents.defaults.models.openrouter/openai/gpt-5.params.serviceTier, "
            "agents.defaults.models.openrouter/openai/gpt-5.params.promptCacheKey: accepted but never sent") in result.err
    assert "temperature" not in result.err


# ---- the console ---------------------------------------------------------------------------------------------


def test_the_console_never_overwrites_saved_media(tmp_path):
    from channels.base import AttachmentKind, Media
    from channels.console import ConsoleChannel

    console = ConsoleChannel(tmp_path / "media", stdin=None, stdout=None)
    tracks = [Media(AttachmentKind.AUDIO, f"track {n}".encode(), "audio/mpeg", "song.mp3") for n in range(3)]
    paths = [console.save_media(track) for track in tracks]  # within the same second
    assert len(set(paths)) == 3 and all(p.suffix == ".mp3" and p.parent == tmp_path / "media" for p in paths)
    assert [p.read_bytes() for p in paths] == [b"track 0", b"track 1", b"track 2"]


async def test_the_could_not_save_notice_goes_once_per_sender_not_per_redelivery(home, fake_telegram, fake_openrouter):
    import resource

    tg, ai = fake_telegram, fake_openrouter
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        # The kernel's file-size limit stands in for a full disk: the inbox cannot store the message.
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        tg.message(USER, "during")
        await logged(service, "a Telegram update could not be stored; it is received again in 2 s")  # the second try
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        ai.queue(Text("Got it now."))
        await tg.wait_for(lambda: "Got it now." in tg.texts_in(USER))
        await telegram_answers(tg, ai, "And the next one.")  # a later marker: nothing else came in between
    notices = [t for t in tg.texts_in(USER) if t.startswith("⚠️ I could not save your message")]
    assert len(notices) == 1
    assert tg.texts_in(USER)[-2:] == ["Got it now.", "And the next one."]


async def test_a_failing_receive_is_logged_once_and_retried(home, fake_telegram, fake_openrouter):
    """getUpdates failing again and again (a stall ended by its deadline fails the same way) is said once,
    retried with growing pauses, and receiving goes on; Discord answers meanwhile."""
    tg, ai = fake_telegram, fake_openrouter
    async with both(home, tg, ai) as (service, dc):
        await tg.wait_for(lambda: tg.calls_to("getUpdates"), timeout=30)
        tg.fail("getUpdates", 502, "Bad Gateway", times=3)
        await discord_answers(dc, ai, "Discord is fine.")
        await tg.wait_for(lambda: not tg.failures)
        await telegram_answers(tg, ai, "Telegram is back.")
    assert service.log.count("receiving from Telegram failed") == 1
    assert "receiving from Telegram failed (getUpdates: Bad Gateway (502)); retrying with growing pauses" in service.log
