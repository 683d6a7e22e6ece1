"""The fake Bot API refuses what Telegram refuses, so a test that passes against it means something; and
Chorus's own Bot API client (``channels.telegram_api``) speaks to it as Telegram expects."""

from __future__ import annotations

import socket
import traceback

import httpx
import pytest

from channels.telegram_api import InputFile, TelegramAPI, TelegramError
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


def shows_token(exc: BaseException, token: str) -> bool:
    """Whether the token (or its secret half) is anywhere in the error as it would be logged."""
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    return token in text or token.split(":")[1] in text


async def test_a_valid_message_is_stored_with_its_entities(tg, api):
    tg.chat(5)
    sent = await api.call("sendMessage", chat_id=5, text="hi 😀 bold", entities=[{"type": "bold", "offset": 6, "length": 4}])
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


async def test_a_file_goes_as_multipart_with_its_other_parameters_typed(tg, api):
    """Files are parts referenced as attach://NAME; numbers, booleans and objects beside them are JSON."""
    tg.chat(5)
    asked = tg.message(5, "say it")
    note = b"OggS\x00fake opus bytes"
    await api.call("sendVoice", chat_id=5, voice=InputFile(note, "voice.ogg", "audio/ogg"), duration=3,
                   caption="said **here**", caption_entities=[{"type": "bold", "offset": 5, "length": 4}],
                   reply_parameters={"message_id": asked["message_id"], "allow_sending_without_reply": True},
                   disable_notification=False, message_thread_id=None)
    assert tg.violations == []
    (voice,) = tg.messages_in(5)
    assert voice.files["voice"] == note and voice.reply_to == asked["message_id"]
    (call,) = tg.calls_to("sendVoice")
    assert {k: v for k, v in call.params.items() if k != "voice"} == {
        "chat_id": 5, "duration": 3, "caption": "said **here**", "disable_notification": False,
        "caption_entities": [{"type": "bold", "offset": 5, "length": 4}],
        "reply_parameters": {"message_id": asked["message_id"], "allow_sending_without_reply": True}}


async def test_a_file_a_user_sent_is_downloaded_by_its_id(tg, api):
    file_id = tg.upload(b"\x89PNG a photo", "photos/file_9.jpg")
    assert await api.download(file_id) == b"\x89PNG a photo"
    with pytest.raises(TelegramError) as unknown:
        await api.download("Fnope")
    assert unknown.value.bad_request and "invalid file_id" in unknown.value.description


async def test_errors_carry_the_bot_api_parameters(tg, api):
    tg.chat(5)
    tg.fail("sendMessage", 429, "Too Many Requests: retry after 7", retry_after=7)
    with pytest.raises(TelegramError) as flood:
        await api.call("sendMessage", chat_id=5, text="hi")
    assert (flood.value.flood, flood.value.code, flood.value.retry_after) == (True, 429, 7)
    tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    with pytest.raises(TelegramError) as blocked:
        await api.call("sendMessage", chat_id=5, text="hi")
    assert blocked.value.forbidden and not blocked.value.flood
    wrong = TelegramAPI("123456789:AAWrongTokenWrongTokenWrongToken_xx", tg.api_root)
    with pytest.raises(TelegramError) as refused:
        await wrong.call("getMe")
    await wrong.aclose()
    assert refused.value.unauthorized and not shows_token(refused.value, "123456789:AAWrongTokenWrongTokenWrongToken_xx")


async def test_the_token_never_appears_in_an_error(tg, api):
    """The token is in every URL: a server or proxy that quotes the URL, a timeout, a refused connection, an
    answer that is not the Bot API's; none of their errors, as logged, shows it."""
    tg.chat(5)
    tg.fail("sendMessage", 400, f"Bad Request: no route for /bot{tg.token}/sendMessage")
    with pytest.raises(TelegramError) as echoed:
        await api.call("sendMessage", chat_id=5, text="hi")
    assert "no route for /bot***/sendMessage" in str(echoed.value)

    impatient = TelegramAPI(tg.token, tg.api_root, timeout=0.3)
    assert await impatient.call("getUpdates", timeout=1, request_timeout=3) == []  # the poll outlasts the default
    with pytest.raises(TelegramError) as timed_out:
        await impatient.call("getUpdates", timeout=1)
    await impatient.aclose()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    nowhere = TelegramAPI(tg.token, f"http://127.0.0.1:{closed_port}")
    with pytest.raises(TelegramError) as refused:
        await nowhere.call("getMe")
    await nowhere.aclose()

    not_the_api = TelegramAPI(tg.token, f"{tg.api_root}/elsewhere")
    with pytest.raises(TelegramError) as stray:
        await not_the_api.call("getMe")
    await not_the_api.aclose()

    assert (timed_out.value.code, refused.value.code, stray.value.code) == (0, 0, 404)
    for exc in (echoed.value, timed_out.value, refused.value, stray.value):
        assert not shows_token(exc, tg.token), exc
