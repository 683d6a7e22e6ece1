"""Discord end to end: the real ``chorus run`` against the fake Discord (REST + gateway) and the fake OpenRouter.

The bot runs unpatched; the tests play the users through the gateway and read what they would see.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import statistics
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bot.access import APPROVED_TEXT, PAIRING_TEXT, REFUSED_TEXT
from bot.agent import Agent
from bot.auth import Credential
from bot.channel_settings import discord_settings
from bot.config import parse_config
from bot.dispatch import Dispatcher
from bot.runtime import make_client
from bot.store import Inbox, Store
from channels.discord import outbound
from channels.discord.channel import DiscordChannel
from channels.chunking import split_text
from tests.conftest import Home, chorus
from channels.discord.outbound import VOICE_FALLBACK
from tests.fakes.discord import VOICE_FLAG, Call, FakeDiscord
from tests.fakes.media import decode_info, make_audio, make_png
from tests.fakes.openrouter import FakeOpenRouter, Hang, Images, Music, Recorded, Text, ToolCalls, VideoPlan
from tests.service import Service, running, start_chorus


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1; a request that breaks Discord's API fails the test."""
    async with FakeDiscord(heartbeat_ms=500) as fake:
        yield fake
        fake.assert_clean()


def configure(home: Home, openrouter: FakeOpenRouter, discord: FakeDiscord, agents: dict[str, Any] | None = None,
              messages: dict[str, Any] | None = None, **discord_config: Any) -> None:
    """The config a user would write: the OpenRouter key in the file, Discord at the fake, open to everyone
    unless a test says otherwise (access has tests of its own below)."""
    settings = {"dmPolicy": "open", "groupPolicy": "open", **discord_config}
    more = {key: value for key, value in (("agents", agents), ("messages", messages)) if value}
    home.write_config(openrouter, models={"providers": {"openrouter": {"apiKey": openrouter.api_key}}},
                      channels={"discord": discord.config(**settings)}, **more)


@asynccontextmanager
async def chorus_on_discord(home: Home, openrouter: FakeOpenRouter, discord: FakeDiscord,
                            **discord_config: Any) -> AsyncIterator[Service]:
    """Onboarded, configured for the fake Discord, running, and connected (READY sent)."""
    configure(home, openrouter, discord, **discord_config)
    async with running(home) as service:
        try:
            await discord.wait_for(lambda: discord.ready.is_set() and bool(discord.commands), timeout=30)
        except AssertionError:
            raise AssertionError("the bot never connected:\n" + service.output) from None
        try:
            yield service
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- chorus log ---\n{service.output}") from None


@asynccontextmanager
async def discord_in_process(tmp_path: Path, openrouter: FakeOpenRouter, discord: FakeDiscord,
                             **discord_config: Any) -> AsyncIterator[DiscordChannel]:
    """The Discord channel and the core in this process (a SQLite store) against the fakes, running; drained and
    stopped afterwards. For tests that patch the channel's module or read its settings."""
    raw = {"models": {"providers": {"openrouter": {"baseUrl": openrouter.base_url, "maxRetries": 0}}},
           "channels": {"discord": discord.config(**discord_config)}}
    config, _ = parse_config(raw, env={})
    settings = discord_settings(config, lambda name, cfg: None)
    assert settings is not None
    store = await Store.open(tmp_path / "chorus.db")
    llm = make_client(config, Credential(openrouter.api_key, "test"))
    dispatcher = Dispatcher(Agent(config, store, llm), Inbox(store))
    channel = DiscordChannel(settings)
    running = asyncio.create_task(channel.run(partial(dispatcher.accept, channel=channel)))
    try:
        yield channel
    finally:
        await dispatcher.drain()
        await channel.stop()
        await running
        await llm.aclose()
        await store.close()


@dataclass
class SharedBot:
    """One ``chorus run`` with the default Discord config, shared by the tests that need nothing else;
    each test talks in chats of its own and looks only at requests made since it began."""

    home: Home
    openrouter: FakeOpenRouter
    discord: FakeDiscord
    service: Service
    since: int = 0

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.openrouter.requests[self.since:] if r.path == "/api/v1/chat/completions"]

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.openrouter.requests[self.since:] if r.path == "/api/v1" + path]

    def calls(self, method: str, path: str) -> list[Call]:
        return [c for c in self.discord.calls if c.method == method and c.path == path]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_bot(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedBot]:
    tmp = tmp_path_factory.mktemp("discord-shared")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENROUTER_API_KEY", "CHORUS_CONFIG", "CHORUS_HOME")}
    home = Home(tmp / "chorus-home", {**env, "CHORUS_HOME": str(tmp / "chorus-home"), "HOME": str(tmp), "CI": "true",
                                      "PYTHONUNBUFFERED": "1"})
    async with FakeOpenRouter() as openrouter, FakeDiscord(heartbeat_ms=500) as discord:
        async with chorus_on_discord(home, openrouter, discord) as service:
            yield SharedBot(home, openrouter, discord, service)


@pytest_asyncio.fixture(loop_scope="module")
async def bot(shared_bot: SharedBot) -> AsyncIterator[SharedBot]:
    """The shared service for one test; the test fails on any contract violation it caused."""
    shared_bot.since = len(shared_bot.openrouter.requests)
    seen = (len(shared_bot.openrouter.violations), len(shared_bot.discord.violations))
    yield shared_bot
    leftover, shared_bot.openrouter.answers[:] = list(shared_bot.openrouter.answers), []  # not the next test's
    shared_bot.discord.clear_scripts()
    assert shared_bot.openrouter.violations[seen[0]:] == [] and shared_bot.discord.violations[seen[1]:] == []
    assert leftover == [], "scripted answers left unused"


