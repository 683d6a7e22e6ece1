"""Telegram end to end: the real ``chorus run`` against the fake Bot API and the fake OpenRouter.

What a Telegram user would see is asserted exactly: texts, entities (UTF-16 offsets), parts of long
answers, voice notes decoded (codec, duration), where replies go (topics, quotes).
"""

from __future__ import annotations

import asyncio
import base64
import io

import aiohttp
import av

from tests.fakes.media import decode_info, make_audio, make_png
from tests.fakes.openrouter import Hang, Images, Music, Text, ToolCalls
from tests.telegram_service import free_port, running, start, telegram_config
from tests.conftest import chorus, onboarded

USER = 5001


async def test_private_text_is_answered_with_telegram_formatting(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    ai.queue(Text("**Hi** 😀 _there_, see `x = 1` and [docs](https://example.com/a)\n\n```python\nprint(1)\n```"))
    async with running(home, tg, ai):
        tg.message(USER, "hello")
        (sent,) = await tg.wait_sent(USER)
    assert sent.text == "Hi 😀 there, see x = 1 and docs\n\nprint(1)"
    assert sent.entities == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "italic", "offset": 6, "length": 5},  # after the emoji: two UTF-16 units
        {"type": "code", "offset": 17, "length": 5},
        {"type": "text_link", "offset": 27, "length": 4, "url": "https://example.com/a"},
        {"type": "pre", "offset": 33, "length": 8, "language": "python"},
    ]
    assert ai.chat_requests()[0].json["messages"][-1]["content"] == "hello"
    assert tg.calls_to("sendChatAction")[0].params == {"chat_id": USER, "action": "typing"}
    (commands,) = tg.calls_to("setMyCommands")
    assert [c["command"] for c in commands.params["commands"]] == ["help", "new", "model", "think", "tts", "status", "stop"]


