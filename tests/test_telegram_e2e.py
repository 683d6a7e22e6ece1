"""Telegram end to end: the real ``chorus run`` against the fake Bot API and the fake OpenRouter.

One service runs for the whole module (starting one takes seconds); every test talks to it from a chat of
its own. What a Telegram user would see is asserted exactly: texts, entities (UTF-16 offsets), parts of
long answers, voice notes decoded (codec, duration), where replies go (topics, quotes).
"""

from __future__ import annotations

import asyncio
import base64
import io
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import pytest
import pytest_asyncio

from bot.commands import HELP
from tests.conftest import Home, new_home, onboarded
from tests.fakes.media import decode_info, make_audio, make_pdf, make_png
from tests.fakes.openrouter import FakeOpenRouter, Images, Music, Recorded, Text, ToolCalls
from tests.fakes.telegram import BOT, FakeTelegram, user
from tests.telegram_service import Service, start, telegram_config

pytestmark = pytest.mark.asyncio(loop_scope="module")
FORUM, FILMS = -1005555, -1007777


@dataclass
class Bot:
    """The shared service, its fakes, and where the current test's share of their records starts."""

    tg: FakeTelegram
    ai: FakeOpenRouter
    home: Home
    service: Service
    since: int = 0

    def model_calls(self) -> list[Recorded]:
        return self.ai.chat_requests()[self.since:]

    def actions(self, chat_id: int) -> list[str]:
        return [c.params["action"] for c in self.tg.calls_to("sendChatAction") if c.params["chat_id"] == chat_id]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bot]:
    home = new_home(tmp_path_factory.mktemp("telegram"))
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        await onboarded(home, ai)
        home.write_config(ai, **telegram_config(
            tg, streamThrottleMs=200, groups={str(FORUM): {"requireMention": False}, str(FILMS): {"requireMention": False}}),
            messages={"tts": {"auto": "inbound"}},
            tools={"media": {"audio": {"maxDurationSeconds": 60}}},
            agents={"defaults": {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast", "pollIntervalMs": 50}}})
        service = await start(home, tg)
        yield Bot(tg, ai, home, service)
        log = (await service.stop()).err
        assert tg.token.split(":")[1] not in log, "the bot token leaked into the log"
        tg.assert_clean()
        ai.assert_clean()


@pytest_asyncio.fixture(loop_scope="module")
async def bot(shared: Bot) -> AsyncIterator[Bot]:
    """The shared service, with this test's records marked; no call Telegram or OpenRouter would refuse."""
    shared.since = len(shared.ai.chat_requests())
    violations = len(shared.tg.violations), len(shared.ai.violations)
    yield shared
    leftover, shared.ai.answers[:] = list(shared.ai.answers), []  # cleared, so one failure stays one test's
    shared.tg.failures.clear()
    assert shared.tg.violations[violations[0]:] + shared.ai.violations[violations[1]:] == []
    assert not leftover, f"answers queued but never asked for: {leftover}"


async def test_private_text_is_answered_with_telegram_formatting(bot):
    tg, ai, chat = bot.tg, bot.ai, 5001
    ai.queue(Text("**Hi** 😀 _there_, see `x = 1` and [docs](https://example.com/a)\n\n```python\nprint(1)\n```"))
    tg.message(chat, "hello")
    (sent,) = await tg.wait_sent(chat)
    assert sent.text == "Hi 😀 there, see x = 1 and docs\n\nprint(1)"
    assert sent.entities == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "italic", "offset": 6, "length": 5},  # after the emoji: two UTF-16 units
        {"type": "code", "offset": 17, "length": 5},
        {"type": "text_link", "offset": 27, "length": 4, "url": "https://example.com/a"},
        {"type": "pre", "offset": 33, "length": 8, "language": "python"},
    ]
    assert bot.model_calls()[0].json["messages"][-1]["content"] == "hello"
    assert bot.actions(chat)[0] == "typing"
    (commands,) = tg.calls_to("setMyCommands")
    assert [c["command"] for c in commands.params["commands"]] == ["help", "new", "model", "think", "tts", "status", "stop", "cron", "tz", "retry"]


async def test_start_greets(bot):
    tg, chat = bot.tg, 5014
    tg.message(chat, "/start", entities=[{"type": "bot_command", "offset": 0, "length": 6}])
    (sent,) = await tg.wait_sent(chat)
    assert sent.text == "Hi! I'm Chorus. Write to me, or send a voice note or a photo. /help lists the commands."
    assert bot.model_calls() == []


async def test_answers_stream_in_throttled_drafts_then_arrive_as_one_message(bot):
    tg, ai, chat = bot.tg, bot.ai, 5002
    ai.queue(Text("The quick brown fox jumps over the lazy dog, twice: once for **you** and once for me.", pace=0.06))
    tg.message(chat, "tell me")  # 4 characters every 60 ms: about 1.4 s of streaming
    (final,) = await tg.wait_sent(chat)
    drafts = [c for c in tg.calls_to("sendMessageDraft") if c.params["chat_id"] == chat]
    assert len(drafts) >= 2
    assert len({d.params["draft_id"] for d in drafts}) == 1 and drafts[0].params["draft_id"] != 0
    shown = [d.params["text"] for d in drafts]
    assert all(len(a) < len(b) for a, b in zip(shown, shown[1:]))  # each draft shows more of the answer
    assert all(final.text.startswith(s.replace("**", "").rstrip("*")) for s in shown)
    gaps = [b.at - a.at for a, b in zip(drafts, drafts[1:])]
    # Throttled: one draft per 200 ms (unthrottled, one per 60 ms piece). Measured where the calls arrive, where
    # one request held up on a loaded machine makes the gap after it short: the median gap says it.
    assert statistics.median(gaps) >= 0.18, gaps
    (send,) = [c for c in tg.calls_to("sendMessage") if c.params["chat_id"] == chat]
    assert send.at > drafts[-1].at
    assert final.text == "The quick brown fox jumps over the lazy dog, twice: once for you and once for me."
    assert final.entities == [{"type": "bold", "offset": 61, "length": 3}]


async def test_a_long_answer_arrives_in_parts_with_the_code_block_closed_and_reopened(bot):
    tg, ai, chat = bot.tg, bot.ai, 5003
    code = [f"print('line {i:03d}')  # {'x' * 20}" for i in range(220)]  # ~8,600 characters of code
    ai.queue(Text("Here is the script:\n\n```python\n" + "\n".join(code) + "\n```\n\nThat's all."))
    tg.message(chat, "write a long script")
    await tg.wait_sent(chat, 3)
    parts = await tg.settled(chat)
    assert len(parts) == 3
    assert all(len(p.text.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    assert parts[0].text.startswith("Here is the script:\n\nprint('line 000')")
    assert parts[-1].text.endswith("print('line 219')  # " + "x" * 20 + "\n\nThat's all.")
    shown_code = []
    for p in parts:
        (pre,) = [e for e in p.entities if e["type"] == "pre"]
        assert pre["language"] == "python"  # every part renders its code as code on its own
        units = p.text.encode("utf-16-le")[pre["offset"] * 2:(pre["offset"] + pre["length"]) * 2]
        shown_code += units.decode("utf-16-le").split("\n")
    assert shown_code == code  # every line once, in order, none cut


async def test_one_unit_over_telegrams_limit_arrives_as_a_second_message(bot):
    """4,096 UTF-16 units fit one message; one more makes a second. An emoji counts two units."""
    tg, ai, chat = bot.tg, bot.ai, 5017
    ai.queue(Text("a" * 4097), Text("😀" * 2049))
    tg.message(chat, "4097 letters")
    await tg.wait_sent(chat, 2)
    tg.message(chat, "2049 emoji")
    await tg.wait_sent(chat, 4)
    assert tg.texts_in(chat) == ["a" * 4096, "a", "😀" * 2048, "😀"]


async def test_a_blocked_user_is_logged_once_and_not_retried(bot):
    tg, chat = bot.tg, 5013
    tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user", chat_id=chat, times=99)
    sends = lambda: [c for c in tg.calls if c.method == "sendMessage" and c.params["chat_id"] == chat]  # noqa: E731
    tg.message(chat, "one")
    await tg.wait_for(lambda: len(sends()) == 1)
    tg.message(chat, "two")
    tg.message(chat, "three")  # the marker: tried after whatever the two before it caused
    await tg.wait_for(lambda: any(c.params["text"] == "echo: three" for c in sends()))
    assert bot.service.log.count("the chat refuses messages (sendMessage: Forbidden: bot was blocked by the user)") == 1
    assert [c.params["text"] for c in sends()] == ["echo: one", "echo: two", "echo: three"]  # one try each, no retry


async def test_a_voice_note_is_heard_and_answered_with_a_voice_note(bot):
    tg, ai, chat = bot.tg, bot.ai, 5004
    note = make_audio("ogg_opus", 1.5)
    ai.transcripts.append("what is the capital of France")
    ai.queue(Text("Paris is the capital of France."))
    stt_before = len(ai.requests_to("/audio/transcriptions"))
    fetching = tg.hold("getFile")  # the note is not fetched, let alone heard, until this is set
    tg.voice(chat, note, duration=2)
    # "typing" shows as soon as the turn starts, not after the note was fetched and heard.
    await tg.wait_for(lambda: [c for c in tg.calls_to("sendChatAction") if c.params == {"chat_id": chat, "action": "typing"}])
    assert len(ai.requests_to("/audio/transcriptions")) == stt_before
    fetching.set()
    text, voice = await tg.wait_sent(chat, 2)
    stt = ai.requests_to("/audio/transcriptions")[stt_before]
    assert base64.b64decode(stt.json["input_audio"]["data"]) == note and stt.json["input_audio"]["format"] == "ogg"
    assert bot.model_calls()[0].json["messages"][-1]["content"] == "[voice note] what is the capital of France"
    assert (text.method, text.text) == ("sendMessage", "Paris is the capital of France.")
    assert voice.method == "sendVoice"
    container, codec, seconds, rate, channels = decode_info(voice.files["voice"])
    assert (container, codec, rate, channels) == ("ogg", "opus", 48000, 1)
    spoken = 0.06 * len("Paris is the capital of France.")  # what the fake speech model returns
    assert abs(seconds - spoken) < 0.05 and voice.params["duration"] == round(spoken)
    (uploading,) = [c for c in tg.calls_to("sendChatAction") if c.params == {"chat_id": chat, "action": "upload_voice"}]
    assert uploading.at < [c for c in tg.calls_to("sendVoice") if c.params["chat_id"] == chat][0].at
    # While the answer is spoken the user sees "recording voice": after "typing", before the upload (as the
    # fake Telegram saw them, on one clock: no comparison across two fakes).
    recording = [c for c in tg.calls_to("sendChatAction") if c.params == {"chat_id": chat, "action": "record_voice"}]
    typing = [c for c in tg.calls_to("sendChatAction") if c.params == {"chat_id": chat, "action": "typing"}]
    assert recording and typing[0].at < recording[0].at < uploading.at


async def test_an_over_long_voice_note_is_refused_before_it_is_downloaded(bot):
    tg, chat = bot.tg, 5010
    downloads = len(tg.calls_to("getFile"))
    tg.voice(chat, make_audio("ogg_opus", 0.5), duration=95)  # Telegram tells the length up front
    (sent,) = await tg.wait_sent(chat)
    assert sent.text == "That audio is too long (95 s; the limit is 60 s). Could you send a shorter one?"
    assert len(tg.calls_to("getFile")) == downloads and bot.model_calls() == []


async def test_a_photo_and_an_album_reach_the_model_as_images(bot):
    tg, ai, chat = bot.tg, bot.ai, 5005
    cat, dog, bird, fish = make_png(40, 30), make_png(50, 30), make_png(60, 30), make_png(70, 30)
    ai.queue(Text("A gradient."), Text("Three gradients."))
    tg.photo(chat, cat, caption="what is this?")
    await tg.wait_sent(chat, 1)
    tg.photo(chat, dog, media_group_id="album-1")
    await asyncio.sleep(0.1)  # the parts of an album may come in different polls
    tg.photo(chat, bird, media_group_id="album-1")
    tg.photo(chat, fish, media_group_id="album-1", caption="and these?")
    await tg.wait_sent(chat, 2)
    earlier = await tg.settled(chat)
    first, second, _ = (r.json["messages"][-1]["content"] for r in bot.model_calls())
    assert first == [{"type": "text", "text": "what is this?"},
                     {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(cat).decode()}}]  # as sniffed
    assert second[0] == {"type": "text", "text": "and these?"}
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in second[1:]] == [dog, bird, fish]
    assert [s.text for s in earlier] == ["A gradient.", "Three gradients."]  # the album is one message, one answer


async def test_an_album_with_a_video_gets_the_sentence_and_its_photo_reaches_the_model(bot):
    tg, ai, chat = bot.tg, bot.ai, 5015
    cat = make_png(40, 30)
    clip = tg.upload(b"\x00\x00\x00\x18ftypmp42", "videos/clip.mp4")
    video = {"file_id": clip, "file_unique_id": "U" + clip, "width": 64, "height": 36, "duration": 3,
             "file_name": "clip.mp4", "mime_type": "video/mp4"}
    ai.queue(Text("A gradient."))
    tg.photo(chat, cat, media_group_id="album-2", caption="what are these?")
    tg.message(chat, None, video=video, media_group_id="album-2")
    await tg.wait_sent(chat, 2)
    assert tg.texts_in(chat) == [
        "I can't read clip.mp4: I understand text, photos, voice notes, audio files, text files and PDFs. "
        "I'll answer the rest of your message.",
        "A gradient.",
    ]
    (call,) = bot.model_calls()
    text, image = call.json["messages"][-1]["content"]
    assert text == {"type": "text", "text": "what are these?"}
    assert base64.b64decode(image["image_url"]["url"].split(",", 1)[1]) == cat
    assert [c for c in tg.calls_to("getFile") if c.params["file_id"] == clip] == []


async def test_images_and_music_arrive_as_photo_and_audio(bot):
    tg, ai, chat = bot.tg, bot.ai, 5006
    ai.queue(ToolCalls([("image_generate", {"prompt": "a lighthouse"})]), Images(width=96, height=54),
             Text("Here is your lighthouse."),
             ToolCalls([("music_generate", {"prompt": "lo-fi rain", "lyrics": "rain on the window"})]),
             Music(seconds=2.0, lyrics="rain on the window"), Text("Enjoy."))
    tg.message(chat, "draw a lighthouse")
    await tg.wait_sent(chat, 2)
    tg.message(chat, "compose a track")
    text, photo, text2, audio = await tg.wait_sent(chat, 4)
    assert (text.text, photo.method, text2.text, audio.method) == ("Here is your lighthouse.", "sendPhoto", "Enjoy.", "sendAudio")
    assert photo.files["photo"].startswith(b"\x89PNG") and int.from_bytes(photo.files["photo"][16:20], "big") == 96
    container, codec, seconds, _, _ = decode_info(audio.files["audio"])
    assert (container, codec[:3]) == ("mp3", "mp3") and abs(seconds - 2.0) < 0.1
    assert (audio.params["duration"], audio.params["title"], audio.params["performer"], audio.caption) == \
        (2, "lo-fi rain", "Chorus", "rain on the window")
    assert "upload_photo" in bot.actions(chat) and "upload_document" in bot.actions(chat)


def document(tg: FakeTelegram, data: bytes, name: str, mime: str) -> dict:
    file_id = tg.upload(data, f"documents/{name}")
    return {"file_id": file_id, "file_unique_id": "U" + file_id, "file_name": name, "mime_type": mime,
            "file_size": len(data)}


async def test_text_files_and_pdfs_are_read_into_the_turn(bot):
    tg, ai, chat = bot.tg, bot.ai, 5011
    report = document(tg, make_pdf("Quarterly report\nRevenue grew 12%", "Costs fell"), "report.pdf", "application/pdf")
    notes = document(tg, "name,city\nAda,London\n".encode(), "people.csv", "text/csv")
    ai.queue(Text("Revenue grew."), Text("Ada lives in London."))
    tg.message(chat, None, document=report, caption="summarise it")
    await tg.wait_sent(chat)
    tg.message(chat, None, document=notes)
    await tg.wait_sent(chat, 2)
    assert tg.texts_in(chat) == ["Revenue grew.", "Ada lives in London."]
    pdf_turn, csv_turn = (call.json["messages"][-1]["content"] for call in bot.model_calls())
    assert pdf_turn == ("summarise it\n\n[File report.pdf]\nQuarterly report\nRevenue grew 12%\n\nCosts fell\n"
                        "[End of report.pdf]")
    assert csv_turn == "[File people.csv]\nname,city\nAda,London\n\n[End of people.csv]"


async def test_a_document_that_cannot_be_read_gets_a_sentence_and_the_rest_is_answered(bot):
    tg, chat = bot.tg, 5031
    broken = document(tg, b"%PDF-1.4 ...", "minutes.pdf", "application/pdf")
    archive = document(tg, b"PK\x03\x04" + bytes(100), "photos.zip", "application/zip")
    huge = {**document(tg, b"big", "huge.txt", "text/plain"), "file_size": 12_000_000}  # over maxBytes (10 MB)
    tg.message(chat, None, document=broken)
    await tg.wait_sent(chat)
    tg.message(chat, None, document=huge)
    await tg.wait_sent(chat, 2)
    tg.message(chat, None, document=archive, caption="what is in it?")
    await tg.wait_sent(chat, 3)
    assert tg.texts_in(chat) == [
        "I couldn't read minutes.pdf: the file seems damaged or is not what its name says.",
        "huge.txt is too large for me to read (12.0 MB; the limit is 10.0 MB).",
        "⚠️ I can't read photos.zip: I read text files (.txt, .md, .csv, .json, source code) and PDFs, photos, voice "
        "notes and audio.\n\necho: what is in it?",
    ]
    fetched = {c.params["file_id"] for c in tg.calls_to("getFile")}
    assert archive["file_id"] not in fetched and huge["file_id"] not in fetched  # neither was downloaded


async def test_in_a_group_the_bot_answers_only_when_addressed(bot):
    tg, ai, group = bot.tg, bot.ai, -1001234
    tg.chat(group, "supergroup", title="Friends")
    ai.queue(Text("Hello, Ada."), Text("Yes?"))
    ada, bob = user(42, "Ada"), user(43, "Bob", None)
    tg.message(group, "lunch at noon?", sender=bob, chat_type="supergroup")
    asked = tg.message(group, "@chorus_test_bot say hi", sender=ada, chat_type="supergroup",
                       entities=[{"type": "mention", "offset": 0, "length": 16}])
    (hello,) = await tg.wait_sent(group)
    tg.message(group, "and you?", sender=bob, chat_type="supergroup",
               reply_to_message={"message_id": hello.message_id, "date": 0, "chat": tg.chats[group].as_api(),
                                 "from": BOT, "text": "Hello, Ada."})
    await tg.wait_sent(group, 2)
    tg.message(group, "/status@someone_else_bot", sender=bob, chat_type="supergroup",
               entities=[{"type": "bot_command", "offset": 0, "length": 24}])
    tg.message(group, "/model@chorus_test_bot", sender=bob, chat_type="supergroup",
               entities=[{"type": "bot_command", "offset": 0, "length": 22}])
    await tg.wait_sent(group, 3)
    earlier = await tg.settled(group, "@chorus_test_bot marker", sender=ada, chat_type="supergroup",
                               entities=[{"type": "mention", "offset": 0, "length": 16}])
    said = [s.text for s in earlier]
    assert said[:2] == ["Hello, Ada.", "Yes?"] and len(said) == 3  # not the other bot's /status
    assert said[2].startswith("Model: openrouter/auto\n")
    assert hello.reply_to == asked["message_id"]  # in a group the answer quotes the question
    first = bot.model_calls()[0].json["messages"][-1]["content"]
    assert first == ("[Chat messages since your last reply - for context]\n[Bob]: lunch at noon?\n\n"
                     "[Current message - respond to this]\n[Ada]: @chorus_test_bot say hi")
    assert len(bot.model_calls()) == 3  # "lunch at noon?" alone never reached the model (the third: the marker)


async def test_in_a_group_only_what_names_this_bot_addresses_it(bot):
    """A reply to someone else and a text mention of someone else are not for the bot; @bot after emoji (entity
    offsets count UTF-16 units) and a text mention of the bot are."""
    tg, ai, group = bot.tg, bot.ai, -1001235
    tg.chat(group, "supergroup", title="Neighbours")
    ai.queue(Text("Hi, Ada."), Text("Still here."))
    ada, bob = {**user(44, "Ada", "ada"), "last_name": "Lovelace"}, user(45, "Bob", None)
    bobs = tg.message(group, "I am Bob", sender=bob, chat_type="supergroup")
    tg.message(group, "right, Bob", sender=ada, chat_type="supergroup", reply_to_message=bobs)
    tg.message(group, "Bob, look", sender=ada, chat_type="supergroup",
               entities=[{"type": "text_mention", "offset": 0, "length": 3, "user": bob}])
    tg.message(group, "😀😀 @chorus_test_bot hi", sender=ada, chat_type="supergroup",
               entities=[{"type": "mention", "offset": 5, "length": 16}])
    await tg.wait_sent(group)
    tg.message(group, "Chorus, still there?", sender=ada, chat_type="supergroup",
               entities=[{"type": "text_mention", "offset": 0, "length": 6, "user": BOT}])
    await tg.wait_sent(group, 2)
    assert tg.texts_in(group) == ["Hi, Ada.", "Still here."]
    first, second = (call.json["messages"][-1]["content"] for call in bot.model_calls())
    assert first == ("[Chat messages since your last reply - for context]\n[Bob]: I am Bob\n"
                     "[Ada Lovelace]: right, Bob\n[Ada Lovelace]: Bob, look\n\n"
                     "[Current message - respond to this]\n[Ada Lovelace]: 😀😀 @chorus_test_bot hi")
    assert second == "[Ada Lovelace]: Chorus, still there?"

async def test_forum_topics_are_separate_sessions_and_replies_stay_in_their_topic(bot):
    tg, chat = bot.tg, FORUM  # this group answers without a mention: groups["-1005555"].requireMention = false
    tg.chat(chat, "supergroup", title="Forum", is_forum=True)
    tg.message(chat, "in topic seven", chat_type="supergroup", message_thread_id=7, is_topic_message=True)
    await tg.wait_sent(chat, 1)
    tg.message(chat, "in topic nine", chat_type="supergroup", message_thread_id=9, is_topic_message=True)
    seven, nine = await tg.wait_sent(chat, 2)
    assert (seven.thread_id, seven.text) == (7, "echo: in topic seven")
    assert (nine.thread_id, nine.text) == (9, "echo: in topic nine")
    second = bot.model_calls()[1].json["messages"]
    assert [m["content"] for m in second if m["role"] != "system"] == ["[Ada]: in topic nine"]  # no topic-7 history
    assert {c.params.get("message_thread_id") for c in tg.calls_to("sendChatAction") if c.params["chat_id"] == chat} == {7, 9}


async def test_a_finished_video_is_delivered_into_the_topic_that_asked(bot):
    tg, ai, forum = bot.tg, bot.ai, FILMS
    tg.chat(forum, "supergroup", title="Films", is_forum=True)
    ai.queue(ToolCalls([("video_generate", {"prompt": "waves at dusk", "durationSeconds": 4})]), Text("Rolling."))
    tg.message(forum, "a video of waves", chat_type="supergroup", message_thread_id=3, is_topic_message=True)
    rolling, video = await tg.wait_sent(forum, 2)
    assert (rolling.text, rolling.thread_id) == ("Rolling.", 3)
    assert (video.method, video.thread_id, video.caption) == ("sendVideo", 3, "waves at dusk")
    with av.open(io.BytesIO(video.files["video"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"


async def test_a_429_in_the_middle_of_a_reply_delays_it_and_loses_nothing(bot):
    tg, ai, chat = bot.tg, bot.ai, 5012
    paragraphs = [f"Paragraph {i}: " + "word " * 300 for i in range(8)]  # 2 paragraphs per message: 4 messages
    ai.queue(Text("\n\n".join(p.strip() for p in paragraphs)))
    tg.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, after=1, chat_id=chat)
    tg.message(chat, "write a lot")
    await tg.wait_sent(chat, 4)
    earlier = await tg.settled(chat)
    assert "\n\n".join(s.text for s in earlier) == "\n\n".join(p.strip() for p in paragraphs)  # all, once, in order
    sends = [c for c in tg.calls if c.method == "sendMessage" and c.params["chat_id"] == chat]
    assert [c.status for c in sends] == [200, 429, 200, 200, 200, 200]  # the last: the marker's answer
    assert sends[2].at - sends[1].at >= 1.0  # resent only after retry_after
    assert "Telegram flood control on sendMessage: waiting 1 s, then sending again" in bot.service.log


async def test_a_reply_in_a_forums_general_topic_is_answered_in_general(bot):
    """In a forum, a reply in General carries ``message_thread_id`` (the message replied to) without being a
    topic message: it belongs to General's session, and the answer goes to General, not to a thread."""
    tg, chat = bot.tg, FORUM
    tg.chat(chat, "supergroup", title="Forum", is_forum=True)
    first = tg.message(chat, "first in general", chat_type="supergroup")
    await tg.wait_sent(chat, len(tg.messages_in(chat)) + 1)
    before = len(tg.messages_in(chat))
    tg.message(chat, "a reply in general", chat_type="supergroup", message_thread_id=first["message_id"],
               reply_to_message=first)
    sent = (await tg.wait_sent(chat, before + 1))[-1]
    assert (sent.thread_id, sent.text) == (None, "echo: a reply in general")


async def test_start_in_a_group_lists_the_commands_and_does_not_greet(bot):
    """The greeting is for a private chat that just opened the bot; in a group ``/start@bot`` is ``/help``."""
    tg, group = bot.tg, -1002468
    tg.chat(group, "supergroup", title="Starters")
    tg.message(group, "/start@chorus_test_bot", sender=user(42, "Ada"), chat_type="supergroup",
               entities=[{"type": "bot_command", "offset": 0, "length": 22}])
    (sent,) = await tg.wait_sent(group)
    assert sent.text == HELP
    assert bot.model_calls() == []


async def test_a_video_in_a_group_gets_its_sentence_only_when_the_bot_is_addressed(bot):
    """In a group that wants a mention, a file not meant for the bot is not the bot's business to refuse; one
    that is gets the sentence quoting it, as every answer in a group does."""
    tg, group = bot.tg, -1002469
    tg.chat(group, "supergroup", title="Reports")
    clip = tg.upload(b"\x00\x00\x00\x18ftypmp42", "videos/minutes.mp4")
    video = {"file_id": clip, "file_unique_id": "U" + clip, "width": 64, "height": 36, "duration": 3,
             "file_name": "minutes.mp4", "mime_type": "video/mp4"}
    bob = user(43, "Bob", None)
    tg.message(group, None, video=video, sender=bob, chat_type="supergroup")
    asked = tg.message(group, None, video=video, caption="@chorus_test_bot summarise", sender=bob,
                       chat_type="supergroup", caption_entities=[{"type": "mention", "offset": 0, "length": 16}])
    note, answer = await tg.wait_sent(group, 2)
    earlier = await tg.settled(group, "@chorus_test_bot marker", sender=bob, chat_type="supergroup",
                               entities=[{"type": "mention", "offset": 0, "length": 16}])
    assert [s.text for s in earlier] == [
        "I can't read minutes.mp4: I understand text, photos, voice notes, audio files, text files and PDFs. "
        "I'll answer the rest of your message.",
        "echo: @chorus_test_bot summarise",
    ]
    assert note.reply_to == answer.reply_to == asked["message_id"]


async def test_a_video_alone_is_taken_up_and_gets_its_sentence(bot):
    """A video without a caption is still a message for the bot: it is told why it goes unanswered, not ignored."""
    tg, chat = bot.tg, 5016
    clip = tg.upload(b"\x00\x00\x00\x18ftypmp42", "videos/holiday.mp4")
    video = {"file_id": clip, "file_unique_id": "U" + clip, "width": 64, "height": 36, "duration": 3,
             "file_name": "holiday.mp4", "mime_type": "video/mp4"}
    tg.message(chat, None, video=video)
    await tg.wait_sent(chat)
    earlier = await tg.settled(chat)
    assert [s.text for s in earlier] == ["I can't read holiday.mp4: I understand text, photos, voice notes, audio files, text files and PDFs."]
    assert [c.json["messages"][-1]["content"] for c in bot.model_calls()] == ["marker"]  # the video never did
