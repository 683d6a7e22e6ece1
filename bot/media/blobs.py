"""Files every instance must be able to read, kept in the database (``media_blobs``): on a shared database
the images users sent, which history refers to and later turns send to the model again.

Why the database and not a bucket: the files are small (an image is fitted to 2048 px, a few hundred KB,
at most ``tools.media.image.maxBytes``), they are read once per turn that still has them in context, and
the database is already the one thing every instance reaches: no second service to run, secure and back up.
"""

from __future__ import annotations

from ..db.base import Tx
from ..store import Store

TOUCH_EVERY = 86400.0  # a blob's last use is written at most once a day: keepDays counts days


class Blobs:
    """Named bytes in the database; ``used_at`` (unix time) decides when an unused one is deleted."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def put(self, name: str, data: bytes, now: float) -> None:
        """Keep ``data`` as ``name`` (a name is its content's hash: one written again is only used again)."""
        await self.store.write(lambda tx: tx.execute(
            "INSERT INTO media_blobs (name, data, used_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET used_at = excluded.used_at", name, data, now))

    async def get(self, names: list[str]) -> dict[str, bytes]:
        """The blobs of ``names`` that are kept (the others are missing from the result)."""
        async def read(tx: Tx) -> dict[str, bytes]:
            found = {}
            for name in names:
                if (data := await tx.fetchval("SELECT data FROM media_blobs WHERE name = ?", name)) is not None:
                    found[name] = bytes(data)
            return found

        return await self.store.db.read(read) if names else {}

    async def touch(self, names: list[str], now: float) -> None:
        """Mark ``names`` as used: kept another ``keepDays``."""
        if names:
            await self.store.write(lambda tx: tx.executemany(
                "UPDATE media_blobs SET used_at = ? WHERE name = ? AND used_at < ?",
                [(now, name, now - TOUCH_EVERY) for name in names]))

    async def sweep(self, before: float) -> int:
        """Delete the blobs unused since ``before``; returns how many went."""
        return await self.store.write(lambda tx: tx.execute("DELETE FROM media_blobs WHERE used_at < ?", before))