async def test_answers_stream_in_throttled_drafts_then_arrive_as_one_message(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    answer = "The quick brown fox jumps over the lazy dog, twice: once for **you** and once for me."
    ai.queue(Text(answer, pace=0.03))  # 4 characters every 30 ms: about 0.7 s in all
    async with running(home, tg, ai, streamThrottleMs=200):
        tg.message(USER, "tell me")
        (final,) = await tg.wait_sent(USER)
    drafts = tg.calls_to("sendMessageDraft")
    assert len(drafts) >= 2
    assert len({d.params["draft_id"] for d in drafts}) == 1 and drafts[0].params["draft_id"] != 0
    shown = [d.params["text"] for d in drafts]
    assert all(len(a) < len(b) for a, b in zip(shown, shown[1:]))  # each draft shows more of the answer
    assert all(final.text.startswith(s.replace("**", "").rstrip("*")) for s in shown)
    gaps = [b.at - a.at for a, b in zip(drafts, drafts[1:])]
    assert min(gaps) >= 0.19, gaps  # throttled: never more than one draft per 200 ms
    (send,) = tg.calls_to("sendMessage")
    assert send.at > drafts[-1].at
    assert final.text == "The quick brown fox jumps over the lazy dog, twice: once for you and once for me."
    assert final.entities == [{"type": "bold", "offset": 61, "length": 3}]


async def test_a_long_answer_arrives_in_parts_with_the_code_block_closed_and_reopened(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    code = [f"print('line {i:03d}')  # {'x' * 20}" for i in range(220)]  # ~8,600 characters of code
    ai.queue(Text("Here is the script:\n\n```python\n" + "\n".join(code) + "\n```\n\nThat's all."))
    async with running(home, tg, ai, streaming="off"):
        tg.message(USER, "write a long script")
        await tg.wait_sent(USER, 3)
        await asyncio.sleep(0.5)
    parts = tg.messages_in(USER)
    assert len(parts) == 3
    assert all(len(p.text.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    assert parts[0].text.startswith("Here is the script:\n\nprint('line 000')")
    assert parts[-1].text.endswith("print('line 219')  # " + "x" * 20 + "\n\nThat's all.")
    shown_code = []
    for p in parts:
        (pre,) = [e for e in p.entities if e["type"] == "pre"]
        assert pre["language"] == "python"  # every part renders its code as code on its own
        shown_code += p.text.encode("utf-16-le")[pre["offset"] * 2:(pre["offset"] + pre["length"]) * 2].decode("utf-16-le").split("\n")
    assert shown_code == code  # every line once, in order, none cut


async def test_a_blocked_user_is_logged_once_and_not_retried(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user", chat_id=USER, times=99)
    async with running(home, tg, ai, streaming="off") as service:
        tg.message(USER, "one")
        await tg.wait_for(lambda: len([c for c in tg.calls if c.method == "sendMessage"]) == 1)
        tg.message(USER, "two")
        await tg.wait_for(lambda: len([c for c in tg.calls if c.method == "sendMessage"]) == 2)
        await asyncio.sleep(0.3)
    log = service.err.decode()
    assert log.count("Telegram refuses messages to chat 5001") == 1
    assert len([c for c in tg.calls if c.method == "sendMessage"]) == 2  # one try per reply, no retry loop


async def test_a_voice_note_is_heard_and_answered_with_a_voice_note(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    note = make_audio("ogg_opus", 1.5)
    ai.transcripts.append("what is the capital of France")
    ai.queue(Text("Paris is the capital of France."))
    async with running(home, tg, ai, {"messages": {"tts": {"auto": "inbound"}}}, streaming="off"):
        tg.voice(USER, note, duration=2)
        await tg.wait_for(lambda: tg.calls_to("sendVoice"), what="a voice note")
    (stt,) = ai.requests_to("/audio/transcriptions")
    assert base64.b64decode(stt.json["input_audio"]["data"]) == note and stt.json["input_audio"]["format"] == "ogg"
    assert ai.chat_requests()[0].json["messages"][-1]["content"] == "[voice note] what is the capital of France"
    text, voice = tg.messages_in(USER)
    assert (text.method, text.text) == ("sendMessage", "Paris is the capital of France.")
    assert voice.method == "sendVoice"
    container, codec, seconds, rate, channels = decode_info(voice.files["voice"])
    assert (container, codec, rate, channels) == ("ogg", "opus", 48000, 1)
    spoken = 0.06 * len("Paris is the capital of France.")  # what the fake speech model returns
    assert abs(seconds - spoken) < 0.05 and voice.params["duration"] == round(spoken)
    assert [c.params["action"] for c in tg.calls_to("sendChatAction")][-1] == "upload_voice"



async def test_a_photo_and_an_album_reach_the_model_as_images(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    cat, dog, bird = make_png(40, 30), make_png(50, 30), make_png(60, 30)
    ai.queue(Text("A gradient."), Text("Three gradients."))
    async with running(home, tg, ai, streaming="off"):
        tg.photo(USER, cat, caption="what is this?")
        await tg.wait_sent(USER, 1)
        for picture in (dog, bird):
            tg.photo(USER, picture, media_group_id="album-1")
        tg.photo(USER, make_png(70, 30), media_group_id="album-1", caption="and these?")
        await tg.wait_sent(USER, 2)
        await asyncio.sleep(0.5)
    first, second = (r.json["messages"][-1]["content"] for r in ai.chat_requests())
    assert first == [{"type": "text", "text": "what is this?"},
                     {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(cat).decode()}}]
    assert second[0] == {"type": "text", "text": "and these?"}
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in second[1:]] == [dog, bird, make_png(70, 30)]
    assert tg.texts_in(USER) == ["A gradient.", "Three gradients."]  # the album is one message, one answer


async def test_images_and_music_arrive_as_photo_and_audio(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    ai.queue(ToolCalls([("image_generate", {"prompt": "a lighthouse"})]), Images(width=96, height=54),
             Text("Here is your lighthouse."),
             ToolCalls([("music_generate", {"prompt": "lo-fi rain", "lyrics": "rain on the window"})]),
             Music(seconds=2.0, lyrics="rain on the window"), Text("Enjoy."))
    async with running(home, tg, ai, streaming="off"):
        tg.message(USER, "draw a lighthouse")
        await tg.wait_sent(USER, 2)
        tg.message(USER, "compose a track")
        await tg.wait_sent(USER, 4)
    text, photo, text2, audio = tg.messages_in(USER)
    assert (text.text, photo.method, text2.text, audio.method) == ("Here is your lighthouse.", "sendPhoto", "Enjoy.", "sendAudio")
    assert photo.files["photo"].startswith(b"\x89PNG") and int.from_bytes(photo.files["photo"][16:20], "big") == 96
    container, codec, seconds, _, _ = decode_info(audio.files["audio"])
    assert (container, codec[:3]) == ("mp3", "mp3") and abs(seconds - 2.0) < 0.1
    assert (audio.params["duration"], audio.params["title"], audio.params["performer"], audio.caption) == \
        (2, "lo-fi rain", "Chorus", "rain on the window")
    actions = [c.params["action"] for c in tg.calls_to("sendChatAction")]
    assert "upload_photo" in actions and "upload_document" in actions


async def test_in_a_group_the_bot_answers_only_when_addressed(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    group = -1001234
    tg.chat(group, "supergroup", title="Friends")
    ai.queue(Text("Hello, Ada."), Text("Yes?"))
    ada, bob = {"id": 42, "is_bot": False, "first_name": "Ada"}, {"id": 43, "is_bot": False, "first_name": "Bob"}
    async with running(home, tg, ai, streaming="off"):
        tg.message(group, "lunch at noon?", sender=bob, chat_type="supergroup")
        asked = tg.message(group, "@chorus_test_bot say hi", sender=ada, chat_type="supergroup",
                           entities=[{"type": "mention", "offset": 0, "length": 16}])
        (hello,) = await tg.wait_sent(group)
        tg.message(group, "and you?", sender=bob, chat_type="supergroup",
                   reply_to_message={"message_id": hello.message_id, "date": 0, "chat": tg.chats[group].as_api(),
                                     "from": {"id": tg_bot_id(), "is_bot": True, "first_name": "Chorus"}, "text": "Hello, Ada."})
        await tg.wait_sent(group, 2)
        await asyncio.sleep(0.3)
    assert tg.texts_in(group) == ["Hello, Ada.", "Yes?"]
    assert hello.reply_to == asked["message_id"]
    first = ai.chat_requests()[0].json["messages"][-1]["content"]
    assert first == ("[Chat messages since your last reply - for context]\n[Bob]: lunch at noon?\n\n"
                     "[Current message - respond to this]\n[Ada]: @chorus_test_bot say hi")
    assert len(ai.chat_requests()) == 2  # "lunch at noon?" alone never reached the model


def tg_bot_id() -> int:
    from tests.fakes.telegram import BOT

    return BOT["id"]


async def test_forum_topics_are_separate_sessions_and_replies_stay_in_their_topic(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    forum = -1005555
    tg.chat(forum, "supergroup", title="Forum", is_forum=True)
    async with running(home, tg, ai, streaming="off", groups={"*": {"requireMention": False}}):
        tg.message(forum, "in topic seven", chat_type="supergroup", message_thread_id=7, is_topic_message=True)
        await tg.wait_sent(forum, 1)
        tg.message(forum, "in topic nine", chat_type="supergroup", message_thread_id=9, is_topic_message=True)
        await tg.wait_sent(forum, 2)
    seven, nine = tg.messages_in(forum)
    assert (seven.thread_id, seven.text) == (7, "echo: in topic seven")
    assert (nine.thread_id, nine.text) == (9, "echo: in topic nine")
    second = ai.chat_requests()[1].json["messages"]
    assert [m["content"] for m in second if m["role"] != "system"] == ["[Ada]: in topic nine"]  # no topic-7 history
    assert {c.params.get("message_thread_id") for c in tg.calls_to("sendChatAction")} == {7, 9}


async def test_webhook_mode_checks_the_secret_and_never_polls(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-webhook"
    async with running(home, tg, ai, ready="setWebhook", streaming="off", webhookUrl=url,
                       webhookSecret="s3cret-Token_1", webhookPort=port):
        forged = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"},
                                              "from": {"id": USER, "is_bot": False, "first_name": "Eve"}, "text": "hi"}}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
                assert resp.status == 401
            async with http.post(url, json=forged) as resp:
                assert resp.status == 401
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["ok"] is True
        tg.message(USER, "through the webhook")
        (sent,) = await tg.wait_sent(USER)
    assert sent.text == "echo: through the webhook"
    assert tg.webhook["secret"] == "s3cret-Token_1" and tg.webhook["url"] == url
    assert tg.webhook_results[-1][1] == 200
    assert not [c for c in tg.calls if c.method in ("getUpdates", "deleteWebhook")]
    assert [m["content"] for r in ai.chat_requests() for m in r.json["messages"] if m["role"] == "user"] == \
        ["through the webhook"]  # the forged update never reached the model


async def test_a_429_in_the_middle_of_a_reply_delays_it_and_loses_nothing(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    paragraphs = [f"Paragraph {i}: " + "word " * 300 for i in range(8)]  # 2 paragraphs per message: 4 messages
    ai.queue(Text("\n\n".join(p.strip() for p in paragraphs)))
    tg.fail("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1, after=1)
    async with running(home, tg, ai, streaming="off") as service:
        tg.message(USER, "write a lot")
        await tg.wait_sent(USER, 4)
        await asyncio.sleep(0.3)
    parts = tg.texts_in(USER)
    assert "\n\n".join(parts) == "\n\n".join(p.strip() for p in paragraphs)  # all of it, once, in order
    sends = [c for c in tg.calls if c.method == "sendMessage"]
    assert [c.status for c in sends] == [200, 429, 200, 200, 200]
    assert sends[2].at - sends[1].at >= 1.0  # resent only after retry_after
    assert "Telegram flood control on sendMessage: waiting 1 s" in service.err.decode()


async def test_an_update_cut_off_by_kill_9_is_answered_once_after_the_restart(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg, streaming="off"))
    ai.queue(Hang(60))
    first = await start(home, tg)
    tg.message(USER, "are you there?")
    await tg.wait_for(lambda: ai.chat_requests(), what="the model call")
    await first.kill()
    ai.queue(Text("Yes, I am."))
    second = await start(home, tg)
    await tg.wait_sent(USER)
    await asyncio.sleep(1.5)  # a second answer, if any, would come within this
    await second.stop()
    assert tg.texts_in(USER) == ["Yes, I am."]
    assert len(ai.chat_requests()) == 2


async def test_doctor_checks_the_token_and_what_blocks_polling(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg))
    healthy = await chorus(home, "doctor")
    assert "ok   telegram: bot @chorus_test_bot (token accepted)" in healthy.out
    assert "ok   telegram updates: long polling works (no webhook, no other poller)" in healthy.out
    tg.webhook = {"url": "https://old.example/hook"}
    stale = await chorus(home, "doctor")
    assert stale.code == 1
    assert ("FAIL  telegram updates: a webhook (https://old.example/hook) takes this bot's updates, so polling "
            "gets none; `chorus run` removes it at start") in stale.out
    tg.webhook = {}
    service = await start(home, tg)
    busy = await chorus(home, "doctor")
    await service.stop()
    assert ("FAIL  telegram updates: Telegram answered 409 (Conflict: terminated by other getUpdates request; make "
            "sure that only one bot instance is running): another process is polling this bot.") in busy.out
    home.write_config(ai, **telegram_config(tg, botToken="123456789:AAWrongTokenWrongTokenWrongToken_xx"))
    refused = await chorus(home, "doctor")
    assert "FAIL  telegram: the bot token was refused: Unauthorized" in refused.out
    assert "AAWrongToken" not in refused.out + refused.err


async def test_an_over_long_voice_note_is_refused_before_it_is_downloaded(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with running(home, tg, ai, {"tools": {"media": {"audio": {"maxDurationSeconds": 60}}}}, streaming="off"):
        tg.voice(USER, make_audio("ogg_opus", 0.5), duration=95)  # Telegram tells the length up front
        (sent,) = await tg.wait_sent(USER)
    assert sent.text == "That audio is too long (95 s; the limit is 60 s). Could you send a shorter one?"
    assert not tg.calls_to("getFile") and not ai.requests_to("/audio/transcriptions")


async def test_a_document_the_model_cannot_read_gets_a_sentence(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    pdf = tg.upload(b"%PDF-1.4 ...", "documents/report.pdf")
    doc = {"file_id": pdf, "file_unique_id": "U" + pdf, "file_name": "report.pdf", "mime_type": "application/pdf"}
    async with running(home, tg, ai, streaming="off"):
        tg.message(USER, None, document=doc)
        await tg.wait_sent(USER)
        tg.message(USER, None, document=doc, caption="summarise it")
        await tg.wait_sent(USER, 3)
    assert tg.texts_in(USER) == [
        "I can't read report.pdf: I understand text, photos, voice notes and audio files.",
        "I can't read report.pdf: I understand text, photos, voice notes and audio files. I'll answer the rest of "
        "your message.",
        "echo: summarise it",
    ]
    assert not tg.calls_to("getFile")


async def test_a_finished_video_is_delivered_into_the_topic_that_asked(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    forum = -1007777
    tg.chat(forum, "supergroup", title="Films", is_forum=True)
    ai.queue(ToolCalls([("video_generate", {"prompt": "waves at dusk", "durationSeconds": 4})]), Text("Rolling."))
    fast = {"agents": {"defaults": {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast",
                                                              "pollIntervalMs": 50}}}}
    async with running(home, tg, ai, fast, streaming="off", groups={"-1007777": {"requireMention": False}}):
        tg.message(forum, "a video of waves", chat_type="supergroup", message_thread_id=3, is_topic_message=True)
        await tg.wait_sent(forum, 2)
    rolling, video = tg.messages_in(forum)
    assert (rolling.text, rolling.thread_id) == ("Rolling.", 3)
    assert (video.method, video.thread_id, video.caption) == ("sendVideo", 3, "waves at dusk")
    with av.open(io.BytesIO(video.files["video"])) as container:
        assert container.streams.video[0].codec_context.name == "h264"
