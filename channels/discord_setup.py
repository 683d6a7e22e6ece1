"""Set-up checks for ``chorus doctor``: does Discord take the token, and may the bot read message text?"""

from __future__ import annotations

import httpx

from .discord_settings import DiscordSettings

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
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as http:
            me = await http.get("/users/@me")
            if me.status_code == 401:
                return [("discord token", False, "Discord refused the token (channels.discord.token or DISCORD_BOT_TOKEN)")]
            me.raise_for_status()
            app = await http.get("/applications/@me")
            app.raise_for_status()
    except httpx.HTTPError as exc:
        return [("discord token", False, f"{base} could not be asked ({type(exc).__name__})")]
    user = me.json()
    found = [("discord token", True, f"logged in as {user.get('username')} (id {user.get('id')})")]
    if int(app.json().get("flags") or 0) & MESSAGE_CONTENT:
        return found + [("discord intents", True, "Message Content intent enabled")]
    return found + [("discord intents", False, INTENT_HELP)]
