"""Issue 8, "Tests that can fail": each test pins exact values so that the small bug named in its
docstring (planted by mutation testing, which the suite used to survive) turns it red.

Pure pieces are tested as units; the rest runs our unpatched code against the fake OpenRouter.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timezone
from typing import Any

import pytest

from bot.auth import resolve_key, save_key
from bot.catalog import CACHED, MAX_AGE, Catalog
from bot.context import fit_context
from bot.media.jobs import MediaJobs
from bot.redact import redact, setup_logging
from bot.store import Store
from bot.tools import ToolContext, ToolResult
from bot.media.voice import Voice
from channels.base import ChatRef, Reply
from channels.telegram.inbound import MentionRules
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError, error_for_status, parse_retry_after
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ChatSpec, ProviderSettings, build_chat_request
from providers.openrouter.retry import RetryPolicy, with_retries
from providers.openrouter.video import submit_video
from tests.conftest import chorus, eventually, onboarded
from tests.fakes.media import make_audio, make_png
from tests.fakes.openrouter import Error, Hang, Images, Stall, StreamError, Text, ToolCalls, VideoPlan
from tests.test_conversation import make  # noqa: F401 - the fixture: rigs on one state dir, closed at the end
from tests.service import start_chorus

# ---- Retry-After ------------------------------------------------------------------------------


def test_retry_after_is_read_in_both_of_its_forms():
    """Mutation: ``parse_retry_after`` returning None (every wire test sent ``Retry-After: 0``)."""
    now = datetime(2026, 10, 21, 7, 28, 0, tzinfo=timezone.utc).timestamp()
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2026 07:27:00 GMT", now=now) == 0.0  # already past: no wait
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None


async def test_a_429_with_retry_after_2_waits_2_seconds_before_the_retry():
    """Mutation: the header's value dropped between the response and the retry loop."""
    waits: list[float] = []
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error_for_status(429, {"error": {"code": 429, "message": "slow down"}}, "2")
        return "answered"

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    assert await with_retries(call, RetryPolicy(attempts=3), sleep=sleep, rng=lambda: 0.0) == "answered"
    assert waits == [2.0]  # with rng 0 a backoff would have been 0.0: only Retry-After gives 2
    in_a_minute = format_datetime(datetime.fromtimestamp(time.time() + 60, timezone.utc), usegmt=True)
    assert 58 <= error_for_status(429, {}, in_a_minute).retry_after <= 60


async def test_retry_after_from_the_wire_is_honoured(fake_openrouter):
    """The same through the real client and a real 429 carrying ``Retry-After: 1``."""
    fake_openrouter.queue(Error(429, "slow down", retry_after=1), Text("after the wait"))
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url),
                                retry=RetryPolicy(attempts=2)) as llm:
        started = time.monotonic()
        result = await llm.chat(ChatSpec(ModelRef.parse("openrouter/auto"), [{"role": "user", "content": "hi"}]))
        waited = time.monotonic() - started
    assert result.text == "after the wait"
    assert 0.95 <= waited < 10.0  # the server's 1 s, not backoff's < 0.5 s (the upper bound is loose for busy CI)
    assert fake_openrouter.requests_to("/chat/completions")[0].method == "POST"


# ---- context fitting --------------------------------------------------------------------------


def msg(role: str, tag: str) -> dict[str, str]:
    return {"role": role, "content": tag.ljust(396, ".")}  # 396 chars: 99 + 4 overhead = 103 tokens each


def test_context_charges_system_and_current_and_keeps_an_output_reserve():
    """Mutations: no output reserve; system prompt or current message not charged to the budget.

    Window 1000, reserve 20 % → 800; system 103 and current 103 leave 594; each earlier turn costs 206,
    so exactly 2 of 10 fit. Without the reserve (794), or with either not charged (697), 3 would."""
    system, current = [msg("system", "sys")], [msg("user", "now")]
    history = [m for i in range(10) for m in (msg("user", f"q{i}"), msg("assistant", f"a{i}"))]
    messages, dropped = fit_context(system, history, current, window=1000)
    assert dropped == 8
    assert messages == system + history[-4:] + current
    assert fit_context(system, history, current, window=1000 + 258)[1] == 7  # 594 + 206 = 800 after reserve: one more


