"""The chat commands as a console user meets them in the real ``chorus run``: what /status, /stop and /help
say, word for word."""

from __future__ import annotations

from tests.conftest import chorus, eventually, onboarded
from tests.service import start_chorus
from tests.fakes.openrouter import Hang, Text


async def test_status_shows_what_a_cheap_turn_cost_and_counts_messages_in_good_english(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(Hang(300))
    stopped = await chorus(home, "run", stdin="write an essay\n/stop\n/status\n")
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
    assert "/voice PATH, /image PATH — send a voice note or a picture from a file" in lines
    assert "/quit — leave (also /exit, or Ctrl-D)" in lines
