"""From a ``Reply`` to Discord messages: text in parts of at most 2000 characters (grown in place by edits
while it streams), a real voice message, and files within the chat's upload limit."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

import aiohttp
import discord
from discord.http import handle_message_parameters

from ..base import AttachmentKind, ChatRef, Kept, KeptHere, Media, Reply
from ..outbox import Failure, Fate, Part
from ..chunking import split_text
from .client import ChorusClient, safe_mentions
from .settings import UPLOAD_LIMIT
from .voice import voice_shape

log = logging.getLogger("chorus.discord")
TEXT_LIMIT = 2000
TYPING_EVERY = 8.0  # seconds between typing requests: Discord shows one for 10 s
VOICE_FALLBACK = "I may not send voice messages here, so here is my answer as an audio file; nothing is lost."
# A reply's choices (``Reply.buttons``): a decision between two is two buttons; more (models, levels) a select
# menu, which holds 25 with room for their labels. Each carries the command it stands for, so a press is
# understood by any run of Chorus, after a restart too: a button in its custom_id, a menu option in its value.
MENU_FROM = 3
BUTTON = "chorus:"  # + the command: a button's custom_id
MENU = "chorus:menu"  # the select menu's custom_id
ID_MAX = 100  # characters of a custom_id or an option's value
INTERACTION = "interaction-"  # + its id: the message id of a slash command or a press
INTERACTION_TTL = 14 * 60  # seconds an interaction's token is kept: Discord takes follow-ups for 15 minutes


class VoiceFile(discord.File):
    """An OGG/Opus file with what Discord needs to show it as a voice message (discord.py has no field for it)."""

    def __init__(self, media: Media, duration: float, waveform: str) -> None:
        super().__init__(io.BytesIO(media.data), filename="voice-message.ogg")
        self.duration = duration
        self.waveform = waveform

    def to_dict(self, index: int) -> dict[str, Any]:
        return {**super().to_dict(index), "duration_secs": self.duration, "waveform": self.waveform}


class Outbox:
    """Sends replies through one client's REST API; an interaction waiting for its answer is answered by
    follow-up, from whichever instance runs the turn (``kept``: where its token waits, see ``keep_interaction``).
    ``cached`` finds a channel the gateway told about (its server's upload limit), if any."""

    def __init__(self, client: ChorusClient, cached: Callable[[int], object | None] | None = None,
                 kept: Kept | None = None) -> None:
        self.client = client
        self.cached = cached or client.get_channel
        self.kept: Kept = kept or KeptHere()

    async def keep_interaction(self, message_id: str, interaction: discord.Interaction) -> None:
        """Keep what answering a deferred interaction takes (its application id and token: a secret, valid 15
        minutes) where the instance that runs its turn finds it; if it cannot be kept, the answer is posted."""
        value = json.dumps({"application_id": str(interaction.application_id), "token": interaction.token})
        try:
            await self.kept.put(_interaction_key(message_id), value, ttl=INTERACTION_TTL)
        except Exception as exc:  # the database cannot be reached: the answer goes to the channel instead
            log.warning("Discord: interaction %s not kept for its follow-up (%s)", message_id, type(exc).__name__)

    async def _followup(self, message_id: str) -> discord.Webhook | None:
        """The follow-up webhook of the interaction ``message_id`` while its token is valid, else ``None``."""
        try:
            found = await self.kept.get(_interaction_key(message_id))
        except Exception as exc:
            log.warning("Discord: interaction %s not found for its follow-up (%s); answering in the channel",
                        message_id, type(exc).__name__)
            return None
        if found is None:
            return None
        kept = json.loads(found[0])
        return self.client.followup(int(kept["application_id"]), kept["token"])

    async def _answer_interaction(self, message_id: str, content: str, files: list[discord.File] | None,
                                  view: discord.ui.View) -> discord.Message | None:
        """The first message of an interaction's answer as its follow-up (once: the token is then forgotten);
        ``None`` when there is none to answer, or its token was refused (expired): the caller posts instead."""
        followup = await self._followup(message_id)
        if followup is None:
            return None
        try:
            sent = await followup.send(content, files=files or discord.utils.MISSING, wait=True,
                                       allowed_mentions=safe_mentions(), view=view)
        except discord.HTTPException as exc:
            if exc.status not in (401, 404):  # 401 Invalid Webhook Token, 404 Unknown Webhook: expired
                raise
            log.info("Discord: interaction %s expired; answering in the channel", message_id)
            for file in files or ():
                file.reset()
            sent = None
        with suppress(Exception):  # a token left behind expires with the interaction
            await self.kept.drop(_interaction_key(message_id))
        return sent

    def target(self, chat: ChatRef) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(int(chat.thread_id or chat.chat_id))

    async def type_once(self, chat: ChatRef) -> None:
        """Show "typing" for the next 10 s (or until the bot's next message)."""
        with suppress(discord.HTTPException):
            await self.client.http.send_typing(int(chat.thread_id or chat.chat_id))

    async def post(self, chat: ChatRef, content: str, *, reply_to: str | None = None,
                   files: list[discord.File] | None = None, flags: discord.MessageFlags | None = None,
                   buttons: list[tuple[str, str]] | None = None) -> discord.Message:
        """One message; the first of a reply references the message it answers (or answers its interaction);
        ``buttons`` go under it (see ``choices``)."""
        view = choices(buttons) if buttons else discord.utils.MISSING
        if reply_to and reply_to.startswith(INTERACTION) and (
                answered := await self._answer_interaction(reply_to, content, files, view)) is not None:
            return answered
        reference = None
        if reply_to and reply_to.isdigit() and self.client.settings.reply_to_mode != "off":
            reference = discord.MessageReference(message_id=int(reply_to), channel_id=int(chat.thread_id or chat.chat_id),
                                                 fail_if_not_exists=False)
        params = handle_message_parameters(
            content or None, files=files or discord.utils.MISSING, flags=flags or discord.utils.MISSING, view=view,
            allowed_mentions=safe_mentions(reply=reference is not None),
            message_reference=reference.to_message_reference_dict() if reference else discord.utils.MISSING,
        )
        with params:
            data = await self.client.http.send_message(int(chat.thread_id or chat.chat_id), params=params)
        return discord.Message(state=self.client._connection, channel=self.target(chat), data=data)

    async def send_part(self, part: Part) -> None:
        """One outbox part (see ``reply_parts``); an edit of a message deleted meanwhile posts the text anew."""
        body, chat = part.body, part.chat
        op, reply_to = body["op"], body.get("reply_to")
        buttons = [(label, command) for label, command in body.get("buttons") or []]
        if op == "post":
            await self.post(chat, body["content"], reply_to=reply_to, buttons=buttons)
        elif op == "edit":
            try:
                await self.target(chat).get_partial_message(body["message_id"]).edit(
                    content=body["content"], allowed_mentions=safe_mentions(),
                    view=choices(buttons) if buttons else discord.utils.MISSING)
            except discord.NotFound:
                await self.post(chat, body["content"], buttons=buttons)
        elif op == "delete":
            with suppress(discord.NotFound):
                await self.target(chat).get_partial_message(body["message_id"]).delete()
        else:
            assert part.data is not None, "a file part has its bytes"
            media = Media(AttachmentKind(body["kind"]), part.data, body["mime"], body["filename"], body.get("caption"))
            await (self.voice if op == "voice" else self.file)(chat, media, reply_to)

    async def text(self, chat: ChatRef, text: str, reply_to: str | None, posted: list[discord.Message]) -> None:
        """Make the chat show exactly the parts of ``text``: edit what differs, post what is missing,
        delete what is left over."""
        parts = split_text(text, TEXT_LIMIT) if text.strip() else []
        for i, part in enumerate(parts):
            if i < len(posted):
                if posted[i].content != part:
                    posted[i] = await posted[i].edit(content=part, allowed_mentions=safe_mentions())
            else:
                every = self.client.settings.reply_to_mode == "all"
                posted.append(await self.post(chat, part, reply_to=reply_to if i == 0 or every else None))
        for extra in posted[len(parts):]:
            with suppress(discord.NotFound):
                await extra.delete()
        del posted[len(parts):]

    async def voice(self, chat: ChatRef, media: Media, reply_to: str | None) -> None:
        """A Discord voice message; where the bot may not send one, the same audio as a file, saying why."""
        if media.caption:
            await self.text(chat, media.caption, reply_to, [])
            reply_to = None
        shape = await asyncio.to_thread(voice_shape, media.data)
        try:
            await self.post(chat, "", reply_to=reply_to, files=[VoiceFile(media, shape.duration, shape.waveform)],
                            flags=discord.MessageFlags(voice=True))
        except discord.Forbidden:
            log.info("voice messages not permitted in chat=%s; sending an audio file", chat.session_key)
            await self.post(chat, VOICE_FALLBACK, reply_to=reply_to,
                            files=[discord.File(io.BytesIO(media.data), filename=media.filename)])

    async def file(self, chat: ChatRef, media: Media, reply_to: str | None) -> None:
        """A generated image, video or track as an attachment, or a clear note when it is over the limit."""
        limit = self.client.settings.upload_limit(self.chat_limit(chat))
        if len(media.data) > limit:
            await self.post(chat, f"The {media.kind.value} I made is {_size(len(media.data))}, over the "
                                  f"{_size(limit)} that can be uploaded here, so I can't send it.", reply_to=reply_to)
            return
        caption = split_text(media.caption, TEXT_LIMIT)[0] if media.caption and media.caption.strip() else ""
        await self.post(chat, caption, reply_to=reply_to, files=[discord.File(io.BytesIO(media.data), filename=media.filename)])

    def chat_limit(self, chat: ChatRef) -> int:
        channel = self.cached(int(chat.thread_id or chat.chat_id))
        guild = getattr(channel, "guild", None)
        return guild.filesize_limit if guild is not None else UPLOAD_LIMIT


def reply_parts(chat: ChatRef, reply: Reply, posted: list[discord.Message] | None = None, *,
                every: bool = False) -> list[Part]:
    """The outbox parts of a whole reply: text parts (reconciled with ``posted``, the parts a stream already
    showed: edited where they differ, the rest posted, leftovers deleted), then the voice message, then files.
    ``every`` (replyToMode "all"): every message replies to the user's, not only the first."""
    posted = posted or []
    parts = split_text(reply.text, TEXT_LIMIT) if reply.text.strip() else []
    out: list[Part] = []
    for i, text in enumerate(parts):
        if i < len(posted):
            if posted[i].content != text:
                out.append(Part(chat, {"op": "edit", "message_id": posted[i].id, "content": text}))
        else:
            out.append(Part(chat, {"op": "post", "content": text, "reply_to": reply.reply_to if i == 0 or every else None}))
    if out and reply.buttons:  # under the last part of the text
        out[-1].body["buttons"] = [list(b) for b in reply.buttons]
    out += [Part(chat, {"op": "delete", "message_id": extra.id}) for extra in posted[len(parts):]]
    reply_to = None if (reply.text or posted) and not every else reply.reply_to
    if reply.voice is not None and reply.voice.caption:  # its own message, above the voice message
        out += [Part(chat, {"op": "post", "content": text, "reply_to": reply_to if i == 0 or every else None})
                for i, text in enumerate(split_text(reply.voice.caption, TEXT_LIMIT))]
        reply_to = reply_to if every else None
    for op, media in [*([("voice", reply.voice)] if reply.voice is not None else []), *(("file", m) for m in reply.media)]:
        out.append(Part(chat, {"op": op, "kind": media.kind.value, "mime": media.mime, "filename": media.filename,
                               "caption": media.caption if op == "file" else None, "reply_to": reply_to},
                        data=media.data))
        reply_to = reply_to if every else None
    return out


def choices(buttons: list[tuple[str, str]]) -> discord.ui.View:
    """A reply's choices as message components: buttons, or a select menu from ``MENU_FROM`` on (see there);
    a choice whose command is too long to carry is left out (its text still names it)."""
    fit = [(label, command) for label, command in buttons if len(BUTTON) + len(command) <= ID_MAX]
    view = discord.ui.View(timeout=None)
    if len(fit) >= MENU_FROM:
        view.add_item(discord.ui.Select(custom_id=MENU, placeholder="Choose…", options=[
            discord.SelectOption(label=label[:100], value=command) for label, command in fit[:25]]))
    else:
        for label, command in fit:
            view.add_item(discord.ui.Button(label=label[:80], custom_id=BUTTON + command))
    return view


def chosen(data: dict[str, Any]) -> str | None:
    """The command a pressed button or a picked menu option (an interaction's ``data``) stands for; ``None``
    for a component that is not one of ours."""
    custom_id = str(data.get("custom_id") or "")
    if custom_id == MENU:
        values = data.get("values") or []
        return str(values[0]) if values else None
    return custom_id.removeprefix(BUTTON) if custom_id.startswith(BUTTON + "/") else None


def classify(exc: BaseException) -> Failure | None:
    """What a failed Discord call means for an outbox part, as for Telegram (``None``: not Discord's failure)."""
    why = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (discord.Forbidden, discord.NotFound)):  # no access to the channel, or it is gone
        return Failure(Fate.GONE, why)
    if isinstance(exc, discord.HTTPException):
        if exc.status == 429:  # discord.py waits out rate limits itself; one that still reaches here is waited too
            return Failure(Fate.WAIT, why, float(exc.response.headers.get("Retry-After", 1) or 1))
        return Failure(Fate.RETRY if exc.status >= 500 else Fate.REFUSED, why)
    if isinstance(exc, aiohttp.ClientConnectorError):  # no connection was made: nothing was sent
        return Failure(Fate.RETRY, why)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):  # it may have gone out
        return Failure(Fate.UNKNOWN, why)
    return None


