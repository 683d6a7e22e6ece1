"""Chorus's own Bot API client over the wire to the fake: multipart uploads, downloads, errors and their
parameters, flood control, the chat action keep-alive, and the bot token kept out of every error."""

from __future__ import annotations

import asyncio
import socket
import time
import traceback
from typing import Any

import pytest
from aiohttp import web

from channels.telegram import api as telegram_api, flood as telegram_session, outbound as telegram_outbound
from channels.base import Attachment, AttachmentKind, ChatRef, Media, Reply
from channels.telegram.channel import TelegramChannel
from channels.telegram.settings import TelegramSettings
from channels.telegram.api import InputFile, Request, Send, TelegramAPI, TelegramError
from channels.telegram.inbound import message_ref
from channels.outbox import Fate
from channels.telegram.outbound import (PHOTO_LIMIT, OutboundSettings, Sender, TelegramStream, _Target, chat_action,
                                        classify)
from channels.telegram.flood import FloodControl
from tests.fakes.media import make_png
from tests.fakes.telegram import FakeTelegram


@pytest.fixture
async def tg():
    async with FakeTelegram() as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
async def api(tg):
    client = TelegramAPI(tg.token, tg.api_root)
    yield client
    await client.aclose()


def shows_token(exc: BaseException, token: str) -> bool:
    """Whether the token (or its secret half) is anywhere in the error as it would be logged."""
    text = "".join(traceback.format_exception(exc)) + repr(exc)
    return token in text or token.split(":")[1] in text


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


async def test_a_file_name_cannot_break_out_of_its_multipart_header():
    payload = telegram_api._form({"chat_id": 5, "document": InputFile(b"data", 'a"b\r\nX: y.txt')})()
    boundary = payload.content_type.removeprefix("multipart/form-data; boundary=")
    assert (await payload.as_bytes()).split(b"\r\n")[:8] == [
        f"--{boundary}".encode(), b"Content-Type: text/plain; charset=utf-8",
        b'Content-Disposition: form-data; name="chat_id"', b"", b"5", f"--{boundary}".encode(),
        b"Content-Type: application/octet-stream",
        b'Content-Disposition: form-data; name="file0"; filename="a\\"b%0D%0AX: y.txt"']


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
    wrong_token = "123456789:AAWrongTokenWrongTokenWrongToken_xx"
    wrong = TelegramAPI(wrong_token, tg.api_root)
    with pytest.raises(TelegramError) as refused:
        await wrong.call("getMe")
    await wrong.aclose()
    assert refused.value.unauthorized and not shows_token(refused.value, wrong_token)


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
        await impatient.call("getUpdates", timeout=1, request_timeout=0.3)
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
    # Only the refused connection certainly never reached Telegram: the timed-out call went out, its fate unknown.
    assert (refused.value.unsent, timed_out.value.unsent, echoed.value.unsent) == (True, False, False)
    fates = [classify(e.value).fate for e in (refused, timed_out, stray, echoed)]  # type: ignore[union-attr]
    assert fates == [Fate.RETRY, Fate.UNKNOWN, Fate.REFUSED, Fate.REFUSED]


async def test_flood_control_resends_after_retry_after_but_drops_what_is_worthless_late(tg, caplog):
    tg.chat(5)
    api = TelegramAPI(tg.token, tg.api_root, middlewares=[FloodControl()])
    try:
        tg.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
        started = time.monotonic()
        sent = await api.call("sendMessage", chat_id=5, text="hi")
        assert time.monotonic() - started >= 1.0 and sent["text"] == "hi"
        assert [c.status for c in tg.calls if c.method == "sendMessage"] == [429, 200]
        ephemeral = {"sendChatAction": {"action": "typing"}, "sendMessageDraft": {"draft_id": 7, "text": "h"}}
        for method, params in ephemeral.items():
            tg.fail(method, 429, "Too Many Requests: retry after 5", retry_after=5)
            started = time.monotonic()
            with pytest.raises(TelegramError) as dropped:
                await api.call(method, chat_id=5, **params)
            assert dropped.value.flood and time.monotonic() - started < 1  # a late indicator is worthless
        tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
        with pytest.raises(TelegramError) as blocked:
            await api.call("sendMessage", chat_id=5, text="anyone there?")
        assert blocked.value.forbidden  # raised at once: the outbox decides what a refusing chat means
        assert len([c for c in tg.calls if c.method == "sendMessage"]) == 3  # never retried
    finally:
        await api.aclose()


