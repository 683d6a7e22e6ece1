"""``/cron``, ``/tz`` and ``chorus cron list|rm|run``: thin views of the jobs table, sharing one line per job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from channels.base import ChatRef, Inbound

from ..access import AccessPolicy
from ..config import ChorusConfig
from ..store import Store
from ..tools import ToolError
from .jobs import CronJob, CronJobs
from .schedule import ScheduleError, local_text, zone
from .tool import chat_zone, job_number, may_manage

CRON_USAGE = "Usage: /cron lists this chat's scheduled jobs; /cron rm ID removes one."


def job_line(job: CronJob, tz: str) -> str:
    """One job as /cron and the CLI list it: id, name, schedule, next run, message."""
    when = local_text(job.next_run_at, tz) if job.next_run_at is not None else "running now, or cut off by a crash"
    failing = f" — {job.failures} failed run(s) in a row, backing off" if job.failures else ""
    return f"{job.label} — {job.schedule.describe()} — next: {when}{failing} — {job.message}"


async def cron_command(store: Store, config: ChorusConfig, access: AccessPolicy, inbound: Inbound, arg: str) -> str:
    """``/cron`` and ``/cron rm ID``."""
    jobs, chat = CronJobs(store), inbound.chat
    word, _, rest = arg.partition(" ")
    if word.lower() in ("rm", "remove", "del", "delete"):
        if (refusal := may_manage(access, inbound)) is not None:
            return f"Not removed: {refusal}."
        try:
            job_id = job_number(rest)
        except ToolError:
            return CRON_USAGE
        if await jobs.remove(job_id, chat):
            return f"Removed job #{job_id}."
        return f"There is no job #{job_id} in this chat; /cron lists them."
    if word:
        return CRON_USAGE
    found = await jobs.of_chat(chat)
    if not found:
        return "No scheduled jobs in this chat. Ask me to remind you of something, or to do a task every day."
    tz = await chat_zone(store, config, chat)
    return "Scheduled jobs in this chat:\n" + "\n".join(job_line(j, tz) for j in found) + "\nRemove one with /cron rm ID."


async def tz_command(store: Store, config: ChorusConfig, chat: ChatRef, arg: str) -> str:
    """``/tz`` shows the chat's time zone, ``/tz Europe/Berlin`` sets it, ``/tz default`` clears it."""
    if not arg:
        current = await chat_zone(store, config, chat)
        return f"Time zone: {current} (it is {local_text(time.time(), current)}). Set another with /tz Europe/Berlin."
    if arg.lower() in ("default", "reset", "off"):
        await store.set_chat_setting(chat, "tz", None)
        return f"Time zone for this chat: {await chat_zone(store, config, chat)} (the default)."
    try:
        zone(arg)
    except ScheduleError as exc:
        return f"Not changed: {exc}."
    await store.set_chat_setting(chat, "tz", arg.strip())
    return f"Time zone for this chat: {arg.strip()}. Times without an offset are read in it from now on."


async def cron_cli(db_path: Path, config: ChorusConfig, action: str, job_id: int | None = None, *,
                   show_all: bool = False) -> int:
    """``chorus cron list [--all]``, ``chorus cron rm ID``, ``chorus cron run ID``."""
    store = await Store.open(db_path)
    try:
        jobs = CronJobs(store)
        if action == "list":
            found = [j for j in await jobs.all() if show_all or j.next_run_at is not None]
            if not found:
                print("No scheduled jobs.")
            for job in found:
                chat = job.chat.session_key
                line = f"{chat}  {job_line(job, await chat_zone(store, config, job.chat))}"
                if show_all and job.last_status:
                    line += f"  [last run: {job.last_status}{': ' + job.last_error if job.last_error else ''}]"
                print(line)
            return 0
        assert job_id is not None
        if action == "rm":
            if await jobs.remove(job_id):
                print(f"Removed job #{job_id}.")
                return 0
        elif await jobs.run_now(job_id, time.time()):
            print(f"Job #{job_id} is due now: the running service fires it within seconds (or at its next start).")
            return 0
        print(f"error: there is no job #{job_id} (chorus cron list shows them)", file=sys.stderr)
        return 1
    finally:
        await store.close()
