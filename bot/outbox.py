"""Where the channels' outboxes keep their unsent parts: the ``outbox`` table, files under ``media/outbox/``."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from pathlib import Path

from channels.base import ChatRef
from channels.outbox import Part

from .db.base import Tx
from .store import Store

log = logging.getLogger("chorus.outbox")


class StoredParts:
    """The ``PartStore`` of every channel: one row per part, a file's bytes beside the database."""

    def __init__(self, store: Store, media: Path) -> None:
        self.store = store
        self.dir = media / "outbox"

    async def add(self, parts: list[Part]) -> None:
        """Write the parts' files (in a thread: a video is megabytes), then their rows in one transaction."""
        files = [p for p in parts if p.data is not None and p.file is None]
        if files:
            await asyncio.to_thread(self._write_files, files)
        rows = [(p.chat.channel, p.chat.chat_id, p.chat.thread_id, p.chat.kind, json.dumps(p.body), p.file)
                for p in parts]

        async def insert(tx: Tx) -> list[int]:
            return [int(await tx.fetchval(
                "INSERT INTO outbox (channel, chat_id, thread_id, chat_kind, body, file) VALUES (?, ?, ?, ?, ?, ?)"
                " RETURNING id", *row)) for row in rows]

        for part, row_id in zip(parts, await self.store.write(insert), strict=True):
            part.id = row_id

    async def done(self, parts: list[Part]) -> None:
        """Delete the parts' rows, then their files (a file left by a crash in between is only litter)."""
        ids = [(p.id,) for p in parts if p.id is not None]
        await self.store.db.executemany("DELETE FROM outbox WHERE id = ?", ids)
        for part in parts:
            if part.file:
                (self.dir / part.file).unlink(missing_ok=True)

    async def pending(self, channel: str) -> list[Part]:
        """The channel's unsent parts, oldest first; a part whose file is gone is dropped with a log line."""
        rows = await self.store.db.fetch(
            "SELECT id, chat_id, thread_id, chat_kind, body, file FROM outbox WHERE channel = ? ORDER BY id", channel)
        parts, lost = [], []
        for r in rows:
            part = Part(ChatRef(channel, r[1], r[2], r[3]), json.loads(r[4]), file=r[5], id=r[0])
            if part.file:
                try:
                    part.data = await asyncio.to_thread((self.dir / part.file).read_bytes)
                except OSError as exc:
                    log.error("an unsent file is gone (%s); its part is dropped channel=%s chat=%s",
                              exc.strerror, channel, part.chat.chat_id)
                    lost.append(part)
                    continue
            parts.append(part)
        if lost:
            await self.done(lost)
        return parts

    def _write_files(self, parts: list[Part]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for part in parts:
            assert part.data is not None
            name = f"{secrets.token_hex(8)}{Path(str(part.body.get('filename', ''))).suffix[:16]}"
            (self.dir / name).write_bytes(part.data)
            part.file = name
