"""Voice policy in-process against the fake: encodings per channel, delivery modes, fallbacks, tags, speakable text."""

from __future__ import annotations

import base64
import io
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from bot.media import audio

from bot.config import parse_config
from bot.media.jobs import MediaJobs
from bot.store import Store
from bot.media.voice import EAR_NOTE, TAGGED_NOTE, TagFilter, Voice, speakable, split_tags
from channels.base import Attachment, AttachmentKind, Capabilities, ChatRef, Inbound, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ProviderSettings
from providers.openrouter.video import VideoJob, download_video, poll_video, submit_video
from tests.fakes.media import decode_info, make_audio
from tests.fakes.openrouter import Error, FakeOpenRouter, Text, VideoPlan

VOICE_NOTES = Capabilities(voice_format="ogg_opus")
FILES = Capabilities(voice_format="mp3")
MODEL = ModelRef.parse("openrouter/auto")


@pytest.fixture
async def make_voice(fake_openrouter):
    clients = []

    async def build(**config) -> Voice:
        cfg, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url}}}, **config}, env={})
        clients.append(OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url)))
        return Voice(cfg, clients[-1])

    yield build
    for client in clients:
        await client.aclose()


def voice_inbound(data: bytes, mime: str = "audio/ogg", name: str = "note.ogg") -> Inbound:
    note = Attachment.from_bytes(AttachmentKind.VOICE, data, mime=mime, filename=name)
    return Inbound(chat=ChatRef("t", "c"), sender_id="u", sender_name="U", attachments=[note])


async def test_voice_notes_are_ogg_opus_48k_mono_and_files_are_mp3(make_voice):
    voice = await make_voice()
    note = await voice.voice_note("Hello there, this is a test.", VOICE_NOTES)
    assert note.mime == "audio/ogg" and note.filename == "voice.ogg"
    container, codec, duration, rate, channels = decode_info(note.data)
    assert (container, codec, rate, channels) == ("ogg", "opus", 48000, 1)
    assert duration == pytest.approx(note.duration, abs=0.05) and duration > 1.0
    mp3 = await voice.voice_note("Hello there, this is a test.", FILES)
    assert decode_info(mp3.data)[:2] == ("mp3", "mp3float") and mp3.mime == "audio/mpeg"


async def test_pcm_speech_is_transcoded(make_voice, fake_openrouter):
    voice = await make_voice(messages={"tts": {"providers": {"openrouter": {"responseFormat": "pcm"}}}})
    note = await voice.voice_note("Raw samples, please.", VOICE_NOTES)
    assert decode_info(note.data)[1] == "opus" and note.duration > 0.5
    assert fake_openrouter.requests_to("/audio/speech")[0].json["response_format"] == "pcm"


FULL_CAPTION = "a" * 1023 + "."  # Telegram's caption limit exactly


@pytest.mark.parametrize("delivery, text, text_kept, caption", [
    ("normal", "Short answer.", True, None), ("caption", "Short answer.", False, "Short answer."),
    ("suppress", "Short answer.", False, None), ("caption", FULL_CAPTION, False, FULL_CAPTION),
    ("caption", FULL_CAPTION + "!", True, None),  # too long to be a caption: the text stays a message
])
async def test_text_delivery_modes(make_voice, delivery, text, text_kept, caption):
    voice = await make_voice(messages={"tts": {"textDelivery": delivery}})
    reply = await voice.speak(Reply(text=text), mode="always", spoken=False, capabilities=VOICE_NOTES, model=MODEL)
    assert reply.voice is not None and reply.voice.caption == caption
    assert (reply.text == text) is text_kept


async def test_inbound_mode_speaks_only_to_speakers_and_off_never(make_voice, fake_openrouter):
    voice = await make_voice()
    assert (await voice.speak(Reply(text="hi"), mode="inbound", spoken=False, capabilities=FILES, model=MODEL)).voice is None
    assert (await voice.speak(Reply(text="hi"), mode="inbound", spoken=True, capabilities=FILES, model=MODEL)).voice
    assert (await voice.speak(Reply(text="hi [[tts]]"), mode="off", spoken=True, capabilities=FILES, model=MODEL)).voice is None
    assert len(fake_openrouter.requests_to("/audio/speech")) == 1


