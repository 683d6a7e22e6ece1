"""Documents a user sends: text files and PDFs go into the turn as text; what cannot be read gets a sentence.

A text file is anything whose type says text (or JSON, XML, YAML...) or whose name ends like a text or source
file; a PDF's text is extracted with pypdf. Nothing else is guessed at: a binary gets a sentence naming what
is read. ``tools.media.document.maxBytes`` is checked before a file is fetched.
"""

from __future__ import annotations

import asyncio
import io
import logging
from dataclasses import dataclass, field
from pathlib import PurePath

from channels.base import Attachment, AttachmentKind, Inbound

log = logging.getLogger("chorus.documents")

TEXT_SUFFIXES = frozenset((
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".json5", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".xml", ".html", ".htm", ".log", ".sql", ".tex", ".srt", ".vtt",
    ".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".kt", ".c", ".h", ".cpp", ".hpp", ".cc", ".cs", ".go", ".rs",
    ".rb", ".php", ".swift", ".sh", ".bash", ".zsh", ".ps1", ".r", ".lua", ".pl", ".scala", ".dart", ".css",
    ".scss", ".vue", ".svelte", ".ex", ".exs", ".hs", ".ml", ".clj", ".m", ".diff", ".patch",
))
TEXT_TYPES = ("application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
              "application/javascript", "application/x-sh", "application/sql")
SUPPORTED = "text files (.txt, .md, .csv, .json, source code) and PDFs"


@dataclass(slots=True)
class Documents:
    """What a message's documents became: text for the model, and sentences for the user."""

    text: str = ""
    notes: list[str] = field(default_factory=list)


def is_text(attachment: Attachment) -> bool:
    mime = (attachment.mime or "").split(";", 1)[0].strip().lower()
    suffix = PurePath(attachment.filename or "").suffix.lower()
    return mime.startswith("text/") or mime in TEXT_TYPES or suffix in TEXT_SUFFIXES


def is_pdf(attachment: Attachment) -> bool:
    return (attachment.mime or "").lower() == "application/pdf" or (attachment.filename or "").lower().endswith(".pdf")


async def read_documents(inbound: Inbound, max_bytes: int, max_chars: int) -> Documents:
    """The text of each document of ``inbound`` (at most ``max_chars`` each), and a sentence for each that
    was too large, unreadable or of a kind that is not read."""
    found = Documents()
    blocks = []
    for attachment in (a for a in inbound.attachments if a.kind is AttachmentKind.DOCUMENT):
        name = attachment.filename or "the file"
        if not (is_pdf(attachment) or is_text(attachment)):
            found.notes.append(f"I can't read {name}: I read {SUPPORTED}, photos, voice notes and audio.")
            continue
        try:
            size = attachment.size  # as the platform says: a file too large is never fetched
            data = await attachment.read() if size is None or size <= max_bytes else b""
            if (size := max(size or 0, len(data))) > max_bytes:
                found.notes.append(f"{name} is too large for me to read ({_mb(size)}; the limit is {_mb(max_bytes)}).")
                continue
            text = await asyncio.to_thread(pdf_text, data) if is_pdf(attachment) else decode_text(data)
        except Exception as exc:  # a broken PDF raises many kinds of errors; the user is told, the turn goes on
            log.info("could not read %s chat=%s: %s", name, inbound.chat.session_key, exc)
            found.notes.append(f"I couldn't read {name}: the file seems damaged or is not what its name says.")
            continue
        if not text.strip():
            scan = " (a scanned PDF? send its pages as photos)" if is_pdf(attachment) else ""
            found.notes.append(f"I found no text in {name}{scan}.")
            continue
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[… cut here: the file has {len(text) - max_chars:,} more characters]"
        blocks.append(f"[File {name}]\n{text}\n[End of {name}]")
    found.text = "\n\n".join(blocks)
    return found


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without a BOM), else Latin-1; a file with NUL bytes is binary, not text."""
    if b"\x00" in data[:8192]:
        raise ValueError("binary data")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def pdf_text(data: bytes) -> str:
    """The text of every page, pages apart by a blank line."""
    from pypdf import PdfReader  # imported when a PDF comes, not at start

    reader = PdfReader(io.BytesIO(data))
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages).strip()


def _mb(size: int) -> str:
    """``200 bytes``, ``12 KB``, ``3.4 MB``."""
    if size < 1000:
        return f"{size} bytes"
    return f"{size / 1000:.0f} KB" if size < 1_000_000 else f"{size / 1_000_000:.1f} MB"
