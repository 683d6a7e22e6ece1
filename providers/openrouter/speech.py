"""Text-to-speech: ``POST /audio/speech``."""

from __future__ import annotations

from dataclasses import dataclass

from .client import OpenRouterClient


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    data: bytes
    format: str  # "mp3" or "pcm" (s16le, 24 kHz, mono)


async def synthesize(
    llm: OpenRouterClient, *, model: str, text: str, voice: str, response_format: str = "mp3",
    timeout: float = 30.0, api_key: str | None = None,
) -> SpeechAudio:
    """Speak ``text``; ``api_key`` (the TTS provider's own) replaces the client's key for this request."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    resp = await llm.request(
        "POST", "audio/speech", timeout=timeout, headers=headers,
        json={"model": model, "input": text, "voice": voice, "response_format": response_format},
    )
    return SpeechAudio(resp.content, response_format)
