"""The conversation as a daily user relies on it: sessions, queueing, commands, tools, context, nothing lost.

The agent and dispatcher run in-process, unpatched, between a recording channel and the fake OpenRouter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from bot.agent import CRASHED, Agent
from bot.catalog import Catalog
from bot.auth import Credential
from bot.config import parse_config
from bot.dispatch import Dispatcher
from bot.runtime import make_client
from bot.store import Inbox, Store
from bot.tools import ToolContext, ToolError, ToolRegistry, ToolResult
from bot.media.images import UNSEEN
from channels.base import Attachment, AttachmentKind, Capabilities, ChatRef, Inbound, Reply
from tests.fakes.media import make_png
from tests.fakes.openrouter import Error, FakeOpenRouter, Hang, Text, ToolCalls


class RecordingChannel:
    """A channel that keeps what a user would have seen, per chat."""

    name = "test"
    capabilities = Capabilities(streams_text=True)

    def __init__(self) -> None:
        self.replies: dict[str, list[Reply]] = {}
        self.streamed: dict[str, list[str]] = {}

    async def run(self, on_message):  # pragma: no cover - driven by the tests directly
        return None

    async def stop(self) -> None:
        return None

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        self.replies.setdefault(chat.chat_id, []).append(reply)

    def open_stream(self, chat: ChatRef, reply_to: str | None = None):
        channel = self

        class Stream:
            async def delta(self, text: str) -> None:
                channel.streamed.setdefault(chat.chat_id, []).append(text)

            async def close(self, reply: Reply) -> None:
                await channel.send(chat, reply)

        return Stream()

    def texts(self, chat_id: str) -> list[str]:
        return [r.text for r in self.replies.get(chat_id, [])]


@dataclass
class EchoTool:
    """A tool that answers with its argument, or fails when asked to."""

    name: str = "echo"
    description: str = "Echo the text back."
    parameters: dict[str, Any] = field(default_factory=lambda: {
        "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
    })
    barrier: asyncio.Barrier | None = None

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if "text" not in args:
            raise ToolError("'text' is required")
        if self.barrier is not None:  # only passes when the calls of one answer run at the same time
            await asyncio.wait_for(self.barrier.wait(), 5)
        return ToolResult(f"echoed: {args['text']}")


@dataclass
class Rig:
    fake: FakeOpenRouter
    store: Store
    dispatcher: Dispatcher
    channel: RecordingChannel

    def inbound(self, text: str, chat: str = "c1", **kw: Any) -> Inbound:
        kind = kw.pop("kind", "direct")
        channel = kw.pop("channel", "test")
        return Inbound(
            chat=ChatRef(channel, chat, kind=kind), sender_id=kw.pop("sender", "u1"),
            sender_name=kw.pop("name", "Ada"), text=text, message_id=kw.pop("message_id", f"m{uuid.uuid4().hex}"), **kw,
        )

    async def say(self, text: str, chat: str = "c1", **kw: Any) -> None:
        """Send a message and wait until everything accepted so far has been answered."""
        await self.dispatcher.accept(self.inbound(text, chat, **kw), self.channel)
        await self.dispatcher.drain()

    def later(self, text: str, chat: str = "c1", **kw: Any) -> asyncio.Task[None]:
        return asyncio.create_task(self.say(text, chat, **kw))

    async def close(self) -> None:
        await self.dispatcher.agent.llm.aclose()
        await self.store.close()

    async def requests_reach(self, n: int) -> None:
        for _ in range(500):
            if len(self.fake.chat_requests()) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"expected {n} chat requests, saw {len(self.fake.chat_requests())}")


async def make_rig(fake: FakeOpenRouter, path, config: dict[str, Any] | None = None, tools=()) -> Rig:
    raw = {"models": {"providers": {"openrouter": {"baseUrl": fake.base_url, "maxRetries": 0}}}, **(config or {})}
    cfg, _ = parse_config(raw, env={})
    store = await Store.open(path / "chorus.db")
    llm = make_client(cfg, Credential(fake.api_key, "test"))  # honours maxRetries: 0 from the config
    agent = Agent(cfg, store, llm, ToolRegistry(tools), catalog=Catalog(llm, store.db))
    return Rig(fake, store, Dispatcher(agent, Inbox(store)), RecordingChannel())


@pytest.fixture
async def make(fake_openrouter, tmp_path):
    """Build rigs on one state dir (a second one is a restart); all are closed at the end."""
    made: list[Rig] = []

    async def build(config: dict[str, Any] | None = None, tools=()) -> Rig:
        made.append(await make_rig(fake_openrouter, tmp_path, config, tools))
        return made[-1]

    yield build
    for rig in made:
        await rig.close()


@pytest.fixture
async def rig(make):
    return await make()


def user_contents(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"]


async def test_sessions_run_at_once_but_one_session_waits_its_turn(rig):
    rig.fake.queue(Text("slow answer", delay=1.0), Text("quick answer"), Text("second in c1"))
    first = rig.later("first", chat="c1")
    await rig.requests_reach(1)
    other = rig.later("hello", chat="c2")
    queued = rig.later("second", chat="c1")
    await rig.requests_reach(2)
    # c2 was answered while c1's slow turn was still running; c1's second message was held back.
    assert not first.done()
    assert user_contents(rig.fake.chat_requests()[1]) == ["hello"]
    await asyncio.gather(first, other, queued)
    third = rig.fake.chat_requests()[2]
    assert user_contents(third) == ["first", "second"]
    assert [m["content"] for m in third.json["messages"] if m["role"] == "assistant"] == ["slow answer"]
    assert rig.channel.texts("c1") == ["slow answer", "second in c1"]
    assert rig.channel.texts("c2") == ["quick answer"]


async def test_collect_mode_folds_waiting_messages_into_one_turn(make):
    rig = await make({"messages": {"queue": {"mode": "collect"}}})
    rig.fake.queue(Text("one", delay=0.5), Text("both"))
    first = rig.later("a")
    await rig.requests_reach(1)
    rest = [rig.later("b"), rig.later("c")]
    await asyncio.gather(first, *rest)
    assert len(rig.fake.chat_requests()) == 2
    assert user_contents(rig.fake.chat_requests()[1])[-1] == "b\nc"


async def test_stop_cancels_the_turn_and_keeps_what_the_user_said(rig):
    rig.fake.queue(Hang(30), Text("after stop"))
    turn = rig.later("write an essay")
    await rig.requests_reach(1)
    await rig.say("/stop")
    await turn
    assert rig.channel.texts("c1") == ["⏹ Stopped."]
    await rig.say("never mind")
    assert user_contents(rig.fake.chat_requests()[1]) == ["write an essay", "never mind"]
    await rig.say("/stop")
    assert rig.channel.texts("c1")[-1] == "Nothing to stop."


async def test_stop_right_behind_its_message_stops_that_turn(rig):
    """Messages that come together (one getUpdates batch) are accepted back to back: a /stop right behind a
    message stops that message's turn, even while the lane is still busy with a command before it."""
    for text in ("/new", "write an essay", "/stop"):
        await rig.dispatcher.accept(rig.inbound(text), rig.channel)
    await asyncio.wait_for(rig.dispatcher.drain(), 10)
    assert rig.channel.texts("c1") == [
        "Started a new conversation. The previous one is kept.", "⏹ Stopped."]
    assert rig.fake.chat_requests() == []  # stopped before the model was asked
    rig.fake.queue(Text("after stop"))
    await rig.say("never mind")
    assert rig.channel.texts("c1")[-1] == "after stop"
    assert user_contents(rig.fake.chat_requests()[-1]) == ["write an essay", "never mind"]


