"""The fake Bot API refuses what Telegram refuses, so a test that passes against it means something."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from channels.telegram.api import TelegramAPI, TelegramError
from tests.fakes.telegram import FakeTelegram


@pytest.fixture
async def tg():
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def api(tg):
    client = TelegramAPI(tg.token, tg.api_root)
    yield client
    await client.aclose()


async def test_a_valid_message_is_stored_with_its_entities(tg, api):
    tg.chat(5)
    bold = {"type": "bold", "offset": 6, "length": 4}
    sent = await api.call("sendMessage", chat_id=5, text="hi 😀 bold", entities=[bold])
    (stored,) = tg.messages_in(5)
    assert (stored.text, stored.entities) == ("hi 😀 bold", [{"type": "bold", "offset": 6, "length": 4}])
    assert sent["message_id"] == stored.message_id and sent["chat"]["id"] == 5
    assert tg.violations == []


@pytest.mark.parametrize("kwargs, problem", [
    ({"text": "x" * 4097}, "message text is too long (4097 > 4096)"),
    ({"text": "😀" * 2049}, "message text is too long (4098 > 4096)"),  # UTF-16 units, not characters
    ({"text": "hi 😀 bold", "entities": [{"type": "bold", "offset": 6, "length": 5}]}, "lies outside the text"),
    ({"text": "<b>open", "parse_mode": "HTML"}, "unclosed start tag \"b\""),
    ({"text": "<div>x</div>", "parse_mode": "HTML"}, "unsupported start tag \"div\""),
    ({"text": "1. done", "parse_mode": "MarkdownV2"}, "character '.' is reserved"),
])
async def test_what_telegram_refuses_is_a_violation(tg, api, kwargs, problem):
    tg.chat(5)
    with pytest.raises(TelegramError) as refused:
        await api.call("sendMessage", chat_id=5, **kwargs)
    assert refused.value.bad_request and problem in refused.value.description
    assert len(tg.violations) == 1 and problem in tg.violations[0]


async def test_unknown_fields_and_missing_required_ones_are_violations(tg):
    async with httpx.AsyncClient(base_url=f"{tg.api_root}/bot{tg.token}/") as http:
        await http.post("sendMessage", json={"chat_id": 5, "text": "x", "colour": "red"})
        await http.post("sendVoice", json={"chat_id": 5})
        await http.post("sendMessage", json={"chat_id": 5, "text": 7})
        await http.post("sendMesage", json={"chat_id": 5, "text": "x"})
    assert [v.split(": ", 1)[1] for v in tg.violations] == [
        "Bad Request: unknown parameter 'colour' of sendMessage",
        "Bad Request: parameter 'voice' of sendVoice is required",
        "Bad Request: sendMessage.text must be a String, found 7",
        "Not Found: method 'sendMesage' is not in the Bot API",
    ]


async def test_get_updates_honours_offset_and_timeout(tg, api):
    first = tg.message(5, "one")
    updates = await api.call("getUpdates", timeout=0)
    assert [u["message"]["text"] for u in updates] == ["one"]
    again = await api.call("getUpdates", timeout=0)  # not confirmed yet: delivered again
    assert [u["update_id"] for u in again] == [updates[0]["update_id"]]
    assert await api.call("getUpdates", offset=updates[0]["update_id"] + 1, timeout=0) == []
    assert tg.updates == [] and first["text"] == "one"


async def test_a_second_poller_ends_the_first_one_s_long_poll_with_409(tg, api):
    """As Telegram does: one getUpdates at a time per bot; the newer request ends the older with 409 Conflict
    (what the several-instances tests count to prove that one instance polls)."""
    other = TelegramAPI(tg.token, tg.api_root)
    try:
        older = asyncio.create_task(api.call("getUpdates", timeout=10))
        await tg.wait_for(lambda: len(tg.calls_to("getUpdates")) == 1 or older.done())
        newer = asyncio.create_task(other.call("getUpdates", timeout=10))
        with pytest.raises(TelegramError) as ended:
            await older
        assert ended.value.conflict and "terminated by other getUpdates request" in ended.value.description
        tg.message(5, "for the newer one")
        assert [u["message"]["text"] for u in await newer] == ["for the newer one"]
        assert [c.status for c in tg.calls if c.method == "getUpdates"] == [409, 200]
    finally:
        await other.aclose()
