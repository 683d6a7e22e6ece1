"""Who may talk to the bot: each channel's DM and group policy, the same for every adapter.

Keys and meanings follow OpenClaw's ``channels.<name>`` settings:

- ``dmPolicy``: ``pairing`` (default: an unknown sender gets a one-time code for the
  owner to approve), ``allowlist`` (only ``allowFrom`` and approved senders), ``open``,
  ``disabled``.
- ``allowFrom``: sender ids, or ``@usernames``; ``"*"`` is anyone. A ``telegram:`` /
  ``tg:`` / ``discord:`` prefix is ignored.
- ``groupPolicy``: ``allowlist`` (default: a group message counts only from a sender,
  or in a group, listed in ``groupAllowFrom``, which falls back to ``allowFrom`` when
  empty), ``open``, ``disabled``. Mention gating comes after, in the dispatcher.

The console (and any channel without a ``channels.<name>`` section) is the local
owner: always allowed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from channels.base import Inbound

from .config import ChannelBase, ChorusConfig
from .pairing import MAX_PENDING, Clock, Pairing, PairingRequest, Sender
from .store import Store

log = logging.getLogger("chorus.access")

_PREFIXES = {"telegram": ("telegram:", "tg:"), "discord": ("discord:",)}

PAIRING_TEXT = (
    "Hi {name}! I only chat with people my owner has approved.\n"
    "Your pairing code: {code}\n"
    "Send it to the owner, who approves it with: chorus pairing approve {channel} {code}\n"
    "The code expires in {minutes}."
)
FULL_TEXT = (
    "Sorry, I can't take your request right now: the owner has too many pending requests. "
    "Please try again in {minutes}."
)
APPROVED_TEXT = "You're in! The owner approved you; I'll answer your message now."
REFUSED_TEXT = (
    "Sorry, I only chat with people my owner has allowed. "
    "Your {channel} id is {sender_id}; the owner can add it to channels.{channel}.allowFrom."
)

# Why a message was refused, as the owner's log says it.
_REASONS = {
    "dm-disabled": "direct messages are off (channels.{channel}.dmPolicy: disabled)",
    "not-allowed": "not in channels.{channel}.allowFrom (dmPolicy: allowlist)",
    "pairing-pending": "their pairing code waits for approval (chorus pairing list {channel})",
    "group-disabled": "groups are off (channels.{channel}.groupPolicy: disabled)",
}


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a message may go on, why (for the log), and what to tell a refused sender (``None``: nothing)."""

    allowed: bool
    reason: str
    reply: str | None = None
    code: str | None = field(default=None, compare=False)  # a new pairing request's code, for the owner's log


