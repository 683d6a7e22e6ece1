"""Voice in and out: transcribe voice notes before the agent sees them; speak replies per the TTS mode."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.base import AttachmentKind, Capabilities, Inbound, Media, Reply
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ChatSpec
from providers.openrouter.speech import synthesize
from providers.openrouter.transcription import transcribe

from . import audio
from ..config import ChorusConfig

log = logging.getLogger("chorus.voice")
SPOKEN = "[voice note] "
CAPTION_LIMIT = 1024  # Telegram's caption limit, the tightest of the channels
EAR_NOTE = (
    "Your reply will be read aloud as a voice message: write for the ear. Use plain spoken sentences, "
    "spell numbers and symbols out, and use no tables, code, lists, links or markdown."
)
TAGGED_NOTE = (
    "When a reply is better heard than read, include the tag [[tts]] and it is also sent as a voice message; "
    "to speak something other than the written text, put it between [[tts:text]] and [[/tts:text]]. "
    "The tags are never shown to the user."
)
_TTS_BLOCK = re.compile(r"\[\[tts:text\]\](.*?)\[\[/tts:text\]\]", re.S)
_TTS_TAG = re.compile(r"\[\[/?tts(?::[a-z]+)?\]\]")


@dataclass(frozen=True, slots=True)
class Preflight:
    """The user's words for the agent, whether they were spoken, or a reply that ends the turn here."""

    text: str
    spoken: bool = False
    error: str | None = None
    transcript: str = ""  # what the voice note was heard as, alone


def split_tags(text: str) -> tuple[str, str | None, bool]:
    """(visible text without tags, the [[tts:text]] part if any, whether any tts tag was present)."""
    blocks = _TTS_BLOCK.findall(text)
    tagged = bool(blocks) or bool(_TTS_TAG.search(text))
    # No trimming: the visible text must equal what the streaming TagFilter already showed.
    visible = _TTS_TAG.sub("", _TTS_BLOCK.sub("", text))
    return visible, (" ".join(b.strip() for b in blocks) or None), tagged


