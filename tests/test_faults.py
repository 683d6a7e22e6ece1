"""The fault matrix: the real ``chorus`` process between a console pipe and a misbehaving fake OpenRouter.

Each test asserts what the user sees, that no accepted message is lost and that none is answered twice.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import time

from tests.conftest import chorus, eventually, onboarded
from tests.service import start_chorus
from tests.fakes.openrouter import Error, Hang, RawSSE, Text


def user_texts(request) -> list[str]:
    return [m["content"] for m in request.json["messages"] if m["role"] == "user"]


def inbox(home) -> list[tuple[str, str]]:
    """(text, status) of every message the service accepted, oldest first."""
    path = home.path / "chorus.db"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT text, status FROM inbox ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # not migrated yet
            return []


def answers(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("echo: ")]


async def setup(home, fake, **openrouter) -> None:
    await onboarded(home, fake)
    home.write_config(fake, models={"providers": {"openrouter": {"maxRetries": 0, **openrouter}}})


# ---- accepting is not answering ---------------------------------------------------------------


async def test_stop_is_read_while_the_answer_is_still_coming(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(Hang(300))
    started = time.monotonic()
    result = await chorus(home, "run", stdin="write an essay\n/stop\n")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["⏹ Stopped."], result.err  # one message answers /stop
    assert time.monotonic() - started < 60  # far sooner than the 300 s answer (a loose bound: CI may be busy)
    fake_openrouter.answers.clear()  # the hang is unused when /stop came before the model was asked
    await chorus(home, "run", stdin="go on\n")  # the stopped words are kept for the next turn
    assert user_texts(fake_openrouter.chat_requests()[-1]) == ["write an essay", "go on"]


async def test_lines_sent_during_a_turn_are_durable_and_answered_once_after_kill_9(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(Hang(60))
    service = await start_chorus(home, "run")
    await service.say("first", "second", "third")
    await eventually(lambda: fake_openrouter.chat_requests(), "the first turn to reach the model")
    await eventually(lambda: len(inbox(home)) == 3, "all three lines in the inbox")
    await service.kill()
    assert inbox(home) == [("first", "pending"), ("second", "pending"), ("third", "pending")]

    restarted = await chorus(home, "run", stdin="")
    assert restarted.code == 0, restarted.err
    assert answers(restarted.out) == ["echo: first", "echo: second", "echo: third"]
    assert [t for t, _ in inbox(home)] == ["first", "second", "third"]
    assert {s for _, s in inbox(home)} == {"done"}
    again = await chorus(home, "run", stdin="")
    assert answers(again.out) == []


# ---- one process per state directory ----------------------------------------------------------


async def test_a_second_service_on_the_same_state_dir_refuses_with_the_first_ones_pid(home, fake_openrouter):
    await setup(home, fake_openrouter)
    first = await start_chorus(home, "run")
    await first.say("hello")
    await eventually(lambda: inbox(home) == [("hello", "done")], "the first service to answer")

    second = await chorus(home, "run", stdin="steal this\n")
    assert second.code == 2
    assert second.err.strip() == (
        f"error: Chorus is already running on {home.path} (pid {first.pid}). "
        "Stop it first, or give this one its own CHORUS_HOME."
    )
    doctor = await chorus(home, "doctor")
    assert f"ok   service: running on this state directory (pid {first.pid})" in doctor.out.splitlines()

    done = await first.finish()
    assert answers(done.out) == ["echo: hello"]
    assert [t for t, _ in inbox(home)] == ["hello"]  # the second one took nothing
    doctor = await chorus(home, "doctor")
    assert "ok   service: not running on this state directory" in doctor.out.splitlines()


async def test_two_processes_migrating_a_fresh_state_dir_do_not_race(home, fake_openrouter):
    await setup(home, fake_openrouter)
    results = await asyncio.gather(*(chorus(home, "doctor") for _ in range(3)))
    for result in results:
        assert result.code == 0, result.out + result.err
        assert "already exists" not in result.out


# ---- a failed turn must not poison the session ------------------------------------------------


async def test_a_refused_message_is_kept_but_not_resent_so_rephrasing_works(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(Error(403, "Input flagged by moderation"))
    result = await chorus(home, "run", stdin="something flagged\nsomething else\n")
    assert result.out.splitlines() == [
        "⚠️ OpenRouter's moderation flagged the input (Input flagged by moderation). Rephrase the message.",
        "",
        "(That message is kept, but I will leave it out of our conversation from now on, so it cannot break the next one.)",
        "echo: something else",
    ]
    assert user_texts(fake_openrouter.chat_requests()[1]) == ["something else"]


# ---- streams must be complete to count --------------------------------------------------------


async def test_a_stream_cut_off_before_any_text_is_tried_again(home, fake_openrouter):
    await setup(home, fake_openrouter, maxRetries=1)
    fake_openrouter.queue(RawSSE([RawSSE.content("")]), Text("The whole answer."))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines() == [
        "[⏳ The answer was cut off before it was complete; trying again in 0 s…]", "The whole answer.",
    ]
    assert len(fake_openrouter.chat_requests()) == 2


async def test_a_stream_cut_off_mid_answer_says_so_and_keeps_the_user_text(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(RawSSE([RawSSE.content("Half an ans")]))
    result = await chorus(home, "run", stdin="tell me\nand then?\n")
    assert result.out.splitlines()[:3] == [
        "Half an ans",
        "",
        "⚠️ The answer was cut off before it was complete (the stream ended without a finish reason). Try again.",
    ]
    # A cut-off stream is transient: the user's words stay in the conversation (the partial answer does not).
    assert [(m["role"], m["content"]) for m in fake_openrouter.chat_requests()[1].json["messages"][1:]] == [
        ("user", "tell me"), ("user", "and then?"),
    ]


async def test_malformed_json_in_the_stream_is_a_sentence_not_a_traceback(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(RawSSE([RawSSE.content("Partly"), "data: {not json"]))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.code == 0
    assert result.out.splitlines() == [
        "Partly", "",
        "⚠️ The answer was cut off before it was complete (the provider sent malformed data). Try again.",
    ]
    assert "Traceback" not in result.err and "went wrong on my side" not in result.out


async def test_an_empty_stream_is_not_silence(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(RawSSE(["data: [DONE]"]), RawSSE([RawSSE.content("", "stop"), "data: [DONE]"]))
    result = await chorus(home, "run", stdin="one\ntwo\n")
    empty = "⚠️ The model sent back an empty answer. Try again, or rephrase, or switch models with /model."
    assert result.out.splitlines() == [empty, empty]


# ---- never silent for minutes, never stuck forever --------------------------------------------


async def test_keepalive_comments_alone_do_not_hold_a_turn_forever(home, fake_openrouter):
    await setup(home, fake_openrouter, firstByteTimeoutMs=600)
    fake_openrouter.queue(RawSSE([": OPENROUTER PROCESSING"] * 1200, pause=0.1))  # 120 s of keep-alives
    started = time.monotonic()
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines() == [
        "⚠️ The model took too long to answer (nothing within 0.6 s). Try again in a moment."
    ]
    assert time.monotonic() - started < 60


async def test_a_stream_that_goes_silent_midway_ends_at_the_idle_timeout(home, fake_openrouter):
    await setup(home, fake_openrouter, idleTimeoutMs=500)
    fake_openrouter.queue(RawSSE([RawSSE.content("Still ")] + [": OPENROUTER PROCESSING"] * 40, pause=0.1))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines() == [
        "Still ", "", "⚠️ The answer was cut off before it was complete (no data for 0.5 s). Try again.",
    ]


async def test_a_hanging_upstream_is_bounded_by_the_first_byte_timeout(home, fake_openrouter):
    await setup(home, fake_openrouter, maxRetries=3, firstByteTimeoutMs=300, retryBudgetMs=1000)
    fake_openrouter.queue(Hang(300), Hang(300), Hang(300), Hang(300))
    started = time.monotonic()
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines()[-1] == "⚠️ The model took too long to answer (nothing within 0.3 s). Try again in a moment."
    assert time.monotonic() - started < 60  # not 4 × 300 s


async def test_a_long_retry_after_fails_at_once_and_names_the_wait(home, fake_openrouter):
    await setup(home, fake_openrouter, maxRetries=3, retryBudgetMs=5000)
    fake_openrouter.queue(Error(429, "Rate limit exceeded", retry_after=100))
    started = time.monotonic()
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines() == [
        "⚠️ OpenRouter is rate limiting requests (Rate limit exceeded). Try again in 100 s, or switch models with /model."
    ]
    assert len(fake_openrouter.chat_requests()) == 1
    assert time.monotonic() - started < 60  # not after a 100 s wait


async def test_a_short_retry_after_is_announced_then_waited(home, fake_openrouter):
    await setup(home, fake_openrouter, maxRetries=1, retryBudgetMs=10_000)
    fake_openrouter.queue(Error(429, "Rate limit exceeded", retry_after=1), Text("Made it."))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.out.splitlines() == [
        "[⏳ OpenRouter is rate limiting requests; trying again in 1 s…]", "Made it.",
    ]
    first, second = fake_openrouter.chat_requests()
    assert second.at - first.at >= 1.0


# ---- bad input --------------------------------------------------------------------------------


async def test_invalid_utf8_on_the_console_is_replaced_not_fatal(home, fake_openrouter):
    await setup(home, fake_openrouter)
    service = await start_chorus(home, "run")
    await service.say(b"caf\xe9 \xff ok", "second")
    result = await service.finish()
    assert result.code == 0, result.err
    assert answers(result.out) == ["echo: caf\ufffd \ufffd ok", "echo: second"]


async def test_a_lone_surrogate_from_the_model_does_not_crash_the_console(home, fake_openrouter):
    await setup(home, fake_openrouter)
    fake_openrouter.queue(Text("bad \ud800 char"))
    result = await chorus(home, "run", stdin="hi\nagain\n")
    assert result.code == 0, result.err
    assert result.out.splitlines() == ["bad ? char", "echo: again"]


async def test_a_full_disk_loses_a_message_loudly_and_the_service_recovers(home, fake_openrouter):
    await setup(home, fake_openrouter)
    service = await start_chorus(home, "run")
    await service.say("before")
    await eventually(lambda: inbox(home) == [("before", "done")], "the first message to be answered")
    # The kernel's file-size limit on the running process stands in for a full disk: every write past
    # the files' current ends fails as it would with ENOSPC, and raising it again is "space returns".
    resource.prlimit(service.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
    await service.say("during")
    await eventually(lambda: "could not save your message" in service.out, "the warning that it was lost")
    resource.prlimit(service.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    await service.say("after")
    result = await service.finish()
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "echo: before",
        "⚠️ I could not save your message (the disk is full or the database cannot be written), "
        "so I cannot answer it; please send it again in a moment.",
        "echo: after",
    ]
    assert inbox(home) == [("before", "done"), ("after", "done")]