async def test_a_chat_action_is_shown_before_the_block_and_repeated_until_it_ends(tg, api, monkeypatch):
    monkeypatch.setattr(telegram_outbound, "ACTION_EVERY", 0.2)  # Telegram shows one for 5 s: 4.5 s in service
    tg.chat(5)
    shown = lambda: [c.params for c in tg.calls_to("sendChatAction")]  # noqa: E731
    async with chat_action(api, _Target.of(ChatRef("telegram", "5"), None), "upload_voice"):
        assert shown() == [{"chat_id": 5, "action": "upload_voice"}]  # before the work starts
        await asyncio.sleep(0.75)
    repeated = len(shown())
    await asyncio.sleep(0.5)
    assert repeated >= 3 and len(shown()) == repeated  # repeated while the block ran, never after


async def test_typing_renewed_while_the_last_one_is_slow_is_awaited_at_the_end_neither_doubled_nor_cut_off(
        tg, api, monkeypatch):
    """A chat action request cut off mid-way would lose its pooled connection; one sent beside another that
    Telegram has not answered yet only adds load."""
    monkeypatch.setattr(telegram_outbound, "ACTION_EVERY", 0.1)
    tg.chat(5)
    slow = tg.hold("sendChatAction")
    stream = TelegramStream(Sender(api, OutboundSettings(streaming="off")), ChatRef("telegram", "5", kind="direct"))
    await asyncio.sleep(0.45)  # four renewals fall due while the first is still unanswered
    assert [c.params for c in tg.calls_to("sendChatAction")] == [{"chat_id": 5, "action": "typing"}]
    closing = asyncio.create_task(stream.close(Reply(text="Done.")))
    await tg.wait_sent(5)
    await asyncio.sleep(0.2)
    assert not closing.done()  # the answer is out; the stream still waits for Telegram's answer to the action
    slow.set()
    await asyncio.wait_for(closing, 5)
    await asyncio.sleep(0.3)
    assert len(tg.calls_to("sendChatAction")) == 1  # none after the reply


async def test_a_retry_notice_is_shown_as_the_draft_only_until_the_answer_begins(tg, api):
    """"⏳ … trying again" fills the wait in a private chat; once the answer's text has started, a later
    notice must not replace it."""
    tg.chat(5)
    stream = TelegramStream(Sender(api, OutboundSettings(streaming="partial")), ChatRef("telegram", "5", kind="direct"))
    await stream.notice("⏳ busy; trying again in 2 s…")
    await stream.delta("Hello")
    await stream._flush
    await stream.notice("⏳ too late to show")
    await stream.close(Reply(text="Hello"))
    assert [c.params["text"] for c in tg.calls_to("sendMessageDraft")] == ["⏳ busy; trying again in 2 s…", "Hello"]
    assert tg.texts_in(5) == ["Hello"]


async def test_a_draft_is_not_sent_again_when_its_text_did_not_change(tg, api):
    """Pieces that change nothing the user would see (trailing spaces, a newline) cost no Bot API call."""
    tg.chat(5)
    stream = TelegramStream(Sender(api, OutboundSettings(streaming="partial", throttle=0.0)),
                            ChatRef("telegram", "5", kind="direct"))
    for piece in ("Hello", " ", "\n", " world"):
        await stream.delta(piece)
        await stream._flush
    await stream.close(Reply(text="Hello\nworld"))
    assert [c.params["text"] for c in tg.calls_to("sendMessageDraft")] == ["Hello", "Hello\nworld"]


