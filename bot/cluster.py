"""Several instances on one database: who is alive, who holds what, and a word to one instance.

Each instance registers itself in ``instances`` and beats its heart every third of ``storage.leaseMs``; one
silent for the whole lease is dead. A lease (``leases``: a session's lane, the Telegram poller, a Discord
shard) is held by one live instance at a time and lasts as long as its holder's heartbeat: one heartbeat
renews them all, and a dead holder's leases are free to take. The database's own clock decides, so hosts
whose clocks disagree still agree on who is dead.

A word to one instance (``notify``) goes by PostgreSQL's ``LISTEN``/``NOTIFY`` on a channel of its own. It
is a wake-up only: what it is about is in the database, and the periodic sweep finds what a lost word left.

On SQLite there is one instance: ``Solo`` holds everything and tells itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .db.base import DB_ERRORS, Database
from .outage import Outage

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("chorus.cluster")
FORGET_DEAD = 86400.0  # seconds after its last heartbeat that a dead instance is removed from the list
Heard = Callable[[str], Awaitable[None]]  # what a word to this instance starts

# The database's clock in unix seconds, read in the statement that uses it.
_NOW = "extract(epoch from clock_timestamp())::float8"
_ALIVE = f"SELECT id FROM instances WHERE heartbeat_at >= {_NOW} - ?"


def orphaned(column: str) -> str:
    """SQL that is true where ``column`` names no live instance (PostgreSQL; one ``?``: the lease in seconds):
    what a dead instance held, for another to take in the same statement that checks it."""
    return f"({column} IS NULL OR {column} NOT IN ({_ALIVE}))"


@dataclass(frozen=True, slots=True)
class Instance:
    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    alive: bool
    silent: float = 0.0  # seconds since its last heartbeat, by the database's clock


class Cluster(Protocol):
    """What the dispatcher, the channels and the jobs ask about the other instances."""

    id: str
    shared: bool  # False: the only instance (SQLite)
    lease: float  # seconds

    async def start(self, heard: Heard) -> None: ...
    async def stop(self) -> None: ...

    async def take(self, name: str) -> bool:
        """Hold ``name`` (if free, its holder dead, or already ours); ``True`` when this instance holds it."""
        ...

    async def holder(self, name: str) -> str | None:
        """The live instance holding ``name``, or ``None``."""
        ...

    async def give_up(self, name: str) -> None: ...

    async def free(self, names: list[str]) -> set[str]:
        """Which of ``names`` no live instance holds."""
        ...

    async def notify(self, instance: str, word: str) -> None:
        """Wake ``instance`` with ``word`` (a session key); lost if it is not listening (the sweep covers that)."""
        ...

    async def instances(self) -> list[Instance]: ...

    async def count_live(self) -> int:
        """How many instances are alive, this one included."""
        ...

    def holds(self, name: str) -> bool:
        """Whether this instance surely holds ``name`` (no trip to the database): it took it, and its last
        heartbeat is recent enough that no other instance can have declared it dead since."""
        ...


class Solo:
    """The only instance (SQLite): it holds every lease; a word to itself is heard at once."""

    shared = False

    def __init__(self, lease: float = 15.0) -> None:
        self.id = instance_id()
        self.lease = lease
        self._heard: Heard | None = None

    async def start(self, heard: Heard) -> None:
        self._heard = heard

    async def stop(self) -> None:
        self._heard = None

    async def take(self, name: str) -> bool:
        return True

    async def holder(self, name: str) -> str | None:
        return self.id

    async def give_up(self, name: str) -> None:
        pass

    async def free(self, names: list[str]) -> set[str]:
        return set()

    async def notify(self, instance: str, word: str) -> None:
        if self._heard is not None:
            await self._heard(word)

    async def instances(self) -> list[Instance]:
        return []

    async def count_live(self) -> int:
        return 1

    def holds(self, name: str) -> bool:
        return True


class SharedCluster:
    """This instance among others on one PostgreSQL database."""

    shared = True

    def __init__(self, db: Database, lease: float, *, url: str) -> None:
        self.db = db
        self.lease = lease
        self.url = url
        self.id = instance_id()
        self._held: set[str] = set()
        # The loop's time until which this instance's leases are surely its own: two thirds of the lease after
        # its last heartbeat began. The others declare it dead a whole lease after that heartbeat reached the
        # database, so this ends (by at least a third of the lease) before another instance may take them.
        self._sure_until = 0.0
        self._listener: asyncpg.Connection | None = None
        self._heard: Heard | None = None
        self._beating: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_beat: list[Callable[[], Awaitable[None]]] = []  # after each heartbeat: the sweeps

    @property
    def channel(self) -> str:
        return _channel(self.id)

    async def start(self, heard: Heard) -> None:
        """Register, listen for words, and beat from now on."""
        self._heard = heard
        began = asyncio.get_running_loop().time()
        await self._register()
        self._sure_until = began + self.lease * 2 / 3
        await self._listen()
        self._beating = asyncio.create_task(self._beat(), name="cluster:heartbeat")
        log.info("instance %s joined (lease %.1f s)", self.id, self.lease)

    async def stop(self) -> None:
        """Leave: the leases go at once (another instance takes the work without waiting out the lease)."""
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._listener is not None:
            await asyncio.gather(self._listener.close(timeout=2), return_exceptions=True)
        try:
            async def leave(tx: Any) -> None:
                await tx.execute("DELETE FROM leases WHERE instance = ?", self.id)
                await tx.execute("DELETE FROM instances WHERE id = ?", self.id)

            await self.db.write(leave)
        except DB_ERRORS as exc:
            log.warning("could not leave the cluster cleanly (the others take over after the lease): %s", exc)
        self._held.clear()

    # A lone statement commits on its own: one trip, where BEGIN and COMMIT around it would make three (the lease
    # statements run twice a turn on a shared database).
    async def take(self, name: str) -> bool:
        got = await self.db.fetchval(
            "INSERT INTO leases (name, instance, taken_at) VALUES (?, ?, " + _NOW + ")"
            " ON CONFLICT (name) DO UPDATE SET instance = excluded.instance, taken_at = excluded.taken_at"
            " WHERE leases.instance = excluded.instance OR leases.instance NOT IN (" + _ALIVE + ")"
            " RETURNING instance", name, self.id, self.lease)
        if got == self.id:
            self._held.add(name)
            return True
        self._held.discard(name)
        return False

    async def holder(self, name: str) -> str | None:
        return await self.db.fetchval(
            f"SELECT instance FROM leases WHERE name = ? AND instance IN ({_ALIVE})", name, self.lease)

    async def give_up(self, name: str) -> None:
        # Held until the row is gone: a failed delete leaves it this instance's, to answer what waits (the sweep).
        await self.db.execute("DELETE FROM leases WHERE name = ? AND instance = ?", name, self.id)
        self._held.discard(name)

    async def free(self, names: list[str]) -> set[str]:
        if not names:
            return set()
        held = await self.db.fetch(f"SELECT name FROM leases WHERE name = ANY(?::text[]) AND instance IN ({_ALIVE})",
                                   names, self.lease)
        return set(names) - {r[0] for r in held}

    def holds(self, name: str) -> bool:
        return name in self._held and asyncio.get_running_loop().time() < self._sure_until

    async def notify(self, instance: str, word: str) -> None:
        await self.db.execute("SELECT pg_notify(?, ?)", _channel(instance), word)

    async def instances(self) -> list[Instance]:
        return await members(self.db, self.lease)

    async def count_live(self) -> int:
        return int(await self.db.fetchval(f"SELECT count(*) FROM ({_ALIVE}) AS alive", self.lease))

    async def _register(self) -> None:
        await self.db.execute(f"INSERT INTO instances (id, host, pid, started_at, heartbeat_at) VALUES (?, ?, ?, {_NOW}, {_NOW})",
                              self.id, socket.gethostname(), os.getpid())

    async def _listen(self) -> None:
        import asyncpg

        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = await asyncpg.connect(self.url, timeout=5)
        await self._listener.add_listener(self.channel, self._on_word)

    def _on_word(self, _conn: Any, _pid: int, _channel: str, word: str) -> None:
        if self._heard is not None:
            task = asyncio.create_task(self._heard(word))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _beat(self) -> None:
        """Every third of the lease: show this instance is alive, learn which leases it still holds (after an
        outage longer than the lease another instance may have taken some), listen again if the connection
        dropped, then run the sweeps."""
        every = self.lease / 3
        outage = Outage(log, "heartbeat")
        while True:
            await asyncio.sleep(every)
            began = asyncio.get_running_loop().time()
            try:
                if await self.db.execute(f"UPDATE instances SET heartbeat_at = {_NOW} WHERE id = ?", self.id) == 0:
                    await self._register()  # declared dead and removed while cut off: join again
                before = set(self._held)  # a lease taken while this reads is not among the lost
                held = {r[0] for r in await self.db.fetch("SELECT name FROM leases WHERE instance = ?", self.id)}
                if lost := (before & self._held) - held:
                    log.warning("instance %s lost %d lease(s) while cut off: %s", self.id, len(lost), ", ".join(sorted(lost)[:5]))
                    self._held -= lost
                self._sure_until = began + self.lease * 2 / 3
                # A killed instance's row stays for `chorus doctor` to show, for a day.
                await self.db.execute(f"DELETE FROM instances WHERE heartbeat_at < {_NOW} - ?", FORGET_DEAD)
                await self._listen()
            except (*DB_ERRORS, OSError, asyncio.TimeoutError) as exc:
                outage.failed(exc)  # once an outage, not every beat of it
                continue
            outage.answered()
            for sweep in self.on_beat:
                try:
                    await sweep()
                except Exception:
                    log.exception("a sweep failed; it runs again at the next heartbeat")


async def members(db: Database, lease: float) -> list[Instance]:
    """The instances registered on ``db``, oldest first, alive or silent by the database's clock."""
    rows = await db.fetch(
        f"SELECT id, host, pid, started_at, heartbeat_at, heartbeat_at >= {_NOW} - ? AS alive,"
        f" {_NOW} - heartbeat_at AS silent FROM instances ORDER BY started_at", lease)
    return [Instance(r["id"], r["host"], r["pid"], r["started_at"], r["heartbeat_at"], r["alive"], r["silent"])
            for r in rows]


def instance_id() -> str:
    """This process's name among the instances: host, pid and a random part (pids repeat across hosts)."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(3)}"


def _channel(instance: str) -> str:
    """The NOTIFY channel of an instance: an identifier of at most 63 bytes whatever the host name."""
    import hashlib

    return "chorus_" + hashlib.sha1(instance.encode()).hexdigest()[:32]