async def test_long_replies_are_summarised_by_the_summary_model(make_voice, fake_openrouter):
    voice = await make_voice(messages={"tts": {"maxTextLength": 100, "summaryModel": "openrouter/openai/gpt-4o-mini"}})
    fake_openrouter.queue(Text("A short spoken summary."))
    reply = await voice.speak(Reply(text="word " * 100), mode="always", spoken=False, capabilities=FILES, model=MODEL)
    assert reply.voice is not None and reply.text.startswith("word word")
    (summary,) = fake_openrouter.chat_requests()
    assert summary.json["model"] == "openai/gpt-4o-mini"
    assert fake_openrouter.requests_to("/audio/speech")[0].json["input"] == "A short spoken summary."


async def test_a_failing_stt_model_falls_back_to_the_next(make_voice, fake_openrouter):
    voice = await make_voice(tools={"media": {"audio": {"models": [
        {"provider": "openrouter", "model": "first/stt"}, {"provider": "openrouter", "model": "second/stt"}]}}})
    fake_openrouter.transcripts += [Error(400, "first/stt is not a transcription model"), "it worked"]
    heard = await voice.preflight(voice_inbound(make_audio("ogg_opus", 1.0)))
    assert heard.text == "[voice note] it worked" and heard.spoken and heard.error is None
    assert [r.json["model"] for r in fake_openrouter.requests_to("/audio/transcriptions")] == ["first/stt", "second/stt"]


async def test_a_note_of_exactly_max_bytes_is_heard_and_one_byte_more_is_refused_told_or_measured(
        make_voice, fake_openrouter):
    data = make_audio("ogg_opus", 1.0)
    exact = await make_voice(tools={"media": {"audio": {"maxBytes": len(data)}}})
    assert (await exact.preflight(voice_inbound(data))).text == "[voice note] hello from the fake transcriber"
    under = await make_voice(tools={"media": {"audio": {"maxBytes": len(data) - 1}}})
    too_large = f"That audio is too large ({len(data) / 1e6:.1f} MB; the limit is {(len(data) - 1) / 1e6:g} MB)."
    assert (await under.preflight(voice_inbound(data))).error == too_large

    async def download() -> bytes:
        return data

    unsized = Inbound(chat=ChatRef("t", "c"), sender_id="u", sender_name="U",  # the platform did not say its size
                      attachments=[Attachment(AttachmentKind.VOICE, mime="audio/ogg", filename="n.ogg", fetch=download)])
    assert (await under.preflight(unsized)).error == too_large
    assert len(fake_openrouter.requests_to("/audio/transcriptions")) == 1


async def test_with_listening_turned_off_a_voice_note_gets_a_sentence_and_reaches_no_model(make_voice, fake_openrouter):
    voice = await make_voice(tools={"media": {"audio": {"enabled": False}}})
    heard = await voice.preflight(voice_inbound(make_audio("ogg_opus", 1.0)))
    assert heard.error == "I can't listen to voice messages here; please type it instead."
    assert fake_openrouter.requests_to("/audio/transcriptions") == []


async def test_formats_the_stt_endpoint_cannot_take_are_converted(make_voice, fake_openrouter):
    voice = await make_voice()
    heard = await voice.preflight(voice_inbound(make_audio("flac", 1.0), mime="application/octet-stream", name="x.bin"))
    assert heard.spoken
    request = fake_openrouter.requests_to("/audio/transcriptions")[0].json
    assert request["input_audio"]["format"] == "wav"