@pytest.mark.parametrize("description", [
    "Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 4",
    "Bad Request: entity beginning at UTF-16 offset 2 ends after the end of the text at UTF-16 offset 3",
])
async def test_an_answer_whose_formatting_telegram_refuses_is_sent_again_as_plain_text(tg, api, description):
    tg.chat(5)
    tg.fail("sendMessage", 400, description)
    await Sender(api, OutboundSettings()).reply(ChatRef("telegram", "5"), Reply(text="**Hi** there"))
    refused, plain = [c for c in tg.calls if c.method == "sendMessage"]
    assert (refused.status, refused.params["entities"][0]["type"]) == (400, "bold")
    assert (plain.status, "entities" in plain.params) == (200, False)
    assert tg.texts_in(5) == ["Hi there"]


@pytest.mark.parametrize(("status", "description", "fate"), [
    (500, "Internal Server Error", Fate.RETRY), (429, "Too Many Requests: retry after 7", Fate.WAIT),
    (403, "Forbidden: bot was kicked from the supergroup chat", Fate.GONE), (400, "Bad Request: chat not found", Fate.GONE),
    (400, "Bad Request: message is too long", Fate.REFUSED)])
async def test_what_each_bot_api_answer_means_for_a_part_of_an_answer(tg, api, status, description, fate):
    tg.chat(5)
    tg.fail("sendMessage", status, description, retry_after=7 if status == 429 else None)
    with pytest.raises(TelegramError) as failed:
        await api.call("sendMessage", chat_id=5, text="hi")
    failure = classify(failed.value)
    assert failure is not None and (failure.fate, failure.wait) == (fate, 7.0 if status == 429 else 0.0)


async def test_a_bad_request_that_is_not_about_formatting_is_not_sent_again(tg, api, caplog):
    tg.chat(5)
    tg.fail("sendMessage", 400, "Bad Request: message is too long")
    await Sender(api, OutboundSettings()).reply(ChatRef("telegram", "5"), Reply(text="**Hi** there"))
    assert len([c for c in tg.calls if c.method == "sendMessage"]) == 1
    assert "a part was refused and is dropped (sendMessage: Bad Request: message is too long)" in caplog.text


async def test_a_file_of_exactly_the_upload_limit_is_sent_one_byte_more_is_explained(tg, api):
    tg.chat(5)
    sender, chat = Sender(api, OutboundSettings(upload_limit=4000)), ChatRef("telegram", "5")
    await sender.reply(chat, Reply(media=[Media(AttachmentKind.DOCUMENT, bytes(4000), "application/pdf", "fits.pdf")]))
    await sender.reply(chat, Reply(media=[Media(AttachmentKind.DOCUMENT, bytes(4001), "application/pdf", "over.pdf")]))
    sent, explained = tg.messages_in(5)
    assert (sent.method, [len(data) for data in sent.files.values()]) == ("sendDocument", [4000])
    assert explained.method == "sendMessage"
    assert explained.text == ("The document is too large to send here (0.0 MB; Telegram bots can send at most "
                              "0.004 MB).")


async def test_a_caption_over_1024_utf16_units_follows_the_photo_as_its_own_message(tg, api):
    """Telegram counts a caption in UTF-16 units: 600 emoji are 1,200 of them, over the limit of 1,024."""
    tg.chat(5)
    caption = "😀" * 600
    await Sender(api, OutboundSettings()).reply(ChatRef("telegram", "5"), Reply(
        media=[Media(AttachmentKind.IMAGE, make_png(), "image/png", "a.png", caption)]))
    photo, text = tg.messages_in(5)
    assert (photo.method, photo.caption, text.method, text.text) == ("sendPhoto", None, "sendMessage", caption)


