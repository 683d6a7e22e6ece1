"""Chat commands, the same in every channel."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from channels.base import Channel, ChatRef, Inbound, Reply
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.refs import ModelRef, ModelRefError
from providers.openrouter.request import stale_effort

from .access import owner_of
from .catalog import model_choices, takes
from .cron.commands import cron_command, tz_command
from .pairing import PairingError
from .media.audio import AudioError
from .media.voice import speakable

if TYPE_CHECKING:
    from .access import AccessPolicy
    from .agent import Agent

THINKING = ("off", "minimal", "low", "medium", "high", "xhigh")
TTS_MODES = ("off", "always", "inbound", "tagged")

HELP = """Commands:
/help — this list
/new — start a fresh conversation (alias /reset; the old one is kept)
/model [REF] — show or set this chat's model, e.g. /model openrouter/moonshotai/kimi-k2.6
/think off|minimal|low|medium|high|xhigh — how hard the model thinks
/tts off|always|inbound|tagged|status — spoken replies in this chat; /tts audio TEXT speaks TEXT once
/status — model, thinking, TTS, session length, tokens and cost so far
/stop — cancel the answer in progress
/cron [rm ID] — this chat's reminders and scheduled jobs; rm removes one
/tz [ZONE] — show or set this chat's time zone, e.g. /tz Europe/Berlin
/retry — ask the model again for your last message, if it went unanswered"""


# Answered the moment they arrive, even while a turn runs; the others wait their turn in the session's lane.
IMMEDIATE = frozenset({"stop", "status", "help", "start"})
# Commands that are a model turn of their own, run in the session's lane like a message.
TURNS = frozenset({"retry"})


class Turns(Protocol):
    """What a command may know and do about the turns in flight (the dispatcher's lanes), and nothing more."""

    def stop(self, chat: ChatRef) -> bool:
        """Cancel the chat's turn in progress or about to begin; ``False`` when there is none."""

    def busy(self, chat: ChatRef) -> bool:
        """Whether the chat has a turn running or waiting."""


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command works with: the agent (store, config, voice), the channel it came in on, the turns, and
    the access policy (who may make scheduled jobs)."""

    agent: Agent
    channel: Channel
    turns: Turns
    access: AccessPolicy


def command_name(text: str) -> str | None:
    """The name of the chat command ``text`` is (``/new@bot`` -> ``new``), or ``None`` when it is not one of ours."""
    text = text.strip()
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    name = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower()  # Telegram appends @botname in groups
    return name if name in _COMMANDS or name in TURNS else None


async def run_command(d: CommandContext, inbound: Inbound) -> Reply | None:
    """The reply to a command, or ``None`` when the message is not one of ours."""
    text = inbound.text.strip()
    name = command_name(text)
    if name is None:
        return None
    arg = text[1:].partition(" ")[2] if " " in text else ""
    answer = await _COMMANDS[name](d, inbound, arg.strip())
    if answer is None:  # answered otherwise (a stopped turn says so itself)
        return None
    return answer if isinstance(answer, Reply) else Reply(text=answer, reply_to=inbound.message_id)


async def _help(d: CommandContext, inbound: Inbound, arg: str) -> str:
    # A channel may add its own commands (the console's /voice, /image, /quit).
    extra = getattr(d.channel, "help", None)
    return f"{HELP}\n{extra}" if extra else HELP


async def _start(d: CommandContext, inbound: Inbound, arg: str) -> str:
    """A private chat that just opened the bot gets the channel's greeting (a stranger got a pairing code
    instead, before this); in a group ``/start`` is ``/help``."""
    greeting = getattr(d.channel, "greeting", None)
    return greeting if greeting and inbound.chat.kind == "direct" else await _help(d, inbound, arg)


async def _new(d: CommandContext, inbound: Inbound, arg: str) -> str:
    await d.agent.store.new_session(inbound.chat)
    return "Started a new conversation. The previous one is kept."


async def _model(d: CommandContext, inbound: Inbound, arg: str) -> str | Reply:
    agent = d.agent
    if not arg:
        return await _model_list(d, inbound)
    try:
        ref = ModelRef.parse(arg)
    except ModelRefError as exc:
        return f"Not changed: {exc}."
    if agent.catalog is not None and await agent.catalog.lookup(ref) is None and await agent.catalog.available():
        return f"Not changed: {ref.slug} is not in OpenRouter's model catalog (see `chorus models list`)."
    await agent.store.set_chat_setting(inbound.chat, "model", str(ref))
    return f"Model for this chat set to {ref}."


async def _model_list(d: CommandContext, inbound: Inbound) -> Reply:
    """The chat's model and the ones to choose from, saying which take images and audio; a button each."""
    current = str(await d.agent.model_for(inbound.chat))
    lines = [f"Model: {current}", "Choose with /model REF (OpenRouter's own ids work too, e.g. anthropic/claude-sonnet-4.5):"]
    buttons = []
    for ref, info in await model_choices(d.agent.catalog, list(d.agent.config.agents.defaults.models)):
        notes = [n for n in (takes(info), "current" if str(ref) == current else "") if n]
        lines.append(f"• {ref}" + (f" ({', '.join(notes)})" if notes else ""))
        marks = ("🖼" if "images" in takes(info) else "") + ("🎤" if "audio" in takes(info) else "")
        buttons.append((f"{'✓ ' if str(ref) == current else ''}{ref.model_id} {marks}".strip(), f"/model {ref}"))
    return Reply(text="\n".join(lines), reply_to=inbound.message_id, buttons=buttons)