def speakable(text: str) -> str:
    """What a voice should say: no code, links, URLs, tables or markdown marks."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"https?://\S+|www\.\S+", "", text)
    text = "\n".join(line for line in text.splitlines() if not re.match(r"^\s*\|.*\|\s*$", line))
    text = re.sub(r"^\s{0,3}(#{1,6}\s+|[-*+]\s+|>\s?)", "", text, flags=re.M)
    text = re.sub(r"(\*\*|__|\*|_|~~)(\S(?:.*?\S)?)\1", r"\2", text)
    return re.sub(r"\s+", " ", text).strip()


class TagFilter:
    """Strips TTS tags from streamed text as it arrives, holding back only what may be the start of a tag."""

    def __init__(self) -> None:
        self.pending = ""
        self.hidden = False  # inside [[tts:text]]...[[/tts:text]]

    def feed(self, text: str) -> str:
        if not self.pending and not self.hidden and "[" not in text:
            return text  # nearly every streamed piece: nothing that could be a tag, nothing held
        self.pending += text
        out = []
        while self.pending:
            start = self.pending.find("[[")
            if start < 0:
                keep = 1 if self.pending.endswith("[") else 0
                chunk, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
                out.append("" if self.hidden else chunk)
                break
            out.append("" if self.hidden else self.pending[:start])
            end = self.pending.find("]]", start)
            if end < 0:
                self.pending = self.pending[start:]
                if len(self.pending) > 32:  # too long to be a tag: let it through
                    out.append("" if self.hidden else self.pending)
                    self.pending = ""
                break
            tag = self.pending[start: end + 2]
            if _TTS_TAG.fullmatch(tag):
                self.hidden = tag == "[[tts:text]]" or (self.hidden and tag != "[[/tts:text]]")
            elif not self.hidden:
                out.append(tag)
            self.pending = self.pending[end + 2:]
        return "".join(out)


class Voice:
    """The voice policy of ``tools.media.audio`` (in) and ``messages.tts`` (out)."""

    def __init__(self, config: ChorusConfig, llm: OpenRouterClient) -> None:
        self.config = config
        self.llm = llm

    # ---- in: speech to text ------------------------------------------------------------------

    async def preflight(self, inbound: Inbound) -> Preflight:
        """Transcribe a voice note or audio file; any failure becomes a clear answer, never silence."""
        note = next((a for a in inbound.attachments if a.kind in (AttachmentKind.VOICE, AttachmentKind.AUDIO)), None)
        if note is None:
            return Preflight(inbound.text)
        cfg = self.config.tools.media.audio
        if not cfg.enabled:
            return Preflight(inbound.text, error="I can't listen to voice messages here; please type it instead.")
        limit_mb = cfg.max_bytes / 1_000_000
        if note.size and note.size > cfg.max_bytes:
            return Preflight(inbound.text, error=f"That audio is too large ({note.size / 1_000_000:.1f} MB; the limit is {limit_mb:g} MB).")
        if note.duration and note.duration > cfg.max_duration_seconds:  # what the platform says: no download
            return Preflight(inbound.text, error=(
                f"That audio is too long ({note.duration:.0f} s; the limit is {cfg.max_duration_seconds} s). "
                "Could you send a shorter one?"))
        data = await note.read()
        if len(data) > cfg.max_bytes:
            return Preflight(inbound.text, error=f"That audio is too large ({len(data) / 1_000_000:.1f} MB; the limit is {limit_mb:g} MB).")
        try:
            payload, fmt, info = await asyncio.to_thread(audio.prepare_for_stt, data, note.mime, note.filename)
        except audio.AudioError as exc:
            return Preflight(inbound.text, error=f"I couldn't use that voice message: {exc}. Could you send it again?")
        if info.duration > cfg.max_duration_seconds:
            return Preflight(inbound.text, error=(
                f"That audio is too long ({info.duration:.0f} s; the limit is {cfg.max_duration_seconds} s). "
                "Could you send a shorter one?"))
        failure: OpenRouterError | None = None
        for choice in cfg.models:
            try:
                transcript = await transcribe(self.llm, model=choice.model, data=payload, fmt=fmt, language=cfg.language)
                break
            except OpenRouterError as exc:
                log.warning("transcription with %s failed chat=%s: %s", choice.model, inbound.chat.session_key, exc)
                failure = exc
        else:
            return Preflight(inbound.text, error=f"I couldn't transcribe that voice message: {failure}")
        if not transcript.text:
            return Preflight(inbound.text, error="I couldn't understand the audio. Could you say it again, or type it?")
        caption = f"\n{inbound.text}" if inbound.text else ""
        return Preflight(SPOKEN + transcript.text + caption, spoken=True, transcript=transcript.text)

    # ---- out: text to speech -----------------------------------------------------------------

    def mode(self, chat_override: str | None) -> str:
        return chat_override or self.config.messages.tts.auto

    def prompt_note(self, mode: str, spoken: bool) -> str | None:
        """What the system prompt gains when the reply may be spoken."""
        if mode == "always" or (mode == "inbound" and spoken):
            return EAR_NOTE
        return TAGGED_NOTE if mode == "tagged" else None

    async def speak(self, reply: Reply, *, mode: str, spoken: bool, capabilities: Capabilities, model: ModelRef,
                    on_start: Callable[[], Awaitable[None]] | None = None) -> Reply:
        """The reply without tags, with a voice note when the mode asks for one; a TTS failure keeps the text.
        ``on_start`` is awaited just before speech is made (a channel shows "recording voice")."""
        visible, tagged_text, tagged = split_tags(reply.text)
        reply.text = visible
        if not (mode == "always" or (mode == "inbound" and spoken) or (mode == "tagged" and tagged)):
            return reply
        text = speakable(tagged_text or visible)
        if not text:
            return reply
        if on_start is not None:
            await on_start()
        try:
            voice = await self.voice_note(text, capabilities, model)
        except (OpenRouterError, audio.AudioError, asyncio.TimeoutError) as exc:
            log.warning("speech failed, sending text only: %s", exc)
            return reply
        delivery = self.config.messages.tts.text_delivery
        if delivery == "suppress" or (delivery == "caption" and len(visible) <= CAPTION_LIMIT):
            voice.caption = visible if delivery == "caption" else None
            reply.text = ""
        reply.voice = voice
        return reply

    async def voice_note(self, text: str, capabilities: Capabilities, model: ModelRef | None = None) -> Media:
        """``text`` spoken and encoded for the channel (OGG/Opus voice note, else MP3); long text is summarised first."""
        tts = self.config.messages.tts
        if len(text) > tts.max_text_length:
            text = await self._summary(text, ModelRef.parse(tts.summary_model) if tts.summary_model else model)
        settings = tts.providers.openrouter
        key = settings.api_key.get_secret_value() if settings.api_key else None
        speech = await synthesize(self.llm, model=settings.model, text=text, voice=settings.speaker_voice,
                                  response_format=settings.response_format, timeout=tts.timeout_ms / 1000, api_key=key)
        raw = audio.pcm_to_wav(speech.data) if speech.format == "pcm" else speech.data
        encode = audio.to_ogg_opus if capabilities.voice_format == "ogg_opus" else audio.to_mp3
        encoded = await asyncio.to_thread(encode, raw)
        return Media(AttachmentKind.VOICE, encoded.data, encoded.mime, f"voice.{encoded.extension}",
                     duration=encoded.duration)

    async def _summary(self, text: str, model: ModelRef | None) -> str:
        ref = model or ModelRef.parse(self.config.agents.defaults.model.primary)
        limit = self.config.messages.tts.max_text_length
        result = await self.llm.chat(ChatSpec(ref, [
            {"role": "system", "content": f"Summarise the text for reading aloud in under {limit // 2} characters. "
                                          "Plain spoken sentences only; keep its language."},
            {"role": "user", "content": text},
        ]), timeout=self.config.messages.tts.timeout_ms / 1000)
        return speakable(result.text)[:limit] or text[:limit]
