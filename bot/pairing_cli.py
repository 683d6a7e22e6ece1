"""``chorus pairing list|approve|deny|revoke``: the owner's side of pairing, beside a running service."""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from .config import Channels
from .pairing import Pairing, PairingError
from .store import Store

T = TypeVar("T")


def channel_names() -> list[str]:
    """The channels that have an access policy (a ``channels.<name>`` section in the config)."""
    return list(Channels.model_fields)


async def pairing_list(db_path: Path, channel: str) -> int:
    """Print the channel's valid pending codes with who asked and how long ago."""
    store = await Store.open(db_path)
    try:
        requests = await Pairing(store).pending(channel)
    finally:
        await store.close()
    if not requests:
        print(f"No pending pairing requests on {channel}.")
        return 0
    now = time.time()
    rows = [("CODE", "SENDER ID", "NAME", "AGE", "EXPIRES IN")] + [
        (r.code, r.sender.id, r.sender.label, duration(now - r.created_at), duration(r.expires_at - now))
        for r in requests
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join([cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]))
    print(f"Approve one with: chorus pairing approve {channel} CODE")
    return 0


async def pairing_deny(db_path: Path, channel: str, code: str) -> int:
    """Refuse the request with ``code``; its slot is free again (a stranger who writes again gets a new code)."""
    return await _change(db_path, lambda pairing: pairing.deny(channel, code),
                         lambda request: f"Denied {request.sender.label}, {channel} id {request.sender.id}.")


async def pairing_revoke(db_path: Path, channel: str, sender_id: str) -> int:
    """Take back an approval; from their next message on, the sender is a stranger again."""
    return await _change(db_path, lambda pairing: pairing.revoke(channel, sender_id),
                         lambda sender: f"Revoked {sender.label}, {channel} id {sender.id}: they can no longer chat "
                                        "with the bot.")


async def pairing_approved(db_path: Path, channel: str) -> int:
    """Who was approved on ``channel``, and how long ago."""
    store = await Store.open(db_path)
    try:
        approved = await Pairing(store).approved_senders(channel)
    finally:
        await store.close()
    if not approved:
        print(f"No approved senders on {channel}.")
        return 0
    now = time.time()
    rows = [("SENDER ID", "NAME", "APPROVED")] + [(s.id, s.label, duration(now - at) + " ago") for s, at in approved]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for row in rows:
        print(f"{row[0].ljust(widths[0])}  {row[1].ljust(widths[1])}  {row[2]}")
    print(f"Revoke one with: chorus pairing revoke {channel} SENDER_ID")
    return 0


async def pairing_approve(db_path: Path, channel: str, code: str) -> int:
    """Approve the sender who was given ``code``; a running service lets them in from their next message."""
    return await _change(db_path, lambda pairing: pairing.approve(channel, code),
                         lambda request: f"Approved {request.sender.label}, {channel} id {request.sender.id}: they "
                                         "can chat with the bot now.")


async def _change(db_path: Path, change: Callable[[Pairing], Awaitable[T]], said: Callable[[T], str]) -> int:
    """One pairing decision from the command line: done and said (exit 0), or the reason on stderr (exit 1)."""
    store = await Store.open(db_path)
    try:
        done = await change(Pairing(store))
    except PairingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(said(done))
    return 0


def duration(seconds: float) -> str:
    """``45s``, ``12m``, ``1h05m``: short enough for a table."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
