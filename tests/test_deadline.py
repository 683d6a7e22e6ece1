"""``net.deadline.MovingDeadline``: one timer bounds a stream's waits, however often the deadline moves."""

from __future__ import annotations

import asyncio
import time

import pytest

from net.deadline import MovingDeadline


def soon(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_a_wait_past_the_deadline_ends_with_a_timeout_error():
    started = time.monotonic()
    with MovingDeadline(soon(0.1)) as deadline, pytest.raises(TimeoutError):
        await deadline.wait(asyncio.sleep(30))
    assert time.monotonic() - started < 5


async def test_a_deadline_moved_later_lets_the_wait_run_past_the_first_one():
    with MovingDeadline(soon(0.1)) as deadline:
        for _ in range(4):  # 0.4 s in all, each wait well within its moved deadline
            deadline.move(soon(0.2))
            assert await deadline.wait(asyncio.sleep(0.1, "on time")) == "on time"


async def test_a_deadline_moved_earlier_ends_the_wait_by_the_new_one():
    started = time.monotonic()
    with MovingDeadline(soon(60)) as deadline, pytest.raises(TimeoutError):
        deadline.move(soon(0.1))
        await deadline.wait(asyncio.sleep(30))
    assert time.monotonic() - started < 5


async def test_the_callers_own_work_is_not_timed_but_an_empty_wait_after_it_ends_at_once():
    ready = asyncio.get_running_loop().create_future()
    ready.set_result("buffered")
    with MovingDeadline(soon(0.05)) as deadline:
        await asyncio.sleep(0.2)  # the caller's own work, past the deadline: no wait runs, nothing is ended
        assert await deadline.wait(ready) == "buffered"  # what is there already is taken
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadline.wait(asyncio.sleep(30))  # a wait that has to suspend ends at the next turn of the loop
        assert time.monotonic() - started < 5


async def test_a_cancellation_from_outside_stays_a_cancellation():
    async def waiting() -> None:
        with MovingDeadline(soon(60)) as deadline:
            await deadline.wait(asyncio.sleep(30))

    task = asyncio.create_task(waiting())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_outside_when_the_deadline_fires_stays_a_cancellation():
    """A /stop that lands in the very turn of the loop the deadline fires in is still a /stop."""
    async def waiting() -> None:
        when = soon(0.05)
        with MovingDeadline(when) as deadline:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().call_at(when, task.cancel)
            await deadline.wait(asyncio.sleep(30))

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(waiting())