async def test_the_final_answer_does_not_wait_for_a_draft_that_is_not_due_yet(tg, api):
    """With the next draft 5 s away, the answer ends now: the pending draft is dropped, not sent before it."""
    tg.chat(5)
    stream = TelegramStream(Sender(api, OutboundSettings(streaming="partial", throttle=5.0)),
                            ChatRef("telegram", "5", kind="direct"))
    await stream.delta("Hello")
    await stream._flush  # the first draft goes at once
    await stream.delta(" world")
    await stream.close(Reply(text="Hello world"))
    assert [c.params["text"] for c in tg.calls_to("sendMessageDraft")] == ["Hello"]
    assert tg.texts_in(5) == ["Hello world"]


async def test_an_answer_that_ends_while_its_preview_is_on_the_way_becomes_that_message_not_a_second_one(tg, api):
    """A short answer can be whole before Telegram has answered the preview's sendMessage: cut off then, the
    preview would still be posted, its id never known, and the answer would arrive beside it."""
    tg.chat(-100, "supergroup")
    slow = tg.hold("sendMessage")
    stream = TelegramStream(Sender(api, OutboundSettings(streaming="block", throttle=0.0)),
                            ChatRef("telegram", "-100", kind="group"))
    await stream.delta("Hello")
    await tg.wait_for(lambda: tg.calls_to("sendMessage"), what="the preview request")
    closing = asyncio.create_task(stream.close(Reply(text="Hello world")))
    await asyncio.sleep(0.2)
    slow.set()
    await asyncio.wait_for(closing, 5)
    assert tg.texts_in(-100) == ["Hello world"]
    assert [c.params["text"] for c in tg.calls_to("editMessageText")] == ["Hello world"]


async def test_an_answer_quotes_the_question_in_a_group_only_and_arrives_when_the_question_was_deleted(tg, api):
    sender = Sender(api, OutboundSettings())
    asked, gone = tg.message(-100, "who?", chat_type="supergroup"), tg.message(-100, "what?", chat_type="supergroup")
    tg.delete(-100, gone["message_id"])  # the user took the question back while the bot was answering
    group = ChatRef("telegram", "-100", kind="group")
    await sender.reply(group, Reply(text="Ann.", reply_to=message_ref(-100, asked["message_id"])))
    await sender.reply(group, Reply(text="A cat.", reply_to=message_ref(-100, gone["message_id"])))
    private = tg.message(5, "hi")
    await sender.reply(ChatRef("telegram", "5"), Reply(text="Hello.", reply_to=message_ref(5, private["message_id"])))
    assert [(m.text, m.reply_to) for m in tg.messages_in(-100)] == [("Ann.", asked["message_id"]), ("A cat.", None)]
    assert [(m.text, m.reply_to) for m in tg.messages_in(5)] == [("Hello.", None)]


async def test_a_photo_up_to_ten_mb_goes_as_a_photo_one_byte_more_as_a_document(tg, api):
    tg.chat(5)
    sender, chat = Sender(api, OutboundSettings()), ChatRef("telegram", "5")
    await sender.reply(chat, Reply(media=[Media(AttachmentKind.IMAGE, b"\x89PNG" + bytes(PHOTO_LIMIT - 4), "image/png", "a.png"),
                                          Media(AttachmentKind.IMAGE, b"\x89PNG" + bytes(PHOTO_LIMIT - 3), "image/png", "b.png")]))
    assert [m.method for m in tg.messages_in(5)] == ["sendPhoto", "sendDocument"]


async def test_a_file_telegram_cannot_hand_out_is_an_error_not_its_error_page(tg, api):
    """getFile names a path the file server answers 404 for, or no path at all (a file over 20 MB): an error
    each, never the bytes of an error page passed on as the user's file."""
    answers = iter([{"file_id": "F1", "file_unique_id": "UF1", "file_path": "photos/gone.jpg"},
                    {"file_id": "F2", "file_unique_id": "UF2", "file_size": 30 * 2**20}])

    async def get_file(params: dict[str, Any], files: dict[str, bytes]) -> web.Response:
        return web.json_response({"ok": True, "result": next(answers)})

    tg._m_getFile = get_file  # type: ignore[method-assign]
    with pytest.raises(TelegramError) as gone:
        await api.download("F1")
    assert (gone.value.method, gone.value.code, gone.value.description) == ("download", 404, "HTTP 404 for the file")
    with pytest.raises(TelegramError) as pathless:
        await api.download("F2")
    assert (pathless.value.method, pathless.value.code) == ("getFile", 400)
    assert pathless.value.description == "the file has no file_path (too big for the Bot API to hand out?)"