async def test_tool_calls_run_concurrently_and_errors_go_back_to_the_model(make):
    tool = EchoTool(barrier=asyncio.Barrier(2))
    rig = await make(tools=[tool])
    rig.fake.queue(
        ToolCalls([("echo", {"text": "x"}), ("echo", {"text": "y"})]),
        ToolCalls([("echo", {"wrong": 1}), ("nope", {})]),
        Text("all done"),
    )
    await rig.say("use the tool")
    requests = rig.fake.chat_requests()
    assert requests[0].json["tools"][0]["function"]["name"] == "echo"
    tool_results = [m["content"] for m in requests[1].json["messages"] if m["role"] == "tool"]
    assert tool_results == ["echoed: x", "echoed: y"]
    errors = [m["content"] for m in requests[2].json["messages"] if m["role"] == "tool"][2:]
    assert errors[0] == "error: 'text' is required"
    assert errors[1].startswith("error: there is no tool named 'nope'")
    assert rig.channel.texts("c1") == ["all done"]
    # The whole tool conversation is history for the next turn.
    await rig.say("thanks")
    roles = [m["role"] for m in rig.fake.chat_requests()[3].json["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "tool", "assistant", "user"]


@pytest.mark.parametrize("quirk", ["again", "placeholder", "one_index"])
async def test_tool_arguments_a_host_glued_together_are_taken_apart(make, quirk):
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"}), ("echo", {"text": "y"})], quirk=quirk), Text("done"))
    await rig.say("echo x and y")
    second = rig.fake.chat_requests()[1]
    (asked,) = assistants(second)
    assert [json.loads(c["function"]["arguments"]) for c in asked["tool_calls"]] == [{"text": "x"}, {"text": "y"}]
    results = [m for m in second.json["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in results] == ["echoed: x", "echoed: y"]
    ids = [c["id"] for c in asked["tool_calls"]]
    assert len(set(ids)) == 2 and [m["tool_call_id"] for m in results] == ids
    assert rig.channel.texts("c1") == ["done"]


async def test_arguments_that_are_not_json_are_refused_and_the_conversation_goes_on(make):
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"})], quirk="cut"), Text("Sorry, let me try again."))
    await rig.say("echo x")
    second = rig.fake.chat_requests()[1]
    (result,) = [m["content"] for m in second.json["messages"] if m["role"] == "tool"]
    assert result == "error: the arguments are not valid JSON (Expecting ',' delimiter at position 12)"
    # What goes back is JSON a provider takes: the model's broken text would get the whole request refused.
    (asked,) = assistants(second)
    assert [c["function"]["arguments"] for c in asked["tool_calls"]] == ["{}"]
    assert rig.channel.texts("c1") == ["Sorry, let me try again."]


async def test_the_iteration_cap_ends_the_turn_with_a_clear_message(make):
    rig = await make({"agents": {"defaults": {"maxToolIterations": 2}}}, tools=[EchoTool()])
    rig.fake.queue(*[ToolCalls([("echo", {"text": str(i)})]) for i in range(3)])
    await rig.say("loop forever")
    assert len(rig.fake.chat_requests()) == 2
    assert "stopped after 2 rounds of tool use" in rig.channel.texts("c1")[0]


async def test_long_history_is_trimmed_oldest_first_never_system_or_current(fake_openrouter, make):
    for model in fake_openrouter.models:  # the catalog's context length wins over agents.defaults.contextTokens
        if model["id"] == "openrouter/auto":
            model["context_length"] = 400
    rig = await make({"agents": {"defaults": {"contextTokens": 1_000_000}}})
    for i in range(8):
        await rig.say(f"message {i} " + "x" * 200)
    last = rig.fake.chat_requests()[-1].json["messages"]
    assert last[0]["role"] == "system"
    assert last[-1]["content"].startswith("message 7 ")
    users = [m["content"][:9] for m in last if m["role"] == "user"]
    assert "message 0" not in users and len(users) < 8


async def test_commands_set_per_chat_overrides_that_survive_a_restart(make):
    rig = await make()
    await rig.say("/think high")
    await rig.say("/tts inbound")
    await rig.say("/think sideways")
    await rig.say("/model openrouter/anthropic/claude-sonnet-4.6")
    await rig.say("/model openrouter/nobody/nothing")
    assert rig.channel.texts("c1")[:5] == [
        "Thinking for this chat: high.", "Spoken replies for this chat: inbound.",
        "Not changed: 'sideways' is not one of off, minimal, low, medium, high, xhigh.",
        "Model for this chat set to openrouter/anthropic/claude-sonnet-4.6.",
        "Not changed: nobody/nothing is not in OpenRouter's model catalog (see `chorus models list`).",
    ]
    await rig.say("hi")
    body = rig.fake.chat_requests()[-1].json
    assert body["model"] == "anthropic/claude-sonnet-4.6"
    assert body["reasoning"] == {"effort": "high"}
    await rig.close()

    again = await make()
    await again.say("/status")
    status = again.channel.texts("c1")[0]
    assert "Model: openrouter/anthropic/claude-sonnet-4.6" in status
    assert "Thinking: high" in status and "Spoken replies: inbound" in status
    assert "2 messages" in status and "$0.0" in status
    await again.say("/new")
    await again.say("/status")
    assert "0 messages" in again.channel.texts("c1")[-1]
    assert "Model: openrouter/anthropic/claude-sonnet-4.6" in again.channel.texts("c1")[-1]


async def test_a_redelivered_message_is_answered_once(rig):
    await rig.say("hello", message_id="same")
    await rig.say("hello", message_id="same")
    assert len(rig.fake.chat_requests()) == 1
    assert rig.channel.texts("c1") == ["echo: hello"]


async def test_quick_messages_from_one_sender_are_debounced_into_one_turn(make):
    rig = await make({"messages": {"inbound": {"debounceMs": 150}}})
    await asyncio.gather(rig.say("one"), rig.say("two"), rig.say("three"))
    (request,) = rig.fake.chat_requests()
    assert user_contents(request) == ["one\ntwo\nthree"]


async def test_each_quick_message_restarts_the_debounce_wait(make):
    """A user typing in bursts: every new message waits the whole debounce again, so none is cut off."""
    rig = await make({"messages": {"inbound": {"debounceMs": 300}}})
    said = []
    for text in ("one", "two", "three"):
        said.append(rig.later(text))
        await asyncio.sleep(0.2)  # each comes before the last one's wait is over, but after the first one's
    await asyncio.gather(*said)
    (request,) = rig.fake.chat_requests()
    assert user_contents(request) == ["one\ntwo\nthree"]


@pytest.mark.parametrize("then", ["photo", "command"])
async def test_a_message_that_skips_the_debounce_comes_after_what_was_held(make, then):
    """A photo, or a command, is not held back; what the sender wrote just before it still goes first, as
    OpenClaw's debouncer does, so "look at this" is answered before the photo and "thanks" before /new."""
    rig = await make({"messages": {"inbound": {"debounceMs": 2000}}})
    rig.fake.queue(Text("Before it."), Text("About the photo."))
    first = rig.later("first words")
    await asyncio.sleep(0.1)
    if then == "photo":
        photo = Attachment.from_bytes(AttachmentKind.IMAGE, make_png(), mime="image/png")
        await rig.say("", attachments=[photo])
        assert user_contents(rig.fake.chat_requests()[0])[-1] == "first words"
        assert rig.channel.texts("c1") == ["Before it.", "About the photo."]
    else:
        await rig.say("/status")
        assert [user_contents(r)[-1] for r in rig.fake.chat_requests()] == ["first words"]
        assert rig.channel.texts("c1")[0] == "Before it." and "Model" in rig.channel.texts("c1")[1]
    await first


async def test_collect_mode_stops_at_a_command_so_it_applies_between_the_messages(make):
    rig = await make({"messages": {"queue": {"mode": "collect"}}})
    rig.fake.queue(Text("one", delay=0.5), Text("before"), Text("after"))
    first = rig.later("a")
    await rig.requests_reach(1)
    rest = [rig.later("b"), rig.later("/new"), rig.later("c")]
    await asyncio.gather(first, *rest)
    assert [user_contents(r) for r in rig.fake.chat_requests()[1:]] == [["a", "b"], ["c"]]  # c in the new session
    assert rig.channel.texts("c1") == ["one", "before", "Started a new conversation. The previous one is kept.", "after"]


async def test_commands_are_read_in_any_case_and_a_lone_slash_is_just_text(rig):
    await rig.say("/STATUS@ChorusBot")
    assert rig.channel.texts("c1")[0].startswith("Model: ")
    rig.fake.queue(Text("A slash."), Text("Spaced."))
    await rig.say("/")
    await rig.say("/ status")
    assert [user_contents(r)[-1] for r in rig.fake.chat_requests()] == ["/", "/ status"]
    assert rig.channel.texts("c1")[1:] == ["A slash.", "Spaced."]


async def test_a_sender_allowed_by_username_is_still_allowed_when_answered_after_a_restart(make):
    """The inbox keeps the sender's username with the message: one left pending when the service went down, from
    someone on the allowlist as @ada, is answered after the restart, not refused."""
    config = {"channels": {"telegram": {"dmPolicy": "allowlist", "allowFrom": ["@ada"]}}}
    rig = await make(config)
    rig.fake.queue(Hang(30), Text("Yes, still here."))
    asked = rig.later("still there?", channel="telegram", sender="111", sender_username="ada")
    await rig.requests_reach(1)
    await rig.dispatcher.shutdown()  # the turn is cut; the message stays pending in the inbox
    await asyncio.gather(asked, return_exceptions=True)
    again = await make(config)
    again.dispatcher.channels["telegram"] = again.channel
    await again.dispatcher.recover()
    await again.dispatcher.drain()
    assert again.channel.texts("c1") == ["Yes, still here."]
    assert user_contents(again.fake.chat_requests()[-1]) == ["still there?"]


async def test_a_group_where_the_bot_is_not_addressed_is_kept_as_context(make):
    rig = await make({
        "channels": {"telegram": {"requireMention": True, "groupPolicy": "open"}},
        "messages": {"groupChat": {"historyLimit": 2}},
    })
    group = {"chat": "g1", "kind": "group", "channel": "telegram"}
    await rig.say("lunch at noon?", name="Bob", sender="u2", **group)
    await rig.say("sure", name="Cy", sender="u3", **group)
    await rig.say("pizza then", name="Bob", sender="u2", **group)
    assert rig.fake.chat_requests() == []
    await rig.say("what did we decide?", name="Ada", mentioned=True, **group)
    (request,) = rig.fake.chat_requests()
    text = user_contents(request)[-1]
    assert "[Chat messages since your last reply - for context]" in text
    assert "[Cy]: sure\n[Bob]: pizza then" in text and "lunch" not in text  # only the newest 2 are kept
    assert text.endswith("[Current message - respond to this]\n[Ada]: what did we decide?")
    assert "group chat" in request.json["messages"][0]["content"]


async def test_the_model_is_told_the_date_as_it_changes_and_where_it_is_talking(rig):
    clock = [datetime(2026, 12, 6, 23, 59, 30, tzinfo=timezone.utc)]
    rig.dispatcher.agent.now = lambda: clock[0]
    await rig.say("hi")
    clock[0] += timedelta(minutes=1)  # past midnight: the next turn's prompt has the new day
    await rig.say("and now?")
    first, second = (r.json["messages"][0]["content"] for r in rig.fake.chat_requests())
    assert first.endswith("\n\nToday is Sunday, 06 December 2026. You are talking in a direct chat on test.")
    assert second.endswith("\n\nToday is Monday, 07 December 2026. You are talking in a direct chat on test.")


async def test_fallback_models_answer_when_the_primary_fails_before_speaking(make):
    rig = await make({"agents": {"defaults": {"model": {"primary": "openrouter/openai/gpt-4o-mini",
                                                        "fallbacks": ["openrouter/moonshotai/kimi-k2.6"]}}}})
    rig.fake.queue(Error(503, "no provider"), Text("from the fallback"), Error(401, "bad key"))
    await rig.say("hello")
    assert [r.json["model"] for r in rig.fake.chat_requests()] == ["openai/gpt-4o-mini", "moonshotai/kimi-k2.6"]
    assert rig.channel.texts("c1") == ["from the fallback"]
    await rig.say("again")  # a rejected key is the same for every model: no fallback, a clear sentence
    assert len(rig.fake.chat_requests()) == 3 and "did not accept the API key" in rig.channel.texts("c1")[-1]


async def test_a_fallback_is_asked_to_think_though_the_primary_cannot(make):
    """The catalog's word on the primary (no reasoning) is not carried over to a fallback that has its own."""
    rig = await make({"agents": {"defaults": {"model": {"primary": "openrouter/openai/gpt-4o-mini",
                                                        "fallbacks": ["openrouter/anthropic/claude-sonnet-4.6"]}}}})
    rig.fake.queue(Error(503, "no provider"), Text("from the fallback"))
    await rig.say("/think high")
    await rig.say("hello")
    primary, fallback = rig.fake.chat_requests()
    assert "reasoning" not in primary.json and fallback.json["reasoning"] == {"effort": "high"}
    assert rig.channel.texts("c1")[-1] == "from the fallback"


async def test_a_stale_think_max_is_xhigh_with_a_note(rig):
    await rig.say("/think max")
    assert rig.channel.texts("c1") == ["Thinking for this chat: xhigh.\n(Note: 'max' is now called 'xhigh'.)"]
    await rig.say("/model openrouter/anthropic/claude-sonnet-4.6")
    await rig.say("hi")
    assert rig.fake.chat_requests()[-1].json["reasoning"] == {"effort": "xhigh"}


GEMINI_THOUGHTS = [
    {"type": "reasoning.text", "text": "I should echo it", "signature": "c2lnLWE=", "format": "google-gemini-v1"},
    {"type": "reasoning.encrypted", "data": "ZW5jcnlwdGVk", "format": "google-gemini-v1"},
    {"type": "reasoning.encrypted", "data": "b3RoZXI=", "format": "anthropic-claude-v1"},  # not Gemini's: never replayed
]
REPLAYED = [
    {"type": "reasoning.text", "text": "I should echo it", "signature": "c2lnLWE=", "format": "google-gemini-v1", "index": 0},
    {"type": "reasoning.encrypted", "data": "ZW5jcnlwdGVk", "format": "google-gemini-v1", "index": 1},
]


def assistants(request) -> list[dict[str, Any]]:
    return [m for m in request.json["messages"] if m["role"] == "assistant"]


async def test_gemini_thought_signatures_survive_tool_rounds_and_restarts(make):
    config = {"agents": {"defaults": {"model": {"primary": "openrouter/google/gemini-3.1-pro-preview"}}}}
    rig = await make(config, tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"})], reasoning_details=GEMINI_THOUGHTS), Text("done"))
    await rig.say("echo x")
    (call_round,) = assistants(rig.fake.chat_requests()[1])
    assert call_round["reasoning_details"] == REPLAYED
    assert set(call_round) == {"role", "content", "tool_calls", "reasoning_details"}
    await rig.close()

    again = await make(config, tools=[EchoTool()])
    await again.say("and again")
    replayed = assistants(again.fake.chat_requests()[-1])
    assert [m.get("reasoning_details") for m in replayed] == [REPLAYED, None]


async def test_the_turn_log_sums_tokens_and_cost_over_its_tool_rounds(make, caplog):
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"})], usage={"total_tokens": 120, "cost": 0.25}),
                   Text("done", usage={"total_tokens": 50, "cost": 0.5}))
    with caplog.at_level(logging.DEBUG, logger="chorus.agent"):
        await rig.say("echo x")
    (done,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("turn done")]
    assert done.endswith(" tokens=170 cost=0.75")


async def test_deepseek_keeps_its_own_reasoning_content(make):
    config = {"agents": {"defaults": {"model": {"primary": "openrouter/deepseek/deepseek-v4-flash"}, "thinkingDefault": "high"}}}
    rig = await make(config, tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"})], reasoning="the user wants an echo"), Text("done", reasoning="all set"))
    await rig.say("echo x")
    assert [m["reasoning_content"] for m in assistants(rig.fake.chat_requests()[1])] == ["the user wants an echo"]
    await rig.close()

    again = await make(config, tools=[EchoTool()])
    await again.say("thanks")
    assert [m["reasoning_content"] for m in assistants(again.fake.chat_requests()[-1])] == ["the user wants an echo", "all set"]


async def test_a_crash_mid_answer_ends_the_stream_with_a_sentence_and_keeps_the_users_words(rig):
    closed: list[str] = []

    class Stream:
        """The first stream's channel breaks on the first piece of text, as a buggy adapter would."""

        def __init__(self, explode: bool) -> None:
            self.explode = explode

        async def delta(self, text: str) -> None:
            if self.explode:
                raise RuntimeError("the channel broke")

        async def close(self, reply: Reply) -> None:
            closed.append(reply.text)  # closing is what ends the typing indicator on a real channel

    rig.channel.open_stream = lambda chat, reply_to=None: Stream(explode=not closed)
    await rig.say("hello")
    await rig.say("again")
    assert closed == ["echo\n\n" + CRASHED, "echo: again"]  # what had come, then the sentence
    assert rig.channel.texts("c1") == []  # no second, separate error message
    assert user_contents(rig.fake.chat_requests()[1]) == ["hello", "again"]


async def test_a_crash_before_the_model_is_asked_ends_the_open_stream_once(rig, monkeypatch):
    """The stream (and its typing) opens when the turn starts; a bug before the answer closes it with the
    sentence, so typing stops and the user gets one message, not typing forever plus a separate notice."""
    closed: list[str] = []

    class Stream:
        async def delta(self, text: str) -> None:
            raise AssertionError("nothing was answered")

        async def close(self, reply: Reply) -> None:
            closed.append(reply.text)

    def broken(chat: ChatRef) -> str:
        raise RuntimeError("a bug while preparing the request")

    rig.channel.open_stream = lambda chat, reply_to=None: Stream()
    monkeypatch.setattr(rig.dispatcher.agent, "system_prompt", broken)
    await rig.say("hello")
    assert closed == [CRASHED] and rig.channel.texts("c1") == []
    assert rig.fake.chat_requests() == []


async def test_a_model_without_tool_use_is_asked_without_tools(make):
    """OpenRouter answers tools sent to a model none of whose providers take them with 404 ("No endpoints
    found that support tool use"), every turn, until the chat changes model."""
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(Text("a plain answer"))
    await rig.say("/model openrouter/mistralai/mistral-7b-instruct")
    await rig.say("hello")
    assert rig.channel.texts("c1")[-1] == "a plain answer"
    (request,) = rig.fake.chat_requests()
    assert request.json["model"] == "mistralai/mistral-7b-instruct" and "tools" not in request.json


async def test_a_chat_that_used_tools_and_failed_goes_on_with_a_model_without_tool_use(make):
    """Such a model's chat template takes only user and assistant in turn: the tool round goes to it in words,
    and the words of a failed turn join the next ones, instead of every later turn failing with a 400."""
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "hi"})]), Text("It said hi."), Error(429, "rate limited"),
                   Text("a plain answer"))
    await rig.say("use the tool")
    await rig.say("are you there?")  # fails; the words are kept
    await rig.say("/model openrouter/mistralai/mistral-7b-instruct")
    await rig.say("hello")
    assert rig.channel.texts("c1")[-1] == "a plain answer"
    request = rig.fake.chat_requests()[-1]
    assert "tools" not in request.json
    assert [(m["role"], m["content"]) for m in request.json["messages"][1:]] == [
        ("user", "use the tool"),
        ("assistant", '[echo {"text": "hi"} → echoed: hi]\n\nIt said hi.'),
        ("user", "are you there?\n\nhello"),
    ]
    rig.fake.queue(Text("a second answer"))
    await rig.say("/model openrouter/openai/gpt-4o-mini")
    await rig.say("and now?")  # a model with tool use gets the history as it was stored
    roles = [m["role"] for m in rig.fake.chat_requests()[-1].json["messages"][1:]]
    assert roles == ["user", "assistant", "tool", "assistant", "user", "user", "assistant", "user"]


