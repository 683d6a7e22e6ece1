"""The fake Bot API refuses what Telegram refuses, so a test that passes against it means something."""

from __future__ import annotations

import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramBadRequest
from aiogram.types import MessageEntity

from tests.fakes.telegram import FakeTelegram


@pytest.fixture
async def tg():
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg):
    session = AiohttpSession(api=TelegramAPIServer.from_base(tg.api_root))
    async with Bot(tg.token, session=session) as bot:
        yield bot


async def test_a_valid_message_is_stored_with_its_entities(tg, bot):
    tg.chat(5)
    await bot.send_message(5, "hi 😀 bold", entities=[MessageEntity(type="bold", offset=6, length=4)])
    (sent,) = tg.messages_in(5)
    assert (sent.text, sent.entities) == ("hi 😀 bold", [{"type": "bold", "offset": 6, "length": 4}])
    assert tg.violations == []


@pytest.mark.parametrize("kwargs, problem", [
    ({"text": "x" * 4097}, "message text is too long (4097 > 4096)"),
    ({"text": "😀" * 2049}, "message text is too long (4098 > 4096)"),  # UTF-16 units, not characters
    ({"text": "hi 😀 bold", "entities": [MessageEntity(type="bold", offset=6, length=5)]}, "lies outside the text"),
    ({"text": "<b>open", "parse_mode": "HTML"}, "unclosed start tag \"b\""),
    ({"text": "<div>x</div>", "parse_mode": "HTML"}, "unsupported start tag \"div\""),
    ({"text": "1. done", "parse_mode": "MarkdownV2"}, "character '.' is reserved"),
])
async def test_what_telegram_refuses_is_a_violation(tg, bot, kwargs, problem):
    tg.chat(5)
    with pytest.raises(TelegramBadRequest):
        await bot.send_message(5, **kwargs)
    assert len(tg.violations) == 1 and problem in tg.violations[0]


async def test_unknown_fields_and_missing_required_ones_are_violations(tg, bot):
    from aiohttp import ClientSession

    async with ClientSession() as http:
        await http.post(f"{tg.api_root}/bot{tg.token}/sendMessage", json={"chat_id": 5, "text": "x", "colour": "red"})
        await http.post(f"{tg.api_root}/bot{tg.token}/sendVoice", json={"chat_id": 5})
        await http.post(f"{tg.api_root}/bot{tg.token}/sendMessage", json={"chat_id": 5, "text": 7})
        await http.post(f"{tg.api_root}/bot{tg.token}/sendMesage", json={"chat_id": 5, "text": "x"})
    assert [v.split(": ", 1)[1] for v in tg.violations] == [
        "Bad Request: unknown parameter 'colour' of sendMessage",
        "Bad Request: parameter 'voice' of sendVoice is required",
        "Bad Request: sendMessage.text must be a String, found 7",
        "Not Found: method 'sendMesage' is not in the Bot API",
    ]


async def test_get_updates_honours_offset_and_timeout(tg, bot):
    first = tg.message(5, "one")
    updates = await bot.get_updates(timeout=0)
    assert [u.message.text for u in updates] == ["one"]
    again = await bot.get_updates(timeout=0)  # not confirmed yet: delivered again
    assert [u.update_id for u in again] == [updates[0].update_id]
    assert await bot.get_updates(offset=updates[0].update_id + 1, timeout=0) == []
    assert tg.updates == [] and first["text"] == "one"
