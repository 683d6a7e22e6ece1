"""What a running process costs, read from ``/proc`` (Linux): CPU time of its whole tree and peak memory."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (which may hold spaces)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def children(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid``, its reaped children and its live descendants, in seconds."""
    total = 0
    for i, p in enumerate([pid, *children(pid)]):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat: here 11-14 (counting from the state field).
        total += int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if i == 0 else 0)
    return total / _TICK


def memory_kib(pid: int, key: str = "VmHWM") -> int:
    """A ``/proc/PID/status`` memory figure in KiB (``VmHWM`` peak resident, ``VmRSS`` current), summed
    over the process tree so that a peer which forks helpers is not flattered."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total
