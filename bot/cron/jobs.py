"""The ``cron_jobs`` table: making, listing and removing jobs, and claiming a firing so it happens once."""

from __future__ import annotations

import json
from dataclasses import dataclass

from channels.base import ChatRef

from ..db.base import Row, Tx
from ..store import Store
from .schedule import Schedule


class LimitReached(Exception):
    """The chat already has as many jobs as ``cron.maxJobsPerChat`` allows."""


@dataclass(frozen=True, slots=True)
class CronJob:
    id: int
    chat: ChatRef
    creator_id: str
    creator_name: str
    name: str | None
    message: str
    schedule: Schedule
    next_run_at: float | None  # None: a one-shot whose run is under way (or was cut off by a crash)
    failures: int = 0
    last_run_at: float | None = None
    last_status: str | None = None
    last_error: str | None = None

    @property
    def label(self) -> str:
        """``#3 “stretch”``: how lists and logs name the job."""
        return f"#{self.id}" + (f" “{self.name}”" if self.name else "")


def _job(r: Row) -> CronJob:
    return CronJob(
        r["id"], ChatRef(r["channel"], r["chat_id"], r["thread_id"], r["chat_kind"]), r["creator_id"], r["creator_name"],
        r["name"], r["message"], Schedule.from_json(json.loads(r["schedule"])), r["next_run_at"], r["failures"],
        r["last_run_at"], r["last_status"], r["last_error"],
    )


_IN_CONVERSATION = "channel = ? AND chat_id = ? AND thread_id IS ?"


def _among(channels: set[str]) -> str:
    return f"channel IN ({', '.join('?' * len(channels))})" if channels else "1 = 0"


class CronJobs:
    """Jobs in the database; every instance on one database sees the same rows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, chat: ChatRef, creator_id: str, creator_name: str, name: str | None, message: str,
                  schedule: Schedule, next_run_at: float, now: float, limit: int) -> CronJob:
        """Store a new job; raises ``LimitReached`` when the chat (all its topics) has ``limit`` already."""
        async def insert(tx: Tx) -> int:  # the count and the insert in one transaction, one chat's at a time
            await tx.lock(f"cron:{chat.channel}:{chat.chat_id}")
            if await tx.fetchval("SELECT COUNT(*) FROM cron_jobs WHERE channel = ? AND chat_id = ?",
                                 chat.channel, chat.chat_id) >= limit:
                raise LimitReached(limit)
            return int(await tx.fetchval(
                "INSERT INTO cron_jobs (channel, chat_id, thread_id, chat_kind, creator_id, creator_name, name, message,"
                " schedule, next_run_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                chat.channel, chat.chat_id, chat.thread_id, chat.kind, creator_id, creator_name, name, message,
                json.dumps(schedule.to_json()), next_run_at, now))

        job_id = await self.store.write(insert)
        return CronJob(job_id, chat, creator_id, creator_name, name, message, schedule, next_run_at)

    async def of_chat(self, chat: ChatRef) -> list[CronJob]:
        """The jobs of one conversation (a chat, or one topic or thread of it), soonest first."""
        return await self._select(f"WHERE {_IN_CONVERSATION}", chat.channel, chat.chat_id, chat.thread_id)

    async def all(self) -> list[CronJob]:
        return await self._select("")

    async def get(self, job_id: int) -> CronJob | None:
        found = await self._select("WHERE id = ?", job_id)
        return found[0] if found else None

    async def remove(self, job_id: int, chat: ChatRef | None = None) -> bool:
        """Delete a job (only from ``chat``'s conversation when given); ``False`` when there was none."""
        where, args = ("id = ?", (job_id,)) if chat is None else (
            f"id = ? AND {_IN_CONVERSATION}", (job_id, chat.channel, chat.chat_id, chat.thread_id))
        return await self.store.write(lambda tx: tx.execute(f"DELETE FROM cron_jobs WHERE {where}", *args)) > 0

    async def due(self, now: float, channels: set[str]) -> list[CronJob]:
        """Jobs due by ``now`` in the channels running here (another channel's wait until it runs)."""
        return await self._select(f"WHERE next_run_at <= ? AND {_among(channels)}", now, *sorted(channels))

    async def next_due(self, channels: set[str]) -> float | None:
        """When the soonest job of the running channels is due (an overdue job of a channel that is not
        running must not make the runner spin)."""
        return await self.store.db.fetchval(f"SELECT MIN(next_run_at) FROM cron_jobs WHERE {_among(channels)}",
                                            *sorted(channels))

    async def move(self, job: CronJob, to: float | None, *, expect: float | None | str = "due") -> bool:
        """Set the next run to ``to`` only if it is still what this instance saw (``expect``; by default the
        job's due time): one conditional UPDATE, so of several claimants exactly one wins."""
        seen = job.next_run_at if expect == "due" else expect
        return await self.store.write(lambda tx: tx.execute(
            "UPDATE cron_jobs SET next_run_at = ? WHERE id = ? AND next_run_at IS ?", to, job.id, seen)) == 1

    async def ran(self, job: CronJob, at: float, status: str, error: str | None, failures: int,
                  next_run_at: float | None, *, delete: bool = False) -> None:
        """Record how a run ended (or delete a finished one-shot)."""
        if delete:
            await self.store.write(lambda tx: tx.execute("DELETE FROM cron_jobs WHERE id = ?", job.id))
        else:
            await self.store.write(lambda tx: tx.execute(
                "UPDATE cron_jobs SET last_run_at = ?, last_status = ?, last_error = ?, failures = ?,"
                " next_run_at = COALESCE(?, next_run_at) WHERE id = ?",
                at, status, error, failures, next_run_at, job.id))

    async def run_now(self, job_id: int, now: float) -> bool:
        """Make a job due at once (``chorus cron run``); the service fires it at its next look."""
        return await self.store.write(lambda tx: tx.execute(
            "UPDATE cron_jobs SET next_run_at = ? WHERE id = ?", now, job_id)) > 0

    async def _select(self, where: str, *args: object) -> list[CronJob]:
        return [_job(r) for r in await self.store.db.fetch(
            f"SELECT * FROM cron_jobs {where} ORDER BY next_run_at IS NULL, next_run_at, id", *args)]
