"""The channels' ``Leases`` (channels/base.py) on the cluster's leases and the database's ``shared_values``.

A channel job only one instance may do at a time (polling a Telegram bot) is a lease like a session's lane; what
its holder hands on (the update offset) is a row of ``shared_values``. While the database cannot answer, ``take``
raises (nothing is polled then: nothing could be accepted either), ``get`` finds nothing and ``put`` waits for
the next one: the channel goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from channels.base import Leases

from .cluster import Cluster
from .db.base import DB_ERRORS, Database
from .kept import KeptValues
from .outage import Outage

log = logging.getLogger("chorus.cluster")
T = TypeVar("T")
UNREACHABLE = (*DB_ERRORS, OSError, asyncio.TimeoutError)


class SharedLeases:
    """Leases and shared values of this instance among others on one PostgreSQL database."""

    def __init__(self, cluster: Cluster, db: Database) -> None:
        self.cluster = cluster
        self.values = KeptValues(db)
        self.lease = cluster.lease
        self.every = min(1.0, cluster.lease / 3)  # a lease given up (a clean stop) is taken within a second
        self.outage = Outage(log, "shared leases")

    async def take(self, name: str) -> bool:
        # Followers ask every second: a read while another live instance holds it (no row lock, no WAL), the
        # upsert only when it looks free. A database that cannot answer raises: the caller says so.
        if (holder := await self.cluster.holder(name)) is not None and holder != self.cluster.id:
            return False
        return await self.cluster.take(name)

    def holds(self, name: str) -> bool:
        return self.cluster.holds(name)

    async def count_live(self) -> int:
        return await self.cluster.count_live()

    async def give_up(self, name: str) -> None:
        await self._try(f"give up {name} (another instance takes it after the lease)", self.cluster.give_up(name), None)

    async def get(self, name: str) -> str | None:
        kept = await self._try(f"read {name}", self.values.get(name), None)
        return kept[0] if kept is not None else None

    async def put(self, name: str, value: str) -> None:
        await self._try(f"keep {name}", self.values.put(name, value), None)

    async def _try(self, what: str, work: Awaitable[T], failed: T) -> T:
        """``work``'s result, or ``failed`` when the database cannot answer (said once per outage)."""
        try:
            result = await work
        except UNREACHABLE as exc:
            self.outage.failed(f"could not {what}: {exc}")
            return failed
        self.outage.answered()
        return result


def leases_of(cluster: Cluster, db: Database) -> Leases | None:
    """What the channels ask about which instance does a one-at-a-time job (poll Telegram, hold a Discord shard);
    ``None`` for the only instance (the channel is then ``Alone``)."""
    return SharedLeases(cluster, db) if cluster.shared else None
