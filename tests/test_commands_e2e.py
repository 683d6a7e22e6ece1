"""The chat commands as a console user meets them in the real ``chorus run``: what /status, /stop and /help
say, word for word."""

from __future__ import annotations

from tests.conftest import chorus, eventually, onboarded
from tests.service import start_chorus
from tests.fakes.openrouter import Hang, Text


async def test_status_shows_what_a_cheap_turn_cost_and_counts_messages_in_good_english(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Hang(300))
    service = await start_chorus(home, "run")
    await service.say("write an essay")
    await service.say("/stop")
    await eventually(lambda: "Stopped." in service.out, "the stop")  # /status after it, not while it stops
    await service.say("/status")
    stopped = await service.finish()
    fake_openrouter.answers.clear()  # the hang is unused when /stop came before the model was asked
    assert "Session: 1 message, 0 prompt + 0 completion tokens, $0 so far" in stopped.out, stopped.out
    fake_openrouter.queue(Text("cheap", usage={"prompt_tokens": 12, "completion_tokens": 3, "cost": 0.00042}))
    service = await start_chorus(home, "run")
    await service.say("hi")
    await eventually(lambda: "cheap" in service.out, "the answer")  # /status after it, not while it runs
    await service.say("/status")
    result = await service.finish()
    assert "Session: 3 messages, 12 prompt + 3 completion tokens, $0.00042 so far" in result.out, result.out


async def test_stop_is_answered_by_one_message_and_help_lists_the_consoles_own_commands(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Hang(300))
    result = await chorus(home, "run", stdin="write an essay\n/stop\n")
    fake_openrouter.answers.clear()
    assert result.out.splitlines() == ["⏹ Stopped."], result.out
    result = await chorus(home, "run", stdin="/stop\n/help\n")
    lines = result.out.splitlines()
    assert lines[0] == "Nothing to stop.", result.out
    assert "/voice PATH, /image PATH, /file PATH — send a voice note, a picture or a document (text, PDF)" in lines
    assert "/quit — leave (also /exit, or Ctrl-D)" in lines


async def test_model_lists_the_choices_and_takes_openrouters_own_ids(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    result = await chorus(home, "run", stdin="/model\n/model anthropic/claude-sonnet-4.6\nhi\n")
    lines = result.out.splitlines()
    assert lines[:2] == ["Model: openrouter/auto",
                         "Choose with /model REF (OpenRouter's own ids work too, e.g. anthropic/claude-sonnet-4.5):"]
    offered = [line for line in lines if line.startswith("• ")]
    for ref in ("openrouter/auto (takes images, current)", "openrouter/openrouter/fusion",
                "openrouter/moonshotai/kimi-k2.6 (takes images)", "openrouter/moonshotai/kimi-k2.5 (takes images)",
                "openrouter/openrouter/healer-alpha (takes images and audio)"):
        assert f"• {ref}" in offered, offered
    assert "Model for this chat set to openrouter/anthropic/claude-sonnet-4.6." in lines
    assert fake_openrouter.chat_requests()[-1].json["model"] == "anthropic/claude-sonnet-4.6"


GEMINI_THOUGHTS = [
    {"type": "reasoning.text", "text": "Gemini's own thought", "signature": "c2lnLWE=", "format": "google-gemini-v1"},
]


async def test_switching_models_never_replays_one_familys_reasoning_to_another(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, agents={"defaults": {"model": {"primary": "openrouter/google/gemini-3.1-pro-preview"}}})
    fake_openrouter.queue(Text("from gemini", reasoning="Gemini's own thought", reasoning_details=GEMINI_THOUGHTS))
    result = await chorus(home, "run", stdin="hi\nagain, gemini\n/model openrouter/deepseek/deepseek-v4-flash\n"
                                              "now deepseek\n/model openrouter/moonshotai/kimi-k2.6\nnow kimi\n")
    assert result.code == 0, result.err
    gemini, deepseek, kimi = fake_openrouter.chat_requests()[1:]

    def first_answer(request) -> dict:
        return next(m for m in request.json["messages"] if m["role"] == "assistant")

    assert first_answer(gemini)["reasoning_details"][0]["signature"] == "c2lnLWE="  # Gemini gets its own back
    assert "reasoning_details" not in first_answer(deepseek) and first_answer(deepseek).get("reasoning_content", "") == ""
    assert "reasoning_details" not in first_answer(kimi) and "reasoning_content" not in first_answer(kimi)
    assert "Gemini's own thought" not in str(deepseek.json) + str(kimi.json)


async def test_a_document_over_max_bytes_gets_a_sentence_and_is_not_read(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, tools={"media": {"document": {"maxBytes": 100}}})
    small, big = home.path.parent / "small.md", home.path.parent / "big.txt"
    small.write_text("# Plan\nship it")
    big.write_text("x" * 200)
    result = await chorus(home, "run", stdin=f"/file {big}\n/file {small}\n")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "big.txt is too large for me to read (200 bytes; the limit is 100 bytes)."
    (request,) = fake_openrouter.chat_requests()  # the big one never reached the model
    assert request.json["messages"][-1]["content"] == "[File small.md]\n# Plan\nship it\n[End of small.md]"
