"""Issue 8, "Tests that can fail": each test pins exact values so that the small bug named in its
docstring (planted by mutation testing, which the suite used to survive) turns it red.

Pure pieces are tested as units; the rest runs our unpatched code against the fake OpenRouter.
"""

from __future__ import annotations

import io
import json
import logging
import time
from email.utils import format_datetime
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bot.auth import resolve_key, save_key
from bot.catalog import MAX_AGE, Catalog
from bot.context import fit_context
from bot.media_jobs import MediaJobs
from bot.redact import redact, setup_logging
from bot.store import Store
from channels.base import ChatRef, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import RateLimitError, error_for_status, parse_retry_after
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ChatSpec, ProviderSettings, build_chat_request
from providers.openrouter.retry import RetryPolicy, with_retries
from providers.openrouter.video import submit_video
from tests.fakes.openrouter import Error, FakeOpenRouter, Text, VideoPlan

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
    assert 0.95 <= waited < 3.0
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
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(logging.INFO, ["hunter2-of-this-process"])
        logging.getLogger("chorus.test").warning("key %s and %s", "sk-or-v1-0123456789abcdef", "hunter2-of-this-process")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
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
    """Mutation: the age check removed, so a cached catalog (on disk or in memory) is used forever."""
    now = [time.time()]
    async with OpenRouterClient(None, ProviderSettings(base_url=fake_openrouter.base_url)) as llm:
        catalog = Catalog(llm, tmp_path / "models-cache.json", clock=lambda: now[0])
        fetches = lambda: len(fake_openrouter.requests_to("/models"))  # noqa: E731
        assert "openai/gpt-4o-mini" in await catalog.models() and fetches() == 1
        now[0] += MAX_AGE - 60
        await catalog.models()
        await Catalog(llm, tmp_path / "models-cache.json", clock=lambda: now[0]).models()  # the file, a day old less a minute
        assert fetches() == 1
        now[0] += 120
        fake_openrouter.models.append({**fake_openrouter.models[1], "id": "new/model"})
        assert "new/model" in await catalog.models() and fetches() == 2  # the memory copy aged out too
        now[0] += MAX_AGE + 1
        assert "new/model" in await Catalog(llm, tmp_path / "models-cache.json", clock=lambda: now[0]).models()
        assert fetches() == 3


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
    async with store.db.execute("SELECT next_poll_at FROM media_jobs") as cur:
        return float((await cur.fetchone())[0])


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
    async with store.db.execute("SELECT status FROM media_jobs") as cur:
        assert [r[0] for r in await cur.fetchall()] == ["delivered"]