def test_context_charges_a_tool_calls_arguments():
    """Mutation: tool calls not charged. A call's arguments (a long image prompt) cost as much as text: a turn
    that carries one must not squeeze in as if it were only its few words."""
    call = {"id": "call_1", "type": "function", "function": {"name": "image_generate", "arguments": "x" * 3960}}
    tool_turn = [msg("user", "q0"), {"role": "assistant", "content": None, "tool_calls": [call]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "done"}, msg("assistant", "a0")]
    system, current = [msg("system", "sys")], [msg("user", "now")]
    # 594 tokens left for history (see above); the tool turn costs 206 + ~1,030 for the call, so it is left out.
    assert fit_context(system, tool_turn, current, window=1000) == (system + current, 1)
    assert fit_context(system, tool_turn, current, window=2600)[1] == 0


def test_context_keeps_a_turn_that_fits_exactly_and_a_history_that_starts_inside_a_turn():
    """Mutations: a turn that costs exactly what is left dropped; a history that does not begin at a user
    message (an older part was left out before) losing that first part, or not counting it as a turn."""
    system, current = [msg("system", "sys")], [msg("user", "now")]
    turn = [msg("user", "q1"), msg("assistant", "a1")]  # 206, as are system and current together
    assert fit_context(system, turn, current, window=515) == (system + turn + current, 0)  # 412 - 206: exactly
    assert fit_context(system, turn, current, window=514) == (system + current, 1)
    history = [msg("assistant", "a0"), *turn]
    assert fit_context(system, history, current, window=10_000) == (system + history + current, 0)
    assert fit_context(system, history, current, window=515) == (system + turn + current, 1)


# ---- refs and request shaping -----------------------------------------------------------------


def test_from_slug_turns_openrouter_auto_into_the_auto_ref():
    """Mutation: ``from_slug`` without its ``openrouter/auto`` case (it became openrouter/openrouter/auto)."""
    auto = ModelRef.from_slug("openrouter/auto")
    assert (auto.provider, auto.model_id, str(auto), auto.slug, auto.is_auto) == (
        "openrouter", "auto", "openrouter/auto", "openrouter/auto", True)
    assert str(ModelRef.from_slug("openrouter/fusion")) == "openrouter/openrouter/fusion"
    assert str(ModelRef.from_slug("moonshotai/kimi-k2.6")) == "openrouter/moonshotai/kimi-k2.6"


def test_openai_only_reasoning_summary_and_previous_response_id_are_stripped_from_extra_body():
    """Mutation: either key missing from ``OPENAI_ONLY``."""
    extra = {"reasoning_summary": "auto", "previous_response_id": "resp_1", "plugins": [{"id": "web"}]}
    settings = ProviderSettings(model_params={"openrouter/x/y": {"extraBody": extra}})
    body = build_chat_request(ChatSpec(ModelRef.parse("openrouter/x/y"), [{"role": "user", "content": "hi"}]), settings).body
    assert "reasoning_summary" not in body and "previous_response_id" not in body
    assert body["plugins"] == [{"id": "web"}]  # the rest of extraBody still goes


# ---- secrets in logs and the key's source -----------------------------------------------------


