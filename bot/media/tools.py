"""The agent's media tools: ``image_generate``, ``video_generate``, ``music_generate``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from channels.base import AttachmentKind, Media
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError, RequestTimeoutError
from providers.openrouter.image import ASPECT_RATIOS, RESOLUTIONS, generate_image
from providers.openrouter.media import data_url
from providers.openrouter.music import LYRIA_MODELS, generate_music
from providers.openrouter.refs import ModelRef
from providers.openrouter.video import IMAGE_ROLES, check_video_args, submit_video

from . import audio
from ..config import ChorusConfig, MediaModel
from .images import image_attachments
from .jobs import MediaJobs
from ..tools import ToolContext, ToolError, ToolResult

_EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "audio/mpeg": "mp3", "audio/wav": "wav"}
TIMEOUT = {"type": "integer", "minimum": 1000, "description": "How long to wait, in milliseconds (optional)."}
ATTACHED = "attached"
IMAGE = {"type": "string", "description": f"A reference image: an https URL, or \"{ATTACHED}\" for the image(s) the user sent."}


def _arg(args: dict[str, Any], name: str, kind: type, *, required: bool = False, choices: tuple[Any, ...] = ()) -> Any:
    """One argument, checked; a wrong one is a ToolError the model can fix."""
    value = args.get(name)
    if value is None:
        if required:
            raise ToolError(f"'{name}' is required")
        return None
    if kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ToolError(f"'{name}' must be a {kind.__name__}, not {value!r}")
    if choices and value not in choices:
        raise ToolError(f"'{name}' must be one of {', '.join(map(str, choices))}, not {value!r}")
    return value


async def _reference_images(ctx: ToolContext) -> list[str]:
    """Images the user sent with this message, as data URLs the model providers accept."""
    images = image_attachments(ctx.inbound) if ctx.inbound else []
    return [data_url(await a.read(), a.mime or "image/png") for a in images]


async def _given_images(args: dict[str, Any], ctx: ToolContext) -> list[str]:
    """The images named by ``image`` / ``images``: https URLs as given, ``attached`` for the user's own."""
    named = [_arg(args, "image", str)] + list(_arg(args, "images", list) or [])
    urls: list[str] = []
    for value in filter(None, named):
        if value == ATTACHED:
            attached = await _reference_images(ctx)
            if not attached:
                raise ToolError(f"'{ATTACHED}' was given, but the user sent no image with this message")
            urls += attached
        elif isinstance(value, str) and value.startswith(("https://", "data:image/")):
            urls.append(value)
        else:
            raise ToolError(f"an image must be an https URL or '{ATTACHED}', not {str(value)[:80]!r}")
    return urls


@dataclass
class _MediaTool:
    config: ChorusConfig
    llm: OpenRouterClient

    def _model(self, setting: MediaModel, args: dict[str, Any]) -> tuple[ModelRef, float]:
        timeout_ms = _arg(args, "timeoutMs", int) or setting.timeout_ms
        return ModelRef.parse(setting.primary), timeout_ms / 1000


@dataclass
class ImageGenerate(_MediaTool):
    name: str = "image_generate"
    description: str = ("Draw or edit images. The images are sent to the user with your reply; "
                        "images the user attached to this message are used as references.")

    @property
    def parameters(self) -> dict[str, Any]:
        return {"type": "object", "required": ["prompt"], "properties": {
            "prompt": {"type": "string", "description": "What to draw, in detail."},
            "aspectRatio": {"type": "string", "enum": list(ASPECT_RATIOS)},
            "resolution": {"type": "string", "enum": list(RESOLUTIONS)},
            "count": {"type": "integer", "minimum": 1, "maximum": 4},
            "useReferenceImages": {"type": "boolean", "description": "Use the images the user sent (default true)."},
            "timeoutMs": TIMEOUT,
        }}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        prompt = _arg(args, "prompt", str, required=True)
        aspect = _arg(args, "aspectRatio", str, choices=ASPECT_RATIOS)
        resolution = _arg(args, "resolution", str, choices=RESOLUTIONS)
        count = _arg(args, "count", int, choices=(1, 2, 3, 4)) or 1
        refs = await _reference_images(ctx) if _arg(args, "useReferenceImages", bool) is not False else []
        model, timeout = self._model(self.config.agents.defaults.image_generation_model, args)
        try:
            images = await generate_image(self.llm, model, prompt, aspect_ratio=aspect, resolution=resolution,
                                          count=count, references=refs, timeout=timeout)
        except (OpenRouterError, asyncio.TimeoutError) as exc:
            raise ToolError(_failure("image", exc, timeout)) from exc
        media = [Media(AttachmentKind.IMAGE, img.data, img.mime, f"image-{i + 1}.{_EXT.get(img.mime, 'png')}")
                 for i, img in enumerate(images)]
        return ToolResult(f"{len(media)} image(s) made and attached to your reply. Describe them briefly.", media)