def test_tags_and_speakable_text():
    assert split_tags("Hi. [[tts]]") == ("Hi. ", None, True)
    assert split_tags("Read. [[tts:text]]Say this.[[/tts:text]]") == ("Read. ", "Say this.", True)
    assert split_tags("plain") == ("plain", None, False)
    text = "# Title\n**Bold** and `code` [link](https://x.y) https://a.b\n| a | b |\n```py\nprint(1)\n```\n- item"
    assert speakable(text) == "Title Bold and code link item"
    tags = TagFilter()
    pieces = ["Hello [", "[tt", "s]] wor", "ld [[tts:te", "xt]]secret[[/tts:text]] end [[not a tag]]"]
    assert "".join(tags.feed(p) for p in pieces) == "Hello  world  end [[not a tag]]"
    # Two spoken parts are said one after the other; a tag inside one does not end it.
    assert split_tags("[[tts:text]]One.[[/tts:text]] Read. [[tts:text]]Two.[[/tts:text]]") == (" Read. ", "One. Two.", True)
    assert TagFilter().feed("[[tts:text]]said [[tts]] still said[[/tts:text]] shown") == " shown"
    # "[[" that is no tag is held back only while it could still become one.
    assert TagFilter().feed("see [[" + "x" * 40) == "see [[" + "x" * 40


@pytest.mark.parametrize(("mode", "spoken", "note"), [
    ("always", False, "ear"), ("inbound", True, "ear"), ("inbound", False, None), ("tagged", False, "tags"),
    ("off", True, None),
])
async def test_the_prompt_says_how_the_reply_will_be_heard(make_voice, mode, spoken, note):
    voice = await make_voice()
    assert voice.prompt_note(mode, spoken) == {"ear": EAR_NOTE, "tags": TAGGED_NOTE, None: None}[note]


async def test_a_voice_notes_caption_follows_its_transcript(make_voice):
    voice = await make_voice()
    inbound = voice_inbound(make_audio("ogg_opus", 1.0))
    inbound.text = "about the photo"
    assert (await voice.preflight(inbound)).text == "[voice note] hello from the fake transcriber\nabout the photo"


@pytest.fixture
async def job_store(tmp_path):
    """The jobs' store, closed however the test ends (its open connection's thread would keep pytest from exiting)."""
    store = await Store.open(tmp_path / "db.sqlite")
    yield store
    await store.close()


@dataclass
class VideoJobs:
    """MediaJobs on a clock the test moves, delivering into ``sent``."""

    jobs: MediaJobs
    llm: OpenRouterClient
    sent: list[Reply]
    clock: list[float]

    async def at(self, now: float) -> None:
        self.clock[0] = now
        await self.jobs.tick()

    async def poll_all(self, steps: int = 5) -> None:
        for _ in range(steps):
            await self.at(self.clock[0] + 100)


@asynccontextmanager
async def video_jobs(fake: FakeOpenRouter, store: Store, poll_interval: float) -> AsyncIterator[VideoJobs]:
    sent: list[Reply] = []

    async def deliver(chat: ChatRef, reply: Reply) -> None:
        sent.append(reply)

    clock = [1000.0]
    async with OpenRouterClient(fake.api_key, ProviderSettings(base_url=fake.base_url)) as llm:
        yield VideoJobs(MediaJobs(store, llm, deliver, poll_interval=poll_interval, clock=lambda: clock[0]), llm,
                        sent, clock)


@pytest.mark.parametrize("outcome", ["cancelled", "expired"])
async def test_video_jobs_report_each_outcome_once_and_give_up_after_the_deadline(fake_openrouter, job_store, outcome):
    async with video_jobs(fake_openrouter, job_store, poll_interval=1) as v:
        chat = ChatRef("t", "c")
        fake_openrouter.video_plan.append(VideoPlan(polls_until_done=1, outcome=outcome, error=f"it was {outcome}"))
        submitted = (await fake_openrouter_submit(v.llm))
        await v.jobs.submit(chat, "m1", submitted, "openrouter/google/veo-3.1-fast", "waves", timeout=10_000)
        await v.poll_all()
        assert [(r.text, r.reply_to) for r in v.sent] == [  # answering the message that asked for it
            (f"⚠️ The video “waves” could not be made: {outcome} (it was {outcome}).", "m1")]
        # A job that never finishes is given up after its deadline, once.
        fake_openrouter.video_plan.append(VideoPlan(polls_until_done=10**6))
        await v.jobs.submit(chat, "m2", await fake_openrouter_submit(v.llm), "openrouter/google/veo-3.1-fast", "slow",
                            timeout=150)
        await v.poll_all()
        assert v.sent[-1].text == "⚠️ The video “slow” took too long and was given up." and len(v.sent) == 2
        assert await v.jobs.pending() == 0


