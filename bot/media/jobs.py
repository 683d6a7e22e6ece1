"""Durable media jobs: a video is submitted during a turn and delivered when ready, even after a restart.

With several instances on one database every instance polls the due jobs; each check (a poll, and the
delivery when the video is done) is claimed first by one conditional UPDATE that moves the job's
``next_poll_at`` on where it still is what was read, so one instance checks it and delivers it once. A job
whose checker died is due again at the next heartbeat (``release``); one whose submitter died is simply
polled by another instance.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from channels.base import AttachmentKind, ChatRef, Media, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.video import VideoJob, download_video, poll_video

from ..cluster import Cluster, Solo, orphaned
from ..db.base import DB_ERRORS, utc_now
from ..outage import Outage
from ..store import Store

log = logging.getLogger("chorus.media_jobs")
Deliver = Callable[[ChatRef, Reply], Awaitable[None]]
CLAIM = 900.0  # seconds a check may take (a poll, a download, the delivery) before another instance may retry it


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: int
    chat: ChatRef
    reply_to: str | None
    job: VideoJob
    prompt: str
    attempts: int
    deadline: float
    due: float  # its next_poll_at as read: the claim moves it on only where it still is this


class MediaJobs:
    """Polls pending jobs with backoff on an APScheduler interval job; each finished job is reported once."""

    def __init__(self, store: Store, llm: OpenRouterClient, deliver: Deliver, *, poll_interval: float = 10.0,
                 max_interval: float = 60.0, clock: Callable[[], float] = time.time,
                 cluster: Cluster | None = None) -> None:
        self.store = store
        self.llm = llm
        self.deliver = deliver
        self.poll_interval = poll_interval
        self.max_interval = max_interval
        self.clock = clock
        self.cluster = cluster or Solo()
        self.scheduler: AsyncIOScheduler | None = None
        self._ticking: asyncio.Task[Any] | None = None
        self.outage = Outage(log, "video jobs")

    async def start(self) -> None:
        """Start polling; jobs an earlier run left pending are due at once, whatever their schedule was (on a
        shared database: those whose checker died; the others are being checked)."""
        if self.cluster.shared:
            await self.release()
        else:
            now = self.clock()
            await self.store.write(lambda tx: tx.execute(
                "UPDATE media_jobs SET next_poll_at = ?, claimed_by = NULL WHERE status = 'pending'", now))
        self.scheduler = AsyncIOScheduler()
        self.scheduler.add_job(self.tick, "interval", seconds=self.poll_interval, max_instances=1, coalesce=True,
                               next_run_time=datetime.now().astimezone())
        self.scheduler.start()

    async def stop(self) -> None:
        """Stop polling, and end a check under way before the store it writes to is closed."""
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._ticking is not None and not self._ticking.done():
            await asyncio.wait({self._ticking}, timeout=5)  # most checks are one quick poll
            self._ticking.cancel()  # a long download: the job stays pending and is checked at the next start
            await asyncio.gather(self._ticking, return_exceptions=True)

    async def submit(self, chat: ChatRef, reply_to: str | None, job: VideoJob, model: str, prompt: str,
                     timeout: float) -> int:
        """Record a submitted job; it is polled from now on."""
        now = self.clock()
        row_id = await self.store.write(lambda tx: tx.fetchval(
            "INSERT INTO media_jobs (channel, chat_id, thread_id, chat_kind, reply_to, job_id, polling_url, model,"
            " prompt, next_poll_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            chat.channel, chat.chat_id, chat.thread_id, chat.kind, reply_to, job.id, job.polling_url, model,
            prompt, now + self.poll_interval, now + timeout))
        log.info("video job %s submitted channel=%s chat=%s", job.id, chat.channel, chat.chat_id)
        return int(row_id)

    async def release(self) -> None:
        """(A shared database, at start and each heartbeat) the jobs whose checker died are due now."""
        now = self.clock()
        freed = await self.store.write(lambda tx: tx.execute(
            "UPDATE media_jobs SET next_poll_at = ?, claimed_by = NULL WHERE status = 'pending'"
            f" AND claimed_by IS NOT NULL AND {orphaned('claimed_by')}", now, self.cluster.lease))
        if freed:
            log.info("%d video job(s) of an instance that stopped are checked again here", freed)

    async def tick(self) -> None:
        """Check every job that is due and not taken by another instance meanwhile; while the database cannot be
        reached, none (said when that begins and when it ends: ``Outage``)."""
        self._ticking = asyncio.current_task()
        try:
            for job in await self._due():
                if await self._claim(job):
                    await self._checked(job)
        except DB_ERRORS as exc:  # the next tick looks again
            self.outage.failed(exc)
            return
        self.outage.answered()

    async def _checked(self, job: PendingJob) -> None:
        """``_check``; one that fails (the channel not running) leaves the job due again as it was, and the
        others are checked: one bad job must not stop them."""
        try:
            await self._check(job)
        except DB_ERRORS:
            raise  # the database went away: its claim runs out (CLAIM) and the job is checked again
        except Exception:
            log.exception("video job %s check failed channel=%s chat=%s", job.job.id, job.chat.channel, job.chat.chat_id)
            await self._unclaim(job)

    async def pending(self) -> int:
        return int(await self.store.db.fetchval("SELECT COUNT(*) FROM media_jobs WHERE status = 'pending'"))

    async def _due(self) -> list[PendingJob]:
        rows = await self.store.db.fetch(
            "SELECT * FROM media_jobs WHERE status = 'pending' AND next_poll_at <= ? ORDER BY id", self.clock())
        return [PendingJob(r["id"], ChatRef(r["channel"], r["chat_id"], r["thread_id"], r["chat_kind"]), r["reply_to"],
                           VideoJob(r["job_id"], r["polling_url"]), r["prompt"], r["attempts"], r["deadline"],
                           r["next_poll_at"])
                for r in rows]

    async def _claim(self, job: PendingJob) -> bool:
        """Take the job for one check: ``False`` when another instance (or an earlier tick) has it."""
        until = self.clock() + CLAIM
        return await self.store.write(lambda tx: tx.execute(
            "UPDATE media_jobs SET next_poll_at = ?, claimed_by = ? WHERE id = ? AND status = 'pending'"
            " AND next_poll_at = ?", until, self.cluster.id, job.id, job.due)) == 1

    async def _unclaim(self, job: PendingJob) -> None:
        """A check that failed (the channel not running): due again as it was."""
        await self.store.write(lambda tx: tx.execute(
            "UPDATE media_jobs SET next_poll_at = ?, claimed_by = NULL WHERE id = ? AND claimed_by = ?",
            job.due, job.id, self.cluster.id))

    async def _check(self, job: PendingJob) -> None:
        """Poll the job: deliver it, report its failure, or look again later. Past its deadline it is polled
        once more before it is given up: after an outage (ours or OpenRouter's) a finished, paid video may wait."""
        try:
            status = await poll_video(self.llm, job.job)
        except OpenRouterError as exc:
            log.warning("video job %s poll failed: %s", job.job.id, exc)
            status = None
        if status is None or not status.finished:
            if self.clock() > job.deadline:
                await self._finish(job, "failed", "gave up waiting", Reply(
                    text=f"⚠️ The video “{job.prompt}” took too long and was given up.", reply_to=job.reply_to))
            else:
                await self._later(job)
            return
        if status.status != "completed":
            reason = status.error or status.status
            await self._finish(job, "failed", reason, Reply(
                text=f"⚠️ The video “{job.prompt}” could not be made: {status.status} ({reason}).", reply_to=job.reply_to))
            return
        data = await download_video(self.llm, job.job, status)
        video = Media(AttachmentKind.VIDEO, data, "video/mp4", f"video-{job.job.id}.mp4", caption=job.prompt)
        await self._finish(job, "delivered", None, Reply(media=[video], reply_to=job.reply_to))

    async def _later(self, job: PendingJob) -> None:
        delay = min(self.max_interval, self.poll_interval * 1.5 ** job.attempts)
        later = self.clock() + delay
        await self.store.write(lambda tx: tx.execute(
            "UPDATE media_jobs SET attempts = attempts + 1, next_poll_at = ?, claimed_by = NULL"
            " WHERE id = ? AND claimed_by = ?", later, job.id, self.cluster.id))

    async def _finish(self, job: PendingJob, status: str, error: str | None, reply: Reply) -> None:
        # Deliver first: if the channel is not there (it raises), the job stays pending and is tried again.
        await self.deliver(job.chat, reply)
        await self.store.write(lambda tx: tx.execute(
            "UPDATE media_jobs SET status = ?, error = ?, finished_at = ?, claimed_by = NULL WHERE id = ?",
            status, error, utc_now(), job.id))
        log.info("video job %s %s channel=%s chat=%s", job.job.id, status, job.chat.channel, job.chat.chat_id)