class AccessPolicy:
    """Decides, per message, from the config and the approvals in SQLite (read fresh every time)."""

    def __init__(self, store: Store, config: ChorusConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.pairing = Pairing(store, clock)
        self._groups_told: set[tuple[str, str]] = set()  # refused groups already named to the owner at INFO

    def settings(self, channel: str) -> ChannelBase | None:
        """The channel's section of the config; ``None`` for the console and other local channels."""
        section = getattr(self.config.channels, channel, None)
        return section if isinstance(section, ChannelBase) else None

    async def check(self, inbound: Inbound) -> Decision:
        """The decision for one message; a refusal is logged with the ids the owner needs to allow it."""
        settings = self.settings(inbound.chat.channel)
        if settings is None:
            return Decision(True, "local")
        if inbound.chat.kind == "group":
            decision = _group(inbound, settings)
        else:
            decision = await self._direct(inbound, settings)
        if not decision.allowed:
            self._log_refusal(inbound, decision)
        return decision

    def _log_refusal(self, inbound: Inbound, decision: Decision) -> None:
        """One line the owner can act on: who, which ids, and the key or command that lets them in.
        A refused group is named at INFO once per run (every message there is refused), then at DEBUG."""
        channel, who = inbound.chat.channel, f"{inbound.sender_name} ({inbound.sender_id})"
        if decision.reason == "pairing-new":
            log.info("%s: %s asked to pair: code %s (approve with: chorus pairing approve %s %s)",
                     channel, who, decision.code, channel, decision.code)
        elif decision.reason == "pairing-full":
            log.warning("%s: %s asked to pair, but %d requests are pending already; they were told to try later "
                        "(see `chorus pairing list %s`)", channel, who, MAX_PENDING, channel)
        elif decision.reason == "group-not-allowed":
            first = (channel, inbound.chat.chat_id) not in self._groups_told
            self._groups_told.add((channel, inbound.chat.chat_id))
            log.log(logging.INFO if first else logging.DEBUG,
                    "%s: ignored a message from group %s (sender %s): not allowed; add the group's id to "
                    "channels.%s.groupAllowFrom (or set groupPolicy: open)", channel, inbound.chat.chat_id, who, channel)
        else:
            log.info("%s: refused a message from %s in chat %s: %s", channel, who, inbound.chat.chat_id,
                     _REASONS.get(decision.reason, decision.reason).format(channel=channel))

    async def _direct(self, inbound: Inbound, settings: ChannelBase) -> Decision:
        channel = inbound.chat.channel
        if settings.dm_policy == "disabled":
            return Decision(False, "dm-disabled")
        if settings.dm_policy == "open":
            return Decision(True, "dm-open")
        if listed(settings.allow_from, inbound) or str(owner_of(settings)) == inbound.sender_id:
            return Decision(True, "allow-from")
        if await self.pairing.approved(channel, inbound.sender_id):
            return Decision(True, "approved")
        if settings.dm_policy == "allowlist":
            return Decision(False, "not-allowed", REFUSED_TEXT.format(channel=channel, sender_id=inbound.sender_id))
        issued = await self.pairing.request(channel, Sender(inbound.sender_id, inbound.sender_name, inbound.sender_username))
        if issued.request is None:
            frees = await self.pairing.next_free(channel)
            return Decision(False, "pairing-full", FULL_TEXT.format(minutes=_minutes((frees or 0) - self.clock())))
        if not issued.new:  # the code was given once; saying it again to every message is noise
            return Decision(False, "pairing-pending")
        return Decision(False, "pairing-new", self._pairing_text(issued.request), code=issued.request.code)

    def _pairing_text(self, request: PairingRequest) -> str:
        return PAIRING_TEXT.format(name=request.sender.name, code=request.code, channel=request.channel,
                                   minutes=_minutes(request.expires_at - self.clock()))


def _minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute" + ("s" if minutes != 1 else "")


def owner_of(settings: ChannelBase | None) -> str | None:
    """The channel's ``ownerId``, where it has one."""
    owner = getattr(settings, "owner_id", None)
    return str(owner) if owner is not None else None


def _group(inbound: Inbound, settings: ChannelBase) -> Decision:
    if settings.group_policy == "disabled":
        return Decision(False, "group-disabled")
    if settings.group_policy == "open":
        return Decision(True, "group-open")
    if settings.lists_groups():
        return Decision(True, "group-listed")
    entries = settings.group_allow_from or settings.allow_from
    if listed(entries, inbound) or inbound.chat.chat_id in (_entry(e, inbound.chat.channel) for e in entries):
        return Decision(True, "group-allow-from")
    return Decision(False, "group-not-allowed")  # silent: a group is no place for refusals


def listed(entries: Sequence[str | int], inbound: Inbound) -> bool:
    """Whether ``entries`` (ids, ``@usernames``, ``"*"``) name the sender of ``inbound``."""
    username = (inbound.sender_username or "").lstrip("@").lower()
    for raw in entries:
        entry = _entry(raw, inbound.chat.channel)
        if entry == "*" or entry == inbound.sender_id:
            return True
        if entry.startswith("@") and username and entry[1:].lower() == username:
            return True
    return False


def _entry(raw: str | int, channel: str) -> str:
    entry = str(raw).strip()
    for prefix in _PREFIXES.get(channel, ()):
        if entry.lower().startswith(prefix):
            return entry[len(prefix):].strip()
    return entry