def test_setup_logging_installs_the_redacting_filter(monkeypatch):
    """Mutation: ``setup_logging`` without ``handler.addFilter(RedactingFilter(...))``."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root, chorus = logging.getLogger(), logging.getLogger("chorus")
    saved = root.handlers[:], root.level, chorus.level
    try:
        setup_logging(0, ["hunter2-of-this-process"])
        logging.getLogger("chorus.test").warning("key %s and %s", "sk-or-v1-0123456789abcdef", "hunter2-of-this-process")
    finally:
        root.handlers[:], _, _ = saved
        root.setLevel(saved[1])
        chorus.setLevel(saved[2])
    assert stream.getvalue().rstrip("\n").endswith("WARNING chorus.test: key *** and ***")


def test_a_discord_shaped_token_is_redacted():
    """Mutation: the Discord pattern removed from the masking patterns."""
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4OQ.GhIjKl.abcdefghijklmnopqrstuvwxyz01234567"
    assert redact(f"login with {token} failed") == "login with *** failed"


def test_the_key_is_looked_up_in_the_documented_order(tmp_path):
    """Mutation: any two levels of ``resolve_key`` swapped. Each level is removed in turn: the next one wins."""
    config, env, config_env, dotenv = "sk-or-config", {"OPENROUTER_API_KEY": "sk-or-env"}, \
        {"OPENROUTER_API_KEY": "sk-or-config-env"}, {"OPENROUTER_API_KEY": "sk-or-dotenv"}
    save_key(tmp_path, "sk-or-profile", method="api-key")

    def winner(**kw: object) -> tuple[str, str] | None:
        args = {"config_key": config, "env": env, "config_env": config_env, "dotenv": dotenv, **kw}
        cred = resolve_key(args["config_key"], kw.get("state", tmp_path), args["env"], args["config_env"], args["dotenv"])
        return (cred.key, cred.source) if cred else None

    empty = tmp_path / "no-profile"
    assert winner() == ("sk-or-config", "config (models.providers.openrouter.apiKey)")
    assert winner(config_key=None) == ("sk-or-profile", f"auth profile openrouter:default ({tmp_path / 'auth-profiles.json'})")
    assert winner(config_key=None, state=empty) == ("sk-or-env", "OPENROUTER_API_KEY (environment)")
    assert winner(config_key=None, state=empty, env={}) == ("sk-or-config-env", "OPENROUTER_API_KEY (config env block)")
    assert winner(config_key=None, state=empty, env={}, config_env={}) == ("sk-or-dotenv", "OPENROUTER_API_KEY (.env file)")
    assert winner(config_key=None, state=empty, env={}, config_env={}, dotenv={}) is None


# ---- the model catalog ------------------------------------------------------------------------


async def test_the_catalog_cache_expires_after_a_day(fake_openrouter, tmp_path):
    """Mutation: the age check removed, so a cached catalog (in the database or in memory) is used forever."""
    now = [time.time()]
    store = await Store.open(tmp_path / "chorus.db")
    try:
        async with OpenRouterClient(None, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
            catalog = Catalog(llm, store.db, clock=lambda: now[0])
            fetches = lambda: len(fake_openrouter.requests_to("/models"))  # noqa: E731
            assert "openai/gpt-4o-mini" in await catalog.models() and fetches() == 1
            now[0] += MAX_AGE - 60
            await catalog.models()
            await Catalog(llm, store.db, clock=lambda: now[0]).models()  # the database's copy, a day old less a minute
            assert fetches() == 1
            now[0] += 120
            fake_openrouter.models.append({**fake_openrouter.models[1], "id": "new/model"})
            assert "new/model" in await catalog.models() and fetches() == 2  # the memory copy aged out too
            now[0] += MAX_AGE + 1
            assert "new/model" in await Catalog(llm, store.db, clock=lambda: now[0]).models()
            assert fetches() == 3
    finally:
        await store.close()


async def test_instances_on_one_database_share_the_catalog(fake_openrouter, pg_url):
    """Two instances' stores on one PostgreSQL: what one fetched, the other reads from the database.
    Mutation: the catalog not read from the database (each instance fetching its own)."""
    one, two = await Store.open(pg_url), await Store.open(pg_url)
    try:
        async with OpenRouterClient(None, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
            assert "openai/gpt-4o-mini" in await Catalog(llm, one.db).models()
            other = Catalog(llm, two.db)
            assert "openai/gpt-4o-mini" in await other.models()
            assert len(fake_openrouter.requests_to("/models")) == 1 and other.source == CACHED
            fake_openrouter.models.append({**fake_openrouter.models[1], "id": "new/model"})
            assert "new/model" in await Catalog(llm, two.db).models(refresh=True)  # `chorus models list --refresh`
            assert "new/model" in await Catalog(llm, one.db).models()  # the refreshed copy replaced the old one
            assert await one.db.fetchval("SELECT count(*) FROM shared_values") == 1  # one row, however often fetched
    finally:
        await one.close()
        await two.close()


# ---- video jobs -------------------------------------------------------------------------------


class Deliveries:
    """A channel's ``deliver`` that fails while the channel is down."""

    def __init__(self) -> None:
        self.sent: list[Reply] = []
        self.down = False

    async def __call__(self, chat: ChatRef, reply: Reply) -> None:
        if self.down:
            raise RuntimeError("channel test is not running")
        self.sent.append(reply)