class DiscordStream:
    """An answer as it is written: shown after ``throttle`` seconds and then edited in place at most that often,
    with the typing indicator on until the answer is out."""

    def __init__(self, outbox: Callable[[], Awaitable[Outbox]], chat: ChatRef, reply_to: str | None, *, live: bool,
                 throttle: float, deliver: Callable[[list[Part], Any], Awaitable[object]], every: bool = False) -> None:
        self.outbox = outbox  # the channel's current one, once connected
        self.every = every  # replyToMode "all": each message of the answer replies
        self.deliver = deliver  # the channel's durable outbox: the final parts go there
        self.chat = chat
        self.reply_to = reply_to
        self.live = live
        self.throttle = throttle
        self.text = ""
        self.posted: list[discord.Message] = []
        self.started = time.monotonic()
        self.last = self.started
        self.typing = asyncio.create_task(self._type())

    async def delta(self, text: str) -> None:
        self.text += text
        if self.live and time.monotonic() - self.last >= self.throttle:
            self.last = time.monotonic()
            await (await self.outbox()).text(self.chat, self.text, self.reply_to, self.posted)

    async def close(self, reply: Reply) -> None:
        try:
            await self.deliver(reply_parts(self.chat, reply, self.posted, every=self.every), reply.settles)
        finally:
            self.typing.cancel()

    async def _type(self) -> None:
        """Discord shows "typing" for 10 s per request: renew it until the answer is out (at most 10 minutes,
        should a turn end without closing its stream)."""
        for _ in range(int(600 / TYPING_EVERY)):
            await (await self.outbox()).type_once(self.chat)
            await asyncio.sleep(TYPING_EVERY)


def _interaction_key(message_id: str) -> str:
    return f"discord:{message_id}"


def _size(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size < 1_048_576 else f"{size / 1_048_576:.1f} MB"
