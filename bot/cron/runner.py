"""Firing jobs: a loop that sleeps until the next due row (woken when a job is made), claims each firing with
one conditional UPDATE, and runs it as an agent turn in the job's chat.

Why not APScheduler's job store: the database is the truth here, shared by the CLI and (later) by several
instances; a firing must be claimed in the same row that says when it is due, and a missed one judged against
``cron.misfireGraceMs``. A loop over that row needs none of a second, in-memory copy of the schedule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.base import Inbound

from ..db.base import DB_ERRORS
from ..outage import Outage
from .jobs import CronJob, CronJobs
from .schedule import duration, local_text

log = logging.getLogger("chorus.cron")

BACKOFF = (30.0, 60.0, 300.0, 900.0, 3600.0)  # seconds after the 1st, 2nd, ... failure in a row
LATE_AFTER = 60.0  # a run this much past its time (a busy or sleeping machine) is told it is late
POLL = 5.0  # at most this long between looks at the table: jobs made or moved by another process (the CLI)
Fire = Callable[[CronJob, "float | None"], Awaitable[bool]]  # the job, how late (None: on time) -> succeeded


def run_prompt(job: CronJob, late: float | None) -> str:
    """What the model reads when a job fires: a short note that this is a scheduled run, then the job's message."""
    made = f"job {job.label}" + (f", set by {job.creator_name}" if job.creator_name else "")
    note = (f"[Scheduled run of {made}. Nobody wrote just now: this is the task you were asked to do at this "
            f"time. Do it, or for a reminder, remind them now.]")
    if late is not None:
        note += (f"\n[It is late: it was due {duration(late)} ago, when the service was not running. "
                 "Say that it comes late.]")
    return f"{note}\n\n{job.message}"


def as_turns(run_scheduled: Callable[[Inbound], Awaitable[bool]]) -> Fire:
    """Fire jobs as agent turns in their chats (``Dispatcher.run_scheduled``): streamed, spoken per /tts."""

    async def fire(job: CronJob, late: float | None) -> bool:
        return await run_scheduled(Inbound(chat=job.chat, sender_id=job.creator_id, sender_name=job.creator_name,
                                           text=run_prompt(job, late), mentioned=True, scheduled=True))

    return fire


class CronRunner:
    """Fires due jobs of the channels running here; ``clock`` is injectable (tests move it)."""

    def __init__(self, jobs: CronJobs, fire: Fire, channels: Callable[[], set[str]], *, grace: float,
                 clock: Callable[[], float] = time.time, poll: float = POLL) -> None:
        self.jobs = jobs
        self.fire = fire
        self.channels = channels
        self.grace = grace
        self.clock = clock
        self.poll = poll
        self.started = clock()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._firing: set[asyncio.Task[Any]] = set()
        self._running: set[int] = set()  # ids of the jobs whose run is under way here
        self.outage = Outage(log, "cron")

    async def start(self) -> None:
        """Start firing; a run missed while the service was down is due at once (late, or skipped past grace)."""
        self.started = self.clock()
        self._loop_task = asyncio.create_task(self._loop(), name="cron")

    def wake(self) -> None:
        """A job was made or changed here: look at the table again now."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop; a run cut off mid-way gives its firing back, so the next start runs it (marked late)."""
        tasks = [t for t in (self._loop_task, *self._firing) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run_due(self) -> list[asyncio.Task[None]]:
        """Claim every job due now and start its run; returns the runs started."""
        now = self.clock()
        started = []
        for job in await self.jobs.due(now, self.channels()):
            assert job.next_run_at is not None
            due, late = job.next_run_at, now - job.next_run_at
            later = job.schedule.after(now) if job.schedule.recurring else None
            if late > self.grace:
                await self._skip(job, late, later, now)
                continue
            if not await self.jobs.move(job, later):
                continue  # another instance, or an earlier look, has it
            if job.id in self._running:  # its last run is still going (a slow model): this firing is dropped
                log.warning("cron job %s still running; skipped its firing due %s", job.label, local_text(due, job.schedule.tz))
                continue
            missed = late if due < self.started or late > LATE_AFTER else None
            task = asyncio.create_task(self._run(job, due, later, missed), name=f"cron:{job.id}")
            self._firing.add(task)
            self._running.add(job.id)
            task.add_done_callback(lambda done, job_id=job.id: (self._firing.discard(done), self._running.discard(job_id)))
            started.append(task)
        return started

    async def _loop(self) -> None:
        while True:
            self._wake.clear()  # before looking: a job made while we look wakes the next wait
            upcoming: float | None = None
            try:
                await self.run_due()
                upcoming = await self.jobs.next_due(self.channels())
            except DB_ERRORS as exc:  # the database away: said once per outage, tried again at each poll
                self.outage.failed(exc)
            except Exception:  # a bug: with its traceback, tried again at the next poll
                log.exception("could not look for due cron jobs")
            else:
                self.outage.answered()
            wait = self.poll if upcoming is None else min(self.poll, max(0.0, upcoming - self.clock()))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass

    async def _skip(self, job: CronJob, late: float, later: float | None, now: float) -> None:
        if not await self.jobs.move(job, later):
            return
        log.warning("cron job %s skipped channel=%s chat=%s: due %s ago, past cron.misfireGraceMs (%s)",
                    job.label, job.chat.channel, job.chat.chat_id, duration(late), duration(self.grace))
        await self.jobs.ran(job, now, "skipped", f"missed by {duration(late)}", job.failures, None,
                            delete=not job.schedule.recurring)

    async def _run(self, job: CronJob, due: float, claimed: float | None, late: float | None) -> None:
        log.info("cron job %s firing channel=%s chat=%s%s", job.label, job.chat.channel, job.chat.chat_id,
                 f" ({duration(late)} late)" if late is not None else "")
        error: str | None = None
        try:
            ok = await self.fire(job, late)
            error = None if ok else "the turn failed"
        except asyncio.CancelledError:
            # Stopped mid-run (shutdown): the firing goes back, unless the row changed meanwhile.
            await asyncio.shield(self.jobs.move(job, due, expect=claimed))
            raise
        except Exception as exc:
            log.exception("cron job %s could not run channel=%s chat=%s", job.label, job.chat.channel, job.chat.chat_id)
            ok, error = False, str(exc) or type(exc).__name__
        now = self.clock()
        if ok:
            await self.jobs.ran(job, now, "ok", None, 0, None, delete=not job.schedule.recurring)
            return
        failures = job.failures + 1
        if not job.schedule.recurring and failures > len(BACKOFF):
            log.error("cron job %s failed %d times; given up channel=%s chat=%s", job.label, failures,
                      job.chat.channel, job.chat.chat_id)
            await self.jobs.ran(job, now, "failed", error, failures, None, delete=True)
            return
        retry = now + BACKOFF[min(failures, len(BACKOFF)) - 1]
        after = retry if claimed is None else max(claimed, retry)  # backing off slows a job, never hurries it
        log.warning("cron job %s failed (%s); next try %s", job.label, error, local_text(after, job.schedule.tz))
        await self.jobs.ran(job, now, "failed", error, failures, after)
