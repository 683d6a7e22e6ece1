"""The Discord adapter's settings as plain data (the core builds them from ``channels.discord``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from net.http import Proxy

from ..outbox import RetrySettings

UPLOAD_LIMIT = 10 * 1024 * 1024  # Discord's upload limit for bots and unboosted servers


@dataclass(frozen=True, slots=True)
class ChannelRule:
    """A server channel's own rule (keyed by id or name)."""

    enabled: bool = True
    require_mention: bool | None = None
    users: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class GuildRule:
    """A server's rule: who may talk (empty: everyone), its channels, whether a mention is needed."""

    require_mention: bool | None = None
    users: frozenset[str] = frozenset()
    channels: dict[str, ChannelRule] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiscordSettings:
    token: str = field(repr=False)
    api_base: str | None = None
    gateway_url: str | None = None
    shard_count: int | None = None  # None: as many as GET /gateway/bot recommends
    proxy: Proxy | None = None  # REST and gateway: the configured one, else the environment's
    require_mention: bool = True
    allow_bots: bool = False
    guilds: dict[str, GuildRule] = field(default_factory=dict)  # empty: every server the bot is in
    stream: bool = True
    throttle: float = 1.2  # seconds between edits of a streamed answer
    media_max_bytes: int | None = None
    reply_to_mode: Literal["off", "first", "all"] = "first"  # which parts of an answer reply to the user's message
    models: tuple[str, ...] = ()  # the model refs /model's autocomplete offers
    retry: RetrySettings = RetrySettings()  # how the final parts of an answer are retried

    def upload_limit(self, chat_limit: int = UPLOAD_LIMIT) -> int:
        """The most a file may weigh in a chat whose own limit is ``chat_limit``."""
        return min(chat_limit, self.media_max_bytes or chat_limit)
