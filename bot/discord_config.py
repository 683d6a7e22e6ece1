"""From ``channels.discord`` in the config to the Discord adapter's plain settings."""

from __future__ import annotations

from collections.abc import Callable

from channels.discord.settings import ChannelRule, DiscordSettings, GuildRule
from channels.outbox import RetrySettings

from .config import ChorusConfig

Lookup = Callable[[str, ChorusConfig], "str | None"]  # a variable by name, as ``Env.lookup`` finds it


def discord_settings(config: ChorusConfig, lookup: Lookup, retry: RetrySettings = RetrySettings()
                     ) -> DiscordSettings | None:
    """The Discord adapter's settings, when a token is configured (``channels.discord.token``, else
    ``DISCORD_BOT_TOKEN`` found by ``lookup``, the runtime's ``Env.lookup``) and the channel is enabled."""
    cfg = config.channels.discord
    token = cfg.token.get_secret_value() if cfg.token else lookup("DISCORD_BOT_TOKEN", config)
    if not token or not cfg.enabled:
        return None

    def ids(values: list[str | int] | None) -> frozenset[str] | None:
        return None if values is None else frozenset(str(v) for v in values)

    guilds = {gid: GuildRule(g.require_mention, ids(g.users) or frozenset(), {
        key: ChannelRule(c.enabled, c.require_mention, ids(c.users)) for key, c in g.channels.items()})
        for gid, g in cfg.guilds.items()}
    return DiscordSettings(
        token=token, api_base=cfg.api_base, gateway_url=cfg.gateway_url, require_mention=cfg.require_mention,
        allow_bots=cfg.allow_bots, guilds=guilds, stream=cfg.streaming.mode == "partial",
        throttle=cfg.streaming.throttle_ms / 1000,
        media_max_bytes=int(cfg.media_max_mb * 1_048_576) if cfg.media_max_mb else None,
        retry=retry,
    )
