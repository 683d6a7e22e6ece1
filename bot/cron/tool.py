"""The agent tool ``cron``, shaped like OpenClaw's: ``add`` / ``list`` / ``remove`` jobs of the chat it is used in."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from channels.base import ChatRef, Inbound

from ..access import AccessPolicy, listed
from ..config import ChorusConfig
from ..store import Store
from ..tools import ToolContext, ToolError, ToolResult
from .jobs import CronJob, CronJobs, LimitReached
from .schedule import ScheduleError, host_zone, local_iso, local_text, parse_schedule

DESCRIPTION = (
    "Schedule reminders and recurring tasks in this chat. action \"add\" with schedule "
    "{kind:\"at\", at:\"2026-12-24T18:00\" (no offset: the chat's time zone) or \"+20m\" (from now)}, "
    "{kind:\"every\", everyMs:N (at least 60000)} or {kind:\"cron\", expr:\"0 8 * * 1-5\", tz:\"Europe/Berlin\"}, "
    "and message: what you will be asked to do when it fires (e.g. \"Remind the user to call Ann\"); optional name. "
    "action \"list\": this chat's jobs with id and next run. action \"remove\" with id. When a job fires you get its "
    "message as a scheduled run and your answer goes to this chat. Tell the user the time the answer states."
)
PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["add", "list", "remove"]},
        "schedule": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["at", "every", "cron"]},
                "at": {"type": "string", "description": "ISO 8601 time, or a delay from now such as +20m or +1h30m"},
                "everyMs": {"type": "integer", "minimum": 60000},
                "expr": {"type": "string", "description": "five-field cron expression"},
                "tz": {"type": "string", "description": "IANA time zone; default: the chat's"},
            },
            "required": ["kind"],
        },
        "message": {"type": "string", "description": "the prompt of each run"},
        "name": {"type": "string"},
        "id": {"type": "string", "description": "the job id (remove)"},
    },
    "required": ["action"],
}


async def chat_zone(store: Store, config: ChorusConfig, chat: ChatRef) -> str:
    """The chat's time zone: its own (/tz), else ``agents.defaults.timezone``, else the host's."""
    return (await store.chat_settings(chat)).tz or config.agents.defaults.timezone or host_zone()


def job_view(job: CronJob, tz: str) -> dict[str, Any]:
    """A job as the tool answers it."""
    view: dict[str, Any] = {"id": str(job.id), "name": job.name, "schedule": job.schedule.to_json(), "message": job.message}
    if job.next_run_at is not None:
        view["nextRun"] = local_iso(job.next_run_at, tz)
        view["nextRunText"] = local_text(job.next_run_at, tz)
    if job.failures:
        view["consecutiveFailures"] = job.failures
    return view


def may_schedule(access: AccessPolicy, inbound: Inbound | None) -> str | None:
    """Why the sender of ``inbound`` may not make jobs here, or ``None`` when they may (see ``may_manage``);
    a scheduled run may not make more."""
    if inbound is None or inbound.scheduled:
        return "a scheduled run cannot make new jobs"
    return may_manage(access, inbound)


def may_manage(access: AccessPolicy, inbound: Inbound) -> str | None:
    """Why the sender may not make or remove jobs here, or ``None``. Anyone the bot answers in a direct chat
    may; in a group, the group policy must admit the sender by name (``groupAllowFrom``, else ``allowFrom``),
    or be ``open``: a group the bot talks in is not by that a group whose members may make it post on a schedule."""
    settings = access.settings(inbound.chat.channel)
    if inbound.scheduled or settings is None or inbound.chat.kind != "group" or settings.group_policy == "open":
        return None
    if settings.group_policy != "disabled" and listed(settings.group_allow_from or settings.allow_from, inbound):
        return None
    channel = inbound.chat.channel
    return (f"only people listed in channels.{channel}.groupAllowFrom (or allowFrom) may schedule jobs in this group; "
            f"{inbound.sender_name} ({inbound.sender_id}) is not")


class CronTool:
    """``cron``: the chat's scheduled jobs; ``wake`` tells the runner a job was made."""

    name = "cron"
    description = DESCRIPTION
    parameters = PARAMETERS

    def __init__(self, jobs: CronJobs, config: ChorusConfig, access: AccessPolicy, wake: Callable[[], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.jobs = jobs
        self.config = config
        self.access = access
        self.wake = wake
        self.clock = clock

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        action = args.get("action")
        tz = await chat_zone(self.jobs.store, self.config, ctx.chat)
        if action == "list":
            jobs = await self.jobs.of_chat(ctx.chat)
            return _answer({"timezone": tz, "jobs": [job_view(j, tz) for j in jobs]})
        if action == "remove":
            if ctx.inbound is not None and (refusal := may_manage(self.access, ctx.inbound)) is not None:
                raise ToolError(f"not removed: {refusal}")
            job_id = job_number(args.get("id", args.get("jobId")))
            if not await self.jobs.remove(job_id, ctx.chat):
                raise ToolError(f"there is no job {job_id} in this chat (see action \"list\")")
            self.wake()
            return _answer({"ok": True, "removed": str(job_id)})
        if action == "add":
            return await self._add(args, ctx, tz)
        raise ToolError(f'action must be "add", "list" or "remove", not {action!r}')

    async def _add(self, args: dict[str, Any], ctx: ToolContext, tz: str) -> ToolResult:
        if (refusal := may_schedule(self.access, ctx.inbound)) is not None:
            raise ToolError(f"not scheduled: {refusal}")
        assert ctx.inbound is not None
        message = str(args.get("message") or "").strip()
        if not message:
            raise ToolError("message is required: what to do when the job fires")
        now = self.clock()
        try:
            schedule = parse_schedule(args.get("schedule"), tz, now)
        except ScheduleError as exc:
            raise ToolError(f"not scheduled: {exc}") from None
        name = str(args.get("name") or "").strip() or None
        limit = self.config.cron.max_jobs_per_chat
        try:
            job = await self.jobs.add(ctx.chat, ctx.inbound.sender_id, ctx.inbound.sender_name, name, message,
                                      schedule, schedule.first(now), now, limit)
        except LimitReached:
            raise ToolError(f"not scheduled: this chat already has {limit} jobs, the most allowed "
                            "(cron.maxJobsPerChat); remove one first") from None
        self.wake()
        return _answer({"ok": True, "job": job_view(job, schedule.tz if schedule.kind != "every" else tz)})


def job_number(raw: Any) -> int:
    """A job id as the model or a user writes it: ``3``, ``"3"``, ``"#3"``."""
    try:
        return int(str(raw).strip().lstrip("#"))
    except ValueError:
        raise ToolError(f"id must be a job number such as 3, not {raw!r}") from None


def _answer(data: dict[str, Any]) -> ToolResult:
    return ToolResult(json.dumps(data, ensure_ascii=False))
