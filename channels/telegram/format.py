"""The model's markdown as Telegram messages: plain text plus entities, in parts Telegram accepts.

Entities rather than ``parse_mode`` text: nothing has to be escaped, so nothing the model writes can make
Telegram refuse to parse a message, and offsets are counted in UTF-16 units by the library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from telegramify_markdown import convert, split_entities

from ..chunking import split_text, utf16_length

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Part:
    """One message's text and its entities (as Bot API dicts)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


def render(markdown: str, limit: int = TEXT_LIMIT) -> list[Part]:
    """``markdown`` as parts of at most ``limit`` UTF-16 units each, each rendering on its own.

    The markdown is split first (on paragraphs and lines, code fences closed and reopened by the shared
    splitter), then each part converted; a part that grows past the limit in conversion is split again.
    """
    if _plain(markdown) and utf16_length(markdown) <= limit:  # one plain line that fits: nothing to split or convert
        return [Part(markdown.rstrip())]
    parts: list[Part] = []
    for piece in split_text(markdown, limit, length=utf16_length):
        text, entities = _convert(piece)
        for chunk, chunk_entities in split_entities(text, entities, limit):
            parts.append(Part(chunk, [e.to_dict() for e in chunk_entities]))
    return parts or [Part(p) for p in plain(markdown, limit)]


def plain(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """The text as it was written, in parts: what is sent when Telegram refuses the formatted version."""
    return [p for p in split_text(text, limit, length=utf16_length) if p.strip()]


def preview(markdown: str, limit: int = TEXT_LIMIT) -> Part:
    """A streamed draft: the text so far, rendered, cut to fit one message (its end shows the newest words)."""
    text, entities = _convert(markdown)
    if utf16_length(text) <= limit:
        return Part(text, [e.to_dict() for e in entities])
    tail = split_text(markdown, limit, length=utf16_length)[-1]
    text, entities = _convert(tail)
    return Part(text, [e.to_dict() for e in entities]) if utf16_length(text) <= limit else Part(text[-limit // 2:])


def caption(markdown: str) -> Part | None:
    """A media caption, when it fits Telegram's caption limit once rendered."""
    text, entities = _convert(markdown)
    if not text.strip() or utf16_length(text) > CAPTION_LIMIT:
        return None
    return Part(text, [e.to_dict() for e in entities])


# Letters, digits, spaces and plain punctuation on one line, no list number at its start ("1) one" becomes
# "1. one"); underscores are refused apart, as one character class is ~6x faster than an alternation.
_PLAIN = re.compile(r"(?!\d{1,9}[.)](?:\s|$))[^\W_][\w ,.;:!?%/()'\"-]*")


def _plain(markdown: str) -> bool:
    """Whether no markdown construct can begin in ``markdown``: telegramify gives such a line back as it is, without
    entities (tests.test_telegram_format compares on random lines). Skipping its parser spares ~30 µs a conversion
    in a running bot, which converts each draft of an answer and the answer itself (a tenth of that in a loop)."""
    return "_" not in markdown and _PLAIN.fullmatch(markdown) is not None


def _convert(markdown: str) -> tuple[str, list[Any]]:
    return (markdown.rstrip(), []) if _plain(markdown) else _converted(markdown)


def _converted(markdown: str) -> tuple[str, list[Any]]:
    text, entities = convert(markdown)
    # The library keeps a trailing newline after blocks; Telegram trims it, which would push entities outside.
    stripped = text.rstrip()
    end = utf16_length(stripped)
    kept = []
    for e in entities:
        if e.offset >= end:
            continue
        if e.offset + e.length > end:
            e = e.copy_with(length=end - e.offset)
        kept.append(e)
    return stripped, kept