async def test_a_failed_turn_with_an_image_joins_the_next_for_a_model_without_tool_use(rig):
    """Two user turns in a row where the first is parts (an image and its caption): joined part by part,
    the image told as a note to a model that sees none."""
    rig.fake.queue(Error(429, "rate limited"), Text("a plain answer"))
    photo = Attachment.from_bytes(AttachmentKind.IMAGE, make_png(), mime="image/png")
    await rig.say("what is this?", attachments=[photo])
    await rig.say("/model openrouter/mistralai/mistral-7b-instruct")
    await rig.say("hello")
    assert rig.channel.texts("c1")[-1] == "a plain answer"
    assert rig.fake.chat_requests()[-1].json["messages"][1:] == [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "text", "text": UNSEEN}, {"type": "text", "text": "hello"},
    ]}]


async def test_an_upstream_status_is_named_in_the_sentence(rig):
    """The status picks the sentence: 503 says no provider is free now, and a status OpenRouter documents no
    meaning for is given by number."""
    rig.fake.queue(Error(503, "no provider"), Error(413, "request too large"))
    await rig.say("hello")
    await rig.say("again")
    assert [t.split("\n\n")[0] for t in rig.channel.texts("c1")] == [
        "⚠️ No provider is available for this model right now (no provider). The model's provider is having"
        " trouble; try again shortly or switch models with /model.",
        "⚠️ OpenRouter request failed with HTTP 413 (request too large). Try again in a moment.",
    ]


