"""Set-up checks for ``chorus doctor``: does Discord take the token, and may the bot read message text?"""

from __future__ import annotations

from net import http as net_http

from .settings import DiscordSettings

DEFAULT_API_BASE = "https://discord.com/api/v10"
# Application flags: the Message Content intent, for verified (18) and unverified (19) bots.
MESSAGE_CONTENT = (1 << 18) | (1 << 19)
INTENT_HELP = ("the Message Content intent is off, so the bot would see empty messages in servers: "
               "enable it in the Developer Portal (Bot > Privileged Gateway Intents)")


async def check(settings: DiscordSettings) -> list[tuple[str, bool, str]]:
    """(name, ok, detail) for the token and the Message Content intent; the token never appears in a detail."""
    base = (settings.api_base or DEFAULT_API_BASE).rstrip("/")
    headers = {"Authorization": f"Bot {settings.token}", "User-Agent": "DiscordBot (chorus, 0.1)"}
    try:
        # Through the channel's own proxy (the configured one, else the environment's), as discord.py goes.
        async with net_http.session(base, proxy=settings.proxy, headers=headers) as http:
            async with http.get(f"{base}/users/@me", timeout=net_http.deadline(10)) as me:
                if me.status == 401:
                    return [("discord token", False, "Discord refused the token (channels.discord.token or DISCORD_BOT_TOKEN)")]
                me.raise_for_status()
                user = await me.json()
            async with http.get(f"{base}/applications/@me", timeout=net_http.deadline(10)) as app:
                app.raise_for_status()
                flags = int((await app.json()).get("flags") or 0)
    except net_http.TRANSPORT_ERRORS as exc:
        via = f" through the proxy {settings.proxy.shown}" if settings.proxy else ""
        return [("discord token", False, f"{base} could not be asked{via} ({type(exc).__name__})")]
    found = [("discord token", True, f"logged in as {user.get('username')} (id {user.get('id')})")]
    if flags & MESSAGE_CONTENT:
        return found + [("discord intents", True, "Message Content intent enabled")]
    return found + [("discord intents", False, INTENT_HELP)]