@dataclass
class MusicGenerate(_MediaTool):
    name: str = "music_generate"
    description: str = "Compose a short piece of music; the audio file is sent with your reply."

    @property
    def parameters(self) -> dict[str, Any]:
        return {"type": "object", "required": ["prompt"], "properties": {
            "prompt": {"type": "string", "description": "Style, mood, instruments, tempo."},
            "lyrics": {"type": "string"},
            "instrumental": {"type": "boolean"},
            "format": {"type": "string", "enum": ["mp3", "wav"]},
            "image": IMAGE,
            "useReferenceImage": {"type": "boolean", "description": "Let an image the user sent set the mood (as image: attached)."},
            "model": {"type": "string", "enum": self._models(),
                      "description": "lyria-3-pro-preview makes full songs with verses; lyria-3-clip-preview makes 30-second clips."},
            "timeoutMs": TIMEOUT,
        }}

    def _models(self) -> list[str]:
        """The configured model first, then the Lyria models the provider page offers."""
        return list(dict.fromkeys([self.config.agents.defaults.music_generation_model.primary,
                                   *(f"openrouter/{slug}" for slug in LYRIA_MODELS)]))

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        prompt = _arg(args, "prompt", str, required=True)
        lyrics = _arg(args, "lyrics", str)
        instrumental = bool(_arg(args, "instrumental", bool))
        if lyrics and instrumental:
            raise ToolError("an instrumental has no lyrics: drop one of 'lyrics' or 'instrumental'")
        fmt = _arg(args, "format", str, choices=("mp3", "wav")) or "mp3"
        refs = await _given_images(args, ctx) or (await _reference_images(ctx) if _arg(args, "useReferenceImage", bool) else [])
        model, timeout = self._model(self.config.agents.defaults.music_generation_model, args)
        chosen = _arg(args, "model", str, choices=tuple(self._models()))
        model = ModelRef.parse(chosen) if chosen else model
        try:
            music = await generate_music(self.llm, model, prompt, lyrics=lyrics, instrumental=instrumental, fmt=fmt,
                                         reference=refs[0] if refs else None, timeout=timeout)
        except (OpenRouterError, asyncio.TimeoutError) as exc:
            raise ToolError(_failure("music", exc, timeout)) from exc
        mime = "audio/mpeg" if fmt == "mp3" else "audio/wav"
        try:  # channels that show a player (Telegram) want the length and a title
            seconds: float | None = (await asyncio.to_thread(audio.probe, music.data)).duration
        except audio.AudioError:
            seconds = None
        track = Media(AttachmentKind.AUDIO, music.data, mime, f"music.{fmt}", caption=music.lyrics or None,
                      duration=seconds, title=prompt[:64])
        return ToolResult("The track is attached to your reply" + (" with its lyrics." if music.lyrics else "."), [track])