async def test_group_context_is_given_to_the_model_once(make):
    """What the group said before a mention goes with that mention only, not again with every later one."""
    rig = await make({"channels": {"telegram": {"requireMention": True, "groupPolicy": "open"}}})
    group = {"chat": "g1", "kind": "group", "channel": "telegram"}
    await rig.say("lunch at noon?", name="Bob", sender="u2", **group)
    await rig.say("what did we decide?", name="Ada", mentioned=True, **group)
    await rig.say("and dessert?", name="Ada", mentioned=True, **group)
    assert [user_contents(r) for r in rig.fake.chat_requests()] == [
        ["[Chat messages since your last reply - for context]\n[Bob]: lunch at noon?\n\n"
         "[Current message - respond to this]\n[Ada]: what did we decide?"],
        ["[Chat messages since your last reply - for context]\n[Bob]: lunch at noon?\n\n"
         "[Current message - respond to this]\n[Ada]: what did we decide?", "[Ada]: and dessert?"],
    ]


async def test_text_before_a_tool_call_and_the_answer_after_it_are_apart(make):
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "x"})], content="Let me check."), Text("Done."))
    await rig.say("check it")
    assert rig.channel.texts("c1") == ["Let me check.\n\nDone."]
    assert "".join(rig.channel.streamed["c1"]) == "Let me check.\n\nDone."


