"""A deadline for the waits of a long exchange (a streamed answer): moved often, timed by one timer.

``asyncio.timeout`` around each read of a stream makes a timer per read, and a timer made and cancelled is
~3 µs; a turn's stream has a dozen reads. ``MovingDeadline`` keeps one timer per stream: moving the deadline
is storing a number, and the timer, when it fires early, re-arms itself for the deadline as it now stands
(it is re-armed at once only when the deadline moves earlier: from the first byte's to the idle one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")


class MovingDeadline:
    """Bounds the waits run through ``wait`` by ``deadline`` (loop time; moved by ``move``). Only those waits
    are timed, never the caller's own work between them: a deadline that passes while no wait runs ends the
    next wait that has to suspend, as an ``asyncio.timeout`` already expired would. Use it as a context
    manager in the task that waits; on the way out its timer is cancelled."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        assert self._task is not None, "a MovingDeadline waits in a task"
        self._waiting = False
        self._fired = False  # the timer cancelled the task; the next CancelledError of the wait is ours
        self._late = False  # the deadline passed while no wait ran
        self._armed = deadline  # when the timer fires
        self._timer: asyncio.Handle = self._loop.call_at(deadline, self._check)

    def __enter__(self) -> MovingDeadline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()

    def move(self, deadline: float) -> None:
        """From now on, waits end at ``deadline``."""
        self.deadline = deadline
        if deadline < self._armed:
            self._timer.cancel()
            self._arm()

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or ``TimeoutError`` when the deadline passes first."""
        task = self._task
        assert task is not None
        if self._late:  # checked once the loop comes round: by then this wait has suspended or returned
            self._late = False
            self._armed, self._timer = self._loop.time(), self._loop.call_soon(self._check)
        cancelling = task.cancelling()
        self._waiting = True
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if task.uncancel() <= cancelling:  # our cancellation alone, not the task's own (a /stop)
                    raise TimeoutError from None
            raise
        finally:
            self._waiting = False

    def _check(self) -> None:
        if self._loop.time() < self.deadline:  # moved since the timer was set
            self._arm()
        elif self._waiting:
            assert self._task is not None
            self._fired = True
            self._task.cancel()
        else:
            self._late = True

    def _arm(self) -> None:
        self._armed = self.deadline
        self._timer = self._loop.call_at(self.deadline, self._check)
