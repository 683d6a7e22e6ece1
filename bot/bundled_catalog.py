"""A small catalog shipped with Chorus, shown when OpenRouter's ``/models`` cannot be reached.

The provider page's four model refs and the media defaults, with context lengths and
modalities as OpenRouter listed them; the live catalog is always preferred.
"""

from __future__ import annotations

from typing import Any


def _model(id: str, name: str, context: int | None, inp: tuple[str, ...], out: tuple[str, ...],
           params: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"id": id, "name": name, "context_length": context, "supported_parameters": list(params),
            "architecture": {"input_modalities": list(inp), "output_modalities": list(out)}}


BUNDLED_MODELS: list[dict[str, Any]] = [
    # The provider page's refs (openrouter/<id>).
    _model("openrouter/auto", "Auto Router", 2_000_000, ("text", "image"), ("text",), ("tools", "reasoning")),
    _model("openrouter/fusion", "Fusion", 262_144, ("text", "image"), ("text",), ("tools", "reasoning")),
    _model("moonshotai/kimi-k2.6", "MoonshotAI: Kimi K2.6", 262_144, ("text", "image"), ("text",), ("tools", "reasoning")),
    _model("moonshotai/kimi-k2.5", "MoonshotAI: Kimi K2.5", 262_144, ("text", "image"), ("text",), ("tools", "reasoning")),
    _model("openrouter/healer-alpha", "Healer Alpha", 262_144, ("text", "image", "audio"), ("text",), ("tools", "reasoning")),
    _model("openrouter/hunter-alpha", "Hunter Alpha", 1_048_576, ("text",), ("text",), ("tools",)),
    # The media defaults.
    _model("google/gemini-3.1-flash-image-preview", "Google: Nano Banana 2 (Gemini 3.1 Flash Image Preview)", 131_072,
           ("text", "image"), ("image", "text")),
    _model("google/veo-3.1-fast", "Google: Veo 3.1 Fast", None, ("text", "image"), ("video",)),
    _model("google/lyria-3-pro-preview", "Google: Lyria 3 Pro Preview", None, ("text", "image"), ("audio", "text")),
    _model("google/lyria-3-clip-preview", "Google: Lyria 3 Clip Preview", None, ("text", "image"), ("audio", "text")),
    _model("hexgrad/kokoro-82m", "Kokoro 82M", None, ("text",), ("speech",)),
    _model("openai/whisper-large-v3-turbo", "OpenAI: Whisper Large v3 Turbo", None, ("audio",), ("transcription",)),
]
