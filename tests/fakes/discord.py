"""A fake Discord on 127.0.0.1: REST API v10, a JSON gateway websocket and a CDN, for the unpatched discord.py client.

Every REST request is checked against Discord's own OpenAPI description (path and method exist, body
shape, required fields) and against the rules that matter to a chat bot (content at most 2000 characters,
``allowed_mentions`` present and letting no ``@everyone``/``@here``/role ping through, voice-message
shape). A request that breaks them is answered 400 and recorded in ``violations``; the ``fake_discord``
fixture fails the test if any were seen. Tests play the users: they create guilds, channels and threads,
send messages and slash commands through the gateway, drop the connection, and script 429s.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
from datetime import datetime, timezone
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.openapi import OpenApi

# The shared specs sit beside the checkout (../shared/specs), as DESIGN.md says.
SPEC = OpenApi(Path(__file__).resolve().parents[3] / "shared" / "specs" / "discord-openapi.json")
DISCORD_EPOCH_MS = 1_420_070_400_000
CONTENT_LIMIT = 2000
VOICE_FLAG = 1 << 13
MESSAGE_CONTENT_FLAG = 1 << 19  # GATEWAY_MESSAGE_CONTENT_LIMITED: the intent is enabled for an unverified bot
MESSAGE_CONTENT_INTENT = 1 << 15
# Each privileged intent and the application flags that allow it (in full, or limited for an unverified bot);
# the gateway closes with 4014 when an identify asks for one its application is not allowed.
PRIVILEGED_INTENTS = {1 << 1: (1 << 14, 1 << 15), 1 << 8: (1 << 12, 1 << 13), MESSAGE_CONTENT_INTENT: (1 << 18, 1 << 19)}
UPLOAD_LIMIT = 10 * 1024 * 1024
NO_AUTH = ("/interactions/", "/webhooks/")  # authorised by the token in the path


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request as the fake saw it."""

    method: str
    path: str  # relative to the API base, e.g. /channels/1/messages
    template: str  # the spec's path, e.g. /channels/{channel_id}/messages
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    at: float
    status: int = 0


CALL = web.RequestKey("call", Call)


@dataclass
class Sent:
    """A message the bot made, as it stands now, with every content it had."""

    data: dict[str, Any]
    files: list[UploadedFile]
    history: list[str] = field(default_factory=list)

    @property
    def content(self) -> str:
        return self.data["content"]


@dataclass
class _Limit:
    method: str
    template: str
    retry_after: float
    times: int


@dataclass
class _Session:
    """One gateway session: shard ``shard`` of ``count``, its events since IDENTIFY (replayed on RESUME), and
    the connection it is on now, if any."""

    id: str
    shard: int
    count: int
    seq: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.ws.closed

    def handles(self, guild_id: str | None) -> bool:
        """Discord's routing: a guild's events go to shard (guild_id >> 22) % count; DMs to shard 0."""
        if guild_id is None:
            return self.shard == 0
        return (int(guild_id) >> 22) % self.count == self.shard


def snowflakes() -> itertools.count[int]:
    """Ids shaped like Discord's (creation time in the high bits), increasing."""
    return itertools.count(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) + 1)


