"""What the media modules share: generated files, data URLs, and the 'nothing came back' error."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .errors import OpenRouterError


class NoMediaError(OpenRouterError):
    """A 200 answer without the image/audio/video that was asked for."""

    advice = "Try rephrasing the request, or another model."

    def headline(self) -> str:
        return "The model returned no media"


@dataclass(frozen=True, slots=True)
class GeneratedFile:
    data: bytes
    mime: str


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def parse_data_url(url: str) -> GeneratedFile:
    """The bytes of a ``data:<mime>;base64,...`` URL."""
    head, _, payload = url.partition(",")
    mime = head.removeprefix("data:").split(";", 1)[0] or "application/octet-stream"
    try:
        return GeneratedFile(base64.b64decode(payload, validate=False), mime)
    except (binascii.Error, ValueError) as exc:
        raise NoMediaError("the image data was not valid base64") from exc
