"""Where the channels' outboxes keep their unsent parts: the ``outbox`` table; a file's bytes under
``media/outbox/`` on SQLite, in the row itself on PostgreSQL (where any instance may have to send it).

Each part names the instance sending it (``owner``). On a shared database an instance takes over only the
parts of instances that are dead, each by one conditional UPDATE (so exactly one instance gets it): at start,
and at each heartbeat after (``sweep``), which hands them to the channel's outbox here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from channels.base import ChatRef
from channels.outbox import Part
from net import wirejson

from .cluster import Cluster, Solo, orphaned
from .db.base import Row, inserting
from .store import Settlement, Store

log = logging.getLogger("chorus.outbox")

_COLUMNS = "id, chat_id, thread_id, chat_kind, body, file, data"


class StoredParts:
    """The ``PartStore`` of every channel: one row per part, a file's bytes beside the database (SQLite) or in
    the row (a shared database)."""

    def __init__(self, store: Store, media: Path, cluster: Cluster | None = None) -> None:
        self.store = store
        self.dir = media / "outbox"
        self.cluster = cluster or Solo()
        self._adopters: dict[str, Callable[[], Awaitable[None]]] = {}

    def watch(self, channel: str, adopt: Callable[[], Awaitable[None]]) -> None:
        """Call ``adopt`` when instances that died left parts of ``channel`` unsent."""
        self._adopters[channel] = adopt

    async def add(self, parts: list[Part], settles: Settlement | None = None) -> None:
        """Write the parts' files (in a thread: a video is megabytes; in the rows on a shared database), then
        their rows in one statement, committed with what the reply ``settles`` (all or none)."""
        shared = self.cluster.shared
        files = [p for p in parts if p.data is not None and p.file is None]
        if files and not shared:
            await asyncio.to_thread(self._write_files, files)
        owner = self.cluster.id
        rows = [(p.chat.channel, p.chat.chat_id, p.chat.thread_id, p.chat.kind, wirejson.dumps(p.body).decode(),
                 p.file, owner, p.data if shared else None) for p in parts]
        settling = settles.statements if settles is not None and not settles.settled else []
        ids, *_ = await self.store.db.write_all(
            [inserting("outbox", "channel, chat_id, thread_id, chat_kind, body, file, owner, data", rows), *settling])
        if settles is not None:
            settles.settled = True
        for part, row_id in zip(parts, ids, strict=True):
            part.id = row_id

    async def done(self, parts: list[Part]) -> None:
        """Delete the parts' rows, then their files (a file left by a crash in between is only litter)."""
        ids = [(p.id,) for p in parts if p.id is not None]
        await self.store.db.executemany("DELETE FROM outbox WHERE id = ?", ids)
        for part in parts:
            if part.file:
                (self.dir / part.file).unlink(missing_ok=True)

    async def pending(self, channel: str) -> list[Part]:
        """The channel's unsent parts this instance is to send, oldest first: all of them on SQLite; on a
        shared database those of dead instances, taken over. A part whose file is gone is dropped (logged)."""
        if self.cluster.shared:
            rows = await self.store.write(lambda tx: tx.fetch(
                f"UPDATE outbox SET owner = ? WHERE channel = ? AND {orphaned('owner')} RETURNING {_COLUMNS}",
                self.cluster.id, channel, self.cluster.lease))
            rows = sorted(rows, key=lambda r: r[0])
            if rows:
                log.info("took over %d unsent part(s) of instances that stopped channel=%s", len(rows), channel)
        else:
            rows = await self.store.db.fetch(f"SELECT {_COLUMNS} FROM outbox WHERE channel = ? ORDER BY id", channel)
        parts, lost = [], []
        for r in rows:
            part = await self._part(channel, r)
            (parts if part.data is not None or not part.file else lost).append(part)
        if lost:
            await self.done(lost)
        return parts

    async def sweep(self) -> None:
        """At each heartbeat (a shared database): hand what dead instances left unsent to the outboxes here."""
        if not self.cluster.shared or not self._adopters:
            return
        rows = await self.store.db.fetch(f"SELECT DISTINCT channel FROM outbox WHERE {orphaned('owner')}",
                                         self.cluster.lease)
        for (channel,) in rows:
            if (adopt := self._adopters.get(channel)) is not None:
                await adopt()

    async def _part(self, channel: str, r: Row) -> Part:
        part = Part(ChatRef(channel, r[1], r[2], r[3]), json.loads(r[4]), file=r[5], id=r[0])
        if r[6] is not None:
            part.data = bytes(r[6])
        elif part.file:
            try:
                part.data = await asyncio.to_thread((self.dir / part.file).read_bytes)
            except OSError as exc:
                log.error("an unsent file is gone (%s); its part is dropped channel=%s chat=%s",
                          exc.strerror, channel, part.chat.chat_id)
        return part

    def _write_files(self, parts: list[Part]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in parts:
            assert part.data is not None
            name = f"{secrets.token_hex(8)}{Path(str(part.body.get('filename', ''))).suffix[:16]}"
            (self.dir / name).write_bytes(part.data)
            part.file = name
