"""Which of the bot's gateway shards this instance runs, when several instances share one bot.

Each shard is a lease ``discord:shard:<id>/<count>`` held by one live instance. At each look an instance
counts the live ones and aims at its share, ceil(count / live): it lets go of what it holds beyond it (so an
instance that joins gets its part), and takes free shards (never held, given up by a clean stop, or left by a
dead holder) up to it. A shard whose lease was lost while this instance was cut off from the database is
dropped at once: another instance runs it now.

One discord.py ``Client`` per shard, not one ``AutoShardedClient``: that one fixes its shard ids when it
starts, so a shard taken over later would reconnect the shards already running; a ``Client`` per shard
connects alone and leaves the others be.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base import Leases


def lease_name(shard: int, count: int) -> str:
    return f"discord:shard:{shard}/{count}"


@dataclass(frozen=True, slots=True)
class Moves:
    """What one look decided: shards to start (their leases taken), to drop (lost), to hand over (given up
    once closed)."""

    start: list[int]
    lost: list[int]
    shed: list[int]


async def plan(leases: Leases, count: int, running: set[int]) -> Moves:
    """This instance's moves, given the shards it runs now."""
    share = -(-count // max(1, await leases.count_live()))
    lost = sorted(i for i in running if not leases.holds(lease_name(i, count)))
    kept = sorted(running - set(lost))
    shed, kept = kept[share:], kept[:share]  # the highest go: every instance agrees which it keeps
    start: list[int] = []
    for shard in range(count):
        if len(kept) + len(start) >= share:
            break
        if shard not in running and await leases.take(lease_name(shard, count)):
            start.append(shard)
    return Moves(start, lost, shed)