async def refused_then_answered(rig: Rig, model: str) -> tuple[Any, Any]:
    """A tool round with the default model, then ``/model``, then "hello": the new model refuses the first
    request and answers the second ("a plain answer"); returns both requests."""
    await rig.say("use the tool")
    await rig.say(f"/model openrouter/{model}")
    await rig.say("hello")
    assert rig.channel.texts("c1")[-1] == "a plain answer"
    refused, answered = rig.fake.chat_requests()[2:]
    return refused, answered


async def test_status_while_an_answer_is_being_written_says_so(rig):
    rig.fake.queue(Hang(30))
    turn = rig.later("write an essay")
    await rig.requests_reach(1)
    await rig.dispatcher.accept(rig.inbound("/status"), rig.channel)
    while not rig.channel.texts("c1"):  # answered at once, even while the turn runs
        await asyncio.sleep(0.01)
    await rig.say("/stop")
    await turn
    assert rig.channel.texts("c1")[:2] == [
        "Model: openrouter/auto\nThinking: off\nSpoken replies: off\n"
        "Session: 0 messages, 0 prompt + 0 completion tokens, $0 so far\nAnswering now (/stop to cancel).",
        "⏹ Stopped.",
    ]


def tool_ids(request) -> list[str]:
    """Every tool-call id a request carries, of the calls and of their results, in order."""
    return [i for m in request.json["messages"]
            for i in [c["id"] for c in m.get("tool_calls") or []] + ([m["tool_call_id"]] if "tool_call_id" in m else [])]


