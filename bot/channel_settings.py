"""The one place the config file becomes each channel's plain settings.

Channels know nothing of the config: each takes a frozen settings dataclass of its own
(``channels.<name>.settings``). Every channel gets the same kind of translator here,
``<name>_settings(config, lookup)``, which returns ``None`` when the channel is not configured
(no token) or is disabled. ``lookup`` finds a variable by name the way the runtime does
(``Env.lookup``: the environment, the config's ``env`` block, then ``.env``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from channels.discord.settings import ChannelRule, DiscordSettings, GuildRule
from channels.outbox import RetrySettings
from net.http import Proxy, choose_proxy

from .catalog import offered_refs
from .commands import HELP
from .config import ChorusConfig, Retry, TelegramChannel, check_secret

if TYPE_CHECKING:
    from channels.telegram.settings import TelegramSettings

Lookup = Callable[[str, ChorusConfig], "str | None"]


def telegram_token(config: ChorusConfig, lookup: Lookup) -> str | None:
    """``botToken``, else the file named by ``tokenFile``, else ``TELEGRAM_BOT_TOKEN`` found by ``lookup``.

    Raises ``OSError`` when ``tokenFile`` cannot be read (``chorus doctor`` reports it).
    """
    cfg = config.channels.telegram
    if cfg.bot_token is not None:
        return cfg.bot_token.get_secret_value().strip() or None
    if cfg.token_file:
        token = Path(cfg.token_file).expanduser().read_text(encoding="utf-8").strip() or None
        return check_secret(token, f"channels.telegram.tokenFile ({cfg.token_file})")
    return check_secret(lookup("TELEGRAM_BOT_TOKEN", config), "TELEGRAM_BOT_TOKEN")


def telegram_proxy(cfg: TelegramChannel) -> Proxy | None:
    """``channels.telegram.proxy``, else the environment's proxy for the Bot API root."""
    from channels.telegram.api import DEFAULT_ROOT

    return choose_proxy(cfg.proxy, cfg.api_root or DEFAULT_ROOT, key="channels.telegram.proxy")


def telegram_settings(config: ChorusConfig, lookup: Lookup) -> TelegramSettings | None:
    """The Telegram adapter's settings from ``channels.telegram``; the chat commands fill its command menu."""
    cfg = config.channels.telegram
    token = telegram_token(config, lookup)
    if not token or not cfg.enabled:
        return None
    from channels.telegram.settings import TelegramSettings  # its module loads the Bot API client: only when used

    return TelegramSettings(
        token=token, api_root=cfg.api_root, proxy=telegram_proxy(cfg), webhook_url=cfg.webhook_url,
        webhook_secret=cfg.webhook_secret.get_secret_value() if cfg.webhook_secret else None,
        webhook_path=cfg.webhook_path, webhook_host=cfg.webhook_host, webhook_port=cfg.webhook_port,
        poll_timeout=cfg.poll_timeout_seconds, streaming=cfg.streaming,
        stream_throttle=cfg.stream_throttle_ms / 1000, require_mention=cfg.require_mention,
        groups={key: group.require_mention for key, group in cfg.groups.items()},
        commands=re.findall(r"^/(\w+)[^—\n]*— (.+)$", HELP, re.M), reply_to_mode=cfg.reply_to_mode,
        retry=retry_settings(cfg.retry, config, lookup), timeout=cfg.timeout_seconds,
    )


def discord_settings(config: ChorusConfig, lookup: Lookup) -> DiscordSettings | None:
    """The Discord adapter's settings from ``channels.discord`` (token: ``token``, else ``DISCORD_BOT_TOKEN``)."""
    cfg = config.channels.discord
    token = cfg.token.get_secret_value() if cfg.token else check_secret(lookup("DISCORD_BOT_TOKEN", config),
                                                                        "DISCORD_BOT_TOKEN")
    if not token or not cfg.enabled:
        return None

    def ids(values: list[str | int] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(str(v) for v in values)

    guilds = {gid: GuildRule(g.require_mention, ids(g.users) or frozenset(), {
        key: ChannelRule(c.enabled, c.require_mention, ids(c.users)) for key, c in g.channels.items()})
        for gid, g in cfg.guilds.items()}
    return DiscordSettings(
        token=token, api_base=cfg.api_base, gateway_url=cfg.gateway_url, shard_count=cfg.shard_count,
        require_mention=cfg.require_mention,
        proxy=choose_proxy(cfg.proxy, cfg.api_base or "https://discord.com", key="channels.discord.proxy"),
        allow_bots=cfg.allow_bots, guilds=guilds, stream=cfg.streaming.mode == "partial",
        throttle=cfg.streaming.throttle_ms / 1000,
        media_max_bytes=int(cfg.media_max_mb * 1_048_576) if cfg.media_max_mb else None,
        reply_to_mode=cfg.reply_to_mode or "first",
        retry=retry_settings(cfg.retry, config, lookup),
        models=tuple(str(ref) for ref in offered_refs(list(config.agents.defaults.models))),
    )


def retry_settings(retry: Retry, config: ChorusConfig, lookup: Lookup) -> RetrySettings:
    """A channel's ``retry`` block as the outbox takes it; ``CHORUS_TIME_SCALE`` shortens every wait (tests)."""
    scale = float(lookup("CHORUS_TIME_SCALE", config) or 1)
    return RetrySettings(retry.attempts, retry.min_delay_ms / 1000, retry.max_delay_ms / 1000, retry.jitter, scale)
