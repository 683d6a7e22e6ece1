"""Video generation: submit to ``/videos``, poll, download. Jobs take minutes; the caller keeps them durable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import OpenRouterClient
from .media import NoMediaError
from .refs import ModelRef

FINISHED = ("completed", "failed", "cancelled", "expired")
IMAGE_ROLES = ("first_frame", "last_frame", "reference_image")  # the page's tags; frames go as frame_images
VEO_LIMITS = {"durations": (4, 6, 8), "resolutions": ("720p", "1080p"), "aspect_ratios": ("16:9", "9:16")}


@dataclass(frozen=True, slots=True)
class VideoJob:
    id: str
    polling_url: str | None = None


@dataclass(frozen=True, slots=True)
class VideoStatus:
    status: str
    urls: list[str] = field(default_factory=list)
    error: str | None = None
    cost: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def wire_resolution(resolution: str | None) -> str | None:
    """OpenRouter's spelling of a resolution: the page writes ``720P``, the API takes ``720p``."""
    return resolution.strip().lower() if resolution else None


def check_video_args(model: ModelRef, duration: int | None, resolution: str | None, aspect_ratio: str | None) -> None:
    """Refuse what Veo cannot make, with the allowed values (other models decide for themselves)."""
    if not model.slug.startswith("google/veo"):
        return
    for value, allowed, name in ((duration, VEO_LIMITS["durations"], "durationSeconds"),
                                 (wire_resolution(resolution), VEO_LIMITS["resolutions"], "resolution"),
                                 (aspect_ratio, VEO_LIMITS["aspect_ratios"], "aspectRatio")):
        if value is not None and value not in allowed:
            raise ValueError(f"{name} {value!r} is not possible with {model.slug}; allowed: {', '.join(map(str, allowed))}")


async def submit_video(
    llm: OpenRouterClient, model: ModelRef, prompt: str, *, duration: int | None = None,
    resolution: str | None = None, aspect_ratio: str | None = None, audio: bool | None = None,
    images: Sequence[tuple[str, str]] = (),
) -> VideoJob:
    """Start a job; ``images`` are (data: or https URL, role) pairs, the role one of ``IMAGE_ROLES``."""
    body: dict[str, Any] = {"model": model.slug, "prompt": prompt}
    for key, value in (("duration", duration), ("resolution", wire_resolution(resolution)), ("aspect_ratio", aspect_ratio),
                       ("generate_audio", audio)):
        if value is not None:
            body[key] = value
    frames = [{"type": "image_url", "image_url": {"url": url}, "frame_type": role} for url, role in images
              if role != "reference_image"]
    references = [{"type": "image_url", "image_url": {"url": url}} for url, role in images if role == "reference_image"]
    if frames:
        body["frame_images"] = frames
    if references:
        body["input_references"] = references
    data = (await llm.request("POST", "videos", json=body)).json()
    return VideoJob(str(data["id"]), data.get("polling_url"))


async def poll_video(llm: OpenRouterClient, job: VideoJob) -> VideoStatus:
    """The job's state; its polling URL is used only on the base URL's origin (it would carry the key)."""
    url = job.polling_url if job.polling_url and llm.same_origin(job.polling_url) else f"videos/{job.id}"
    data = (await llm.request("GET", url)).json()
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return VideoStatus(str(data.get("status")), list(data.get("unsigned_urls") or []),
                       str(error) if error else None, (data.get("usage") or {}).get("cost"))


async def download_video(llm: OpenRouterClient, job: VideoJob, status: VideoStatus) -> bytes:
    """The MP4 of a completed job."""
    data = await (llm.download(status.urls[0]) if status.urls else
                  llm.request("GET", f"videos/{job.id}/content", params={"index": 0}))
    content = data if isinstance(data, bytes) else data.content
    if not content:
        raise NoMediaError("the finished video was empty")
    return content