async def test_the_token_is_masked_in_an_error_that_quotes_it_encoded_or_in_a_mistyped_api_root(tg, api):
    """A server that quotes the URL percent-encoded shows the secret half without the ``id:`` before it; an
    apiRoot with a typo (port 99999) is named as the root, not as a URL with the token in it."""
    bot_id, secret = tg.token.split(":")
    tg.chat(5)
    tg.fail("sendMessage", 400, f"Bad Request: no route for /bot{bot_id}%3A{secret}/sendMessage")
    with pytest.raises(TelegramError) as encoded:
        await api.call("sendMessage", chat_id=5, text="hi")
    assert encoded.value.description == f"Bad Request: no route for /bot{bot_id}%3A***/sendMessage"
    typo = TelegramAPI(tg.token, "http://127.0.0.1:99999")
    with pytest.raises(TelegramError) as invalid:
        await typo.call("getMe")
    await typo.aclose()
    assert str(invalid.value) == ("getMe: the Bot API root http://127.0.0.1:99999 is not a usable URL: "
                                  "Port out of range 0-65535")


async def test_a_call_after_the_channel_stopped_fails_as_a_telegram_error(tg, api):
    """A late reply after shutdown is an unsendable reply like any other, not a crash in the sender."""
    assert (await api.call("getMe"))["username"] == "chorus_test_bot"
    await api.aclose()
    with pytest.raises(TelegramError) as stopped:
        await api.call("getMe")
    assert (stopped.value.code, stopped.value.description) == (0, "the Telegram channel is stopped")



async def test_flood_control_waits_out_up_to_five_minutes_in_all_and_no_longer(monkeypatch):
    """Telegram may ask for minutes of quiet (a bot that sent too much to a group): a reply is held that long,
    not lost; only a wait that would take the total past 300 s gives up."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(telegram_session.asyncio, "sleep", sleep)

    def flooded(*retry_after: float) -> Send:
        pending = list(retry_after)

        async def send(request: Request) -> Any:
            if pending:
                raise TelegramError(request.method, 429, "Too Many Requests", retry_after=pending.pop(0))
            return "sent"
        return send

    flood = FloodControl()
    request = Request("sendMessage", {"chat_id": 5, "text": "hi"})
    assert await flood(request, flooded(120, 180)) == "sent" and waits == [120, 180]  # 300 s in all: waited
    waits.clear()
    with pytest.raises(TelegramError) as given_up:
        await flood(request, flooded(120, 181))
    assert given_up.value.retry_after == 181 and waits == [120]


async def test_a_file_kept_in_the_inbox_is_fetched_again_by_its_id_with_what_was_known_of_it(tg):
    """After a restart the inbox's attachment comes back with its length (a voice note too long is still refused
    before it is downloaded) and is downloaded again; one with no file id to fetch by is left out."""
    channel = TelegramChannel(TelegramSettings(token=tg.token, api_root=tg.api_root))
    file_id = tg.upload(b"OggS voice", "voice/file_1.oga")
    try:
        again = channel.reattach(Attachment(AttachmentKind.VOICE, mime="audio/ogg", size=10, duration=95, source=file_id))
        assert again is not None
        assert (again.kind, again.mime, again.size, again.duration, again.source) == (
            AttachmentKind.VOICE, "audio/ogg", 10, 95, file_id)
        assert await again.read() == b"OggS voice"
        assert channel.reattach(Attachment.from_bytes(AttachmentKind.VOICE, b"OggS")) is None
    finally:
        await channel.api.aclose()
