"""What a running process costs, read from ``/proc`` (Linux): CPU time of its whole tree and peak memory."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def _ticks(tree: list[int]) -> tuple[float, float]:
    """User + system CPU of a process (``tree[0]``), its reaped children and its live descendants (the rest),
    in seconds counted in clock ticks (10 ms), which include threads and children that have ended; and how
    much less than the truth that can read, as each field read is rounded down to a tick."""
    total = fields = 0
    for i, p in enumerate(tree):
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat: here 11-14 (counting from the state field).
        read = f[11:15] if i == 0 else f[11:13]
        total += sum(int(v) for v in read)
        fields += len(read)
    return total / _TICK, fields / _TICK


def _thread_ns(tree: list[int]) -> dict[tuple[int, int], int]:
    """Nanoseconds on a CPU of each live thread of these processes (``/proc/.../schedstat``)."""
    out = {}
    for p in tree:
        try:
            tids = [int(t.name) for t in Path(f"/proc/{p}/task").iterdir()]
        except OSError:
            continue
        for tid in tids:
            try:
                out[p, tid] = int(Path(f"/proc/{p}/task/{tid}/schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return out


@dataclass(frozen=True)
class CpuReading:
    """CPU used so far by a process tree; ``later - earlier`` is the seconds it used in between.

    Clock ticks alone are too coarse for a light row (one chat spends ~30 ms: three ticks), so the figure is
    each live thread's nanoseconds. Those miss a thread or child that ended in between; where the ticks say
    more was used than their rounding can explain, the ticks are taken instead.
    """

    threads: dict[tuple[int, int], int]
    ticks: float
    slack: float

    @classmethod
    def of(cls, pid: int) -> CpuReading:
        tree = [pid, *children(pid)]
        return cls(_thread_ns(tree), *_ticks(tree))

    def __sub__(self, earlier: CpuReading) -> float:
        if not self.threads or not earlier.threads:  # the process had ended: nothing to measure
            return float("nan")
        exact = sum(ns - earlier.threads.get(key, 0) for key, ns in self.threads.items()) / 1e9
        return max(exact, self.ticks - earlier.ticks - earlier.slack)


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