@pytest.fixture
async def video_rig(fake_openrouter, tmp_path):
    store = await Store.open(tmp_path / "chorus.db")
    llm = OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url))
    yield store, llm
    await llm.aclose()
    await store.close()


async def next_poll_at(store: Store) -> float:
    return float(await store.db.fetchval("SELECT next_poll_at FROM media_jobs"))


async def test_video_polling_backs_off_by_half_again_up_to_the_cap(fake_openrouter, video_rig):
    """Mutation: ``_later`` polling at the fixed interval (no ``1.5 ** attempts``), or ignoring the cap."""
    store, llm = video_rig
    clock = [1000.0]
    jobs = MediaJobs(store, llm, Deliveries(), poll_interval=10, max_interval=60, clock=lambda: clock[0])
    fake_openrouter.video_plan.append(VideoPlan(polls_until_done=10**6))
    job = await submit_video(llm, ModelRef.parse("openrouter/google/veo-3.1-fast"), "waves")
    await jobs.submit(ChatRef("test", "c"), None, job, "openrouter/google/veo-3.1-fast", "waves", timeout=10_000)
    gaps = [await next_poll_at(store) - clock[0]]
    for _ in range(7):
        clock[0] = await next_poll_at(store)
        await jobs.tick()
        gaps.append(await next_poll_at(store) - clock[0])
    assert gaps == [10, 10, 15, 22.5, 33.75, 50.625, 60, 60]


async def test_a_finished_video_is_marked_done_only_after_it_was_delivered(fake_openrouter, video_rig):
    """Mutation: ``_finish`` recording the job as delivered before calling ``deliver``."""
    store, llm = video_rig
    clock = [1000.0]
    deliveries = Deliveries()
    jobs = MediaJobs(store, llm, deliveries, poll_interval=10, clock=lambda: clock[0])
    job = await submit_video(llm, ModelRef.parse("openrouter/google/veo-3.1-fast"), "waves")
    await jobs.submit(ChatRef("test", "c"), "m1", job, "openrouter/google/veo-3.1-fast", "waves", timeout=10_000)
    deliveries.down = True
    clock[0] += 10
    await jobs.tick()  # done upstream, but the channel is down: it must stay pending
    assert await jobs.pending() == 1 and deliveries.sent == []
    deliveries.down = False
    clock[0] += 10
    await jobs.tick()
    assert await jobs.pending() == 0
    assert [(r.reply_to, [m.filename for m in r.media]) for r in deliveries.sent] == [("m1", [f"video-{job.id}.mp4"])]
    assert [r[0] for r in await store.db.fetch("SELECT status FROM media_jobs")] == ["delivered"]


# ---- through the real console (what a user sees) ----------------------------------------------


async def test_status_shows_the_sessions_exact_cost(home, fake_openrouter):
    """Mutation: ``/status`` (or the store's stats) reporting a cost of zero."""
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Text("Hello.", usage={"prompt_tokens": 100, "completion_tokens": 23, "total_tokens": 123,
                                                 "cost": 0.0123}))
    await chorus(home, "run", stdin="hi\n")
    status = await chorus(home, "run", stdin="/status\n")  # a run of its own: the turn is surely over
    assert "Session: 2 messages, 100 prompt + 23 completion tokens, $0.0123 so far" in status.out.splitlines()


