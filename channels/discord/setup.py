"""Set-up checks for ``chorus doctor``: does Discord take the token, and may the bot read message text?"""

from __future__ import annotations

import aiohttp

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
        # No proxy from the environment, as discord.py itself (the channel this checks) uses none.
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as http:
            async with http.get(f"{base}/users/@me") as me:
                if me.status == 401:
                    return [("discord token", False, "Discord refused the token (channels.discord.token or DISCORD_BOT_TOKEN)")]
                me.raise_for_status()
                user = await me.json()
            async with http.get(f"{base}/applications/@me") as app:
                app.raise_for_status()
                flags = int((await app.json()).get("flags") or 0)
    except (TimeoutError, aiohttp.ClientError) as exc:
        return [("discord token", False, f"{base} could not be asked ({type(exc).__name__})")]
    found = [("discord token", True, f"logged in as {user.get('username')} (id {user.get('id')})")]
    if flags & MESSAGE_CONTENT:
        return found + [("discord intents", True, "Message Content intent enabled")]
    return found + [("discord intents", False, INTENT_HELP)]