async def test_a_video_past_its_deadline_is_polled_once_more_and_delivered_if_it_finished(fake_openrouter, job_store):
    """Chorus was down (or OpenRouter unreachable) until after the deadline; the video was made meanwhile."""
    async with video_jobs(fake_openrouter, job_store, poll_interval=100) as v:
        job = await fake_openrouter_submit(v.llm)
        await v.jobs.submit(ChatRef("t", "c"), "m1", job, "openrouter/google/veo-3.1-fast", "waves", timeout=50)
        await v.at(1500.0)  # the first poll comes long past the deadline (1050): the video is done by then
    assert [(r.text, [m.filename for m in r.media]) for r in v.sent] == [("", [f"video-{job.id}.mp4"])]
    assert await v.jobs.pending() == 0


async def fake_openrouter_submit(llm: OpenRouterClient) -> VideoJob:
    return await submit_video(llm, ModelRef.parse("openrouter/google/veo-3.1-fast"), "waves")


async def test_polling_and_download_on_another_origin_get_no_key(fake_openrouter, tmp_path):
    async with FakeOpenRouter(api_key="other-origin-key") as elsewhere, \
            OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        job = await fake_openrouter_submit(llm)
        foreign = VideoJob(job.id, f"{elsewhere.base_url}/videos/{job.id}")
        status = await poll_video(llm, foreign)  # a foreign polling URL is not followed: /videos/{id} on our origin
        assert status.status == "completed" and not elsewhere.requests
        status.urls[0] = f"{elsewhere.origin}/files/{job.id}.mp4"
        data = await download_video(llm, foreign, status)
        assert data[4:8] == b"ftyp"
        (download,) = elsewhere.requests
        assert "Authorization" not in download.headers


async def test_downloads_follow_redirects_and_the_key_never_leaves_the_base_origin(fake_openrouter):
    async with FakeOpenRouter(api_key="other-origin-key") as elsewhere, \
            OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        foreign = await llm.download(f"{elsewhere.origin}/redirect?to={elsewhere.origin}/files/a.mp4")
        ours = await llm.download(f"{fake_openrouter.origin}/redirect?to={elsewhere.origin}/files/b.mp4")
        relative = await llm.download(f"{fake_openrouter.origin}/redirect?to=/files/c.mp4")  # Location: a path
    assert foreign[4:8] == ours[4:8] == relative[4:8] == b"ftyp"
    assert [(r.path, "Authorization" in r.headers) for r in elsewhere.requests] == [
        ("/redirect", False), ("/files/a.mp4", False), ("/files/b.mp4", False)]
    assert [(r.path, "Authorization" in r.headers) for r in fake_openrouter.requests] == [
        ("/redirect", True), ("/redirect", True), ("/files/c.mp4", True)]