async def _think(d: CommandContext, inbound: Inbound, arg: str) -> str | Reply:
    current = stale_effort(arg)
    answer = await _setting(d, inbound, "thinking", current or arg.lower(), THINKING, d.agent.config.agents.defaults.thinking_default)
    return f"{answer}\n(Note: {arg.strip()!r} is now called {current!r}.)" if current and isinstance(answer, str) else answer


async def _tts(d: CommandContext, inbound: Inbound, arg: str) -> str | Reply:
    word, _, rest = arg.partition(" ")
    if word.lower() == "audio":
        return await _speak_once(d, inbound, rest.strip())
    if word.lower() == "status":
        tts = d.agent.config.messages.tts
        current = (await d.agent.store.chat_settings(inbound.chat)).tts or tts.auto
        voice = tts.providers.openrouter
        return (f"Spoken replies: {current}\nVoice: {voice.model}, {voice.speaker_voice} ({voice.response_format}); "
                f"text delivery: {tts.text_delivery}; long replies (over {tts.max_text_length} characters) are summarised.")
    return await _setting(d, inbound, "tts", arg.lower(), TTS_MODES, d.agent.config.messages.tts.auto)


async def _speak_once(d: CommandContext, inbound: Inbound, text: str) -> str | Reply:
    """``/tts audio TEXT``: speak this once, whatever the mode."""
    if not text:
        return "Usage: /tts audio TEXT"
    if d.agent.voice is None:
        return "Speech is not available here."
    try:
        note = await d.agent.voice.voice_note(speakable(text), d.channel.capabilities)
    except (OpenRouterError, AudioError) as exc:
        return f"Could not speak that: {exc}"
    return Reply(voice=note, reply_to=inbound.message_id)


_COMMAND_OF = {"thinking": "think", "tts": "tts"}


async def _setting(d: CommandContext, inbound: Inbound, name: str, value: str, allowed: tuple[str, ...],
                   default: str) -> str | Reply:
    """Show or set one per-chat override; it outlives /new and restarts."""
    current = getattr(await d.agent.store.chat_settings(inbound.chat), name) or default
    label = {"thinking": "Thinking", "tts": "Spoken replies"}[name]
    if not value:
        return Reply(text=f"{label}: {current} (choose one of {', '.join(allowed)})", reply_to=inbound.message_id,
                     buttons=[(f"✓ {v}" if v == current else v, f"/{_COMMAND_OF[name]} {v}") for v in allowed])
    if value not in allowed:
        return f"Not changed: {value!r} is not one of {', '.join(allowed)}."
    await d.agent.store.set_chat_setting(inbound.chat, name, value)
    return f"{label} for this chat: {value}."


async def _status(d: CommandContext, inbound: Inbound, arg: str) -> str:
    agent, chat = d.agent, inbound.chat
    settings = await agent.store.chat_settings(chat)
    stats = await agent.store.stats(await agent.store.active_session(chat))
    return (
        f"Model: {await agent.model_for(chat)}\n"
        f"Thinking: {settings.thinking or agent.config.agents.defaults.thinking_default}\n"
        f"Spoken replies: {settings.tts or agent.config.messages.tts.auto}\n"
        f"Session: {plural(stats.messages, 'message')}, {stats.prompt_tokens:,} prompt + "
        f"{stats.completion_tokens:,} completion tokens, {money(stats.cost)} so far"
        + ("\nAnswering now (/stop to cancel)." if d.turns.busy(chat) else "")
    )


async def _stop(d: CommandContext, inbound: Inbound, arg: str) -> str | None:
    # A stopped answer ends with "⏹ Stopped." itself: that one message is the answer to /stop.
    return None if d.turns.stop(inbound.chat) else "Nothing to stop."


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def money(dollars: float) -> str:
    """``$0``, ``$0.00042`` (three significant digits for a cheap turn, not ``$0.0000``), ``$0.0123``, ``$1.25``."""
    if dollars <= 0:
        return "$0"
    whole, _, cents = f"{dollars:.{max(2, 2 - math.floor(math.log10(dollars)))}f}".partition(".")
    return f"${whole}.{cents[:2]}{cents[2:].rstrip('0')}"


async def _decide(d: CommandContext, inbound: Inbound, code: str, approve: bool) -> str:
    """``/approve CODE`` / ``/deny CODE``: the owner's answer to a pairing request, from their own chat."""
    if owner_of(d.access.settings(inbound.chat.channel)) != inbound.sender_id or inbound.chat.kind != "direct":
        return "Only the owner can answer pairing requests, in a private chat with me."
    if not code:
        return f"Usage: /{'approve' if approve else 'deny'} CODE"
    pairing, channel = d.access.pairing, inbound.chat.channel
    try:
        request = await (pairing.approve(channel, code) if approve else pairing.deny(channel, code))
    except PairingError as exc:
        return f"Not done: {exc}."
    return f"{'Approved' if approve else 'Denied'} {request.sender.label} ({request.sender.id})."


async def _cron(d: CommandContext, inbound: Inbound, arg: str) -> str:
    return await cron_command(d.agent.store, d.agent.config, d.access, inbound, arg)


async def _tz(d: CommandContext, inbound: Inbound, arg: str) -> str:
    return await tz_command(d.agent.store, d.agent.config, inbound.chat, arg)


async def _approve(d: CommandContext, inbound: Inbound, arg: str) -> str:
    return await _decide(d, inbound, arg, approve=True)


async def _deny(d: CommandContext, inbound: Inbound, arg: str) -> str:
    return await _decide(d, inbound, arg, approve=False)


_COMMANDS = {
    "help": _help, "start": _start, "new": _new, "reset": _new, "model": _model, "think": _think,
    "tts": _tts, "status": _status, "stop": _stop, "approve": _approve, "deny": _deny, "cron": _cron, "tz": _tz,
}
