"""Pairing requests and approvals in SQLite: the owner's explicit yes to a new direct-chat sender.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I), expires
after an hour, and a channel has at most 3 pending at once. Approvals are read on
every check (a primary-key lookup), so ``chorus pairing approve`` in another process
counts from the running service's next message on.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .store import Store

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_TTL = 3600.0  # seconds
MAX_PENDING = 3  # per channel

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Sender:
    """Who asks: the platform's id, display name and handle (without "@")."""

    id: str
    name: str
    username: str | None = None

    @property
    def label(self) -> str:
        """``Ada (@ada)``, or just the name when there is no handle."""
        return f"{self.name} (@{self.username})" if self.username else self.name


@dataclass(frozen=True, slots=True)
class PairingRequest:
    channel: str
    code: str
    sender: Sender
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Issued:
    """The outcome of asking for a code: the request (new or still valid), or ``None`` when the channel is full."""

    request: PairingRequest | None
    new: bool = False


class PairingError(Exception):
    """An approval that cannot be made; the message says why and what to do."""


def new_code() -> str:
    """A random code from ``CODE_ALPHABET``."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(code: str) -> str:
    """What the owner typed, as stored: codes are upper case; spaces and dashes are ignored."""
    return code.strip().upper().replace("-", "").replace(" ", "")


class Pairing:
    """Pairing requests and approvals of every channel, on the store's connection."""

    def __init__(self, store: Store, clock: Clock = time.time) -> None:
        self.store = store
        self.clock = clock

    async def approved(self, channel: str, sender_id: str) -> bool:
        """Whether the owner approved this sender on this channel."""
        async with self.store.db.execute(
            "SELECT 1 FROM access_approvals WHERE channel = ? AND sender_id = ?", (channel, sender_id)
        ) as cur:
            return await cur.fetchone() is not None

    async def request(self, channel: str, sender: Sender) -> Issued:
        """The sender's valid code, a new one, or none when ``MAX_PENDING`` others wait already."""
        now = self.clock()
        async with self.store.transaction() as db:  # count and insert together: two strangers at once make 2, not 4
            await db.execute(
                "DELETE FROM pairing_requests WHERE channel = ? AND status = 'pending' AND expires_at <= ?", (channel, now)
            )
            async with db.execute(
                "SELECT * FROM pairing_requests WHERE channel = ? AND sender_id = ? AND status = 'pending'",
                (channel, sender.id),
            ) as cur:
                row = await cur.fetchone()
            if row is not None:
                return Issued(_request(row))
            async with db.execute(
                "SELECT COUNT(*) FROM pairing_requests WHERE channel = ? AND status = 'pending'", (channel,)
            ) as cur:
                pending = (await cur.fetchone())[0]
            if pending >= MAX_PENDING:
                return Issued(None)
            request = PairingRequest(channel, "", sender, now, now + CODE_TTL)
            for _ in range(5):  # a clash with an earlier code of this channel is rare; draw again
                request = PairingRequest(channel, new_code(), sender, now, now + CODE_TTL)
                try:
                    await db.execute(
                        "INSERT INTO pairing_requests (channel, code, sender_id, sender_name, sender_username,"
                        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (channel, request.code, sender.id, sender.name, sender.username, now, request.expires_at),
                    )
                    break
                except sqlite3.IntegrityError:
                    continue
            else:
                raise PairingError("could not draw an unused pairing code")
        return Issued(request, new=True)

    async def pending(self, channel: str | None = None) -> list[PairingRequest]:
        """Valid requests waiting for the owner, oldest first (of one channel, or all)."""
        async with self.store.db.execute(
            "SELECT * FROM pairing_requests WHERE status = 'pending' AND expires_at > ?"
            " AND (? IS NULL OR channel = ?) ORDER BY created_at, id",
            (self.clock(), channel, channel),
        ) as cur:
            return [_request(r) for r in await cur.fetchall()]

    async def approve(self, channel: str, code: str) -> PairingRequest:
        """Approve the sender who was given ``code``; raises ``PairingError`` for an unknown, used or expired code."""
        code = normalize_code(code)
        now = self.clock()
        async with self.store.transaction() as db:
            async with db.execute(
                "SELECT * FROM pairing_requests WHERE channel = ? AND code = ?", (channel, code)
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                raise PairingError(f"no pairing request with code {code} on {channel}; "
                                   f"`chorus pairing list {channel}` shows the pending ones")
            request = _request(row)
            if row["status"] == "approved":
                raise PairingError(f"code {code} was approved already: {request.sender.label} can chat")
            if row["expires_at"] <= now:
                raise PairingError(f"code {code} expired; {request.sender.label} gets a new one by writing again")
            await db.execute(
                "UPDATE pairing_requests SET status = 'approved', decided_at = ? WHERE id = ?", (now, row["id"])
            )
            await db.execute(
                "INSERT INTO access_approvals (channel, sender_id, sender_name, sender_username, code, approved_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel, sender_id) DO UPDATE SET"
                " sender_name = excluded.sender_name, sender_username = excluded.sender_username,"
                " code = excluded.code, approved_at = excluded.approved_at",
                (channel, request.sender.id, request.sender.name, request.sender.username, code, now),
            )
        return request


    async def deny(self, channel: str, code: str) -> PairingRequest:
        """Refuse the pending request with ``code``: it is forgotten, and its slot free for someone else."""
        code = normalize_code(code)
        async with self.store.transaction() as db:
            async with db.execute("SELECT * FROM pairing_requests WHERE channel = ? AND code = ? AND status = 'pending'",
                                  (channel, code)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise PairingError(f"no pending pairing request with code {code} on {channel}; "
                                   f"`chorus pairing list {channel}` shows the pending ones")
            await db.execute("DELETE FROM pairing_requests WHERE id = ?", (row["id"],))
        return _request(row)

    async def revoke(self, channel: str, sender_id: str) -> Sender:
        """Take back an approval: the sender's next message is treated as a stranger's."""
        async with self.store.transaction() as db:
            async with db.execute("SELECT * FROM access_approvals WHERE channel = ? AND sender_id = ?",
                                  (channel, sender_id)) as cur:
                row = await cur.fetchone()
            if row is None:
                raise PairingError(f"{channel} id {sender_id} is not approved; "
                                   f"`chorus pairing list {channel} --approved` shows who is")
            await db.execute("DELETE FROM access_approvals WHERE channel = ? AND sender_id = ?", (channel, sender_id))
        return Sender(row["sender_id"], row["sender_name"], row["sender_username"])

    async def approved_senders(self, channel: str) -> list[tuple[Sender, float]]:
        """Who the owner approved on ``channel``, and when, oldest first."""
        async with self.store.db.execute(
            "SELECT * FROM access_approvals WHERE channel = ? ORDER BY approved_at", (channel,)
        ) as cur:
            return [(Sender(r["sender_id"], r["sender_name"], r["sender_username"]), r["approved_at"])
                    for r in await cur.fetchall()]

    async def next_free(self, channel: str) -> float | None:
        """When the oldest pending request of a full channel expires (a slot frees), or ``None``."""
        pending = await self.pending(channel)
        return min(r.expires_at for r in pending) if pending else None


def _request(row: sqlite3.Row) -> PairingRequest:
    return PairingRequest(
        row["channel"], row["code"], Sender(row["sender_id"], row["sender_name"], row["sender_username"]),
        row["created_at"], row["expires_at"],
    )
