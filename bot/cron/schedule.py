"""When a job fires: the three schedule kinds (``at``, ``every``, ``cron``) read from the tool's arguments,
and the next firing after a given moment. Pure: no clock and no database here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

MIN_INTERVAL = 60.0  # seconds: a shorter "every" would flood the chat and the bill
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)\b", re.I)
_UNIT = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class ScheduleError(ValueError):
    """A schedule that cannot be used; the text says why, in words the model can pass on."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name`` (``Europe/Berlin``), or a clear error."""
    try:
        return _zone(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}; use an IANA name such as Europe/Berlin or America/New_York") from None


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def host_zone() -> str:
    """The host's IANA zone name (UTC where it has none)."""
    import tzlocal

    try:
        return tzlocal.get_localzone_name() or "UTC"
    except Exception:  # a container without /etc/localtime or TZ
        return "UTC"


@dataclass(frozen=True, slots=True)
class Schedule:
    """One job's schedule; ``tz`` is the zone its times are read and shown in."""

    kind: Literal["at", "every", "cron"]
    tz: str
    at: float | None = None  # unix time (at)
    every: float | None = None  # seconds (every)
    anchor: float | None = None  # unix time the intervals count from (every)
    expr: str | None = None  # five-field crontab (cron)

    @property
    def recurring(self) -> bool:
        return self.kind != "at"

    def first(self, now: float) -> float:
        """The first firing of a job made at ``now``."""
        if self.kind == "at":
            assert self.at is not None
            return self.at
        return self.after(now)

    def after(self, moment: float) -> float:
        """The first firing strictly after ``moment`` (recurring kinds)."""
        if self.kind == "every":
            assert self.every is not None and self.anchor is not None
            steps = max(0, int((moment - self.anchor) // self.every) + 1)
            return self.anchor + steps * self.every
        if self.kind == "cron":
            # APScheduler's trigger walks the wall clock of the zone, so 08:00 stays 08:00 across a DST change.
            start = datetime.fromtimestamp(moment, zone(self.tz)) + timedelta(microseconds=1)
            fire = _trigger(self.expr or "", self.tz).get_next_fire_time(None, start)
            if fire is None:
                raise ScheduleError(f"the cron expression {self.expr!r} never fires")
            return fire.timestamp()
        raise ScheduleError("a one-shot job has no later firing")

    def to_json(self) -> dict[str, Any]:
        """The tool's shape (OpenClaw's), as stored and as shown back to the model."""
        if self.kind == "at":
            return {"kind": "at", "at": local_iso(self.at or 0, self.tz), "tz": self.tz}
        if self.kind == "every":
            return {"kind": "every", "everyMs": round((self.every or 0) * 1000), "anchorMs": round((self.anchor or 0) * 1000)}
        return {"kind": "cron", "expr": self.expr, "tz": self.tz}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Schedule:
        """A stored schedule back (no checks: it was checked when made)."""
        if raw["kind"] == "at":
            return cls("at", raw.get("tz") or "UTC", at=datetime.fromisoformat(raw["at"]).timestamp())
        if raw["kind"] == "every":
            return cls("every", "UTC", every=raw["everyMs"] / 1000, anchor=raw["anchorMs"] / 1000)
        return cls("cron", raw["tz"], expr=raw["expr"])

    def describe(self) -> str:
        """A short line for lists: ``once``, ``every 5 min``, ``cron 0 8 * * 1-5 (Europe/Berlin)``."""
        if self.kind == "at":
            return "once"
        if self.kind == "every":
            return f"every {duration(self.every or 0)}"
        return f"cron {self.expr} ({self.tz})"


@lru_cache(maxsize=256)
def _trigger(expr: str, tz: str) -> CronTrigger:
    return CronTrigger.from_crontab(expr, timezone=zone(tz))


def parse_schedule(raw: Any, tz: str, now: float) -> Schedule:
    """The tool's ``schedule`` argument checked and normalized; ``tz`` reads times that carry no offset."""
    if not isinstance(raw, dict):
        raise ScheduleError('schedule must be an object such as {"kind": "at", "at": "2026-12-24T18:00"}')
    kind = raw.get("kind")
    if kind == "at":
        at = _at(raw.get("at", raw.get("atMs")), raw.get("tz") or tz, now)
        if at <= now:
            raise ScheduleError(f"that time has already passed: {local_iso(at, tz)} (it is now {local_iso(now, tz)})")
        return Schedule("at", raw.get("tz") or tz, at=at)
    if kind == "every":
        every_ms = raw.get("everyMs")
        if isinstance(every_ms, bool) or not isinstance(every_ms, (int, float)) or every_ms <= 0:
            raise ScheduleError("everyMs must be a positive number of milliseconds")
        if every_ms / 1000 < MIN_INTERVAL:
            raise ScheduleError(f"an interval under one minute is not allowed (everyMs {every_ms:g} is below 60000)")
        return Schedule("every", tz, every=every_ms / 1000, anchor=now)
    if kind == "cron":
        expr, zone_name = str(raw.get("expr") or "").strip(), str(raw.get("tz") or tz)
        zone(zone_name)
        try:
            _trigger(expr, zone_name)
        except ValueError as exc:
            raise ScheduleError(f"{expr!r} is not a cron expression of five fields (minute hour day month weekday): {exc}") from None
        schedule = Schedule("cron", zone_name, expr=expr)
        schedule.after(now)  # one that never fires is refused here
        return schedule
    raise ScheduleError(f'schedule.kind must be "at", "every" or "cron", not {kind!r}')


def _at(value: Any, tz: str, now: float) -> float:
    """A one-shot time: ISO 8601 (no offset: in ``tz``), ``+20m`` / ``+1h30m`` from now, or unix milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value / 1000
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError('schedule.at must be an ISO 8601 time such as "2026-12-24T18:00" or a delay such as "+20m"')
    text = value.strip()
    if text.startswith("+") or text.lower().startswith("in "):
        rest = text.lstrip("+").removeprefix("in ").removeprefix("In ")
        parts = _RELATIVE.findall(rest)
        if not parts or _RELATIVE.sub("", rest).strip(" ,and"):
            raise ScheduleError(f"{value!r} is not a delay such as +90s, +20m or +1h30m")
        return now + sum(float(n) * _UNIT[u.lower()] for n, u in parts)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(f"{value!r} is not an ISO 8601 time such as 2026-12-24T18:00 or 2026-12-24T18:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(tz))
    return when.timestamp()


def local_iso(moment: float, tz: str) -> str:
    """``moment`` as ISO 8601 with the zone's offset, to the second."""
    return datetime.fromtimestamp(moment, zone(tz)).isoformat(timespec="seconds")


def local_text(moment: float, tz: str) -> str:
    """``moment`` as people read it: ``Sun 6 Dec 2026, 15:04:05 CET (Europe/Berlin)``."""
    when = datetime.fromtimestamp(moment, zone(tz))
    return f"{when:%a} {when.day} {when:%b %Y, %H:%M:%S} {when.tzname()} ({tz})"


def duration(seconds: float) -> str:
    """``90`` -> ``1 min 30 s``; ``7200`` -> ``2 h``."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size} {unit}")
            seconds %= size
    return " ".join(parts) or "0 s"


def utc_iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")