class FakeDiscord:
    """``async with FakeDiscord() as fake:`` starts and stops it."""

    def __init__(self, *, token: str = "fake-discord-token.0123456789", heartbeat_ms: int = 1000,
                 shards: int = 1) -> None:
        self.token = token
        self.shards = shards  # GET /gateway/bot recommends it; an IDENTIFY with fewer is closed 4011
        self.heartbeat_ms = heartbeat_ms
        self.ids = snowflakes()
        self.users: dict[str, dict[str, Any]] = {}  # every user made, by id (create_dm looks them up)
        self.bot = self.user("chorus", bot=True)
        self.application_id = str(next(self.ids))
        self.application_flags = MESSAGE_CONTENT_FLAG
        self.calls: list[Call] = []
        self.violations: list[str] = []
        self.guilds: dict[str, dict[str, Any]] = {}
        self.channels: dict[str, dict[str, Any]] = {}
        self.sent: dict[str, Sent] = {}  # bot messages by id
        self.files: dict[str, tuple[bytes, str]] = {}  # CDN path -> (bytes, content type)
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> registered commands
        self.typing: dict[str, int] = {}  # channel id -> typing requests
        self.posted: dict[str, int] = {}  # channel id -> messages the bot created
        self.no_voice: set[str] = set()  # channels where the bot lacks Send Voice Messages
        self.identifies: list[dict[str, Any]] = []
        self.identified_at: list[float] = []  # when each of ``identifies`` came (time.monotonic())
        self.resumes: list[dict[str, Any]] = []
        self._limits: list[_Limit] = []
        self.raw_answers: list[list[Any]] = []  # [method, template, body, status, times]: answer_raw
        self._sessions: dict[str, _Session] = {}  # by session id: the latest of each shard
        self._sockets: set[web.WebSocketResponse] = set()  # every open gateway connection
        self.shard_conflicts: list[str] = []  # a shard identified while another connection still held it
        self._interactions: list[dict[str, Any]] = []  # every INTERACTION_CREATE sent, oldest first
        self._expired: set[str] = set()  # interaction tokens past their 15 minutes (``expire``)
        # zlib-stream, as the client asked in the gateway URL: one deflate stream per connection, every frame
        # binary and ending in a sync flush (00 00 ff ff), as Discord sends them
        self._deflate: dict[int, Any] = {}
        self._failures: list[list[Any]] = []  # [method, template, status, body, times left]
        self.compressed_frames = 0
        self._open = asyncio.Event()
        self._open.set()
        self.ready = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        app = web.Application(middlewares=[self._rest], client_max_size=64 * 2**20)
        app.add_routes([
            web.get("/gateway", self._gateway), web.get("/gateway-resume", self._gateway),
            web.get("/attachments/{path:.*}", self._cdn),
            web.route("*", "/api/v10/{path:.*}", self._api),
        ])
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await self._site.start()
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def go_down(self) -> None:
        """Stop listening: connections are refused, as when Discord is unreachable."""
        await self._site.stop()

    async def come_back(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        for ws in list(self._sockets):
            await ws.close()
        if self._runner:
            await self._runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.origin}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def config(self, **more: Any) -> dict[str, Any]:
        """The ``channels.discord`` config section pointing at this fake."""
        return {"token": self.token, "apiBase": self.api_base, "gatewayUrl": self.gateway_url, **more}

    def assert_clean(self) -> None:
        assert not self.violations, "Discord API violations:\n" + "\n".join(self.violations)

    # ---- the world the tests build -----------------------------------------------------------

    def user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        user = {"id": str(next(self.ids)), "username": name, "global_name": name.title(), "discriminator": "0",
                "avatar": None, "bot": bot}
        self.users[user["id"]] = user
        return user

    def dm(self, user: dict[str, Any]) -> dict[str, Any]:
        channel = {"id": str(next(self.ids)), "type": 1, "recipients": [user], "last_message_id": None}
        self.channels[channel["id"]] = channel
        return channel

    def guild(self, name: str = "Test server", *, shard: int | None = None) -> dict[str, Any]:
        """A server the bot is in; with ``shard``, one whose id routes it to that shard of ``self.shards``."""
        gid = next(self.ids)
        if shard is not None:  # move its creation time by a few ms: the bits above 22 pick the shard
            gid += ((shard - (gid >> 22)) % self.shards) << 22
        gid = str(gid)
        guild = {"id": gid, "name": name, "icon": None, "owner_id": self.bot["id"], "features": [], "premium_tier": 0,
                 "roles": [{"id": gid, "name": "@everyone", "permissions": str((1 << 41) - 1), "position": 0,
                            "color": 0, "hoist": False, "managed": False, "mentionable": False}],
                 "emojis": [], "stickers": [], "channels": [], "threads": [], "members": [], "voice_states": [],
                 "presences": [], "member_count": 2, "large": False, "unavailable": False,
                 "joined_at": "2026-01-01T00:00:00+00:00", "verification_level": 0, "mfa_level": 0,
                 "default_message_notifications": 0, "explicit_content_filter": 0, "system_channel_id": None,
                 "preferred_locale": "en-US", "nsfw_level": 0, "premium_progress_bar_enabled": False}
        self.guilds[gid] = guild
        return guild

    def text_channel(self, guild: dict[str, Any], name: str = "general", *, type: int = 0) -> dict[str, Any]:
        """A server channel (type 0 text, 15 forum)."""
        channel = {"id": str(next(self.ids)), "type": type, "guild_id": guild["id"], "name": name, "position": 0,
                   "permission_overwrites": [], "nsfw": False, "parent_id": None, "topic": None}
        guild["channels"].append(channel)
        self.channels[channel["id"]] = channel
        return channel

    def thread(self, parent: dict[str, Any], name: str = "a thread") -> dict[str, Any]:
        """A public thread, or a forum post when ``parent`` is a forum channel."""
        thread = {"id": str(next(self.ids)), "type": 11, "guild_id": parent["guild_id"], "parent_id": parent["id"],
                  "name": name, "owner_id": self.bot["id"], "message_count": 0, "member_count": 1,
                  "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                      "archive_timestamp": "2026-01-01T00:00:00+00:00"}}
        self.guilds[parent["guild_id"]]["threads"].append(thread)
        self.channels[thread["id"]] = thread
        return thread

    def attachment(self, filename: str, data: bytes, content_type: str, **extra: Any) -> dict[str, Any]:
        """A file a user attached, served by the fake CDN."""
        aid = str(next(self.ids))
        path = f"{aid}/{filename}"
        self.files[path] = (data, content_type)
        url = f"{self.origin}/attachments/{path}"
        return {"id": aid, "filename": filename, "size": len(data), "url": url, "proxy_url": url,
                "content_type": content_type, **extra}

    # ---- what users do -----------------------------------------------------------------------

    def message(self, channel: dict[str, Any], author: dict[str, Any], content: str = "", *,
                attachments: list[dict[str, Any]] | None = None, mentions: list[dict[str, Any]] | None = None,
                reply_to: dict[str, Any] | None = None, flags: int = 0) -> dict[str, Any]:
        """A MESSAGE_CREATE payload from ``author`` in ``channel``."""
        msg = {"id": str(next(self.ids)), "channel_id": channel["id"], "author": author, "content": content,
               "timestamp": _now(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
               "mentions": mentions or [], "mention_roles": [], "attachments": attachments or [], "embeds": [],
               "pinned": False, "type": 19 if reply_to else 0, "flags": flags}
        if "guild_id" in channel:
            msg["guild_id"] = channel["guild_id"]
            msg["member"] = {"roles": [], "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False,
                             "nick": None, "flags": 0}
        else:
            msg["channel_type"] = 1
        if reply_to:
            msg["message_reference"] = {"type": 0, "message_id": reply_to["id"], "channel_id": channel["id"],
                                        **({"guild_id": channel["guild_id"]} if "guild_id" in channel else {})}
            msg["referenced_message"] = reply_to
        return msg

    async def say(self, channel: dict[str, Any], author: dict[str, Any], content: str = "", **kw: Any) -> dict[str, Any]:
        """Send a user's message through the gateway; returns it."""
        msg = self.message(channel, author, content, **kw)
        await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def edit(self, message: dict[str, Any], content: str) -> dict[str, Any]:
        """The author edits ``message``: a MESSAGE_UPDATE with the whole new message, as Discord sends it."""
        edited = {**message, "content": content,
                  "edited_timestamp": datetime.now(timezone.utc).isoformat()}  # microseconds: each edit its own
        await self.dispatch("MESSAGE_UPDATE", edited)
        return edited

    async def autocomplete(self, channel: dict[str, Any], author: dict[str, Any], name: str, option: str,
                           typed: str) -> list[dict[str, Any]]:
        """``author`` types ``typed`` into ``option`` of /``name``: an autocomplete interaction (type 4);
        returns the choices the bot answered with (callback type 8)."""
        interaction = await self.slash(channel, author, name, {option: typed}, kind=4, focused=option)
        path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
        await self.wait_for(lambda: any(c.path.endswith(path) for c in self.calls))
        (answer,) = [c.json for c in self.calls if c.path.endswith(path)]
        assert answer["type"] == 8, answer
        return answer["data"]["choices"]

    async def slash(self, channel: dict[str, Any], author: dict[str, Any], name: str,
                    options: dict[str, str] | None = None, *, kind: int = 2,
                    focused: str | None = None) -> dict[str, Any]:
        """Run a registered slash command as ``author`` in ``channel``; returns the interaction."""
        scope = self.commands.get(channel.get("guild_id", ""), []) or self.commands.get("global", [])
        command = next((c for c in scope if c["name"] == name), None)
        if command is None:
            raise AssertionError(f"/{name} is not registered (registered: {[c['name'] for c in scope]})")
        data = {"id": command["id"], "name": name, "type": 1,
                "options": [{"name": k, "type": 3, "value": v, **({"focused": True} if k == focused else {})}
                            for k, v in (options or {}).items()]}
        if self.commands.get(channel.get("guild_id", "")):  # a command registered to the server says so
            data["guild_id"] = channel["guild_id"]
        return await self._interact(channel, author, kind, data)

    async def _interact(self, channel: dict[str, Any], author: dict[str, Any], kind: int, data: dict[str, Any],
                        **more: Any) -> dict[str, Any]:
        """An INTERACTION_CREATE of ``kind`` by ``author`` in ``channel``, sent; returns the interaction."""
        interaction = {
            "id": str(next(self.ids)), "application_id": self.application_id, "type": kind, "token": secrets.token_urlsafe(24),
            "version": 1, "channel_id": channel["id"], "channel": channel, "locale": "en-US", "app_permissions": "0",
            "entitlements": [], "authorizing_integration_owners": {}, "context": 0 if "guild_id" in channel else 1,
            "attachment_size_limit": UPLOAD_LIMIT, "data": data, **more,
        }
        if "guild_id" in channel:
            interaction["guild_id"] = channel["guild_id"]
            interaction["member"] = {"user": author, "roles": [], "joined_at": "2026-01-01T00:00:00+00:00",
                                     "deaf": False, "mute": False, "nick": None, "flags": 0, "permissions": "0"}
        else:
            interaction["user"] = author
        self._interactions.append(interaction)
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def choices(self, message: Sent) -> list[tuple[str, str]]:
        """What the components under a bot message offer, as (label, what choosing it sends: a button's
        custom_id, a menu option's value)."""
        offered: list[tuple[str, str]] = []
        for item in (item for row in message.data.get("components") or [] for item in row["components"]):
            if item["type"] == 3:
                offered += [(o["label"], o["value"]) for o in item["options"]]
            else:
                offered.append((item.get("label", ""), item.get("custom_id", "")))
        return offered

    async def choose(self, message: Sent, author: dict[str, Any], label: str) -> dict[str, Any]:
        """``author`` clicks the button labelled ``label`` under ``message``, or picks that option of its select
        menu: a component interaction (type 3) as Discord sends it, with the message as stored (its components
        checked against the spec's message first); returns the interaction."""
        shape = SPEC.doc["components"]["schemas"]["MessageResponse"]["properties"]["components"]
        problems = SPEC.check(shape, message.data.get("components") or [], "message.components")
        assert not problems, problems
        for row in message.data.get("components") or []:
            for item in row["components"]:
                if item["type"] == 2 and item.get("label") == label:
                    data = {"custom_id": item["custom_id"], "component_type": 2}
                elif item["type"] == 3 and (picked := [o for o in item["options"] if o["label"] == label]):
                    data = {"custom_id": item["custom_id"], "component_type": 3, "values": [picked[0]["value"]]}
                else:
                    continue
                channel = self.channels[message.data["channel_id"]]
                return await self._interact(channel, author, 3, data, message=message.data)
        raise AssertionError(f"no button or option {label!r} under the message (offered: {self.choices(message)})")

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """An event for the session of the shard it belongs to (its guild's, or shard 0 for DMs): delivered now
        if connected, else on RESUME (as Discord does)."""
        guild_id = data.get("id") if event.startswith("GUILD_") and "guild_id" not in data else data.get("guild_id")
        for session in [s for s in self._sessions.values() if s.handles(guild_id)]:
            await self._dispatch_to(session, event, data)

    async def _dispatch_to(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": 0, "t": event, "s": session.seq, "d": data}
        session.log.append(frame)
        if session.ws is not None and session.connected:
            await self._send(session.ws, frame)

    def shard_of(self, guild: dict[str, Any]) -> int:
        """The shard (of ``self.shards``) that gets ``guild``'s events."""
        return (int(guild["id"]) >> 22) % self.shards

    def connected_shards(self) -> set[int]:
        """The shards with a session on an open connection now."""
        return {s.shard for s in self._sessions.values() if s.connected}

    def _connections(self, shard: int | None) -> list[web.WebSocketResponse]:
        if shard is None:
            return list(self._sockets)
        return [s.ws for s in self._sessions.values() if s.shard == shard and s.ws is not None and s.connected]

    async def drop(self, *, shard: int | None = None, hold: bool = False) -> None:
        """Close the gateway connection of ``shard`` (all when None) as a network fault or the death of the
        process holding it would (4000: resumable); ``hold`` keeps the gateway refusing until ``release()``."""
        if hold:
            self._open.clear()
        for ws in self._connections(shard):
            await ws.close(code=4000, message=b"fake: connection dropped")

    def release(self) -> None:
        self._open.set()

    def rate_limit(self, method: str, template: str, *, retry_after: float = 0.5, times: int = 1) -> None:
        """The next ``times`` requests to ``method template`` are answered 429 with ``retry_after``."""
        self._limits.append(_Limit(method, template, retry_after, times))

    def clear_scripts(self) -> None:
        """Forget rate limits scripted but not yet used up (a shared fake between two tests)."""
        self._limits.clear()
        self.raw_answers.clear()
        self._failures.clear()

    # ---- faults at start-up and while running -------------------------------------------------

    async def close_gateway(self, code: int, reason: str = "fake: closed", *, shard: int | None = None) -> None:
        """Close the gateway connection of ``shard`` (all when None) with ``code`` (4004: the token was reset
        while running)."""
        for ws in self._connections(shard):
            await ws.close(code=code, message=reason.encode())

    def answer_raw(self, method: str, template: str, body: Any, *, status: int = 200, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``method template`` with ``body`` as it is (an answer
        discord.py cannot parse: a command list whose items lack their fields)."""
        self.raw_answers.append([method, template, body, status, times])

    def _raw_answer(self, call: Call) -> web.Response | None:
        for entry in self.raw_answers:
            if entry[0] == call.method and entry[1] == call.template:
                entry[4] -= 1
                if entry[4] <= 0:
                    self.raw_answers.remove(entry)
                call.status = entry[3]
                return _json(entry[2], status=entry[3])

    # ---- faults of the platform when the bot sends or fetches: one block, kept together ----------------

    def fail_cdn(self, status: int = 404, *, times: int = 1) -> None:
        """The next ``times`` downloads of an attachment from the CDN are answered ``status``."""
        self._failures.append(["GET", "/attachments", status, {"message": "fake CDN failure", "code": 0}, times])

    def fail(self, method: str, template: str, status: int, message: str, *, code: int = 0, times: int = 1) -> None:
        """The next ``times`` requests to ``method template`` are answered ``status`` with Discord's error body."""
        self._failures.append([method, template, status, {"message": message, "code": code}, times])

    def _failure(self, call: Call) -> web.Response | None:
        for failure in self._failures:
            method, template, status, body, times = failure
            if times and method == call.method and template == call.template:
                failure[4] -= 1
                call.status = status
                return _json(body, status=status)
        return None

    # ---- inspection --------------------------------------------------------------------------

    def calls_to(self, method: str, template: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and c.template == template]

    def bot_messages(self, channel: dict[str, Any]) -> list[Sent]:
        """What the bot posted in ``channel``, oldest first, as it stands now."""
        return [s for s in self.sent.values() if s.data["channel_id"] == channel["id"]]

    async def wait_for(self, predicate: Any, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the bot")
            await asyncio.sleep(0.05)

    async def wait_sent(self, channel: dict[str, Any], count: int = 1, timeout: float = 20.0) -> list[Sent]:
        """Wait until the bot has posted ``count`` messages in ``channel``; returns what it posted there."""
        try:
            await self.wait_for(lambda: len(self.bot_messages(channel)) >= count, timeout)
        except AssertionError:
            raise AssertionError(f"expected {count} bot message(s) in channel {channel['id']}, got "
                                 f"{[m.content for m in self.bot_messages(channel)]}") from None
        return self.bot_messages(channel)

    # ---- gateway -----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        await self._open.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if request.query.get("v") != "10" or request.query.get("encoding") != "json":
            self.violations.append(f"gateway connected with {dict(request.query)}; expected v=10 and encoding=json")
        if request.query.get("compress") == "zlib-stream":
            self._deflate[id(ws)] = zlib.compressobj()
        elif "compress" in request.query:
            self.violations.append(f"gateway compression {request.query['compress']!r}; this fake speaks zlib-stream")
        self._sockets.add(ws)
        await self._send(ws, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_ms}, "s": None, "t": None})
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                frame = json.loads(msg.data)
                op, data = frame.get("op"), frame.get("d")
                if op == 1:
                    await self._send(ws, {"op": 11, "d": None, "s": None, "t": None})
                elif op == 2:
                    await self._identify(ws, data)
                elif op == 6:
                    await self._resume(ws, data)
        finally:  # also when the client vanished (kill -9): aiohttp then cancels this handler
            self._sockets.discard(ws)
            for session in self._sessions.values():
                if session.ws is ws:
                    session.ws = None
            self._deflate.pop(id(ws), None)
        return ws

    async def _send(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
        deflate = self._deflate.get(id(ws))
        if deflate is None:
            await ws.send_str(json.dumps(frame))
            return
        await ws.send_bytes(deflate.compress(json.dumps(frame).encode()) + deflate.flush(zlib.Z_SYNC_FLUSH))
        self.compressed_frames += 1

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        asked = int(data.get("intents", 0))
        if any(asked & intent and not self.application_flags & (full | limited)
               for intent, (full, limited) in PRIVILEGED_INTENTS.items()):
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = data.get("shard", [0, 1])
        if not (isinstance(shard, list) and len(shard) == 2 and all(type(n) is int for n in shard)
                and 0 <= shard[0] < shard[1]):
            await ws.close(code=4010, message=b"Invalid shard.")
            return
        if shard[1] < self.shards:
            await ws.close(code=4011, message=b"Sharding required.")
            return
        self.identifies.append(data)
        self.identified_at.append(time.monotonic())
        for old in [s for s in self._sessions.values() if s.shard == shard[0]]:  # a new session replaces it
            if old.connected and old.ws is not ws:
                self.shard_conflicts.append(f"shard {shard} identified while another connection held it")
            del self._sessions[old.id]
        session = _Session(secrets.token_hex(16), shard[0], shard[1], ws=ws)
        self._sessions[session.id] = session
        mine = [g for gid, g in self.guilds.items() if session.handles(gid)]
        await self._dispatch_to(session, "READY", {
            "v": 10, "user": {**self.bot, "verified": True, "mfa_enabled": False, "flags": 0},
            "guilds": [{"id": g["id"], "unavailable": True} for g in mine], "session_id": session.id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway-resume", "shard": shard,
            "application": {"id": self.application_id, "flags": self.application_flags},
            "private_channels": [], "relationships": [], "presences": [], "guild_join_requests": [],
        })
        for guild in mine:
            await self._dispatch_to(session, "GUILD_CREATE", guild)
        self.ready.set()

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        session = self._sessions.get(data.get("session_id") or "")
        if data.get("token") != self.token or session is None:
            await self._send(ws, {"op": 9, "d": False, "s": None, "t": None})
            return
        session.ws = ws
        for frame in session.log:
            if frame["s"] > (data.get("seq") or 0):
                await self._send(ws, frame)
        session.seq += 1
        await self._send(ws, {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})

    # ---- CDN ---------------------------------------------------------------------------------

    async def _cdn(self, request: web.Request) -> web.Response:
        for failure in self._failures:
            if failure[:2] == ["GET", "/attachments"] and failure[4]:
                failure[4] -= 1
                return web.Response(status=failure[2], text="fake CDN failure")
        found = self.files.get(request.match_info["path"])
        if found is None:
            return web.Response(status=404)
        return web.Response(body=found[0], content_type=found[1])

    # ---- REST --------------------------------------------------------------------------------

    @web.middleware
    async def _rest(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/api/v10/"):
            return await handler(request)
        path = request.path.removeprefix("/api/v10")
        op = SPEC.operation(path, request.method)
        body, files = await _body(request)
        call = Call(request.method, path, op.template if op else "?", dict(request.query), body, files, time.monotonic())
        self.calls.append(call)
        if op is None:
            return self._violation(call, f"{request.method} {path} is not in Discord's API")
        if not path.startswith(NO_AUTH) and request.headers.get("Authorization") != f"Bot {self.token}":
            call.status = 401
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        if (failed := self._failure(call)) is not None:
            return failed
        for limit in self._limits:
            if limit.times and limit.method == call.method and limit.template == call.template:
                limit.times -= 1
                call.status = 429
                return _json(
                    {"message": "You are being rate limited.", "retry_after": limit.retry_after, "global": False},
                    status=429, headers={"Retry-After": str(limit.retry_after), "X-RateLimit-Scope": "user",
                                         "Via": "1.1 google"})
        schema = op.body_schema("multipart/form-data" if files else "application/json")
        if schema is not None and body is not None:
            problems = SPEC.check(schema, body)
            if problems:
                return self._violation(call, f"{call.method} {op.template}: " + "; ".join(problems[:3]))
        if problem := _chat_rules(call):
            return self._violation(call, f"{call.method} {op.template}: {problem}")
        if (raw := self._raw_answer(call)) is not None:
            return raw
        request[CALL] = call
        response = await handler(request)
        call.status = response.status
        return response

    def _violation(self, call: Call, what: str) -> web.Response:
        call.status = 400
        self.violations.append(what)
        return _json({"message": f"fake: {what}", "code": 50035}, status=400)

    async def _api(self, request: web.Request) -> web.StreamResponse:
        call: Call = request[CALL]
        route = (call.method, call.template)
        ids = call.path.strip("/").split("/")
        if route == ("GET", "/users/@me"):
            return _json({**self.bot, "verified": True, "mfa_enabled": False, "flags": 0})
        if route == ("GET", "/gateway/bot"):
            return _json({"url": self.gateway_url, "shards": self.shards, "session_start_limit": {
                "total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}})
        if route in (("GET", "/oauth2/applications/@me"), ("GET", "/applications/@me")):
            return _json(self._application())
        if route == ("GET", "/channels/{channel_id}"):
            channel = self.channels.get(ids[1])
            return _json(channel) if channel else _not_found("Unknown Channel", 10003)
        if route == ("POST", "/channels/{channel_id}/typing"):
            self.typing[ids[1]] = self.typing.get(ids[1], 0) + 1
            return web.Response(status=204)
        if route == ("POST", "/channels/{channel_id}/messages"):
            return self._create(ids[1], call)
        if route == ("PATCH", "/channels/{channel_id}/messages/{message_id}"):
            return self._edit(ids[3], call)
        if route == ("DELETE", "/channels/{channel_id}/messages/{message_id}"):
            return web.Response(status=204) if self.sent.pop(ids[3], None) else _not_found("Unknown Message", 10008)
        if route in (("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me"),
                     ("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me")):
            return web.Response(status=204)  # the calls are recorded; a test reads them in order
        if route == ("POST", "/interactions/{interaction_id}/{interaction_token}/callback"):
            return self._callback(ids[1], call)
        if route == ("POST", "/webhooks/{webhook_id}/{webhook_token}"):
            return self._followup_refused(ids[1], ids[2]) or self._create(
                call.query.get("thread_id") or self._interaction_channel(ids[2]), call)
        if route == ("POST", "/users/@me/channels"):  # create_dm: the DM with a user, the same one each time
            recipient = str((call.json or {}).get("recipient_id"))
            if recipient not in self.users:
                return _not_found("Unknown User", 10013)
            dms = [c for c in self.channels.values() if c["type"] == 1 and c["recipients"][0]["id"] == recipient]
            return _json(dms[0] if dms else self.dm(self.users[recipient]))
        if route == ("GET", "/users/@me/guilds"):
            return _json([{"id": g["id"], "name": g["name"], "icon": None, "owner": False, "permissions": "0",
                           "features": []} for g in self.guilds.values()])
        if call.method == "GET" and call.template.endswith("/commands"):
            return _json(self.commands.get(ids[3] if "/guilds/" in call.path else "global", []))
        if call.method == "PUT" and call.template.endswith("/commands"):
            scope = ids[3] if "/guilds/" in call.path else "global"
            self.commands[scope] = [{**c, "id": str(next(self.ids)), "application_id": self.application_id,
                                     "version": "1", "type": c.get("type", 1)} for c in call.json or []]
            return _json(self.commands[scope])
        return self._violation(call, f"{call.method} {call.template} exists in Discord but the fake does not serve it")

    def _callback(self, interaction_id: str, call: Call) -> web.Response:
        """204, or with ``with_response`` the interaction callback response (as discord.py 2.5+ asks)."""
        if call.query.get("with_response", "").lower() not in ("true", "1"):
            return web.Response(status=204)
        kind = (call.json or {}).get("type")
        flags = ((call.json or {}).get("data") or {}).get("flags") or 0
        asked = next((i["type"] for i in self._interactions if i["id"] == interaction_id), 2)
        return _json({"interaction": {"id": interaction_id, "type": asked, "response_message_loading": kind == 5,
                                      "response_message_ephemeral": bool(flags & 64)},
                      "resource": {"type": kind}})

    def expire(self, interaction: dict[str, Any]) -> None:
        """Let ``interaction``'s token expire, as Discord does 15 minutes after it was created."""
        self._expired.add(interaction["token"])

    def _followup_refused(self, webhook_id: str, token: str) -> web.Response | None:
        """Discord's answer to a follow-up it refuses: an application id or token it did not issue, a token past
        its 15 minutes (401); a follow-up before the interaction was answered (deferred) is a client's bug."""
        interaction = next((i for i in self._interactions if i["token"] == token), None)
        if webhook_id != self.application_id or interaction is None:
            return _not_found("Unknown Webhook", 10015)
        if token in self._expired:
            return _json({"message": "Invalid Webhook Token", "code": 50027}, status=401)
        callback = f"/interactions/{interaction['id']}/{token}/callback"
        if not any(c.path == callback for c in self.calls):
            self.violations.append(f"a follow-up to interaction {interaction['id']} before its response (defer)")
        return None

    def _interaction_channel(self, token: str) -> str:
        return next((i["channel_id"] for i in reversed(self._interactions) if i["token"] == token), "")

    def _application(self) -> dict[str, Any]:
        owner = self.user("owner")
        return {"id": self.application_id, "name": "Chorus", "icon": None, "description": "", "bot_public": True,
                "bot_require_code_grant": False, "owner": owner, "verify_key": "0" * 64, "team": None,
                "flags": self.application_flags, "summary": "", "rpc_origins": [],
                "interactions_endpoint_url": None, "bot": self.bot}

    def _create(self, channel_id: str, call: Call) -> web.Response:
        channel = self.channels.get(channel_id)
        if channel is None:
            return _not_found("Unknown Channel", 10003)
        body = call.json or {}
        flags = body.get("flags") or 0
        if flags & VOICE_FLAG and channel_id in self.no_voice:
            return _json({"message": "Missing Permissions", "code": 50013}, status=403)
        if sum(len(f.data) for f in call.files) > UPLOAD_LIMIT:
            return _json({"message": "Request entity too large", "code": 40005}, status=413)
        msg = {"id": str(next(self.ids)), "channel_id": channel_id, "author": self.bot, "content": body.get("content") or "",
               "timestamp": _now(), "edited_timestamp": None, "tts": False, "mention_everyone": False,
               "mentions": [], "mention_roles": [], "embeds": [], "pinned": False, "flags": flags,
               "type": 19 if body.get("message_reference") else 0,
               "attachments": self._stored(call.files, body.get("attachments") or [])}
        if "guild_id" in channel:
            msg["guild_id"] = channel["guild_id"]
        if body.get("components"):
            msg["components"] = self._components(body["components"])
        if body.get("message_reference"):
            ref = {k: str(v) if k.endswith("_id") else v for k, v in body["message_reference"].items()}  # ids are strings
            msg["message_reference"] = {"type": 0, "channel_id": channel_id, **ref}
        self.sent[msg["id"]] = Sent(msg, call.files, [msg["content"]])
        self.posted[channel_id] = self.posted.get(channel_id, 0) + 1
        return _json(msg)

    def _edit(self, message_id: str, call: Call) -> web.Response:
        sent = self.sent.get(message_id)
        if sent is None:
            return _not_found("Unknown Message", 10008)
        if "components" in (call.json or {}):
            sent.data["components"] = self._components(call.json["components"] or [])
        if "content" in (call.json or {}):
            sent.data["content"] = call.json["content"] or ""
            sent.data["edited_timestamp"] = _now()
            sent.history.append(sent.data["content"])
        return _json(sent.data)

    def _components(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Components as Discord returns them in a message: each with a numeric id, a menu with its bounds."""
        ids = itertools.count(1)
        defaults = {2: {"style": 2}, 3: {"min_values": 1, "max_values": 1}}
        return [{**row, "id": next(ids), "components": [{**defaults.get(c["type"], {}), **c, "id": next(ids)}
                                                         for c in row["components"]]} for row in rows]

    def _stored(self, files: list[UploadedFile], meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for f in files:
            index = f.field.removeprefix("files[").rstrip("]")
            extra = next((m for m in meta if str(m.get("id")) == index), {})
            keep = {k: extra[k] for k in ("duration_secs", "waveform", "description") if k in extra}
            out.append(self.attachment(f.filename, f.data, f.content_type, **keep))
        return out


# ---- rules beyond the schema -------------------------------------------------------------------

_SENDS = {("POST", "/channels/{channel_id}/messages"), ("PATCH", "/channels/{channel_id}/messages/{message_id}"),
          ("POST", "/webhooks/{webhook_id}/{webhook_token}")}


def _chat_rules(call: Call) -> str | None:
    """What Discord (or safety) demands of a message beyond the schema."""
    if (call.method, call.template) not in _SENDS:
        return None
    body = call.json if isinstance(call.json, dict) else {}
    content = body.get("content") or ""
    if len(content) > CONTENT_LIMIT:
        return f"content is {len(content)} characters; Discord allows {CONTENT_LIMIT}"
    mentions = body.get("allowed_mentions")
    if not isinstance(mentions, dict):
        return "allowed_mentions missing: whatever the text says would ping"
    if set(mentions.get("parse") or []) - {"users"} or mentions.get("roles"):
        return f"allowed_mentions {mentions} lets @everyone/@here or role pings through"
    if call.method == "POST" and not content and not call.files and not body.get("embeds"):
        return "Cannot send an empty message (50006)"
    if (body.get("flags") or 0) & VOICE_FLAG:
        return _voice_rules(body, call.files)
    return None


def _voice_rules(body: dict[str, Any], files: list[UploadedFile]) -> str | None:
    if body.get("content"):
        return "voice messages do not support additional content (50159)"
    if len(files) != 1 or not files[0].data.startswith(b"OggS") or not files[0].filename.endswith(".ogg"):
        return "a voice message is exactly one .ogg file"
    meta = (body.get("attachments") or [{}])[0]
    if not isinstance(meta.get("duration_secs"), (int, float)) or not isinstance(meta.get("waveform"), str):
        return "a voice message needs attachments[0].duration_secs and waveform"
    try:
        wave = base64.b64decode(meta["waveform"], validate=True)
    except ValueError:
        return "waveform is not base64"
    if not 0 < len(wave) <= 256:
        return f"waveform has {len(wave)} samples; 1..256 allowed"
    return None


async def _body(request: web.Request) -> tuple[Any, list[UploadedFile]]:
    """The JSON body (from ``payload_json`` in a multipart request) and the uploaded files."""
    if request.content_type == "multipart/form-data":
        reader = await request.multipart()
        payload: Any = None
        files = []
        while (part := await reader.next()) is not None:
            data = await part.read()  # type: ignore[union-attr]
            if part.name == "payload_json":  # type: ignore[union-attr]
                payload = json.loads(data)
            else:
                files.append(UploadedFile(part.name or "", part.filename or "",  # type: ignore[union-attr]
                                          part.headers.get("Content-Type", ""), bytes(data)))  # type: ignore[union-attr]
        return payload, files
    raw = await request.read()
    return (json.loads(raw) if raw else None), []


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON as Discord sends it: ``Content-Type: application/json`` exactly (discord.py compares the header)."""
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json", **(headers or {})})


def _not_found(message: str, code: int) -> web.Response:
    return _json({"message": message, "code": code}, status=404)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
