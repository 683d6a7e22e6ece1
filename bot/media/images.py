"""Images users send: checked, fitted to what models take, and kept as files under the state directory.

History holds a small reference (an ``image_url`` part whose url is ``chorus-media:in/<sha256>.<ext>``);
it becomes a data URL only when a request is built. Older rows that hold data URLs are sent as they are.
On a shared database (several instances) each image is also kept in the database (``Blobs``), where any
instance that answers a later turn reads it into its own media directory when it is not there yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from channels.base import Attachment, AttachmentKind, Inbound
from providers.openrouter.media import data_url

from ..config import ImageTools
from .blobs import Blobs

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("chorus.images")

MAX_SIDE = 2048  # longest side kept: what vision models work at (larger ones are scaled down upstream anyway)
PASS_BYTES = 5_000_000  # a file up to this size in a format every model reads goes as it came (Anthropic's per-image cap)
MAX_PIXELS = 40_000_000  # pixels decoded at most (after JPEG's scaled decoding): ~160 MB as RGBA, whatever the file size
JPEG_QUALITY = 85
SCHEME = "chorus-media:"
GONE = "[image no longer available]"
UNSEEN = "[an image, which this model cannot see]"
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}  # Pillow's format name: our extension
_MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "gif": "image/gif"}
_REF = re.compile(rf"{SCHEME}in/([0-9a-f]{{64}})\.(jpg|png|webp|gif)")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)  # what Pillow raises on bad data (UnidentifiedImageError is an OSError)


class ImageError(ValueError):
    """An image that cannot be used; the message is meant for the user."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """Image bytes ready to send, and the extension of their format."""

    data: bytes
    ext: str


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image kept under the media directory."""

    path: Path
    ref: str  # what history holds: chorus-media:in/<sha256>.<ext>
    mime: str

    def part(self) -> dict[str, Any]:
        """The content part that stands for this image in history."""
        return {"type": "image_url", "image_url": {"url": self.ref}}

    def attachment(self) -> Attachment:
        """The stored file as an attachment (what the media tools read as a reference)."""
        return Attachment.from_path(AttachmentKind.IMAGE, self.path, mime=self.mime)


def megabytes(size: int) -> str:
    """``size`` in MB for a sentence, rounded up to 0.1 so a size just over a limit never reads as equal to it."""
    return f"{math.ceil(size / 100_000) / 10:g}"


def too_large(size: int, limit: int) -> str:
    """The sentence for an image over the limit."""
    return f"That image is {megabytes(size)} MB; the limit is {limit / 1_000_000:g} MB."


def fitted(size: tuple[int, int], side: int = MAX_SIDE) -> tuple[int, int]:
    """``size`` scaled down (never up) so its longest side is at most ``side``, keeping the aspect ratio."""
    width, height = size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare(data: bytes, name: str | None = None) -> Encoded:
    """The image as models take it: as it came when small and in a common format, else decoded
    (a JPEG at a reduced scale where it can be), turned upright, fitted into ``MAX_SIDE`` and re-encoded
    (PNG when it has transparency, else JPEG).

    CPU-bound and synchronous: call it with ``asyncio.to_thread``.
    """
    from PIL import Image, ImageOps  # on the first image: a bot that never sees one never loads Pillow

    # Pillow's own bomb guard judges the header's size, before a JPEG could be decoded at a reduced scale;
    # MAX_PIXELS is checked instead, on the pixels that will really be decoded, before any is.
    Image.MAX_IMAGE_PIXELS = None
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name or 'That file'} is not an image I can read; "
                         "please send a photo, or a PNG, JPEG, WebP or GIF file.") from exc
    with image:
        ext = _EXT.get(image.format or "")
        if ext and max(image.size) <= MAX_SIDE and len(data) <= PASS_BYTES:
            _decode(image)  # really an image, not just a header
            return Encoded(data, ext)
        image.draft(None, fitted(image.size))  # JPEG: decode at 1/2, 1/4 or 1/8 scale, never below the target
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(f"That image is {image.width}×{image.height} pixels; "
                             f"the limit is {MAX_PIXELS // 1_000_000} megapixels.")
        _decode(image)
        ImageOps.exif_transpose(image, in_place=True)  # the EXIF orientation is not kept, so apply it
        alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        mode = "RGBA" if alpha else "RGB"
        converted = image if image.mode == mode else image.convert(mode)  # convert() copies even when equal
        converted.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        converted.save(out, "PNG" if alpha else "JPEG", quality=JPEG_QUALITY)
        return Encoded(out.getvalue(), "png" if alpha else "jpg")


def _decode(image: Image.Image) -> None:
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        raise ImageError("That image could not be decoded: it looks corrupt or truncated.") from exc


