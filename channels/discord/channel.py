"""The Discord channel: DMs, server channels, threads and forum posts through discord.py's clients.

Normalization lives in ``inbound``, rendering in ``outbound``, the client (intents, safe mentions, configured
addresses) in ``client``, which gateway shards this instance runs in ``shards``; this module runs them (a
REST client for everything sent, and a gateway client per shard held) and registers slash commands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from functools import partial

import aiohttp
import discord
from discord import app_commands

from ..backoff import Backoff
from ..base import (Alone, Attachment, Capabilities, ChatRef, Inbound, InboundHandler, Kept, KeptHere, Leases, Reply,
                    as_edit)
from .client import ChorusClient, Identifies
from .inbound import CHANNEL, chat_of, fetcher, may_speak, to_inbound
from ..outbox import Outbox as DurableOutbox, Part, PartStore
from .outbound import INTERACTION, DiscordStream, Outbox, chosen, classify, reply_parts
from .settings import DiscordSettings
from .shards import Moves, lease_name, plan

log = logging.getLogger("chorus.discord")
TOKEN_REFUSED = ("Discord refused the bot token; the Discord channel stops. Put the token from the Developer Portal "
                 "(Bot > Reset Token) in channels.discord.token (or DISCORD_BOT_TOKEN) and restart")
UNREACHABLE = (OSError, aiohttp.ClientError, asyncio.TimeoutError, discord.GatewayNotFound, discord.DiscordServerError)

# The chat commands as slash commands: (name, description, argument name or None, argument description,
# the argument's choices: a fixed list, or "models" for autocomplete from the offered models).
SLASH_COMMANDS: tuple[tuple[str, str, str | None, str, tuple[str, ...] | str], ...] = (
    ("new", "Start a fresh conversation (the old one is kept)", None, "", ()),
    ("model", "Show or set this chat's model", "ref", "e.g. openrouter/moonshotai/kimi-k2.6", "models"),
    ("think", "How hard the model thinks", "level", "off, minimal, low, medium, high or xhigh",
     ("off", "minimal", "low", "medium", "high", "xhigh")),
    ("tts", "Spoken replies in this chat", "mode", "off, always, inbound, tagged or status",
     ("off", "always", "inbound", "tagged", "status")),
    ("status", "Model, thinking, TTS, session length, tokens and cost", None, "", ()),
    ("stop", "Cancel the answer in progress", None, "", ()),
    ("cron", "This chat's reminders and scheduled jobs", "action", "empty to list them, or rm ID to remove one", ()),
    ("tz", "Show or set this chat's time zone", "zone", "e.g. Europe/Berlin", ()),
    ("retry", "Ask the model again for your last message, if it went unanswered", None, "", ()),
    ("help", "The commands", None, "", ()),
)
AUTOCOMPLETE_MAX = 25  # choices Discord shows


class DiscordChannel:
    """A Discord bot account; ``run`` connects and hands each message meant for the bot to the core."""

    name = CHANNEL
    capabilities = Capabilities(text_limit=2000, markdown="discord", voice_format="ogg_opus", streams_text=True)

    def __init__(self, settings: DiscordSettings, *, parts: PartStore | None = None, leases: Leases | None = None,
                 kept: Kept | None = None) -> None:
        """``parts``: where unsent parts of answers are kept (the core's database); else in memory only.
        ``leases``: the shards' leases among the instances sharing the bot; else this instance runs them all.
        ``kept``: where an interaction's token waits for the instance that answers it; else in memory only."""
        self.settings = settings
        self.leases: Leases = leases or Alone()
        self.kept: Kept = kept or KeptHere()
        self.client: ChorusClient | None = None  # REST only: every send, edit, reaction and download goes through it
        self.outbox: Outbox | None = None
        self.durable = DurableOutbox(CHANNEL, self._send_part, classify, store=parts, retry=settings.retry)
        self.count = 0  # the bot's gateway shards, once logged in
        self._shards: dict[int, asyncio.Task[str | None]] = {}  # the shards this instance runs, by id
        self._clients: dict[int, ChorusClient] = {}  # their gateway connections
        self._gateway: str | None = None
        self._identifies = Identifies()
        self._ready = asyncio.Event()  # logged in: sends can go out
        self._wake = asyncio.Event()  # look at the shards now: one ended, or stop()
        self._tree: app_commands.CommandTree[ChorusClient] | None = None
        self._stopping = False
        self._background: set[asyncio.Task[None]] = set()
        self._acked: dict[str, str] = {}  # message id -> the reaction put on it while it is answered

    async def run(self, on_message: InboundHandler) -> str | None:
        """Log in (REST needs no gateway: an instance that runs no shard still sends the answers of the turns
        it runs), then keep this instance's shards connected until ``stop()`` (see ``shards``). Before the
        login, an unreachable Discord is tried again with a growing pause (said once); after it, discord.py
        reconnects and resumes each shard by itself. A refused token or intent ends the channel: the sentence
        returned says what to do."""
        handler = self._handler(on_message)
        try:
            if (refusal := await self._persist(partial(self._login, handler))) is not None or self._stopping:
                return refusal
            self._ready.set()
            resuming = asyncio.create_task(self.durable.resume())  # what the last run left unsent goes first
            self._background.add(resuming)
            resuming.add_done_callback(self._background.discard)
            return await self._keep_shards(handler)
        finally:
            for shard in list(self._shards):
                await self._drop(shard, give_up=True)  # a clean stop: the other instances take them at once
            if self.client is not None:
                await self.client.close()
            log.info("Discord: stopped")

    async def _persist(self, attempt: Callable[[], Awaitable[None]]) -> str | None:
        """``attempt()`` until it returns, tried again with a growing pause while Discord is unreachable or
        closes the connection; ``None``, or why Discord refused for good (a sentence saying what to do)."""
        backoff = Backoff()
        while not self._stopping:
            try:
                await attempt()
                return None
            except UNREACHABLE as exc:
                pause = backoff.failed()
                if backoff.first_failure:
                    log.warning("Discord is unreachable (%s); trying again with growing pauses", type(exc).__name__)
                else:
                    log.debug("Discord still unreachable (%s); next try in %.0f s", type(exc).__name__, pause)
            except discord.PrivilegedIntentsRequired:
                return ("Discord refused the connection: enable the Message Content intent for this bot "
                        "in the Developer Portal (Bot > Privileged Gateway Intents)")
            except discord.LoginFailure:
                return TOKEN_REFUSED
            except discord.ConnectionClosed as exc:
                if exc.code == 4004:  # the gateway refused the token: reset in the Developer Portal while running
                    return TOKEN_REFUSED
                if exc.code in (4010, 4011, 4012, 4013):  # shards, API version, intents: Chorus's own, waiting cannot help
                    return (f"Discord's gateway closed the connection for good (code {exc.code}: "
                            f"{exc.reason or 'no reason'}); the Discord channel stops. Check channels.discord.shardCount "
                            "(unset: Discord's recommendation) and channels.discord.gatewayUrl, and report it if both are unset")
                pause = backoff.failed()
                log.warning("Discord's gateway closed the connection (code %s); reconnecting in %.0f s", exc.code, pause)
            with suppress(asyncio.TimeoutError):  # stop() ends the pause
                await asyncio.wait_for(self._wake.wait(), pause)
        return None

    async def _login(self, handler: InboundHandler) -> None:
        """The REST client, logged in (its set-up registers the slash commands), and the gateway's address,
        shard count and IDENTIFY rate from GET /gateway/bot."""
        client = ChorusClient(self.settings, self._setup)  # built here: its webhook context is this task's
        self._tree = self._commands(client, handler)
        try:
            await client.login(self.settings.token)
            recommended, self._gateway, limit = await client.http.get_bot_gateway()
        except BaseException:
            await client.close()
            raise
        self.count = self.settings.shard_count or recommended
        self._identifies = Identifies(int(limit.get("max_concurrency") or 1))
        self.client, self.outbox = client, Outbox(client, self._cached_channel, self.kept)

    async def _keep_shards(self, handler: InboundHandler) -> str | None:
        """Look at the shards' leases every third of the lease (see ``shards.plan``) and start, drop or hand
        over shards accordingly, until ``stop()`` or a shard that Discord refused for good."""
        while not self._stopping:
            self._wake.clear()
            for shard, task in list(self._shards.items()):
                if task.done():  # only a refusal ends a shard's task by itself
                    del self._shards[shard]
                    if (refusal := task.result()) is not None:
                        return refusal
            try:
                moves = await plan(self.leases, self.count, set(self._shards))
                for shard in moves.lost:
                    log.warning("Discord: shard %d of %d was taken over by another instance while this one was cut "
                                "off; disconnecting it", shard, self.count)
                    await self._drop(shard)
                for shard in moves.shed:
                    log.info("Discord: handing shard %d of %d over to another instance", shard, self.count)
                    await self._drop(shard, give_up=True)
            except Exception as exc:  # the database unreachable: the shards running go on; look again later
                log.warning("Discord: could not look at the shards' leases (%s: %s); trying again",
                            type(exc).__name__, str(exc)[:200])
                moves = Moves([], [], [])
            for shard in moves.start:
                task = asyncio.create_task(self._run_shard(shard, handler), name=f"discord:shard:{shard}")
                task.add_done_callback(lambda _: self._wake.set())
                self._shards[shard] = task
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.leases.lease / 3)
        return None

    async def _run_shard(self, shard: int, handler: InboundHandler) -> str | None:
        """Shard ``shard`` connected until dropped; ``None``, or why Discord refused it for good."""

        async def connect() -> None:
            client = self._clients[shard] = self._connect(handler, shard)  # built here: its webhook context is this task's
            try:
                await client.start(self.settings.token)
            finally:
                await client.close()

        try:
            return await self._persist(connect)
        finally:
            self._clients.pop(shard, None)

    async def _drop(self, shard: int, *, give_up: bool = False) -> None:
        """Disconnect ``shard``; ``give_up``: let its lease go, for another instance to take at once."""
        if (task := self._shards.pop(shard, None)) is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if give_up:
            try:
                await self.leases.give_up(lease_name(shard, self.count))
            except Exception as exc:  # the lease lapses with this instance's heartbeat
                log.warning("Discord: could not give shard %d up (%s); it is taken over after the lease", shard,
                            type(exc).__name__)

    def _cached_channel(self, channel_id: int) -> object | None:
        """A channel as a gateway connection of this instance knows it (with its server's upload limit)."""
        return next((found for c in self._clients.values() if (found := c.get_channel(channel_id)) is not None), None)

    def _commands(self, client: ChorusClient, handler: InboundHandler) -> app_commands.CommandTree[ChorusClient]:
        """The slash commands on ``client``: the REST client registers them, each shard's runs those it receives."""
        tree = app_commands.CommandTree(client)
        for name, text, arg, arg_text, choices in SLASH_COMMANDS:
            tree.add_command(self._command(name, text, arg, arg_text, choices, handler))
        return tree

    def _connect(self, handler: InboundHandler, shard: int) -> ChorusClient:
        """The gateway client of ``shard``, with its events and slash commands."""
        client = ChorusClient(self.settings, shard=(shard, self.count), gateway=self._gateway, identifies=self._identifies)
        self._commands(client, handler)

        @client.event
        async def on_ready() -> None:
            shards = f"shard {shard} of {self.count}" if self.count > 1 else "1 shard"
            log.info("Discord: %s (id %s) ready in %d server(s) (gateway, %s)", client.user,
                     client.user.id if client.user else "?", len(client.guilds), shards)

        @client.event
        async def on_raw_message_edit(payload: discord.RawMessageUpdateEvent) -> None:
            edited_at = payload.data.get("edited_timestamp")  # none: only an embed unfurled, not a user's edit
            assert client.user is not None
            inbound = to_inbound(payload.message, client.user, self.settings) if edited_at else None
            if inbound is not None:
                await handler(as_edit(inbound, edited_at))

        @client.event
        async def on_interaction(interaction: discord.Interaction) -> None:
            """A button pressed or a menu option picked under a reply: handled as the command it carries."""
            if interaction.type is discord.InteractionType.component:
                command = chosen(dict(interaction.data or {}))
                if command is not None:
                    await self._slash(interaction, command, handler)

        @client.event
        async def on_disconnect() -> None:
            if not self._stopping:
                log.info("Discord: gateway connection lost; reconnecting")

        @client.event
        async def on_resumed() -> None:
            log.info("Discord: gateway connection resumed")

        @client.event
        async def on_message(message: discord.Message) -> None:
            assert client.user is not None
            inbound = to_inbound(message, client.user, self.settings)
            if inbound is not None:  # "typing" is the answer's to show (its stream opens with it): none if none follows
                await handler(inbound)

        return client

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        """A whole reply; waits for the login (a finished video may be delivered before it)."""
        await self.durable.deliver(reply_parts(chat, reply, every=self.settings.reply_to_mode == "all"), reply.settles)

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> DiscordStream:
        """A stream that writes once logged in: a turn recovered at start may open it before that."""
        return DiscordStream(self._connected_outbox, chat, reply_to, live=self.settings.stream,
                             throttle=self.settings.throttle, deliver=self.durable.deliver,
                             every=self.settings.reply_to_mode == "all")

    async def _send_part(self, part: Part) -> None:
        await (await self._connected_outbox()).send_part(part)

    async def _connected_outbox(self) -> Outbox:
        """The outbox, once logged in (no gateway needed: the shards may all run on other instances)."""
        await self._ready.wait()
        assert self.outbox is not None
        return self.outbox

    async def react(self, chat: ChatRef, message_id: str, emoji: str | None) -> None:
        """``emoji`` on the message as the bot's own reaction; ``None`` takes the bot's reactions off."""
        if not message_id.isdigit():
            return  # a slash command: no message to react to
        message = (await self._connected_outbox()).target(chat).get_partial_message(int(message_id))
        try:
            if emoji:
                self._acked[message_id] = emoji
                await message.add_reaction(emoji)
            elif (shown := self._acked.pop(message_id, None)) is not None:
                assert self.client is not None and self.client.user is not None
                await message.remove_reaction(shown, self.client.user)
        except discord.HTTPException as exc:
            log.debug("reaction not set chat=%s: %s", chat.session_key, exc)

    async def direct_chat(self, user_id: str) -> ChatRef:
        """The DM with a user (opened if need be: a DM's id is not the user's), once connected."""
        await self._ready.wait()
        assert self.client is not None
        dm = await self.client.create_dm(discord.Object(int(user_id)))
        return ChatRef(CHANNEL, str(dm.id), kind="direct")

    def reattach(self, attachment: Attachment) -> Attachment | None:
        """An attachment of a message accepted before a restart, fetched again from its URL."""
        if not attachment.source or not attachment.source.startswith(("https://", "http://")):
            return None
        url = attachment.source

        async def read() -> bytes:
            await self._ready.wait()
            assert self.client is not None
            return await self.client.http.get_from_cdn(url)

        return Attachment(kind=attachment.kind, mime=attachment.mime, filename=attachment.filename, size=attachment.size,
                          duration=attachment.duration, fetch=fetcher(read, self.settings.retry, attachment.filename),
                          source=url)

    @staticmethod
    def _handler(on_message: InboundHandler) -> InboundHandler:
        async def handle(inbound: Inbound) -> None:
            try:
                await on_message(inbound)
            except Exception:  # one bad message must not take the event loop's task down silently
                log.exception("message not accepted chat=%s", inbound.chat.session_key)
        return handle

    async def _setup(self, client: ChorusClient) -> None:
        """After login: register the slash commands, per listed server, else globally; then remove the set an
        earlier run registered in the other scope (switching would otherwise list every command twice)."""
        tree = self._tree
        assert tree is not None
        wanted = set(self.settings.guilds)
        try:
            for guild_id in wanted:
                guild = discord.Object(int(guild_id))
                tree.copy_global_to(guild=guild)
                await tree.sync(guild=guild)
            if wanted:
                tree.clear_commands(guild=None)
            await tree.sync()  # the global set: the commands, or none when they are listed per server
        except Exception as exc:  # an answer discord.py cannot read included: the messages matter more than the menu
            log.warning("Discord slash commands not registered (%s: %s); the bot still answers messages and typed "
                        "commands", type(exc).__name__, str(exc)[:200])
            return
        try:
            await self._drop_stale_commands(client, tree, wanted)
        except Exception as exc:
            log.warning("could not remove the slash commands of an earlier set-up (%s: %s)", type(exc).__name__,
                        str(exc)[:200])

    @staticmethod
    async def _drop_stale_commands(client: ChorusClient, tree: app_commands.CommandTree[ChorusClient],
                                   wanted: set[str]) -> None:
        """Empty the command list of each server (of the first 200) not in ``wanted`` that has one."""
        async for guild in client.fetch_guilds(limit=200, with_counts=False):
            if str(guild.id) not in wanted and await tree.fetch_commands(guild=guild):
                await tree.sync(guild=guild)  # the tree holds none for it: Discord's list becomes empty
                log.info("removed the slash commands an earlier set-up registered in server %s", guild.id)

    def _command(self, name: str, text: str, arg: str | None, arg_text: str, choices: tuple[str, ...] | str,
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

        async def models(interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
            found = [ref for ref in self.settings.models if typed.lower() in ref.lower()]
            return [app_commands.Choice(name=ref, value=ref) for ref in found[:AUTOCOMPLETE_MAX]]

        if choices == "models":
            app_commands.autocomplete(value=models)(with_arg)
        elif choices:
            app_commands.choices(value=[app_commands.Choice(name=c, value=c) for c in choices])(with_arg)
        return app_commands.Command(name=name, description=text, callback=with_arg)

    async def _slash(self, interaction: discord.Interaction, text: str, handler: InboundHandler) -> None:
        assert self.outbox is not None
        where = chat_of(interaction.channel, self.settings)
        if where is None or not may_speak(where, str(interaction.user.id)):
            await interaction.response.send_message("I'm not enabled here.", ephemeral=True)
            return
        message_id = f"{INTERACTION}{interaction.id}"
        if text == "/stop":  # a stopped answer ends with "⏹ Stopped." itself: only the user sees this receipt
            await interaction.response.send_message("⏹", ephemeral=True)
        else:
            # Discord wants an answer within 3 s; the reply follows ("thinking…" for a slash command, nothing
            # for a press: the message with the buttons stays as it is)
            await interaction.response.defer(thinking=interaction.type is discord.InteractionType.application_command)
            await self.outbox.keep_interaction(message_id, interaction)  # before the turn: it may run elsewhere
        await handler(Inbound(chat=where.chat, sender_id=str(interaction.user.id), sender_name=interaction.user.display_name,
                              sender_username=interaction.user.name, text=text, message_id=message_id, mentioned=True))
