"""Media and voice end to end: the real ``chorus run`` console, the fake OpenRouter serving real media.

What Chorus produced is decoded: the PNG, the MP3, the MP4 and the spoken voice note.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import av

from tests.conftest import Home, chorus, eventually, onboarded
from tests.fakes.media import decode_info, make_audio, make_png
from tests.fakes.openrouter import Error, FakeOpenRouter, Hang, Images, Music, NoImages, Text, ToolCalls, VideoPlan
from tests.service import Service, start_chorus

FAST_VIDEO = {"agents": {"defaults": {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast", "pollIntervalMs": 50}}}}


def saved(out: str, kind: str) -> list[Path]:
    return [Path(p) for p in re.findall(rf"\[{kind} saved: ([^\]]+)\]", out)]


def tool_results(fake: FakeOpenRouter) -> list[str]:
    last = fake.chat_requests()[-1].json["messages"]
    return [m["content"] for m in last if m["role"] == "tool"]


async def setup(home: Home, fake: FakeOpenRouter, **config) -> None:
    await onboarded(home, fake)
    home.write_config(fake, **config)


async def test_draw_a_lighthouse_sends_a_real_png(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(
        ToolCalls([("image_generate", {"prompt": "a lighthouse at dusk", "aspectRatio": "16:9"})]),
        Images(count=1, width=96, height=54),
        Text("Here is your lighthouse."),
    )
    result = await chorus(home, "run", stdin="draw a lighthouse at dusk, 16:9\n")
    assert result.code == 0, result.err
    assert "Here is your lighthouse." in result.out
    (png,) = saved(result.out, "image")
    assert png.parent == home.path / "media" and png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(png.read_bytes()[16:20], "big") == 96  # IHDR width
    image_call = fake_openrouter.chat_requests()[1].json
    assert image_call["modalities"] == ["image", "text"]
    assert image_call["image_config"] == {"aspect_ratio": "16:9"}
    assert image_call["model"] == "google/gemini-3.1-flash-image-preview"
    assert tool_results(fake_openrouter)[0].startswith("1 image(s) made")


async def test_no_image_is_a_tool_error_the_model_explains(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "x"})]), NoImages("That is against policy."),
                          Text("Sorry, I could not draw that."))
    result = await chorus(home, "run", stdin="draw x\n")
    assert "Sorry, I could not draw that." in result.out and not saved(result.out, "image")
    (error,) = tool_results(fake_openrouter)
    assert error.startswith("error: the image could not be made") and "That is against policy." in error


async def test_argument_errors_go_back_to_the_model(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("video_generate", {"prompt": "waves", "durationSeconds": 5})]), Text("Let me fix that."))
    await chorus(home, "run", stdin="video of waves, 5 seconds\n")
    (error,) = tool_results(fake_openrouter)
    assert error == "error: durationSeconds 5 is not possible with google/veo-3.1-fast; allowed: 4, 6, 8"
    assert not fake_openrouter.requests_to("/videos")


async def test_compose_a_track_returns_mp3_with_lyrics_as_caption(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("music_generate", {"prompt": "short lo-fi track", "lyrics": "rain on the window"})]),
                          Music(seconds=2.0, fmt="mp3", lyrics="rain on the window"), Text("Enjoy the track."))
    result = await chorus(home, "run", stdin="compose a short lo-fi track\n")
    (track,) = saved(result.out, "audio")
    assert "— rain on the window" in result.out
    container, codec, duration, _, _ = decode_info(track.read_bytes())
    assert container == "mp3" and codec.startswith("mp3") and abs(duration - 2.0) < 0.1
    music_call = fake_openrouter.chat_requests()[1].json
    assert music_call["stream"] is True and music_call["audio"] == {"format": "mp3"}
    assert music_call["model"] == "google/lyria-3-pro-preview"


async def printed(service: Service, needle: str) -> None:
    """Wait until the running console has printed ``needle``."""
    await eventually(lambda: needle in service.out, f"{needle!r} in the output", timeout=30)


async def test_a_video_survives_a_restart_and_arrives_once(home, fake_openrouter):
    slow = {"agents": {"defaults": {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast", "pollIntervalMs": 60_000}}}}
    await setup(home, fake_openrouter, **slow)  # no poll happens before the crash
    fake_openrouter.video_plan.append(VideoPlan(polls_until_done=2))
    fake_openrouter.queue(ToolCalls([("video_generate", {"prompt": "waves", "durationSeconds": 6, "aspectRatio": "16:9"})]),
                          Text("Your video is on its way."))
    first = await start_chorus(home, "run")
    await first.say("make a 6 second video of waves")
    await printed(first, "Your video is on its way.")
    await first.kill()  # the service dies before the video is ready
    (job,) = fake_openrouter.videos.values()
    assert job.body == {"model": "google/veo-3.1-fast", "prompt": "waves", "duration": 6, "aspect_ratio": "16:9"}
    assert job.polls < 2

    home.write_config(fake_openrouter, **FAST_VIDEO)
    second = await start_chorus(home, "run")
    await printed(second, "[video saved:")
    out = (await second.finish()).out
    (video,) = saved(out, "video")
    with av.open(io.BytesIO(video.read_bytes())) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 10
    assert "— waves" in out
    third = await chorus(home, "run", stdin="")
    assert "[video saved:" not in third.out


async def test_a_failed_video_is_reported_with_the_reason(home, fake_openrouter):
    await setup(home, fake_openrouter, **FAST_VIDEO)
    fake_openrouter.video_plan.append(VideoPlan(polls_until_done=1, outcome="failed", error="content policy"))
    fake_openrouter.queue(ToolCalls([("video_generate", {"prompt": "waves"})]), Text("On its way."))
    proc = await start_chorus(home, "run")
    await proc.say("make a video of waves")
    await printed(proc, "could not be made")
    out = (await proc.finish()).out
    assert "failed (content policy)" in out


async def test_a_voice_note_is_transcribed_before_the_agent_sees_it(home, fake_openrouter, tmp_path):
    await setup(home, fake_openrouter)
    note = tmp_path / "note.ogg"
    note.write_bytes(make_audio("ogg_opus", 1.5))
    fake_openrouter.transcripts.append("what is the capital of France")
    fake_openrouter.queue(Text("Paris."))
    result = await chorus(home, "run", stdin=f"/voice {note}\n")
    assert result.out == "Paris.\n"  # no echo of the transcript unless messages.stt.echo asks for it
    (stt,) = fake_openrouter.requests_to("/audio/transcriptions")
    assert stt.json["input_audio"]["format"] == "ogg" and stt.json["model"] == "openai/whisper-large-v3-turbo"
    user = [m["content"] for m in fake_openrouter.chat_requests()[0].json["messages"] if m["role"] == "user"]
    assert user == ["[voice note] what is the capital of France"]


async def test_voice_note_failures_get_clear_answers(home, fake_openrouter, tmp_path):
    await setup(home, fake_openrouter, tools={"media": {"audio": {"maxDurationSeconds": 2, "maxBytes": 200_000}}})
    long_note, corrupt, big, quiet = tmp_path / "long.ogg", tmp_path / "bad.ogg", tmp_path / "big.wav", tmp_path / "q.mp3"
    long_note.write_bytes(make_audio("ogg_opus", 3.0))
    corrupt.write_bytes(b"OggS" + bytes(range(256)) * 8)
    big.write_bytes(make_audio("wav", 8.0))
    quiet.write_bytes(make_audio("mp3", 1.0))
    fake_openrouter.transcripts += [""]
    stdin = f"/voice {long_note}\n/voice {corrupt}\n/voice {big}\n/voice {quiet}\n/voice {tmp_path / 'missing.ogg'}\n"
    result = await chorus(home, "run", stdin=stdin)
    assert f"No file at {tmp_path / 'missing.ogg'}" in result.out
    assert "That audio is too long (3 s; the limit is 2 s)" in result.out
    assert "I couldn't use that voice message" in result.out
    assert "That audio is too large (0.3 MB; the limit is 0.2 MB)" in result.out
    assert "I couldn't understand the audio" in result.out
    assert fake_openrouter.chat_requests() == []  # nothing reached the model


async def test_replies_are_spoken_when_tts_is_always(home, fake_openrouter):
    await setup(home, fake_openrouter, messages={"tts": {"auto": "always"}})
    fake_openrouter.queue(Text("**Hello** there, see https://example.com for `details`."))
    result = await chorus(home, "run", stdin="hi\n")
    assert "**Hello** there" in result.out
    (voice,) = saved(result.out, "voice")
    container, codec, duration, _, channels = decode_info(voice.read_bytes())
    assert container == "mp3" and codec.startswith("mp3") and duration > 0.4 and channels == 1
    (speech,) = fake_openrouter.requests_to("/audio/speech")
    assert speech.json["input"] == "Hello there, see for details."
    assert speech.json["voice"] == "af_alloy" and speech.json["model"] == "hexgrad/kokoro-82m"
    assert "read aloud" in fake_openrouter.chat_requests()[0].json["messages"][0]["content"]


async def test_a_tts_failure_keeps_the_text_and_tags_never_show(home, fake_openrouter):
    await setup(home, fake_openrouter, messages={"tts": {"auto": "tagged"}})
    fake_openrouter.speech_answers.append(Error(500, "tts down"))
    fake_openrouter.queue(Text("Here it is. [[tts]]"), Text("Written. [[tts:text]]Spoken version.[[/tts:text]]"))
    result = await chorus(home, "run", stdin="one\ntwo\n")
    assert "Here it is." in result.out and "Written." in result.out
    assert "[[" not in result.out and "Spoken version" not in result.out
    (voice,) = saved(result.out, "voice")  # the first failed: text only; the second was spoken
    assert [r.json["input"] for r in fake_openrouter.requests_to("/audio/speech")] == ["Here it is.", "Spoken version."]


async def test_tts_commands(home, fake_openrouter):
    await setup(home, fake_openrouter)
    result = await chorus(home, "run", stdin="/tts status\n/tts audio Good morning!\n/tts inbound\n/tts status\n")
    assert "Spoken replies: off" in result.out and "hexgrad/kokoro-82m" in result.out
    assert len(saved(result.out, "voice")) == 1
    assert "Spoken replies for this chat: inbound." in result.out
    assert result.out.rstrip().endswith("summarised.") and "Spoken replies: inbound" in result.out


async def test_an_image_reaches_the_model_and_serves_as_reference(home, fake_openrouter, tmp_path):
    await setup(home, fake_openrouter)
    photo = tmp_path / "cat.png"
    photo.write_bytes(make_png(40, 30))
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "this cat, as a watercolour"})]), Images(), Text("Done."))
    result = await chorus(home, "run", stdin=f"/image {photo}\n")
    assert "Done." in result.out and len(saved(result.out, "image")) == 1
    first, edit = fake_openrouter.chat_requests()[:2]
    parts = first.json["messages"][-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert edit.json["messages"][0]["content"][1] == parts[1]  # the user's photo is the reference


async def test_a_voice_note_cut_off_by_a_crash_is_heard_after_the_restart(home, fake_openrouter, tmp_path):
    await setup(home, fake_openrouter)
    note = tmp_path / "note.ogg"
    note.write_bytes(make_audio("ogg_opus", 1.0))
    fake_openrouter.transcripts += ["first hearing", "second hearing"]
    fake_openrouter.queue(Hang(60))
    proc = await start_chorus(home, "run")
    await proc.say(f"/voice {note}")
    await eventually(fake_openrouter.chat_requests, "the turn to reach the model", timeout=30)
    await proc.kill()
    fake_openrouter.queue(Text("Heard you."))
    result = await chorus(home, "run", stdin="")
    assert result.out.count("Heard you.") == 1
    last_user = fake_openrouter.chat_requests()[-1].json["messages"][-1]["content"]
    assert last_user == "[voice note] second hearing"