@dataclass
class VideoGenerate(_MediaTool):
    jobs: MediaJobs | None = None
    name: str = "video_generate"
    description: str = ("Start making a short video. It takes minutes: the video is posted in this chat by itself "
                        "when ready, so tell the user it is on its way and do not wait for it.")

    @property
    def parameters(self) -> dict[str, Any]:
        return {"type": "object", "required": ["prompt"], "properties": {
            "prompt": {"type": "string"},
            "durationSeconds": {"type": "integer", "description": "Veo: 4, 6 or 8."},
            "resolution": {"type": "string", "description": "Veo: 720p or 1080p."},
            "aspectRatio": {"type": "string", "description": "Veo: 16:9 or 9:16."},
            "audio": {"type": "boolean", "description": "Generate sound too."},
            "image": IMAGE,
            "images": {"type": "array", "items": IMAGE, "description": "Several reference images (default: the ones the user sent)."},
            "imageRoles": {"type": "array", "items": {"type": "string", "enum": [*IMAGE_ROLES, ""]},
                           "description": "One role per image, in order: first_frame, last_frame or reference_image (a subject "
                                          "or style to follow); \"\" or missing = by position: first frame, last frame, then references."},
            "imageRole": {"type": "string", "enum": [*IMAGE_ROLES, "reference"], "description": "The role of a single image."},
            "timeoutMs": TIMEOUT,
        }}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult:
        assert self.jobs is not None, "video_generate needs the media job runner"
        prompt = _arg(args, "prompt", str, required=True)
        duration = _arg(args, "durationSeconds", int)
        resolution = _arg(args, "resolution", str)
        aspect = _arg(args, "aspectRatio", str)
        model, timeout = self._model(self.config.agents.defaults.video_generation_model, args)
        try:
            check_video_args(model, duration, resolution, aspect)
        except ValueError as exc:
            raise ToolError(str(exc)) from exc
        images = await _given_images(args, ctx) or await _reference_images(ctx)
        try:
            job = await submit_video(self.llm, model, prompt, duration=duration, resolution=resolution, aspect_ratio=aspect,
                                     audio=_arg(args, "audio", bool), images=list(zip(images, _image_roles(args, len(images)))))
        except OpenRouterError as exc:
            raise ToolError(_failure("video", exc, timeout)) from exc
        await self.jobs.submit(ctx.chat, ctx.inbound.message_id if ctx.inbound else None, job, str(model), prompt, timeout)
        return ToolResult("The video job was accepted. It will be posted in this chat by itself when ready "
                          "(usually a few minutes). Tell the user it is on its way; do not wait for it.")


def _image_roles(args: dict[str, Any], count: int) -> list[str]:
    """One role per image: as asked (``imageRoles``, or ``imageRole`` for one image), else by position;
    a video has at most one first and one last frame."""
    single = _arg(args, "imageRole", str, choices=(*IMAGE_ROLES, "reference"))
    asked = list(_arg(args, "imageRoles", list) or ([single] if single else []))
    if len(asked) > count:
        raise ToolError(f"imageRoles has {len(asked)} entries, but there are {count} image(s)")
    roles = [("reference_image" if role == "reference" else role) for role in asked] + [""] * (count - len(asked))
    for role in filter(None, roles):  # "reference" is the older tag for the page's reference_image
        if role not in IMAGE_ROLES:
            raise ToolError(f"an image role must be one of {', '.join(IMAGE_ROLES)}, not {role!r}")
    free = [frame for frame in IMAGE_ROLES[:2] if frame not in roles]
    roles = [role or (free.pop(0) if free else "reference_image") for role in roles]
    for frame in IMAGE_ROLES[:2]:
        if roles.count(frame) > 1:
            raise ToolError(f"a video has one {frame}; {roles.count(frame)} images were given that role")
    return roles


def _failure(what: str, exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, RequestTimeoutError)):  # our own wait, or the request's
        return f"the {what} was not ready within {timeout:g} s; try again, perhaps with a larger timeoutMs"
    return f"the {what} could not be made: {exc}"


def media_tools(config: ChorusConfig, llm: OpenRouterClient, jobs: MediaJobs) -> list[Any]:
    """The three media tools, ready for the registry."""
    return [ImageGenerate(config, llm), VideoGenerate(config, llm, jobs), MusicGenerate(config, llm)]
