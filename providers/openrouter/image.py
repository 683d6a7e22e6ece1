"""Image generation through chat completions with ``modalities: ["image", "text"]``."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .client import OpenRouterClient
from .media import GeneratedFile, NoMediaError, parse_data_url
from .refs import ModelRef
from .request import ChatSpec

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
RESOLUTIONS = ("1K", "2K", "4K")


async def generate_image(
    llm: OpenRouterClient, model: ModelRef, prompt: str, *, aspect_ratio: str | None = None,
    resolution: str | None = None, count: int = 1, references: Sequence[str] = (), timeout: float = 180.0,
) -> list[GeneratedFile]:
    """``count`` images for ``prompt``; ``references`` are image URLs (data: or https) to edit or follow."""
    content: list[dict[str, object]] = [{"type": "text", "text": prompt}]
    content += [{"type": "image_url", "image_url": {"url": url}} for url in references]
    extra: dict[str, object] = {"modalities": ["image", "text"]}
    config = {k: v for k, v in (("aspect_ratio", aspect_ratio), ("image_size", resolution)) if v}
    if config and model.slug.startswith("google/"):
        extra["image_config"] = config
    spec = ChatSpec(model, [{"role": "user", "content": content}], extra=extra)
    # One image per call is what image models reliably return; several calls run at once.
    results = await asyncio.gather(*(llm.chat(spec, timeout=timeout) for _ in range(count)))
    images = []
    for result in results:
        for url in result.images:
            images.append(parse_data_url(url) if url.startswith("data:") else
                          GeneratedFile(await llm.download(url, timeout=timeout), "image/png"))
    if not images:
        said = next((r.text.strip() for r in results if r.text.strip()), "")
        raise NoMediaError(f"no image came back{': ' + said[:200] if said else ''}")
    return images