async def test_a_mistral_model_gets_short_tool_ids_after_another_familys_tool_round(make):
    """Mistral's templates refuse any tool-call id that is not 9 letters or digits ("Tool call id was call_2_0
    but must be..."), and OpenRouter passes other families' ids on as they are: without short ids, every turn
    after /model to Mistral in a chat that used a tool failed with a 400."""
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "hi"})]), Text("It said hi."),
                   ToolCalls([("echo", {"text": "again"})]), Text("It said again."), Text("a third answer"))
    await rig.say("use the tool")
    await rig.say("/model openrouter/mistralai/mistral-small-3.2-24b-instruct")
    await rig.say("use it again")  # Mistral's own tool round, after the other family's
    assert rig.channel.texts("c1")[-1] == "It said again."
    first, answer, mistral, mistral_answer = rig.fake.chat_requests()
    assert tool_ids(answer) == ["call_2_0", "call_2_0"]
    short = tool_ids(mistral)
    assert len(short) == 2 and short[0] == short[1] and re.fullmatch(r"[A-Za-z0-9]{9}", short[0])
    assert tool_ids(mistral_answer) == short + ["T00004c00", "T00004c00"]  # Mistral's own id, as it made it
    await rig.say("/model openrouter/openai/gpt-4o-mini")
    await rig.say("and now?")  # history keeps the ids each model made
    assert tool_ids(rig.fake.chat_requests()[-1]) == ["call_2_0", "call_2_0", "T00004c00", "T00004c00"]