async def test_image_generate_makes_as_many_images_as_asked(home, fake_openrouter):
    """Mutation: ``image_generate`` ignoring ``count`` (one image whatever was asked)."""
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "three cats", "count": 3})]),
                          Images(), Images(), Images(), Text("Three cats."))
    result = await chorus(home, "run", stdin="draw three cats\n")
    image_calls = [r for r in fake_openrouter.chat_requests() if r.json.get("modalities") == ["image", "text"]]
    assert len(image_calls) == 3
    assert re.findall(r"\[image saved: [^\]]+-image-(\d)\.png\]", result.out) == ["1", "2", "3"]
    assert [m["content"] for m in fake_openrouter.chat_requests()[-1].json["messages"] if m["role"] == "tool"] == [
        "3 image(s) made and attached to your reply. Describe them briefly."]


VOICE_LINE = re.compile(r"^\[voice saved: [^\]]+\.mp3\]")


def shown_lines(out: str) -> list[str]:
    """The console's output with each saved voice file's path replaced by VOICE, for exact comparison."""
    return [VOICE_LINE.sub("[voice]", line) for line in out.splitlines()]


async def test_the_chats_own_tts_setting_decides_and_tags_never_show_in_a_failed_turn(home, fake_openrouter):
    """Mutations: the per-chat ``/tts`` setting ignored; ``[[tts]]`` tags left in the text of a turn that
    failed mid-answer. (Commands take effect when read, so each run sends its command first.)"""
    await onboarded(home, fake_openrouter)  # messages.tts.auto stays "off": only the chat's setting speaks
    fake_openrouter.queue(Text("Hello there."), StreamError("Partial [[tts]]answer", "boom"))
    spoken = await chorus(home, "run", stdin="/tts always\nhi\n")
    assert shown_lines(spoken.out) == ["Spoken replies for this chat: always.", "Hello there.", "[voice]"]
    assert [r.json["input"] for r in fake_openrouter.requests_to("/audio/speech")] == ["Hello there."]
    failed = await chorus(home, "run", stdin="/tts tagged\nfail please\n")
    assert shown_lines(failed.out)[:4] == [
        "Spoken replies for this chat: tagged.",
        "Partial answer", "", "⚠️ The model stopped with an error mid-answer (boom). The answer was cut off; try again.",
    ]
    assert "[[" not in failed.out and len(fake_openrouter.requests_to("/audio/speech")) == 1


@pytest.mark.parametrize("delivery, lines", [
    ("caption", ["[voice] — Hello there."]),
    ("suppress", ["[voice]"]),
])
async def test_text_is_not_streamed_when_it_will_be_replaced_by_a_voice_note(home, fake_openrouter, delivery, lines):
    """Mutation: text streamed live under ``textDelivery`` caption or suppress (it would show before the voice note)."""
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, messages={"tts": {"auto": "always", "textDelivery": delivery}})
    fake_openrouter.queue(Text("Hello there."))
    result = await chorus(home, "run", stdin="hi\n")
    assert shown_lines(result.out) == lines


async def test_a_voice_note_answered_by_voice_only_is_not_streamed_as_text_first(home, fake_openrouter, tmp_path):
    """Mutation: ``tts.auto: inbound`` not counted as surely spoken when the user spoke (the text would show first)."""
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, messages={"tts": {"auto": "inbound", "textDelivery": "suppress"}},
                      tools={"media": {"audio": {"enabled": True}}})
    note = tmp_path / "note.ogg"
    note.write_bytes(make_audio("ogg_opus", 1.0))
    fake_openrouter.queue(Text("Hello there."))
    result = await chorus(home, "run", stdin=f"/voice {note}\n")
    assert shown_lines(result.out) == ["[voice]"]


async def test_images_made_before_the_model_failed_still_reach_the_user(home, fake_openrouter):
    """Mutation: the files of a turn's finished tool rounds dropped when a later model call fails."""
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "a cat"})]), Images(),
                          Error(400, "the request was malformed"))
    result = await chorus(home, "run", stdin="draw a cat\n")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == ("⚠️ OpenRouter refused the request as malformed (the request was malformed). "
                        "Check the model name and the request settings in the config.")
    assert re.fullmatch(r"\[image saved: [^\]]+-image-1\.png\]", lines[-1]), result.out