shared = pytest.mark.asyncio(loop_scope="module")


@shared
async def test_dm_text_chat(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    bot.openrouter.queue(Text("Hello Ann! How can I help?"))
    question = await bot.discord.say(dm, ann, "hi there")
    (answer,) = await bot.discord.wait_sent(dm)
    assert answer.content == "Hello Ann! How can I help?"
    assert answer.data["message_reference"]["message_id"] == question["id"]
    assert bot.chat_requests()[0].json["messages"][-1] == {"role": "user", "content": "hi there"}
    assert bot.calls("POST", f"/channels/{dm['id']}/typing")
    assert bot.discord.token not in bot.service.output
    assert bot.discord.compressed_frames > 3  # the gateway spoke zlib-stream, as discord.py asks and Discord does
    # Servers, server messages, DMs and Message Content: the fake delivers text whatever was asked; Discord
    # sends server messages empty to a bot that did not ask for the privileged intent.
    assert bot.discord.identifies[0]["intents"] == 1 | 1 << 9 | 1 << 12 | 1 << 15


def long_answer() -> str:
    """About 9,000 characters: prose, then a code block that no 2,000-character part can hold whole."""
    prose = "\n\n".join(f"Paragraph {i}: " + "the quick brown fox jumps over the lazy dog. " * 8 for i in range(12))
    code = "```python\n" + "\n".join(f"print('line {i:03d} of a long listing')" for i in range(130)) + "\n```"
    return f"{prose}\n\n{code}\n\nThat is all."


@shared
async def test_a_9000_character_answer_arrives_in_exact_parts_with_code_fences_reopened(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    text = long_answer()
    assert 8_500 < len(text) < 9_500
    bot.openrouter.queue(Text(text))
    question = await bot.discord.say(dm, ann, "write a lot")
    await bot.discord.wait_for(lambda: "".join(m.content for m in bot.discord.bot_messages(dm)).endswith("That is all."))
    parts = [m.content for m in bot.discord.bot_messages(dm)]
    assert parts == split_text(text, 2000)
    assert len(parts) == 5 and all(len(p) <= 2000 for p in parts)
    assert [p.count("```") % 2 for p in parts] == [0] * len(parts)  # every part renders on its own
    assert parts[3].startswith("```python\n")  # the block reopened with its language
    first = bot.discord.bot_messages(dm)[0]
    assert first.data["message_reference"]["message_id"] == question["id"]


@shared
async def test_one_character_over_discords_limit_arrives_as_a_second_message(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    bot.openrouter.queue(Text("x" * 2001))
    await bot.discord.say(dm, ann, "2001 letters")
    await bot.discord.wait_sent(dm, 2)
    assert [m.content for m in bot.discord.bot_messages(dm)] == ["x" * 2000, "x"]


@shared
async def test_everyone_in_the_answer_pings_nobody(bot):
    ann = bot.discord.user("ann")
    general = bot.discord.text_channel(bot.discord.guild())
    answer = "@everyone and @here, look! <@&123456789012345678>"
    bot.openrouter.queue(Text(answer))
    await bot.discord.say(general, ann, f"<@{bot.discord.bot['id']}> shout", mentions=[bot.discord.bot])
    (sent,) = await bot.discord.wait_sent(general)
    assert sent.content == answer  # shown as written, but:
    (post,) = bot.calls("POST", f"/channels/{general['id']}/messages")
    assert post.json["allowed_mentions"] == {"parse": [], "replied_user": True}


@shared
async def test_guild_channel_answers_only_when_mentioned_and_sees_what_was_said(bot):
    ann, bob = bot.discord.user("ann"), bot.discord.user("bob")
    general = bot.discord.text_channel(bot.discord.guild())
    bot.openrouter.queue(Text("Bob said the build is green."))
    await bot.discord.say(general, bob, "the build is green")
    await bot.discord.say(general, ann, f"<@{bot.discord.bot['id']}> what did <@{bob['id']}> say?",
                          mentions=[bot.discord.bot, bob])
    await bot.discord.wait_sent(general)
    assert [m.content for m in bot.discord.bot_messages(general)] == ["Bob said the build is green."]
    (request,) = bot.chat_requests()
    assert request.json["messages"][-1]["content"] == (
        "[Chat messages since your last reply - for context]\n[Bob]: the build is green\n\n"
        "[Current message - respond to this]\n[Ann]: what did @Bob say?")


async def test_a_channel_without_mention_rule_and_a_disabled_one(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    guild = fake_discord.guild()
    lounge = fake_discord.text_channel(guild, "lounge")
    quiet = fake_discord.text_channel(guild, "quiet")
    guilds = {guild["id"]: {"requireMention": True, "channels": {"lounge": {"requireMention": False},
                                                                   quiet["id"]: {"enabled": False}}}}
    plans, secrets = fake_discord.thread(lounge, "plans"), fake_discord.thread(quiet, "secrets")
    fake_openrouter.queue(Text("Hi from the lounge."), Text("Hi from the thread."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, guilds=guilds):
        await fake_discord.say(quiet, ann, f"<@{fake_discord.bot['id']}> anyone?", mentions=[fake_discord.bot])
        await fake_discord.say(secrets, ann, f"<@{fake_discord.bot['id']}> here?", mentions=[fake_discord.bot])
        await fake_discord.say(lounge, ann, "hello")
        await fake_discord.wait_sent(lounge)
        await fake_discord.say(plans, ann, "and here")  # a thread follows the rule of its channel
        await fake_discord.wait_sent(plans)
    assert [m.content for m in fake_discord.bot_messages(lounge)] == ["Hi from the lounge."]
    assert [m.content for m in fake_discord.bot_messages(plans)] == ["Hi from the thread."]
    assert fake_discord.bot_messages(quiet) == fake_discord.bot_messages(secrets) == []
    assert len(fake_openrouter.chat_requests()) == 2
    # slash commands registered in the listed server only (the global list is emptied)
    assert {scope for scope, listed in fake_discord.commands.items() if listed} == {guild["id"]}


async def test_threads_and_forum_posts_are_sessions_of_their_own(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    guild = fake_discord.guild()
    general = fake_discord.text_channel(guild)
    thread = fake_discord.thread(general, "plans")
    forum = fake_discord.text_channel(guild, "help", type=15)
    post = fake_discord.thread(forum, "my question")
    fake_openrouter.queue(Text("In the thread."), Text("In the forum post."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, requireMention=False):
        await fake_discord.say(thread, ann, "first")
        await fake_discord.wait_sent(thread)
        await fake_discord.say(post, ann, "second")
        await fake_discord.wait_sent(post)
    assert [m.content for m in fake_discord.bot_messages(thread)] == ["In the thread."]
    assert [m.content for m in fake_discord.bot_messages(post)] == ["In the forum post."]
    assert fake_discord.bot_messages(general) == []
    second = fake_openrouter.chat_requests()[1].json["messages"]
    assert [m["content"] for m in second if m["role"] != "system"] == ["[Ann]: second"]  # nothing from the thread


@shared
async def test_slash_command_and_typed_command(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    assert [c["name"] for c in bot.discord.commands["global"]] == ["new", "model", "think", "tts", "status", "stop", "cron", "tz", "retry", "help"]
    interaction = await bot.discord.slash(dm, ann, "model", {"ref": "openrouter/moonshotai/kimi-k2.6"})
    await bot.discord.wait_sent(dm)
    await bot.discord.say(dm, ann, "/new")
    await bot.discord.wait_sent(dm, 2)
    (callback,) = bot.calls("POST", f"/interactions/{interaction['id']}/{interaction['token']}/callback")
    assert callback.json["type"] == 5  # deferred: "Chorus is thinking…" until the follow-up
    assert len(bot.calls("POST", f"/webhooks/{bot.discord.application_id}/{interaction['token']}")) == 1
    assert [m.content for m in bot.discord.bot_messages(dm)] == [
        "Model for this chat set to openrouter/moonshotai/kimi-k2.6.",
        "Started a new conversation. The previous one is kept.",
    ]


def voice_message(fake: FakeDiscord, seconds: float = 1.5) -> tuple[dict[str, Any], bytes]:
    """A Discord voice message attachment as the app records it: OGG/Opus with duration and waveform."""
    data = make_audio("ogg_opus", seconds)
    return fake.attachment("voice-message.ogg", data, "audio/ogg", duration_secs=seconds,
                           waveform=base64.b64encode(bytes(range(0, 250, 10))).decode()), data


@shared
async def test_voice_message_in_voice_message_out(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    note, data = voice_message(bot.discord)
    bot.openrouter.transcripts.append("what is the capital of France")
    bot.openrouter.queue(Text("Paris is the capital of France."))
    await bot.discord.say(dm, ann, "/tts inbound")  # as a user would turn spoken replies on
    await bot.discord.wait_sent(dm)
    await bot.discord.say(dm, ann, "", attachments=[note], flags=VOICE_FLAG)
    await bot.discord.wait_for(lambda: any(m.data["flags"] & VOICE_FLAG for m in bot.discord.bot_messages(dm)))
    (stt,) = bot.requests_to("/audio/transcriptions")
    assert base64.b64decode(stt.json["input_audio"]["data"]) == data  # the user's own recording, fetched from the CDN
    user = [m["content"] for m in bot.chat_requests()[0].json["messages"] if m["role"] == "user"]
    assert user == ["[voice note] what is the capital of France"]
    _, text, voice = bot.discord.bot_messages(dm)
    assert text.content == "Paris is the capital of France."
    assert voice.content == "" and voice.data["flags"] == VOICE_FLAG
    (upload,) = voice.files
    (meta,) = voice.data["attachments"]
    container, codec, seconds, rate, channels = decode_info(upload.data)
    assert (container, codec, rate, channels) == ("ogg", "opus", 48000, 1)
    assert meta["duration_secs"] == pytest.approx(seconds, abs=0.05)
    wave = base64.b64decode(meta["waveform"])
    assert len(wave) == min(256, round(seconds / 0.1)) and max(wave) == 255


async def test_voice_falls_back_to_an_audio_file_where_voice_messages_are_not_allowed(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    guild = fake_discord.guild()
    general = fake_discord.text_channel(guild)
    fake_discord.no_voice.add(general["id"])
    fake_openrouter.queue(Text("Spoken answer."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, requireMention=False):
        await fake_discord.say(general, ann, "/tts always")
        await fake_discord.wait_sent(general)
        await fake_discord.say(general, ann, "talk to me")
        await fake_discord.wait_sent(general, 3)
    _, text, audio = fake_discord.bot_messages(general)
    assert text.content == "Spoken answer."
    assert audio.content == VOICE_FALLBACK and audio.data["flags"] == 0
    assert decode_info(audio.files[0].data)[1] == "opus"


@shared
async def test_an_image_reaches_the_model(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    png = make_png(32, 18)
    bot.openrouter.queue(Text("A gradient."))
    await bot.discord.say(dm, ann, "what is this?", attachments=[bot.discord.attachment("pic.png", png, "image/png")])
    await bot.discord.wait_sent(dm)
    user = bot.chat_requests()[0].json["messages"][-1]["content"]
    assert user == [{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}]


@shared
async def test_generated_image_and_music_arrive_as_attachments(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    bot.openrouter.queue(
        ToolCalls([("image_generate", {"prompt": "a lighthouse"}), ("music_generate", {"prompt": "lo-fi"})]),
        Images(count=1, width=96, height=54), Music(seconds=2.0, fmt="mp3", lyrics="rain"), Text("Both done."))
    await bot.discord.say(dm, ann, "draw a lighthouse and compose lo-fi")
    await bot.discord.wait_sent(dm, 3)
    text, image, music = bot.discord.bot_messages(dm)
    assert text.content == "Both done."
    assert image.files[0].data.startswith(b"\x89PNG") and int.from_bytes(image.files[0].data[16:20], "big") == 96
    assert decode_info(music.files[0].data)[0] == "mp3" and music.files[0].filename.endswith(".mp3")
    assert music.content == "rain"  # the lyrics as the caption


async def test_media_up_to_the_upload_limit_is_sent_and_over_it_gets_a_clear_message(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fits, too_big = make_png(64, 36), make_png(80, 36)  # the limit is the first one's size to the byte
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "a lighthouse"}), ("image_generate", {"prompt": "another"})]),
                          Images(count=1), Images(count=1, width=80), Text("Here."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, mediaMaxMb=(len(fits) + 0.5) / 1_048_576):
        await fake_discord.say(dm, ann, "draw two lighthouses")
        await fake_discord.wait_sent(dm, 3)
    here, *media = fake_discord.bot_messages(dm)
    assert here.content == "Here."
    (told,) = [m for m in media if not m.files]  # the calls run at once: either may have made either image
    assert [f.data for m in media for f in m.files] == [fits]
    assert told.content == (f"The image I made is {len(too_big) / 1024:.0f} KB, over the {len(fits) / 1024:.0f} KB "
                            "that can be uploaded here, so I can't send it.")


async def test_a_long_answer_streams_by_editing_in_place(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    text = " ".join(f"word{i:04d}" for i in range(300))  # 2,699 characters: two parts
    fake_openrouter.chunk_size, fake_openrouter.chunk_pause = 30, 0.03  # about 2.7 s of writing
    fake_openrouter.queue(Text(text))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, streaming={"throttleMs": 400}):
        await fake_discord.say(dm, ann, "count")
        await fake_discord.wait_for(lambda: "".join(m.content for m in fake_discord.bot_messages(dm)).endswith("word0299"))
    first, second = fake_discord.bot_messages(dm)
    assert [first.content, second.content] == split_text(text, 2000)
    assert len(first.history) >= 3 and text.startswith(first.history[0])  # shown early, then grown
    assert first.data["message_reference"]["message_id"] and second.data.get("message_reference") is None  # quoted once
    for message in (first, second):  # a part is edited only when it changed (the full first part stays as it is)
        assert all(a != b for a, b in zip(message.history, message.history[1:])), message.history
    edits = fake_discord.calls_to("PATCH", "/channels/{channel_id}/messages/{message_id}")
    # Throttled while streaming: a flush (posting or editing one part or both, moments apart) at most every 0.4 s;
    # the closing one comes whenever the answer is whole. Measured where the calls arrive, where one held up on a
    # loaded machine makes the gap after it short: the median gap says it.
    writes = sorted(c.at for c in [*edits, *fake_discord.calls_to("POST", "/channels/{channel_id}/messages")])
    flushes = [t for i, t in enumerate(writes) if i == 0 or t - writes[i - 1] > 0.1][:-1]
    gaps = [b - a for a, b in zip(flushes, flushes[1:])]
    assert gaps and statistics.median(gaps) >= 0.36, gaps
    writing = edits[-1].at - fake_discord.calls_to("POST", "/channels/{channel_id}/messages")[0].at
    assert 3 <= len(edits) <= 2 * (writing / 0.4 + 1)  # at most one flush per 0.4 s, each editing at most both parts
    assert not fake_discord.calls_to("DELETE", "/channels/{channel_id}/messages/{message_id}")


async def test_text_streamed_before_it_became_a_voice_caption_is_taken_back(home, fake_openrouter, fake_discord):
    """Tagged speech with captions: the answer streams as text until the [[tts]] at its end makes it the caption
    of a voice message; the streamed message is deleted, not left above the caption that repeats it."""
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.chunk_size, fake_openrouter.chunk_pause = 5, 0.05
    fake_openrouter.queue(Text("Here is the answer you asked for. [[tts]]"))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, streaming={"throttleMs": 250},
                                 messages={"tts": {"auto": "tagged", "textDelivery": "caption"}}):
        await fake_discord.say(dm, ann, "answer me")
        await fake_discord.wait_for(lambda: any(m.data["flags"] == VOICE_FLAG for m in fake_discord.bot_messages(dm)))
    caption, voice = fake_discord.bot_messages(dm)
    assert caption.content == "Here is the answer you asked for." and voice.data["flags"] == VOICE_FLAG
    (deleted,) = fake_discord.calls_to("DELETE", "/channels/{channel_id}/messages/{message_id}")
    assert not deleted.path.endswith("/" + caption.data["id"])


async def test_a_streamed_answer_references_the_message_it_answers_not_the_latest(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.chunk_size, fake_openrouter.chunk_pause = 5, 0.05
    fake_openrouter.queue(Text("The first answer, written slowly."), Text("The second answer."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, streaming={"throttleMs": 250}):
        first = await fake_discord.say(dm, ann, "first question")
        await fake_discord.wait_sent(dm)  # the first answer is streaming
        second = await fake_discord.say(dm, ann, "second question")
        await fake_discord.wait_sent(dm, 2)
    answers = fake_discord.bot_messages(dm)
    assert [a.data["message_reference"]["message_id"] for a in answers] == [first["id"], second["id"]]


async def test_a_429_is_waited_out_and_the_message_sent_once(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.queue(Text("Sent after the wait."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord):
        fake_discord.rate_limit("POST", "/channels/{channel_id}/messages", retry_after=0.6)
        await fake_discord.say(dm, ann, "hello")
        await fake_discord.wait_sent(dm)
    assert [m.content for m in fake_discord.bot_messages(dm)] == ["Sent after the wait."]
    limited, sent = fake_discord.calls_to("POST", "/channels/{channel_id}/messages")
    assert (limited.status, sent.status) == (429, 200)
    assert sent.at - limited.at >= 0.6
    assert sent.json == limited.json


async def test_a_gateway_drop_mid_turn_resumes_and_doubles_nothing(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.chunk_pause = 0.02
    first_answer = "The first answer, written slowly while the gateway drops. " * 3
    fake_openrouter.queue(Text(first_answer), Text("The second answer."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord):
        await fake_discord.say(dm, ann, "first")
        await fake_discord.wait_for(lambda: fake_openrouter.chat_requests())
        await fake_discord.drop(hold=True)
        await fake_discord.say(dm, ann, "second")  # while the gateway is down: Discord keeps it for the resume
        await asyncio.sleep(0.5)
        fake_discord.release()
        await fake_discord.wait_sent(dm, 2)
        await fake_discord.say(dm, ann, "marker")  # answered in order: a duplicate would come before this answer
        await fake_discord.wait_sent(dm, 3)
    assert [m.content for m in fake_discord.bot_messages(dm)] == [first_answer.strip(), "The second answer.",
                                                                   "echo: marker"]
    assert len(fake_discord.identifies) == 1
    (resume,) = fake_discord.resumes
    assert resume["session_id"] and resume["seq"] >= 2
    assert len(fake_openrouter.chat_requests()) == 3  # the two, and the marker


async def test_a_video_is_delivered_into_the_thread_that_asked_after_a_restart(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    guild = fake_discord.guild()
    general = fake_discord.text_channel(guild)
    thread = fake_discord.thread(general, "videos")
    slow = {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast", "pollIntervalMs": 60_000}}
    fake_openrouter.video_plan.append(VideoPlan(polls_until_done=1))
    fake_openrouter.queue(ToolCalls([("video_generate", {"prompt": "waves"})]), Text("Your video is on its way."))
    configure(home, fake_openrouter, fake_discord, agents={"defaults": slow}, requireMention=False)
    async with running(home) as service:
        await fake_discord.wait_for(lambda: fake_discord.ready.is_set())
        await fake_discord.say(thread, ann, "make a video of waves")
        await fake_discord.wait_sent(thread)
    assert [m.content for m in fake_discord.bot_messages(thread)] == ["Your video is on its way."]
    fake_discord.ready.clear()
    fast = {"videoGenerationModel": {"primary": "openrouter/google/veo-3.1-fast", "pollIntervalMs": 50}}
    configure(home, fake_openrouter, fake_discord, agents={"defaults": fast}, requireMention=False)
    async with running(home) as service:
        try:
            await fake_discord.wait_sent(thread, 2)
        except AssertionError:
            raise AssertionError(service.output) from None
    video = fake_discord.bot_messages(thread)[1]
    (upload,) = video.files
    assert upload.filename.endswith(".mp4") and upload.data[4:8] == b"ftyp"
    assert fake_discord.bot_messages(general) == []


async def test_a_stranger_gets_a_pairing_code_and_the_owner_lets_them_in(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.queue(Text("Welcome in, Ann."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, dmPolicy="pairing"):
        await fake_discord.say(dm, ann, "hi")
        (pairing,) = await fake_discord.wait_sent(dm)
        code = re.search(r"Your pairing code: (\S+)", pairing.content)[1]  # type: ignore[index]
        assert pairing.content == PAIRING_TEXT.format(name="Ann", code=code, channel="discord", minutes="60 minutes")
        approved = await chorus(home, "pairing", "approve", "discord", code)
        assert approved.out == f"Approved Ann (@ann), discord id {ann['id']}: they can chat with the bot now.\n"
        await fake_discord.wait_sent(dm, 3)  # told, and the message that waited is answered
        await fake_discord.say(dm, ann, "hello again")
        await fake_discord.wait_sent(dm, 4)
    assert [m.content for m in fake_discord.bot_messages(dm)][1:] == [APPROVED_TEXT, "Welcome in, Ann.", "echo: hello again"]
    first = fake_openrouter.chat_requests()[0]
    assert [m["content"] for m in first.json["messages"] if m["role"] == "user"] == ["hi"]  # heard once approved


async def test_the_allowlist_refuses_others_with_their_id(home, fake_openrouter, fake_discord):
    ann, bob = fake_discord.user("ann"), fake_discord.user("bob")
    ann_dm, bob_dm = fake_discord.dm(ann), fake_discord.dm(bob)
    fake_openrouter.queue(Text("Hi Ann."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, dmPolicy="allowlist", allowFrom=[f"discord:{ann['id']}"]):
        await fake_discord.say(bob_dm, bob, "let me in")
        await fake_discord.say(ann_dm, ann, "hello")
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(bob_dm) and fake_discord.bot_messages(ann_dm))
    assert [m.content for m in fake_discord.bot_messages(bob_dm)] == [REFUSED_TEXT.format(channel="discord", sender_id=bob["id"])]
    assert [m.content for m in fake_discord.bot_messages(ann_dm)] == ["Hi Ann."]
    assert len(fake_openrouter.chat_requests()) == 1


@pytest.mark.parametrize("flags", [1 << 19, 0])
async def test_doctor_checks_the_token_and_the_message_content_intent(home, fake_openrouter, fake_discord, flags):
    fake_discord.application_flags = flags
    configure(home, fake_openrouter, fake_discord, dmPolicy="pairing", groupPolicy="allowlist")
    doctor = await chorus(home, "doctor")
    lines = [line for line in doctor.out.splitlines() if "discord" in line]
    intent = "ok   discord intents: Message Content intent enabled" if flags else (
        "FAIL  discord intents: the Message Content intent is off, so the bot would see empty messages in servers: "
        "enable it in the Developer Portal (Bot > Privileged Gateway Intents)")
    assert lines == [f"ok   discord token: logged in as chorus (id {fake_discord.bot['id']})", intent]
    assert doctor.code == (0 if flags else 1)
    assert fake_discord.token not in doctor.out + doctor.err


async def test_doctor_says_when_the_token_is_refused(home, fake_openrouter, fake_discord):
    configure(home, fake_openrouter, fake_discord, token="not-the-token")
    doctor = await chorus(home, "doctor")
    assert [line for line in doctor.out.splitlines() if "discord" in line] == [
        "FAIL  discord token: Discord refused the token (channels.discord.token or DISCORD_BOT_TOKEN)"]
    assert "not-the-token" not in doctor.out + doctor.err


async def test_discord_unreachable_at_start_is_retried_until_it_answers(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.queue(Text("Made it."))
    configure(home, fake_openrouter, fake_discord)
    await fake_discord.go_down()
    async with running(home) as service:
        try:
            await fake_discord.wait_for(lambda: "trying again with growing pauses" in service.output)
            await fake_discord.come_back()
            await fake_discord.wait_for(lambda: fake_discord.ready.is_set())
            await fake_discord.say(dm, ann, "hello")
            await fake_discord.wait_sent(dm)
        except AssertionError:
            raise AssertionError(service.output) from None
    assert [m.content for m in fake_discord.bot_messages(dm)] == ["Made it."]
    warnings = [line.partition("WARNING chorus.discord: ")[2] for line in service.output.splitlines() if "unreachable" in line]
    # said once for the outage, not once per try
    assert warnings == ["Discord is unreachable (ClientConnectorError); trying again with growing pauses"]


@shared
async def test_a_spoken_reply_quotes_the_question_once(bot):
    """The text quotes the question; the voice message after it does not quote it again."""
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    bot.openrouter.queue(Text("Spoken answer."))
    await bot.discord.say(dm, ann, "/tts always")
    await bot.discord.wait_sent(dm)
    question = await bot.discord.say(dm, ann, "talk to me")
    await bot.discord.wait_sent(dm, 3)
    _, text, voice = bot.discord.bot_messages(dm)
    assert (text.content, text.data["message_reference"]["message_id"]) == ("Spoken answer.", question["id"])
    assert (voice.data["flags"], voice.data.get("message_reference")) == (VOICE_FLAG, None)


async def test_typing_is_renewed_while_the_answer_is_written_and_ends_with_it(fake_openrouter, fake_discord,
                                                                              tmp_path, monkeypatch):
    """Each typing request shows "typing" for 10 s and is renewed every 8 s while the answer is written; one
    renewal after the answer would show the bot writing again, with nothing coming. The channel runs in this
    process against the fake Discord, its renewal interval shortened to 0.2 s."""
    monkeypatch.setattr(outbound, "TYPING_EVERY", 0.2)
    async with discord_in_process(tmp_path, fake_openrouter, fake_discord, dmPolicy="open"):
        await fake_discord.wait_for(lambda: fake_discord.ready.is_set())
        ann, bob = fake_discord.user("ann"), fake_discord.user("bob")
        dm, other = fake_discord.dm(ann), fake_discord.dm(bob)
        fake_openrouter.queue(Text("Hi."), Text("Done.", delay=1.0), Text("Later.", delay=1.0))
        await fake_discord.say(dm, ann, "hello")  # the first exchange: the client learns the routes
        await fake_discord.wait_sent(dm)
        typed = fake_discord.typing.get(dm["id"], 0)
        await fake_discord.say(dm, ann, "take your time")  # the answer takes a second
        await fake_discord.wait_sent(dm, 2)
        while_writing = fake_discord.typing.get(dm["id"], 0) - typed
        # The marker: an answer in another chat that takes five renewal intervals; any renewal in the first chat
        # would have come before it.
        await fake_discord.say(other, bob, "and you?")
        await fake_discord.wait_sent(other)
        assert while_writing >= 4  # at once, then every 0.2 s while the answer was written
        assert fake_discord.typing.get(dm["id"], 0) - typed == while_writing


@shared
async def test_a_server_message_the_bot_only_listens_to_shows_no_typing(bot):
    """"Typing" promises an answer: none for a server message that does not mention the bot."""
    ann = bot.discord.user("ann")
    general = bot.discord.text_channel(bot.discord.guild())
    dm = bot.discord.dm(ann)
    bot.openrouter.queue(Text("Hi."))
    await bot.discord.say(general, ann, "just chatting")
    await bot.discord.say(dm, ann, "hello")  # events arrive in order: once this is answered, the first was handled
    await bot.discord.wait_sent(dm)
    assert bot.calls("POST", f"/channels/{general['id']}/typing") == []
    assert bot.discord.bot_messages(general) == []


@shared
async def test_an_audio_file_is_transcribed_like_a_voice_message(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    memo = bot.discord.attachment("memo.mp3", make_audio("mp3", 1.0), "audio/mpeg")
    bot.openrouter.transcripts.append("remind me to call Bob")
    bot.openrouter.queue(Text("I will."))
    await bot.discord.say(dm, ann, "", attachments=[memo])
    await bot.discord.wait_sent(dm)
    (stt,) = bot.requests_to("/audio/transcriptions")
    assert stt.json["input_audio"]["format"] == "mp3"
    assert bot.chat_requests()[0].json["messages"][-1]["content"] == "[voice note] remind me to call Bob"


REFUSALS = {
    "token": "Discord refused the bot token; the Discord channel stops. Put the token from the Developer Portal "
             "(Bot > Reset Token) in channels.discord.token (or DISCORD_BOT_TOKEN) and restart",
    "intents": "Discord refused the connection: enable the Message Content intent for this bot in the Developer "
               "Portal (Bot > Privileged Gateway Intents)",
}


@pytest.mark.parametrize("refused", REFUSALS)
async def test_a_refused_token_or_intent_is_said_once_and_not_tried_again(home, fake_openrouter, fake_discord, refused):
    """A wrong token fails the login; an intent the application lacks closes the gateway with 4014."""
    if refused == "intents":
        fake_discord.application_flags = 0  # the Message Content intent is off in the Developer Portal
    configure(home, fake_openrouter, fake_discord, token="not-the-token" if refused == "token" else fake_discord.token)
    async with running(home) as service:
        await fake_discord.wait_for(lambda: "Discord refused" in service.output)
        await asyncio.wait_for(service.proc.wait(), 30)  # it ends by itself: after that nothing can try again
        assert service.proc.returncode == 1  # its only channel gave up: not a clean stop to a supervisor
    # one login for REST, and one by the shard's gateway client once the token is taken: none tried again
    assert len(fake_discord.calls_to("GET", "/users/@me")) == (2 if refused == "intents" else 1)
    assert service.output.count(REFUSALS[refused]) == 1
    assert "Discord refused" not in service.output.replace(REFUSALS[refused], "", 1)
    assert "not-the-token" not in service.output and fake_discord.token not in service.output
    assert not fake_discord.identifies  # no session was opened


async def test_without_a_gateway_url_the_rest_base_is_asked_where_the_gateway_is(home, fake_openrouter, fake_discord):
    """A REST proxy in front of Discord: the gateway is the one ``GET /gateway/bot`` names, not Discord's own."""
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.queue(Text("Found you."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, gatewayUrl=None):
        await fake_discord.say(dm, ann, "hello")
        await fake_discord.wait_sent(dm)
    assert [m.content for m in fake_discord.bot_messages(dm)] == ["Found you."]
    assert len(fake_discord.calls_to("GET", "/gateway/bot")) == 1


async def test_server_users_channel_users_and_unlisted_servers(home, fake_openrouter, fake_discord):
    """``guilds``: a server not listed is not heard; the server's ``users`` may talk in it, except in a channel
    with ``users`` of its own; a slash command from anyone else is refused to them alone. Under the default
    ``groupPolicy`` (allowlist), listing a server is what lets it in."""
    ann, bob = fake_discord.user("ann"), fake_discord.user("bob")
    guild, elsewhere = fake_discord.guild(), fake_discord.guild("Another server")
    general, ops, other = fake_discord.text_channel(guild), fake_discord.text_channel(guild, "ops"), fake_discord.text_channel(elsewhere)
    guilds = {guild["id"]: {"requireMention": False, "users": [ann["id"]], "channels": {"ops": {"users": [bob["id"]]}}}}
    fake_openrouter.queue(Text("Hi Ann."), Text("Hi Bob."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, guilds=guilds, groupPolicy="allowlist"):
        me = fake_discord.bot
        await fake_discord.say(other, ann, f"<@{me['id']}> anyone here?", mentions=[me])
        await fake_discord.say(general, bob, "me too")
        await fake_discord.say(ops, ann, "and me")
        refused = await fake_discord.slash(general, bob, "status")
        await fake_discord.say(general, ann, "hello")
        await fake_discord.wait_sent(general)
        await fake_discord.say(ops, bob, "hello")
        await fake_discord.wait_sent(ops)
    assert [m.content for m in fake_discord.bot_messages(general)] == ["Hi Ann."]
    assert [m.content for m in fake_discord.bot_messages(ops)] == ["Hi Bob."]
    assert fake_discord.bot_messages(other) == []
    assert [r.json["messages"][-1]["content"] for r in fake_openrouter.chat_requests()] == ["[Ann]: hello", "[Bob]: hello"]
    (callback,) = fake_discord.calls_to("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
    assert callback.path == f"/interactions/{refused['id']}/{refused['token']}/callback"
    assert (callback.json["type"], callback.json["data"]["content"], callback.json["data"]["flags"]) == (
        4, "I'm not enabled here.", 64)  # a message only Bob sees (ephemeral)


async def test_a_reply_to_the_bot_addresses_it_and_mentions_read_as_names(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    guild = fake_discord.guild()
    role = str(next(fake_discord.ids))
    guild["roles"].append({**guild["roles"][0], "id": role, "name": "moderators", "position": 1, "mentionable": True})
    general, releases = fake_discord.text_channel(guild), fake_discord.text_channel(guild, "releases")
    fake_openrouter.queue(Text("Ask them."), Text("Tomorrow."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord):  # a mention is needed in servers
        me = fake_discord.bot
        question = fake_discord.message(general, ann, f"hey <@{me['id']}> who  are <@&{role}> in <#{releases['id']}>?",
                                        mentions=[me])
        question["mention_roles"] = [role]
        await fake_discord.dispatch("MESSAGE_CREATE", question)
        (answer,) = await fake_discord.wait_sent(general)
        await fake_discord.say(general, ann, "and when?", reply_to=answer.data)  # no mention: the reply addresses it
        await fake_discord.wait_sent(general, 2)
    assert [m.content for m in fake_discord.bot_messages(general)] == ["Ask them.", "Tomorrow."]
    first, second = fake_openrouter.chat_requests()
    assert first.json["messages"][-1]["content"] == "[Ann]: hey who are @moderators in #releases?"
    assert second.json["messages"][-1]["content"] == (
        "[Replying to your own earlier answer - for context]\n> Ask them.\n[The user's message]\n[Ann]: and when?")


@pytest.mark.parametrize("allow_bots", [False, True])
async def test_other_bots_are_heard_only_with_allow_bots(home, fake_openrouter, fake_discord, allow_bots):
    helper, ann = fake_discord.user("helper", bot=True), fake_discord.user("ann")
    helper_dm, ann_dm = fake_discord.dm(helper), fake_discord.dm(ann)
    fake_openrouter.queue(*([Text("Hello, fellow bot.")] if allow_bots else []), Text("Hi Ann."))
    async with chorus_on_discord(home, fake_openrouter, fake_discord, allowBots=allow_bots):
        await fake_discord.say(helper_dm, helper, "beep")
        if allow_bots:
            await fake_discord.wait_sent(helper_dm)
        await fake_discord.say(ann_dm, ann, "hi")
        await fake_discord.wait_sent(ann_dm)
        await asyncio.sleep(0.3)
    assert [m.content for m in fake_discord.bot_messages(helper_dm)] == (["Hello, fellow bot."] if allow_bots else [])
    assert [m.content for m in fake_discord.bot_messages(ann_dm)] == ["Hi Ann."]
    assert len(fake_openrouter.chat_requests()) == (2 if allow_bots else 1)



async def test_an_image_sent_before_a_crash_is_fetched_again_after_the_restart(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    png = make_png(32, 18)
    fake_openrouter.queue(Hang(60))
    configure(home, fake_openrouter, fake_discord)
    crashed = await start_chorus(home, "run", stdin=False)
    try:
        await fake_discord.wait_for(lambda: fake_discord.ready.is_set(), timeout=30)
        await fake_discord.say(dm, ann, "what is this?", attachments=[fake_discord.attachment("pic.png", png, "image/png")])
        await fake_discord.wait_for(fake_openrouter.chat_requests, timeout=30)
    finally:
        await crashed.kill()  # before any answer: the message is still in the inbox, its image only a CDN URL
    fake_discord.ready.clear()
    fake_openrouter.queue(Text("A gradient."))
    async with running(home) as service:
        try:
            await fake_discord.wait_sent(dm, timeout=30)
        except AssertionError:
            raise AssertionError(service.output) from None
    assert [m.content for m in fake_discord.bot_messages(dm)] == ["A gradient."], service.output
    assert fake_openrouter.chat_requests()[-1].json["messages"][-1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}}]


@shared
async def test_a_slash_command_without_its_optional_argument_shows_the_setting(bot):
    ann = bot.discord.user("ann")
    dm = bot.discord.dm(ann)
    await bot.discord.slash(dm, ann, "model")  # the argument left empty, as Discord allows
    await bot.discord.wait_sent(dm)
    (shown,) = [m.content for m in bot.discord.bot_messages(dm)]
    assert shown.startswith("Model: openrouter/auto\n")