async def test_tool_calls_streamed_without_ids_get_ids_unique_in_the_conversation(make):
    """Some hosts stream a tool call with no id. The id made up for it pairs the call with its result, and
    differs from every other in the conversation: one model's ``call_0`` in every round makes a history that
    Anthropic's models refuse after a /model switch."""
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "hi"}), ("echo", {"text": "ho"})], ids=False), Text("Both said."),
                   ToolCalls([("echo", {"text": "again"})], ids=False), Text("Again."))
    await rig.say("use the tool twice")
    await rig.say("and once more")
    assert rig.channel.texts("c1") == ["Both said.", "Again."]
    ids = tool_ids(rig.fake.chat_requests()[-1])
    assert ids == [ids[0], ids[1], ids[0], ids[1], ids[4], ids[4]]  # each result right after its own call
    assert len(set(ids)) == 3 and all(re.fullmatch(r"call_[0-9a-f]{24}", i) for i in ids)


async def test_a_tool_name_sent_again_with_every_piece_of_the_call_is_read_once(make):
    """Some hosts stream the call's id and whole name again with each piece of its arguments; joined, they
    made "echoecho", a tool nobody has."""
    rig = await make(tools=[EchoTool()])
    rig.fake.queue(ToolCalls([("echo", {"text": "hi there"})], repeat_name=True), Text("Echoed."))
    await rig.say("use the tool")
    assert rig.channel.texts("c1") == ["Echoed."]
    *_, asked, answered = rig.fake.chat_requests()[1].json["messages"]
    (call,) = asked["tool_calls"]
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == ("echo", {"text": "hi there"})
    assert (answered["tool_call_id"], answered["content"]) == (call["id"], "echoed: hi there")