async def test_an_attachment_lost_in_a_restart_is_told_to_the_user(home, fake_openrouter, tmp_path):
    """Mutation: the "attachment was lost" note removed from start-up recovery."""
    await onboarded(home, fake_openrouter)
    picture = tmp_path / "cat.png"
    picture.write_bytes(make_png(8, 8))
    fake_openrouter.queue(Hang(60))
    proc = await start_chorus(home, "run")
    await proc.say(f"/image {picture}")
    await eventually(fake_openrouter.chat_requests, "the turn to reach the model", timeout=30)
    await proc.kill()
    picture.unlink()  # gone before the restart: the message cannot be answered as it was sent
    result = await chorus(home, "run", stdin="")
    assert result.out.splitlines() == [
        "Sorry, I restarted while handling your last message and its attachment was lost; please send it again."]
    assert len(fake_openrouter.chat_requests()) == 1  # an empty message is not sent to the model


# ---- in-process, between a recording channel and the fake (a turn stopped mid-way) -------------


@dataclass
class BlockingTool:
    """A tool that runs until the turn is stopped."""

    name: str = "slow_search"
    description: str = "Search slowly."
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable: the turn is stopped first")


async def until(check: Any, what: str, timeout: float = 10) -> None:
    """Wait for ``check()`` to hold: what the user sees, not when ``handle`` returns (accepting is not answering)."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"waited {timeout} s for {what}") from None


async def test_a_turn_stopped_during_a_tool_call_stores_no_call_without_its_result(make):
    """Mutation: a stopped turn storing the assistant's ``tool_calls`` without their ``tool`` results (the next
    request would then be refused: the fake checks every call id is answered, as real providers do)."""
    tool = BlockingTool()
    rig = await make(tools=[tool])
    rig.fake.queue(ToolCalls([("slow_search", {})]))
    rig.later("look it up")
    await until(tool.started.is_set, "the tool to start")
    assert rig.dispatcher.stop(rig.inbound("").chat)
    await until(lambda: rig.channel.texts("c1"), "the stopped reply")
    assert rig.channel.texts("c1") == ["⏹ Stopped."]
    session = await rig.store.active_session(rig.inbound("").chat)
    assert [(m.role, m.content) for m in await rig.store.history(session)] == [("user", "look it up")]
    rig.later("and now?")
    await until(lambda: len(rig.channel.texts("c1")) == 2, "the next answer")
    assert rig.channel.texts("c1")[1] == "echo: and now?"
    assert [m["role"] for m in rig.fake.chat_requests()[-1].json["messages"]] == ["system", "user", "user"]


async def test_a_turn_stopped_mid_answer_shows_no_tts_tags(make):
    """Mutation: the stopped turn's text built from the raw stream, ``[[tts]]`` tags and all."""
    rig = await make({"messages": {"tts": {"auto": "tagged"}}})
    rig.dispatcher.agent.voice = Voice(rig.dispatcher.agent.config, rig.dispatcher.agent.llm)
    rig.fake.queue(Stall("Partial [[tts]]answer", seconds=30, rest=" and more"))
    rig.later("talk to me")
    await until(lambda: "".join(rig.channel.streamed.get("c1", [])) == "Partial answer", "the partial answer")
    assert rig.dispatcher.stop(rig.inbound("").chat)
    await until(lambda: rig.channel.texts("c1"), "the stopped reply")
    assert rig.channel.texts("c1") == ["Partial answer\n\n⏹ Stopped."]


async def test_debounce_never_folds_two_senders_together(make):
    """Mutation: the debounce key without the sender (two people's messages became one turn)."""
    rig = await make({"messages": {"inbound": {"debounceMs": 150}}})
    group = {"kind": "group", "mentioned": True}
    for sender, name, text in (("u1", "Ada", "one"), ("u2", "Bob", "two"), ("u1", "Ada", "three")):
        rig.later(text, sender=sender, name=name, **group)
    await until(lambda: len(rig.channel.texts("c1")) == 2, "one answer per sender")
    last_users = sorted(r.json["messages"][-1]["content"] for r in rig.fake.chat_requests())
    assert last_users == ["[Ada]: one\nthree", "[Bob]: two"]


