"""Speech-to-text: ``POST /audio/transcriptions`` (JSON with base64 audio, not multipart)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .client import OpenRouterClient
from .errors import OpenRouterError


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    cost: float | None = None
    seconds: float | None = None


async def transcribe(
    llm: OpenRouterClient, *, model: str, data: bytes, fmt: str, language: str | None = None,
    prompt: str | None = None, timeout: float = 120.0,
) -> Transcript:
    """The words in ``data`` (an audio file in ``fmt``: wav, mp3, flac, m4a, ogg, webm or aac)."""
    body: dict[str, object] = {"model": model, "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}
    if language:
        body["language"] = language
    if prompt:
        body["prompt"] = prompt
    resp = await llm.request("POST", "audio/transcriptions", timeout=timeout, json=body)
    try:
        payload = resp.json()
        usage = payload.get("usage") or {}
        return Transcript(str(payload.get("text") or "").strip(), usage.get("cost"), usage.get("seconds"))
    except (ValueError, AttributeError) as exc:
        raise OpenRouterError("the transcription answer was not JSON", status=resp.status) from exc