async def test_a_model_on_mistrals_templates_under_another_name_is_asked_again_with_short_ids(make):
    """A host of Mistral's weights under a name that does not say so: its refusal is the cue."""
    rig = await make(tools=[EchoTool()])
    gpt = next(m for m in rig.fake.models if m["id"] == "openai/gpt-4o-mini")
    rig.fake.models.append({**gpt, "id": "acme/tekken-chat", "name": "Acme Tekken Chat"})
    rig.fake.mistral_templates.add("acme/tekken-chat")
    rig.fake.queue(ToolCalls([("echo", {"text": "hi"})]), Text("It said hi."), Text("a plain answer"))
    refused, answered = await refused_then_answered(rig, "acme/tekken-chat")
    assert tool_ids(refused) == ["call_2_0", "call_2_0"]
    assert [re.fullmatch(r"[A-Za-z0-9]{9}", i) is not None for i in tool_ids(answered)] == [True, True]


async def test_an_answer_cut_short_says_so_and_history_keeps_only_the_answer(rig):
    """A reply stopped by the output limit (or a content filter) reads like a finished one unless it says why."""
    rig.fake.queue(Text("Step 1: open the", finish="length"), Text("No.", finish="content_filter"), Text("ok"))
    await rig.say("explain")
    await rig.say("and?")
    await rig.say("continue")
    assert rig.channel.texts("c1") == [
        "Step 1: open the\n\n(The answer reached the model's length limit here. Say \"continue\" for the rest.)",
        "No.\n\n(The model's provider stopped the answer here with its content filter.)",
        "ok",
    ]
    sent = [m["content"] for m in rig.fake.chat_requests()[-1].json["messages"] if m["role"] == "assistant"]
    assert sent == ["Step 1: open the", "No."]


async def test_a_model_that_thought_until_its_limit_says_what_to_change(rig):
    rig.fake.queue(Text("", reasoning="Let me consider every case in turn. " * 50, finish="length"))
    await rig.say("prove it")
    assert rig.channel.texts("c1")[-1] == (
        "⚠️ The model sent back an empty answer (its output limit ran out while it was thinking; /think low leaves"
        " more for the answer). Try again, or rephrase, or switch models with /model.")


async def test_an_upstream_providers_own_words_reach_the_user(rig):
    """OpenRouter wraps a provider's refusal as "Provider returned error"; what the provider said is in
    ``metadata.raw``, and that is what tells the user what to change."""
    rig.fake.queue(Error(400, "Provider returned error", metadata={
        "provider_name": "Acme", "raw": '{"error":{"message":"prompt is too long: 210000 tokens > 200000 maximum"}}'}))
    await rig.say("hello")
    assert rig.channel.texts("c1")[-1].startswith(
        "⚠️ The model's provider refused the request (Provider returned error: Acme said prompt is too long: 210000"
        " tokens > 200000 maximum). Start over with /new, or switch models with /model.")


async def test_a_model_the_catalog_does_not_describe_that_refuses_tools_is_asked_again_without(make):
    rig = await make(tools=[EchoTool()])
    for model in rig.fake.models:
        if model["id"] == "mistralai/mistral-7b-instruct":
            model["supported_parameters"] = []  # the catalog says nothing; the model takes no tools
    rig.fake.queue(ToolCalls([("echo", {"text": "hi"})]), Text("It said hi."), Text("a plain answer"))
    refused, answered = await refused_then_answered(rig, "mistralai/mistral-7b-instruct")
    assert refused.json["tools"][0]["function"]["name"] == "echo" and "tools" not in answered.json
    assert [m["role"] for m in answered.json["messages"]] == ["system", "user", "assistant", "user"]  # told in words