async def test_a_spoken_reply_still_carries_its_text_under_normal_delivery(make):
    """Mutation: the text dropped from a reply that has a voice note. The console shows streamed text anyway,
    so this is checked on the reply a channel is handed (what Telegram or Discord would send)."""
    rig = await make({"messages": {"tts": {"auto": "always", "textDelivery": "normal"}}})
    rig.dispatcher.agent.voice = Voice(rig.dispatcher.agent.config, rig.dispatcher.agent.llm)
    rig.fake.queue(Text("Hello there."))
    rig.later("hi")
    await until(lambda: rig.channel.replies.get("c1"), "the reply")
    (reply,) = rig.channel.replies["c1"]
    assert reply.text == "Hello there." and reply.voice is not None and reply.voice.caption is None
    assert "".join(rig.channel.streamed["c1"]) == "Hello there."  # and it was streamed as it came


async def test_the_fake_refuses_a_tool_call_left_without_its_result(fake_openrouter):
    """The fake is as strict as real providers: an assistant ``tool_calls`` id needs its ``tool`` message next."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "user", "content": "again"}]
    async with OpenRouterClient(fake_openrouter.api_key, ProviderSettings(base_url=fake_openrouter.base_url),
                                retry=RetryPolicy(attempts=1)) as llm:
        with pytest.raises(OpenRouterError) as refused:
            await llm.chat(ChatSpec(ModelRef.parse("openrouter/auto"), messages))
        answered = [*messages[:2], {"role": "tool", "tool_call_id": "call_1", "content": "r"}, messages[2]]
        assert (await llm.chat(ChatSpec(ModelRef.parse("openrouter/auto"), answered))).text == "echo: again"
    assert refused.value.status == 400
    assert fake_openrouter.violations == ["messages[1]: tool_calls id(s) ['call_1'] have no tool message right after the call"]
    fake_openrouter.violations.clear()  # seen and expected


@pytest.mark.parametrize(("channel", "groups", "chat", "required"), [
    (True, {"*": False, "-100": True}, -100, True),  # a group's own rule comes before "*"
    (True, {"*": False, "-100": True}, -200, False),  # "*" comes before the channel's requireMention
    (True, {"-100": None, "*": False}, -100, False),  # a group that leaves it unset falls back to "*"
    (False, {"-100": True}, -200, False),  # no rule for the group: the channel's
    (True, {}, -200, True),
])
def test_require_mention_is_the_groups_own_then_stars_then_the_channels(channel, groups, chat, required):
    assert MentionRules(channel, groups).required(chat) is required


# ---- Telegram's formatting and limits (the second mutation round) -----------------------------


def test_formatting_spans_are_trimmed_to_the_text_they_cover():
    """Mutation: ``_convert`` keeping the converter's spans over the trailing newline it strips."""
    from channels.telegram.format import render

    (part,) = render("> - q\n> - **r**")
    assert part.text == "⦁ q\n⦁ r"
    assert part.entities == [{"type": "bold", "offset": 6, "length": 1},
                             {"type": "blockquote", "offset": 0, "length": 7}]


def test_telegrams_limit_is_4096_utf16_units_not_one_more():
    """Mutation: ``TEXT_LIMIT`` raised to 4,097 (every earlier long text cut well below the limit)."""
    from channels.chunking import utf16_length
    from channels.telegram.format import render

    assert [len(p.text) for p in render("a" * 4097)] == [4096, 1]
    assert [utf16_length(p.text) for p in render("😀" * 2049)] == [4096, 2]  # each emoji is two UTF-16 units


# ---- the migration lock -----------------------------------------------------------------------


async def test_opening_the_store_waits_while_another_process_migrates(tmp_path):
    """Mutation: ``migration_lock`` yielding without taking the lock (two starts would race on the schema)."""
    import fcntl
    import os

    db = tmp_path / "chorus.db"
    fd = os.open(tmp_path / "chorus.db.migrate-lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what another process migrating this database holds
    opening = asyncio.create_task(Store.open(db))
    try:
        done, _ = await asyncio.wait({opening}, timeout=0.3)
    finally:
        os.close(fd)  # the other process is done: the lock is free
    store = await asyncio.wait_for(opening, 10)
    await store.close()
    assert not done, "the store opened while another process held the migration lock"
