"""The Telegram adapter's settings as plain data (the core builds them from ``channels.telegram``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from net.http import Proxy

from ..outbox import RetrySettings
from .outbound import ReplyToMode, Streaming

GREETING = "Hi! I'm Chorus. Write to me, or send a voice note or a photo. /help lists the commands."


@dataclass(frozen=True, slots=True)
class TelegramSettings:
    """What the adapter needs from the config (``channels.telegram``), as plain values."""

    token: str
    api_root: str | None = None
    proxy: Proxy | None = None  # the configured one, else the environment's
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_path: str = "/telegram-webhook"
    webhook_host: str = "127.0.0.1"
    webhook_port: int = 8787
    poll_timeout: int = 30
    streaming: Streaming = "partial"
    stream_throttle: float = 0.7
    require_mention: bool = True
    groups: Mapping[str, bool | None] = field(default_factory=dict)
    commands: Sequence[tuple[str, str]] = ()
    greeting: str = GREETING
    reply_to_mode: ReplyToMode | None = None
    retry: RetrySettings = RetrySettings()
    timeout: float = 60.0  # seconds of silence after which a call is given up
