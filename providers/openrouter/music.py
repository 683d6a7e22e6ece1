"""Music generation: streamed chat completions with ``modalities: ["text", "audio"]``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .client import OpenRouterClient
from .media import NoMediaError
from .refs import ModelRef
from .request import ChatSpec

LYRIA_MODELS = ("google/lyria-3-pro-preview", "google/lyria-3-clip-preview")  # full songs; 30-second clips


@dataclass(frozen=True, slots=True)
class GeneratedMusic:
    data: bytes
    format: str
    lyrics: str


async def generate_music(
    llm: OpenRouterClient, model: ModelRef, prompt: str, *, lyrics: str | None = None, instrumental: bool = False,
    fmt: str = "mp3", reference: str | None = None, timeout: float = 180.0,
) -> GeneratedMusic:
    """A track for ``prompt``; the stream's audio pieces are decoded one by one by the client."""
    text = prompt
    if lyrics:
        text += f"\n\nLyrics:\n{lyrics}"
    if instrumental:
        text += "\n\nInstrumental only, no vocals."
    content: list[dict[str, object]] = [{"type": "text", "text": text}]
    if reference:
        content.append({"type": "image_url", "image_url": {"url": reference}})
    spec = ChatSpec(model, [{"role": "user", "content": content}],
                    extra={"modalities": ["text", "audio"], "audio": {"format": fmt}})

    async def run() -> GeneratedMusic:
        result = await llm.stream(spec)
        if not result.audio:
            said = result.text.strip()
            raise NoMediaError(f"no audio came back{': ' + said[:200] if said else ''}")
        return GeneratedMusic(result.audio, fmt, result.transcript.strip())

    return await asyncio.wait_for(run(), timeout)
