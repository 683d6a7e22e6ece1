"""From a discord.py ``Message`` to an ``Inbound``: where it was said, by whom, what, and with which files;
and whether the bot should hear it at all (other bots, servers and channels not allowed by ``guilds``)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import aiohttp
import discord

from ..base import Attachment, AttachmentKind, ChatRef, FetchError, Inbound, Replied
from ..outbox import RetrySettings, attempt
from .outbound import classify
from .settings import ChannelRule, DiscordSettings, GuildRule

log = logging.getLogger("chorus.discord")
NOT_FETCHED = "I couldn't fetch the file you sent from Discord; please send it again."

CHANNEL = "discord"
_USER = re.compile(r"<@!?(\d+)>")
_ROLE = re.compile(r"<@&(\d+)>")
_CHANNEL = re.compile(r"<#(\d+)>")


@dataclass(frozen=True, slots=True)
class Where:
    """The chat a message belongs to, and the rules that apply there."""

    chat: ChatRef
    guild: GuildRule | None = None
    rule: ChannelRule | None = None


def chat_of(channel: object, settings: DiscordSettings) -> Where | None:
    """The chat of ``channel``: a DM, a server channel, or a thread/forum post (its own session);
    ``None`` when ``guilds`` does not allow it."""
    guild = getattr(channel, "guild", None)
    # A channel of a server not (yet) in the cache is a PartialMessageable that still knows its server id.
    guild_id = guild.id if guild is not None else getattr(channel, "guild_id", None)
    if guild_id is None:
        kind: Literal["direct", "group"] = "group" if isinstance(channel, discord.GroupChannel) else "direct"
        return Where(ChatRef(CHANNEL, str(channel.id), kind=kind))  # type: ignore[attr-defined]
    guild_rule = settings.guilds.get(str(guild_id))
    if settings.guilds and guild_rule is None:
        return None
    parent = channel.parent if isinstance(channel, discord.Thread) else None
    home = parent or channel
    rule = None
    if guild_rule is not None:
        rule = guild_rule.channels.get(str(home.id)) or guild_rule.channels.get(getattr(home, "name", "") or "")
        if rule is not None and not rule.enabled:
            return None
    if isinstance(channel, discord.Thread):
        chat = ChatRef(CHANNEL, str(channel.parent_id), thread_id=str(channel.id), kind="group")
    else:
        chat = ChatRef(CHANNEL, str(channel.id), kind="group")
    return Where(chat, guild_rule, rule)


def may_speak(where: Where, user_id: str) -> bool:
    """Whether ``guilds`` lets this user talk here (the channel's ``users`` first, else the server's)."""
    users = where.rule.users if where.rule and where.rule.users is not None else (where.guild.users if where.guild else None)
    return not users or user_id in users


def needs_mention(where: Where, settings: DiscordSettings) -> bool:
    """The channel's ``requireMention``, else the server's, else ``channels.discord.requireMention``."""
    for value in (where.rule.require_mention if where.rule else None, where.guild.require_mention if where.guild else None):
        if value is not None:
            return value
    return settings.require_mention


def to_inbound(message: discord.Message, me: discord.ClientUser, settings: DiscordSettings) -> Inbound | None:
    """The message as an ``Inbound``, or ``None`` when the bot should not hear it."""
    if message.author.id == me.id or (message.author.bot and not settings.allow_bots):
        return None
    if message.type not in (discord.MessageType.default, discord.MessageType.reply):
        return None  # joins, pins, thread-created notices
    where = chat_of(message.channel, settings)
    if where is None or not may_speak(where, str(message.author.id)):
        return None
    earlier = message.reference.resolved if message.reference else None
    earlier = earlier if isinstance(earlier, discord.Message) else None  # a deleted one resolves to no Message
    replied_to_me = earlier is not None and earlier.author.id == me.id
    mentioned = me in message.mentions or replied_to_me
    # ``mentioned`` tells the core the bot is addressed: where no mention is needed, every message is.
    addressed = mentioned or (where.chat.kind == "group" and not needs_mention(where, settings))
    return Inbound(
        chat=where.chat, sender_id=str(message.author.id), sender_name=message.author.display_name,
        sender_username=message.author.name,
        text=readable(message, me), message_id=str(message.id), mentioned=addressed or where.chat.kind == "direct",
        reply_to=str(message.reference.message_id) if message.reference and message.reference.message_id else None,
        attachments=[attachment(a, voice=message.flags.voice, retry=settings.retry) for a in message.attachments],
        received_at=message.created_at,
        replied=Replied(text=readable(earlier, me) or _files(earlier), author=earlier.author.display_name,
                        by_bot=replied_to_me) if earlier is not None else None,
    )


def _files(message: discord.Message) -> str:
    """What a message without text showed: ``[a file: notes.txt]``."""
    return " ".join(f"[a file: {a.filename}]" for a in message.attachments)


def readable(message: discord.Message, me: discord.ClientUser) -> str:
    """The text with mentions as names (``@Ann``, ``@moderators``, ``#general``) and the bot's own mention
    dropped, so the model reads what a person sees."""
    users = {str(u.id): u.display_name for u in message.mentions}
    roles = {str(r.id): r.name for r in message.role_mentions}
    text = _USER.sub(lambda m: "" if m[1] == str(me.id) else "@" + users.get(m[1], "unknown-user"), message.content)
    text = _ROLE.sub(lambda m: "@" + roles.get(m[1], "unknown-role"), text)
    guild = message.guild

    def channel_name(m: re.Match[str]) -> str:
        found = guild.get_channel_or_thread(int(m[1])) if guild else None
        return "#" + (found.name if found else "unknown-channel")

    return re.sub(r"[ \t]{2,}", " ", _CHANNEL.sub(channel_name, text)).strip()


def attachment(a: discord.Attachment, *, voice: bool, retry: RetrySettings = RetrySettings()) -> Attachment:
    """A Discord attachment, fetched only when needed; its URL is kept to fetch it again after a restart."""
    mime = (a.content_type or "").split(";", 1)[0] or None
    return Attachment(kind=kind_of(mime, voice), mime=mime, filename=a.filename, size=a.size,
                      duration=a.duration, fetch=fetcher(a.read, retry, a.filename), source=a.url)


def fetcher(read: Callable[[], Awaitable[bytes]], retry: RetrySettings, name: str) -> Callable[[], Awaitable[bytes]]:
    """``read`` retried like a send while its failure may pass; one that remains is a ``FetchError`` whose text
    asks the user to send the file again (the core says it instead of apologising for a crash)."""
    async def fetch() -> bytes:
        try:
            return await attempt(read, classify, retry, f"channel=discord file={name}")
        except (discord.HTTPException, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.warning("could not download a file the user sent (%s: %s)", type(exc).__name__, exc)
            raise FetchError(NOT_FETCHED) from None
    return fetch


def kind_of(mime: str | None, voice: bool) -> AttachmentKind:
    if voice:
        return AttachmentKind.VOICE
    major = (mime or "").split("/", 1)[0]
    return {"audio": AttachmentKind.AUDIO, "image": AttachmentKind.IMAGE, "video": AttachmentKind.VIDEO}.get(
        major, AttachmentKind.DOCUMENT)