def silent_wav() -> bytes:
    """A WAV file with its header and not one sample."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
    return out.getvalue()


@pytest.mark.parametrize("data, mime, name, sent_as", [
    (make_audio("flac", 1.0), "audio/ogg", "note.ogg", "wav"),  # the name says Ogg, the bytes are FLAC: converted
    (make_audio("ogg_opus", 1.0), "audio/OGG; codecs=opus", "voice.bin", "ogg"),  # the MIME type's parameters
    (make_audio("mp3", 1.0), None, "memo.MP3", "mp3"),  # no MIME type: the file name's extension
])
async def test_audio_goes_to_speech_to_text_as_it_came_only_when_it_is_what_it_says(
        make_voice, fake_openrouter, data, mime, name, sent_as):
    voice = await make_voice()
    heard = await voice.preflight(voice_inbound(data, mime=mime, name=name))
    assert heard.spoken and heard.error is None
    sent = fake_openrouter.requests_to("/audio/transcriptions")[0].json["input_audio"]
    assert sent["format"] == sent_as
    payload = base64.b64decode(sent["data"])
    if sent_as == "wav":
        assert decode_info(payload)[:2] + decode_info(payload)[3:] == ("wav", "pcm_s16le", 16000, 1)
    else:
        assert payload == data


@pytest.mark.parametrize("data, why", [(b"", "the audio file is empty"),
                                       (silent_wav(), "the audio holds no sound that could be decoded")])
async def test_audio_with_nothing_in_it_is_explained_and_never_transcribed(make_voice, fake_openrouter, data, why):
    voice = await make_voice()
    heard = await voice.preflight(voice_inbound(data, mime="audio/wav", name="note.wav"))
    assert heard.error == f"I couldn't use that voice message: {why}. Could you send it again?"
    assert fake_openrouter.requests_to("/audio/transcriptions") == []


def test_a_voice_note_keeps_its_whole_length_at_32_kbit_s():
    ten = make_audio("wav", 10.0)
    note = audio.to_ogg_opus(ten)
    assert note.duration == pytest.approx(10.0, abs=1e-4)  # the resampler's tail (1 ms here) is flushed, not lost
    assert decode_info(note.data)[2] == pytest.approx(10.0, abs=0.03)
    assert len(note.data) < 80_000  # 32 kbit/s: about 60 KB; libopus's own default (64 kbit/s) makes 106 KB


def test_raw_speech_samples_are_24_khz_mono_and_an_odd_byte_is_dropped():
    wav = audio.pcm_to_wav(b"\x01\x00" * 24000 + b"\x07")
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getframerate(), w.getnframes(), w.getnchannels(), w.getsampwidth()) == (24000, 24000, 1, 2)
    assert len(wav) == 44 + 48000  # the header and whole samples: no half sample left in the data


async def test_a_video_polled_at_its_deadline_is_still_delivered(fake_openrouter, job_store):
    """``timeoutMs`` is how long the video may take: a poll that finds it done at that very moment delivers it."""
    async with video_jobs(fake_openrouter, job_store, poll_interval=100) as v:
        job = await fake_openrouter_submit(v.llm)
        await v.jobs.submit(ChatRef("t", "c"), "m1", job, "openrouter/google/veo-3.1-fast", "waves", timeout=100)
        await v.at(1100.0)  # the first poll is due, and the deadline is now
    assert [(r.text, [m.filename for m in r.media]) for r in v.sent] == [("", [f"video-{job.id}.mp4"])]


async def test_videos_done_together_arrive_in_the_order_asked_and_a_late_one_is_given_up_on_time(fake_openrouter, job_store):
    model = "openrouter/google/veo-3.1-fast"
    async with video_jobs(fake_openrouter, job_store, poll_interval=100) as v:
        for reply_to, prompt in (("m1", "waves"), ("m2", "clouds")):
            await v.jobs.submit(ChatRef("t", "c"), reply_to, await fake_openrouter_submit(v.llm), model, prompt,
                                timeout=1000)
        await v.at(1100.0)  # both are done at their first poll
        assert [(r.reply_to, r.media[0].caption) for r in v.sent] == [("m1", "waves"), ("m2", "clouds")]
        fake_openrouter.video_plan.append(VideoPlan(polls_until_done=10**6))
        await v.jobs.submit(ChatRef("t", "c"), "m3", await fake_openrouter_submit(v.llm), model, "slow", timeout=150)
        await v.at(1200.0)  # polled once, not done; next poll at 1300, past the deadline (1250)
        assert len(v.sent) == 2
        await v.at(1300.0)
        assert (v.sent[-1].text, v.sent[-1].reply_to) == ("⚠️ The video “slow” took too long and was given up.", "m3")
        assert await v.jobs.pending() == 0
