"""The Discord channel: DMs, server channels, threads and forum posts through discord.py's gateway client.

Normalization lives in ``inbound``, rendering in ``outbound``, the client (intents, safe
mentions, configured addresses) in ``client``; this module runs them and registers slash commands.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import discord
from discord import app_commands

from ..base import Attachment, Capabilities, ChatRef, Inbound, InboundHandler, Reply
from .client import ChorusClient
from .inbound import CHANNEL, chat_of, may_speak, to_inbound
from ..outbox import Outbox as DurableOutbox, Part, PartStore
from .outbound import DiscordStream, Outbox, classify, reply_parts
from .settings import DiscordSettings

log = logging.getLogger("chorus.discord")
UNREACHABLE = (OSError, aiohttp.ClientError, asyncio.TimeoutError, discord.GatewayNotFound, discord.DiscordServerError)

# The chat commands as slash commands: (name, description, argument name or None, argument description).
SLASH_COMMANDS = (
    ("new", "Start a fresh conversation (the old one is kept)", None, ""),
    ("model", "Show or set this chat's model", "ref", "e.g. openrouter/moonshotai/kimi-k2.6"),
    ("think", "How hard the model thinks", "level", "off, minimal, low, medium, high or xhigh"),
    ("tts", "Spoken replies in this chat", "mode", "off, always, inbound, tagged or status"),
    ("status", "Model, thinking, TTS, session length, tokens and cost", None, ""),
    ("stop", "Cancel the answer in progress", None, ""),
    ("retry", "Ask the model again for your last message, if it went unanswered", None, ""),
    ("help", "The commands", None, ""),
)


class DiscordChannel:
    """A Discord bot account; ``run`` connects and hands each message meant for the bot to the core."""

    name = CHANNEL
    capabilities = Capabilities(text_limit=2000, markdown="discord", voice_format="ogg_opus", streams_text=True)

    def __init__(self, settings: DiscordSettings, *, parts: PartStore | None = None) -> None:
        """``parts``: where unsent parts of answers are kept (the core's database); else in memory only."""
        self.settings = settings
        self.client: ChorusClient | None = None
        self.outbox: Outbox | None = None
        self.durable = DurableOutbox(CHANNEL, self._send_part, classify, store=parts, retry=settings.retry)
        self._ready = asyncio.Event()
        self._tree: app_commands.CommandTree[ChorusClient] | None = None
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()

    async def run(self, on_message: InboundHandler) -> str | None:
        """Connect until ``stop()``: once logged in, discord.py reconnects and resumes by itself; before that,
        an unreachable Discord is tried again with a growing pause. A refused token or intent ends the channel."""
        handler = self._handler(on_message)
        delay = 1.0
        while not self._stopping:
            client = self._connect(handler)  # built here: its webhook context is this task's
            try:
                await client.start(self.settings.token)
                return
            except UNREACHABLE as exc:
                log.warning("Discord is unreachable (%s); trying again in %.0f s", type(exc).__name__, delay)
            except discord.PrivilegedIntentsRequired:
                return ("Discord refused the connection: enable the Message Content intent for this bot "
                        "in the Developer Portal (Bot > Privileged Gateway Intents)")
            except discord.LoginFailure:
                return "Discord refused the bot token (channels.discord.token or DISCORD_BOT_TOKEN)"
            finally:
                if not client.is_closed():
                    await client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def _connect(self, handler: InboundHandler) -> ChorusClient:
        """A new client with its events and slash commands."""
        client = self.client = ChorusClient(self.settings, self._setup)
        self.outbox = Outbox(client)
        self._tree = app_commands.CommandTree(client)
        for name, text, arg, arg_text in SLASH_COMMANDS:
            self._tree.add_command(self._command(name, text, arg, arg_text, handler))

        @client.event
        async def on_ready() -> None:
            log.info("discord connected as %s in %d server(s)", client.user, len(client.guilds))
            first = not self._ready.is_set()
            self._ready.set()
            if first:  # what the last run left unsent goes first
                resuming = asyncio.create_task(self.durable.resume())
                self._background.add(resuming)
                resuming.add_done_callback(self._background.discard)

        @client.event
        async def on_message(message: discord.Message) -> None:
            assert client.user is not None
            inbound = to_inbound(message, client.user, self.settings)
            if inbound is not None and self.outbox is not None:
                if inbound.mentioned:
                    typing = asyncio.create_task(self.outbox.type_once(inbound.chat))  # a sign of life at once
                    self._background.add(typing)
                    typing.add_done_callback(self._background.discard)
                await handler(inbound)

        return client

    async def stop(self) -> None:
        self._stopping = True
        if self.client is not None:
            await self.client.close()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        """A whole reply; waits for the connection (a finished video may be delivered before it is up)."""
        await self.durable.deliver(reply_parts(chat, reply))

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> DiscordStream:
        """A stream that writes once connected: a turn recovered at start may open it before that."""
        return DiscordStream(self._connected_outbox, chat, reply_to, live=self.settings.stream,
                             throttle=self.settings.throttle, deliver=self.durable.deliver)

    async def _send_part(self, part: Part) -> None:
        await (await self._connected_outbox()).send_part(part)

    async def _connected_outbox(self) -> Outbox:
        """The outbox, once the gateway is up (it is made on connecting)."""
        await self._ready.wait()
        assert self.outbox is not None
        return self.outbox

    def reattach(self, attachment: Attachment) -> Attachment | None:
        """An attachment of a message accepted before a restart, fetched again from its URL."""
        if not attachment.source or not attachment.source.startswith(("https://", "http://")):
            return None
        url = attachment.source

        async def fetch() -> bytes:
            await self._ready.wait()
            assert self.client is not None
            return await self.client.http.get_from_cdn(url)

        return Attachment(kind=attachment.kind, mime=attachment.mime, filename=attachment.filename, size=attachment.size,
                          duration=attachment.duration, fetch=fetch, source=url)

    @staticmethod
    def _handler(on_message: InboundHandler) -> InboundHandler:
        async def handle(inbound: Inbound) -> None:
            try:
                await on_message(inbound)
            except Exception:  # one bad message must not take the event loop's task down silently
                log.exception("message not accepted chat=%s", inbound.chat.session_key)
        return handle

    async def _setup(self, client: ChorusClient) -> None:
        """After login: register the slash commands, per listed server, else globally."""
        tree = self._tree
        assert tree is not None
        try:
            if self.settings.guilds:
                for guild_id in self.settings.guilds:
                    guild = discord.Object(int(guild_id))
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.HTTPException as exc:
            log.warning("slash commands not registered: %s", exc)

    def _command(self, name: str, text: str, arg: str | None, arg_text: str,
                 handler: InboundHandler) -> app_commands.Command:  # type: ignore[type-arg]
        """A slash command that is handled as the typed command ``/name arg``."""
        if arg is None:
            async def bare(interaction: discord.Interaction) -> None:
                await self._slash(interaction, f"/{name}", handler)
            return app_commands.Command(name=name, description=text, callback=bare)

        @app_commands.rename(value=arg)
        @app_commands.describe(value=arg_text)
        async def with_arg(interaction: discord.Interaction, value: str | None = None) -> None:
            await self._slash(interaction, f"/{name} {value or ''}".strip(), handler)

        return app_commands.Command(name=name, description=text, callback=with_arg)

    async def _slash(self, interaction: discord.Interaction, text: str, handler: InboundHandler) -> None:
        assert self.outbox is not None
        where = chat_of(interaction.channel, self.settings)
        if where is None or not may_speak(where, str(interaction.user.id)):
            await interaction.response.send_message("I'm not enabled here.", ephemeral=True)
            return
        await interaction.response.defer(thinking=True)  # Discord wants an answer within 3 s; the reply follows
        message_id = f"interaction-{interaction.id}"
        self.outbox.interactions[message_id] = interaction
        await handler(Inbound(chat=where.chat, sender_id=str(interaction.user.id), sender_name=interaction.user.display_name,
                              sender_username=interaction.user.name, text=text, message_id=message_id, mentioned=True))
