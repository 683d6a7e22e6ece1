"""The discord.py client as Chorus uses it: explicit intents, no mass pings, and REST and gateway at the
configured addresses (a REST proxy in front of Discord, or the fake Discord of the tests).

discord.py builds every REST URL from the class-wide ``Route.BASE`` and opens its first gateway connection
at the built-in ``wss://gateway.discord.gg``; both are rebased here per client instance (its HTTP client,
and the webhook adapter used by interaction responses in this task's context), never by changing the
library's globals.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

from net import http

from .settings import DiscordSettings

log = logging.getLogger("chorus.discord")


def intents() -> discord.Intents:
    """What the bot must receive: servers and their channels/threads, messages in servers and DMs, and
    their text (the privileged Message Content intent; without it guild messages arrive empty)."""
    wanted = discord.Intents.none()
    wanted.guilds = True
    wanted.guild_messages = True
    wanted.dm_messages = True
    wanted.message_content = True
    return wanted


def safe_mentions(*, reply: bool = False) -> discord.AllowedMentions:
    """No @everyone, @here, role or user ping, whatever the text says; a reply may notify its addressee."""
    return discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=reply)


class Rebase:
    """Maps discord.py's built-in Discord URLs to the configured ones."""

    def __init__(self, api_base: str | None, gateway_url: str | None) -> None:
        self.api_base = api_base.rstrip("/") if api_base else None
        self.gateway: yarl.URL | None = yarl.URL(gateway_url) if gateway_url else None

    def rest(self, url: str) -> str:
        if self.api_base and url.startswith(Route.BASE):
            return self.api_base + url[len(Route.BASE):]
        return url

    def websocket(self, url: str) -> str:
        """The built-in gateway (first connect, or after an invalidated session) becomes the configured one;
        the ``resume_gateway_url`` that READY gave is kept."""
        parsed = yarl.URL(url)
        if self.gateway is not None and parsed.host == DiscordWebSocket.DEFAULT_GATEWAY.host:
            return str(self.gateway.with_query(parsed.query))
        return url

    def install(self, http: Any) -> None:
        """Rebase this client's HTTP requests and websocket connections."""
        request, ws_connect = http.request, http.ws_connect

        async def rebased_request(route: Route, **kwargs: Any) -> Any:
            route.url = self.rest(route.url)
            return await request(route, **kwargs)

        async def rebased_ws_connect(url: str, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
            return await ws_connect(self.websocket(url), **kwargs)

        http.request, http.ws_connect = rebased_request, rebased_ws_connect
        self.install_webhooks()

    def install_webhooks(self) -> None:
        """Rebase interaction responses and follow-ups made in this task's context (discord.py's webhook
        adapter is a context variable: set where the client is built, and where a follow-up is sent)."""
        if self.api_base:
            async_context.set(_RebasedWebhooks(self))


class _RebasedWebhooks(AsyncWebhookAdapter):
    def __init__(self, rebase: Rebase) -> None:
        super().__init__()
        self.rebase = rebase

    async def request(self, route: Route, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        route.url = self.rebase.rest(route.url)
        return await super().request(route, *args, **kwargs)


SetupHook = Callable[["ChorusClient"], Awaitable[None]]
IDENTIFY_SPACING = 5.0  # seconds: Discord takes ``max_concurrency`` IDENTIFYs per 5 s, one per bucket


class Identifies:
    """Spaces this instance's IDENTIFYs as Discord requires: one per 5 s in each bucket (shard id modulo the
    ``max_concurrency`` that GET /gateway/bot gave), whichever of its shards they come from."""

    def __init__(self, concurrency: int = 1) -> None:
        self.concurrency = max(1, concurrency)
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def turn(self, shard_id: int | None) -> None:
        """Return when shard ``shard_id`` may IDENTIFY."""
        bucket = (shard_id or 0) % self.concurrency
        async with self._locks.setdefault(bucket, asyncio.Lock()):
            if (wait := self._last.get(bucket, -IDENTIFY_SPACING) + IDENTIFY_SPACING - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self._last[bucket] = time.monotonic()


def proxy_options(settings: DiscordSettings) -> dict[str, Any]:
    """discord.py's own options for ``settings.proxy``: an HTTP(S) proxy by URL (REST and gateway; the login goes
    to the proxy only), a SOCKS one as the connector of its session. Needs the running loop."""
    if settings.proxy is None:
        return {}
    if settings.proxy.scheme.startswith("socks"):
        connector, _ = http.connector(settings.api_base or "https://discord.com", proxy=settings.proxy)
        return {"connector": connector}
    return {"proxy": settings.proxy.url}


class ChorusClient(discord.Client):
    """A plain client: for REST only (logged in, never connected to the gateway), its start-up running
    ``on_setup``; or one shard's gateway connection (``shard``: id and count) at ``gateway``."""

    def __init__(self, settings: DiscordSettings, on_setup: SetupHook | None = None, *,
                 shard: tuple[int, int] | None = None, gateway: str | None = None,
                 identifies: Identifies | None = None) -> None:
        # Chorus joins no voice channels: discord.py's warn-once flags for missing voice libraries stay quiet.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        shards = {"shard_id": shard[0], "shard_count": shard[1]} if shard else {}
        super().__init__(intents=intents(), allowed_mentions=safe_mentions(), max_messages=None, **shards,
                         **proxy_options(settings))
        self.settings = settings
        self.rebase = Rebase(settings.api_base, settings.gateway_url or gateway)
        self.rebase.install(self.http)
        self._on_setup = on_setup
        self._identifies = identifies or Identifies()

    def followup(self, application_id: int, token: str) -> discord.Webhook:
        """The follow-up webhook of an interaction received by any instance (``Interaction.followup`` rebuilt
        from its application id and token), its requests rebased in the calling task."""
        self.rebase.install_webhooks()
        return discord.Webhook.from_state({"id": application_id, "type": 3, "token": token}, self._connection)

    async def setup_hook(self) -> None:
        if self._on_setup is not None:
            await self._on_setup(self)

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py waits 5 s before every IDENTIFY but a client's first; its own shards start together here
        await self._identifies.turn(shard_id)
