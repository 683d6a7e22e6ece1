"""Chat commands, the same in every channel."""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.base import Inbound, Reply
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.refs import ModelRef, ModelRefError
from providers.openrouter.request import stale_effort

from .media.audio import AudioError
from .media.voice import speakable

if TYPE_CHECKING:
    from .dispatch import Dispatcher

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
/retry — ask the model again for your last message, if it went unanswered"""


# Answered the moment they arrive, even while a turn runs; the others wait their turn in the session's lane.
IMMEDIATE = frozenset({"stop", "status", "help", "start"})
# Commands that are a model turn of their own, run in the session's lane like a message.
TURNS = frozenset({"retry"})


def command_name(text: str) -> str | None:
    """The name of the chat command ``text`` is (``/new@bot`` -> ``new``), or ``None`` when it is not one of ours."""
    text = text.strip()
    if not text.startswith("/") or len(text) < 2 or text[1].isspace():
        return None
    name = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower()  # Telegram appends @botname in groups
    return name if name in _COMMANDS or name in TURNS else None


async def run_command(d: Dispatcher, inbound: Inbound) -> Reply | None:
    """The reply to a command, or ``None`` when the message is not one of ours."""
    text = inbound.text.strip()
    name = command_name(text)
    if name is None:
        return None
    arg = text[1:].partition(" ")[2] if " " in text else ""
    answer = await _COMMANDS[name](d, inbound, arg.strip())
    return answer if isinstance(answer, Reply) else Reply(text=answer, reply_to=inbound.message_id)


async def _help(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    return HELP


async def _new(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    await d.agent.store.new_session(inbound.chat)
    return "Started a new conversation. The previous one is kept."


async def _model(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    agent = d.agent
    if not arg:
        return f"Model: {await agent.model_for(inbound.chat)}"
    try:
        ref = ModelRef.parse(arg)
    except ModelRefError as exc:
        return f"Not changed: {exc}."
    if agent.catalog is not None and await agent.catalog.lookup(ref) is None and await agent.catalog.available():
        return f"Not changed: {ref.slug} is not in OpenRouter's model catalog (see `chorus models list`)."
    await agent.store.set_chat_setting(inbound.chat, "model", str(ref))
    return f"Model for this chat set to {ref}."


async def _think(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    current = stale_effort(arg)
    answer = await _setting(d, inbound, "thinking", current or arg.lower(), THINKING, d.agent.config.agents.defaults.thinking_default)
    return f"{answer}\n(Note: {arg.strip()!r} is now called {current!r}.)" if current else answer


async def _tts(d: Dispatcher, inbound: Inbound, arg: str) -> str | Reply:
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


async def _speak_once(d: Dispatcher, inbound: Inbound, text: str) -> str | Reply:
    """``/tts audio TEXT``: speak this once, whatever the mode."""
    channel = d.channels.get(inbound.chat.channel)
    if not text:
        return "Usage: /tts audio TEXT"
    if d.agent.voice is None or channel is None:
        return "Speech is not available here."
    try:
        note = await d.agent.voice.voice_note(speakable(text), channel.capabilities)
    except (OpenRouterError, AudioError) as exc:
        return f"Could not speak that: {exc}"
    return Reply(voice=note, reply_to=inbound.message_id)


async def _setting(d: Dispatcher, inbound: Inbound, name: str, value: str, allowed: tuple[str, ...], default: str) -> str:
    """Show or set one per-chat override; it outlives /new and restarts."""
    current = getattr(await d.agent.store.chat_settings(inbound.chat), name) or default
    label = {"thinking": "Thinking", "tts": "Spoken replies"}[name]
    if not value:
        return f"{label}: {current} (choose one of {', '.join(allowed)})"
    if value not in allowed:
        return f"Not changed: {value!r} is not one of {', '.join(allowed)}."
    await d.agent.store.set_chat_setting(inbound.chat, name, value)
    return f"{label} for this chat: {value}."


async def _status(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    agent, chat = d.agent, inbound.chat
    settings = await agent.store.chat_settings(chat)
    stats = await agent.store.stats(await agent.store.active_session(chat))
    return (
        f"Model: {await agent.model_for(chat)}\n"
        f"Thinking: {settings.thinking or agent.config.agents.defaults.thinking_default}\n"
        f"Spoken replies: {settings.tts or agent.config.messages.tts.auto}\n"
        f"Session: {stats.messages} messages, {stats.prompt_tokens:,} prompt + {stats.completion_tokens:,} completion tokens, "
        f"${stats.cost:.4f} so far"
        + ("\nAnswering now (/stop to cancel)." if d.busy(chat) else "")
    )


async def _stop(d: Dispatcher, inbound: Inbound, arg: str) -> str:
    return "Stopping the answer in progress." if d.stop(inbound.chat) else "Nothing to stop."


_COMMANDS = {
    "help": _help, "start": _help, "new": _new, "reset": _new, "model": _model, "think": _think,
    "tts": _tts, "status": _status, "stop": _stop,
}
