"""Splitting a long reply into parts that a platform accepts and renders on their own.

Telegram takes 4096 characters (counted in UTF-16 units), Discord 2000. A part
ends preferably at a paragraph break, then a line break, then the end of a
sentence, then a space, and only as a last resort mid-word. A fenced code block
that a cut crosses is closed at the end of the part and reopened, with the same
language, at the start of the next, so every part renders alone; the added fences
count towards the limit.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass

Length = Callable[[str], int]

# Break kinds, most preferred first, each with how full it must leave the part to be
# taken over the next kind (a paragraph break near the start loses to a line break
# further on; a line break anywhere beats cutting a line; a paragraph or sentence end
# is also a line or word break, so some kind always takes a break that fits). Each match's start (or
# its group "end") is a cut: the part ends there, the whitespace after it is dropped.
_BREAKS: tuple[tuple[re.Pattern[str], float], ...] = (
    (re.compile(r"\n[ \t]*\n"), 0.5),  # paragraph
    (re.compile(r"\n"), 0.0),  # line
    (re.compile(r"[.!?…][\"'”’)\]]*(?P<end>)[ \t]"), 0.5),  # sentence: cut after the punctuation
    (re.compile(r"[ \t]+"), 0.0),  # word
)
_ZWJ = "\u200d"


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, as Telegram counts message length and entity offsets."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2  # isascii: a flag, not a scan


@dataclass(frozen=True, slots=True)
class _Block:
    """A fenced code block: offsets into the text, and the fences to repeat."""

    start: int  # first character of the opening fence line
    body: int  # first character after the opening fence line
    end: int  # first character of the closing fence line (len(text) when never closed)
    close: int  # just after the closing fence's backticks
    opener: str  # e.g. "```python"
    marker: str  # the backticks that close it


def _blocks(text: str) -> list[_Block]:
    """Find fenced code blocks the way CommonMark pairs backtick fences."""
    blocks: list[_Block] = []
    opening: tuple[int, int, str, str] | None = None
    pos = 0
    while pos < len(text):
        newline = text.find("\n", pos)
        line_end = len(text) if newline < 0 else newline
        line = text[pos:line_end].strip()
        if opening is None:
            marker = line[: len(line) - len(line.lstrip("`"))]
            if len(marker) >= 3 and "`" not in line[len(marker):]:
                opening = (pos, line_end + 1, line, marker)
        elif line and set(line) == {"`"} and len(line) >= len(opening[3]):
            start, body, opener, marker = opening
            blocks.append(_Block(start, min(body, len(text)), pos, line_end, opener, marker))
            opening = None
        pos = line_end + 1
    if opening is not None:
        start, body, opener, marker = opening
        blocks.append(_Block(start, min(body, len(text)), len(text), len(text), opener, marker))
    return blocks


class _Splitter:
    def __init__(self, text: str, limit: int, length: Length) -> None:
        self.text = text
        self.limit = limit
        self.length = length
        # A block whose fences leave no room for its code in a part is split as plain text.
        self.blocks = [b for b in _blocks(text) if length(f"{b.opener}\n.\n{b.marker}") <= limit]
        self._starts = [b.start for b in self.blocks]

    def block_at(self, cut: int) -> _Block | None:
        """The code block a cut at ``cut`` falls into, if any."""
        i = bisect_right(self._starts, cut) - 1
        if i >= 0 and self.blocks[i].start < cut < self.blocks[i].close:
            return self.blocks[i]
        return None

    def allowed(self, start: int, cut: int) -> bool:
        """A cut leaves text on both sides, never an empty code block, never a fence line in pieces."""
        if not self.text[start:cut].strip():
            return False
        block = self.block_at(cut)
        if block is None:
            return True
        return bool(self.text[block.body:cut].strip() and self.text[cut:block.end].strip())

    def part(self, prefix: str, start: int, cut: int) -> str:
        closer = self.block_at(cut)
        return prefix + self.text[start:cut].rstrip() + (f"\n{closer.marker}" if closer else "")

    def fits(self, prefix: str, start: int, cut: int) -> bool:
        return self.length(self.part(prefix, start, cut)) <= self.limit

    def window(self, prefix: str, start: int) -> int:
        """The farthest end such that the prefix and ``text[start:end]`` fit (the length only grows)."""
        lo, hi = start, len(self.text)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.length(prefix + self.text[start:mid]) <= self.limit:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def choose(self, prefix: str, start: int, end: int) -> int | None:
        """Where to cut the part starting at ``start``; ``end`` is as far as it may reach."""
        for pattern, fill in _BREAKS:
            cuts = [m.start("end") if "end" in pattern.groupindex else m.start()
                    for m in pattern.finditer(self.text, start, min(len(self.text), end + 2))]
            best = next((c for c in reversed(cuts)
                         if start < c <= end and self.allowed(start, c) and self.fits(prefix, start, c)), None)
            if best is not None and best - start >= (end - start) * fill:
                return best
        for cut in range(end, start, -1):
            if not _splits_cluster(self.text, cut) and self.allowed(start, cut) and self.fits(prefix, start, cut):
                return cut
        return None

    def split(self) -> list[str]:
        text = self.text
        parts: list[str] = []
        start, prefix = _skip_space(text, 0), ""
        while start < len(text):
            if self.length(prefix + text[start:].rstrip()) <= self.limit:
                if text[start:].strip():
                    parts.append(prefix + text[start:].rstrip())
                break
            end = self.window(prefix, start)
            cut = self.choose(prefix, start, end)
            if cut is None:  # nothing fits whole: cut plainly
                if end <= start:
                    raise ValueError(f"limit {self.limit} is too small to hold {text[start]!r}")
                cut = end
                while _splits_cluster(text, cut) and cut > start + 1:
                    cut -= 1
                if text[start:cut].strip():
                    parts.append((prefix + text[start:cut]).rstrip())
                prefix = ""
            else:
                parts.append(self.part(prefix, start, cut))
                block = self.block_at(cut)
                prefix = f"{block.opener}\n" if block else ""
            start = _skip_space(text, cut)
        return parts


def _skip_space(text: str, pos: int) -> int:
    """Past the whitespace at a cut, but keeping the indentation of the line that follows it."""
    end = pos
    while end < len(text) and text[end].isspace():
        end += 1
    newline = text.rfind("\n", pos, end)
    return newline + 1 if newline >= 0 else end


def _splits_cluster(text: str, cut: int) -> bool:
    """Whether cutting before ``text[cut]`` would tear a character apart (emoji sequences, accents, CRLF)."""
    if cut <= 0 or cut >= len(text):
        return False
    before, after = text[cut - 1], text[cut]
    if before == "\r" and after == "\n":
        return True
    if after == _ZWJ or before == _ZWJ or unicodedata.combining(after) or unicodedata.category(after) in ("Mn", "Me", "Mc"):
        return True
    code = ord(after)
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True  # variation selectors, skin tones, flag tags attach to what precedes them
    if _regional(after) and _regional(before):
        run = cut
        while run > 0 and _regional(text[run - 1]):
            run -= 1
        return (cut - run) % 2 == 1  # inside a flag (a pair of regional indicators)
    return False


def _regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def split_text(text: str, limit: int, length: Length = len) -> list[str]:
    """Split ``text`` into non-empty parts of at most ``limit`` units, each rendering on its own.

    ``length`` measures a part (``utf16_length`` for Telegram). Whitespace at a cut is
    dropped; apart from that and the fences added around a cut inside a code block,
    joining the parts gives back the text.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    return _Splitter(text, limit, length).split()
