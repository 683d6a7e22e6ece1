"""Pairing requests and approvals in SQLite: the owner's explicit yes to a new direct-chat sender.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I), expires
after an hour, and a channel has at most 3 pending at once. Approvals are read on
every check (a primary-key lookup), so ``chorus pairing approve`` in another process
counts from the running service's next message on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .db.base import Row, Tx
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
        return await self.store.db.fetchrow(
            "SELECT 1 FROM access_approvals WHERE channel = ? AND sender_id = ?", channel, sender_id) is not None

    async def request(self, channel: str, sender: Sender) -> Issued:
        """The sender's valid code, a new one, or none when ``MAX_PENDING`` others wait already."""
        now = self.clock()

        async def issue(tx: Tx) -> Issued:  # count and insert together: two strangers at once make 2, not 4
            await tx.lock(f"pairing:{channel}")
            await tx.execute("DELETE FROM pairing_requests WHERE channel = ? AND status = 'pending' AND expires_at <= ?",
                             channel, now)
            row = await tx.fetchrow("SELECT * FROM pairing_requests WHERE channel = ? AND sender_id = ? AND status = 'pending'",
                                    channel, sender.id)
            if row is not None:
                return Issued(_request(row))
            if await tx.fetchval("SELECT COUNT(*) FROM pairing_requests WHERE channel = ? AND status = 'pending'",
                                 channel) >= MAX_PENDING:
                return Issued(None)
            taken = {r[0] for r in await tx.fetch("SELECT code FROM pairing_requests WHERE channel = ?", channel)}
            for _ in range(5):  # a clash with an earlier code of this channel is rare; draw again
                request = PairingRequest(channel, new_code(), sender, now, now + CODE_TTL)
                if request.code not in taken:
                    break
            else:
                raise PairingError("could not draw an unused pairing code")
            await tx.execute(
                "INSERT INTO pairing_requests (channel, code, sender_id, sender_name, sender_username,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                channel, request.code, sender.id, sender.name, sender.username, now, request.expires_at)
            return Issued(request, new=True)

        return await self.store.write(issue)

    async def pending(self, channel: str | None = None) -> list[PairingRequest]:
        """Valid requests waiting for the owner, oldest first (of one channel, or all)."""
        of_channel, args = ("", ()) if channel is None else (" AND channel = ?", (channel,))
        return [_request(r) for r in await self.store.db.fetch(
            f"SELECT * FROM pairing_requests WHERE status = 'pending' AND expires_at > ?{of_channel}"
            " ORDER BY created_at, id", self.clock(), *args)]

    async def approve(self, channel: str, code: str) -> PairingRequest:
        """Approve the sender who was given ``code``; raises ``PairingError`` for an unknown, used or expired code."""
        code = normalize_code(code)
        now = self.clock()

        async def approve(tx: Tx) -> PairingRequest:
            await tx.lock(f"pairing:{channel}")  # one approval of a code, however many owners click at once
            row = await tx.fetchrow("SELECT * FROM pairing_requests WHERE channel = ? AND code = ?", channel, code)
            if row is None:
                raise PairingError(f"no pairing request with code {code} on {channel}; "
                                   f"`chorus pairing list {channel}` shows the pending ones")
            request = _request(row)
            if row["status"] == "approved":
                raise PairingError(f"code {code} was approved already: {request.sender.label} can chat")
            if row["expires_at"] <= now:
                raise PairingError(f"code {code} expired; {request.sender.label} gets a new one by writing again")
            await tx.execute("UPDATE pairing_requests SET status = 'approved', decided_at = ? WHERE id = ?", now, row["id"])
            await tx.execute(
                "INSERT INTO access_approvals (channel, sender_id, sender_name, sender_username, code, approved_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel, sender_id) DO UPDATE SET"
                " sender_name = excluded.sender_name, sender_username = excluded.sender_username,"
                " code = excluded.code, approved_at = excluded.approved_at",
                channel, request.sender.id, request.sender.name, request.sender.username, code, now)
            return request

        return await self.store.write(approve)


    async def deny(self, channel: str, code: str) -> PairingRequest:
        """Refuse the pending request with ``code``: it is forgotten, and its slot free for someone else."""
        code = normalize_code(code)

        async def deny(tx: Tx) -> PairingRequest:
            row = await tx.fetchrow("SELECT * FROM pairing_requests WHERE channel = ? AND code = ? AND status = 'pending'",
                                    channel, code)
            if row is None:
                raise PairingError(f"no pending pairing request with code {code} on {channel}; "
                                   f"`chorus pairing list {channel}` shows the pending ones")
            await tx.execute("DELETE FROM pairing_requests WHERE id = ?", row["id"])
            return _request(row)

        return await self.store.write(deny)

    async def revoke(self, channel: str, sender_id: str) -> Sender:
        """Take back an approval: the sender's next message is treated as a stranger's."""
        async def revoke(tx: Tx) -> Sender:
            row = await tx.fetchrow("SELECT * FROM access_approvals WHERE channel = ? AND sender_id = ?", channel, sender_id)
            if row is None:
                raise PairingError(f"{channel} id {sender_id} is not approved; "
                                   f"`chorus pairing list {channel} --approved` shows who is")
            await tx.execute("DELETE FROM access_approvals WHERE channel = ? AND sender_id = ?", channel, sender_id)
            return Sender(row["sender_id"], row["sender_name"], row["sender_username"])

        return await self.store.write(revoke)

    async def approved_senders(self, channel: str) -> list[tuple[Sender, float]]:
        """Who the owner approved on ``channel``, and when, oldest first."""
        return [(Sender(r["sender_id"], r["sender_name"], r["sender_username"]), r["approved_at"])
                for r in await self.store.db.fetch("SELECT * FROM access_approvals WHERE channel = ? ORDER BY approved_at",
                                                   channel)]

    async def next_free(self, channel: str) -> float | None:
        """When the oldest pending request of a full channel expires (a slot frees), or ``None``."""
        pending = await self.pending(channel)
        return min(r.expires_at for r in pending) if pending else None


def _request(row: Row) -> PairingRequest:
    return PairingRequest(
        row["channel"], row["code"], Sender(row["sender_id"], row["sender_name"], row["sender_username"]),
        row["created_at"], row["expires_at"],
    )