class Images:
    """The images users send, kept in ``<media>/in`` by content (a resent image is one file)."""

    def __init__(self, media_dir: Path, settings: ImageTools, blobs: Blobs | None = None) -> None:
        self.dir = media_dir / "in"
        self.settings = settings
        self.blobs = blobs  # a shared database: every image is kept there too

    async def accept(self, inbound: Inbound) -> list[StoredImage]:
        """The message's images, each checked, fitted and stored. Raises ``ImageError`` (a sentence for
        the user) and stores none when any of them cannot be used."""
        encoded = [await self._prepare(a) for a in image_attachments(inbound)]
        stored = [await asyncio.to_thread(self._store, e) for e in encoded]
        if self.blobs is not None:  # before the turn that refers to them is written
            for image, e in zip(stored, encoded, strict=True):
                await self.blobs.put(image.path.name, e.data, time.time())
        return stored

    async def _prepare(self, attachment: Attachment) -> Encoded:
        limit = self.settings.max_bytes
        if attachment.size and attachment.size > limit:  # refused before a byte is read
            raise ImageError(too_large(attachment.size, limit))
        # Fetched, not read(): read() would keep the original bytes on the Inbound for the whole turn.
        data = await attachment.fetch() if attachment.fetch else await attachment.read()
        if len(data) > limit:
            raise ImageError(too_large(len(data), limit))
        return await asyncio.to_thread(prepare, data, attachment.filename)

    def sweep(self, now: float | None = None) -> int:
        """Delete the images no request has used for ``keepDays`` (each use touches its file) and what
        interrupted writes left; returns how many files went. History keeps its references, which are then
        sent as "[image no longer available]"."""
        now = time.time() if now is None else now
        removed = 0
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return 0
        keep = self.settings.keep_days * 86400
        for entry in entries:
            try:
                age = now - entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if entry.is_file() and (age > 3600 if entry.name.endswith(".part") else bool(keep) and age > keep):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        return removed

    def _store(self, image: Encoded) -> StoredImage:
        name = f"{hashlib.sha256(image.data).hexdigest()}.{image.ext}"
        path = self.dir / name
        if path.exists():
            _touch(path)  # sent again: in use again
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            _write_whole(path, image.data)
        return StoredImage(path, f"{SCHEME}in/{name}", _MIME[image.ext])

    async def inline(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` (as they will be sent) with each image reference turned into a data URL; an image
        whose file is gone becomes a short note. Data URLs of older rows pass unchanged."""
        if not any(map(_has_reference, messages)):
            return list(messages)  # no file to read: text-only turns make no thread hop
        if self.blobs is not None:
            await self._fetch_shared(messages)
        return await asyncio.to_thread(self._inline, messages)

    async def _fetch_shared(self, messages: Sequence[dict[str, Any]]) -> None:
        """Copy the referenced images that another instance received from the database into ``self.dir``, and
        mark them all as used there (the sweep of any instance keeps them)."""
        assert self.blobs is not None
        names = sorted({f"{m[1]}.{m[2]}" for msg in messages if _has_reference(msg) for p in msg["content"]
                        if (ref := _reference(p)) and (m := _REF.fullmatch(ref))})
        missing = [n for n in names if not (self.dir / n).exists()]
        if fetched := await self.blobs.get(missing):
            await asyncio.to_thread(self._keep, fetched)
        await self.blobs.touch(names, time.time())

    def _keep(self, files: dict[str, bytes]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            _write_whole(self.dir / name, data)

    def _inline(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        resolved: dict[str, dict[str, Any]] = {}  # one read per file, however often it is referenced
        out = []
        for message in messages:
            if _has_reference(message):
                message = {**message, "content": [self._resolve(p, resolved) for p in message["content"]]}
            out.append(message)
        return out

    def _resolve(self, part: dict[str, Any], resolved: dict[str, dict[str, Any]]) -> dict[str, Any]:
        ref = _reference(part)
        if ref is None:
            return part
        if ref not in resolved:
            match = _REF.fullmatch(ref)
            try:
                if match is None:
                    raise FileNotFoundError(ref)
                path = self.dir / f"{match[1]}.{match[2]}"
                data = path.read_bytes()
                _touch(path)  # still in a conversation's context: kept
            except OSError:
                log.warning("an image in history is no longer in %s: %s", self.dir, ref)
                resolved[ref] = {"type": "text", "text": GONE}
            else:
                resolved[ref] = {**part, "image_url": {**part["image_url"], "url": data_url(data, _MIME[match[2]])}}
        return resolved[ref]


def without_images(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each image (a reference or a data URL) replaced by a short note, for a model that
    takes no images: OpenRouter refuses any request that carries one."""
    unseen = {"type": "text", "text": UNSEEN}
    return [{**m, "content": [unseen if _is_image(p) else p for p in m["content"]]} if _has_image(m) else m
            for m in messages]


def carries_images(messages: Sequence[dict[str, Any]]) -> bool:
    """Whether any of ``messages`` has an image part."""
    return any(map(_has_image, messages))


def cannot_see(model: object) -> str:
    """What the user is told when they send an image to a model that takes none."""
    return f"⚠️ {model} cannot see images. Choose a model that can with /model, or say in words what the image shows."


def _has_image(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(map(_is_image, content))


def _is_image(part: Any) -> bool:
    return isinstance(part, dict) and part.get("type") == "image_url"


def _write_whole(path: Path, data: bytes) -> None:
    """Whole or not at all: a crash never leaves half an image under its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError as exc:  # read-only media: the image may go sooner, which only costs a resend
        log.debug("could not mark %s as used: %s", path.name, exc)


def _has_reference(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(_reference(p) for p in content)


def _reference(part: Any) -> str | None:
    """The ``chorus-media:`` url of an image part, else ``None``."""
    if _is_image(part):
        url = (part.get("image_url") or {}).get("url")
        if isinstance(url, str) and url.startswith(SCHEME):
            return url
    return None


def image_attachments(inbound: Inbound) -> list[Attachment]:
    """The images the user sent with ``inbound``."""
    return [a for a in inbound.attachments if a.kind is AttachmentKind.IMAGE]


def with_images(inbound: Inbound, images: Sequence[StoredImage]) -> Inbound:
    """``inbound`` with its image attachments replaced by the stored (fitted) files."""
    others = [a for a in inbound.attachments if a.kind is not AttachmentKind.IMAGE]
    return replace(inbound, attachments=[*others, *(i.attachment() for i in images)])


def user_content(text: str, images: Sequence[StoredImage]) -> str | list[dict[str, Any]]:
    """The user's message as history keeps it: the text, plus a reference to each image."""
    if not images:
        return text
    return [{"type": "text", "text": text or "(image)"}, *(i.part() for i in images)]
