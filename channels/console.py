"""The console channel: chat in the terminal, or script it through a pipe."""

from __future__ import annotations

import asyncio
import getpass
import io
import itertools
import mimetypes
import sys
import threading
from contextlib import suppress
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

from .base import NotAccepted, Attachment, AttachmentKind, Capabilities, ChatRef, Inbound, InboundHandler, Media, Reply

BANNER = ("Chorus console. Type a message, /help for commands, /voice PATH, /image PATH or /file PATH to send a file, "
          "/quit to leave.")
FILE_COMMANDS = {"/voice": AttachmentKind.VOICE, "/image": AttachmentKind.IMAGE, "/file": AttachmentKind.DOCUMENT}


class ConsoleChannel:
    """One local user, one persistent session; reads lines from ``stdin``, writes answers to ``stdout``."""

    name = "console"
    help = ("/voice PATH, /image PATH, /file PATH — send a voice note, a picture or a document (text, PDF)\n"
            "/quit — leave (also /exit, or Ctrl-D)")
    capabilities = Capabilities(text_limit=1_000_000, markdown="none", voice_format="mp3", streams_text=True)

    def __init__(self, media_dir: Path, *, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.media_dir = media_dir
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.chat = ChatRef("console", "local")
        self.user = getpass.getuser()
        self._stopped = asyncio.Event()
        self._count = 0

    @property
    def interactive(self) -> bool:
        return self.stdin.isatty()

    async def run(self, on_message: InboundHandler) -> None:
        """Hand each line to ``on_message`` in order, until /quit, end of input, or ``stop()``."""
        lines = self._reader()
        if self.interactive:
            self._write(BANNER + "\n")
        while not self._stopped.is_set():
            if self.interactive:
                self._write("you> ")
            line = await lines.get()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/quit", "/exit"):
                break
            self._count += 1
            inbound = self._inbound(text)
            if inbound is not None:
                with suppress(NotAccepted):  # the dispatcher has told the user; the line is not kept
                    await on_message(inbound)

    async def stop(self) -> None:
        self._stopped.set()

    async def send(self, chat: ChatRef, reply: Reply) -> None:
        await self.open_stream(chat).close(reply)

    def open_stream(self, chat: ChatRef, reply_to: str | None = None) -> _ConsoleStream:
        return _ConsoleStream(self)

    def reattach(self, attachment: Attachment) -> Attachment | None:
        path = Path(attachment.source or "")
        return Attachment.from_path(attachment.kind, path, mime=attachment.mime) if path.is_file() else None

    def _inbound(self, text: str) -> Inbound | None:
        """The typed line as a message; ``/voice PATH`` and ``/image PATH`` send that file."""
        attachments = []
        command, _, arg = text.partition(" ")
        kind = FILE_COMMANDS.get(command)
        if kind is not None:
            path = Path(arg.strip()).expanduser()
            if not path.is_file():
                self._write(f"No file at {path}. Usage: {command} PATH\n")
                return None
            attachments.append(Attachment.from_path(kind, path, mime=mimetypes.guess_type(path.name)[0]))
            text = ""
        return Inbound(
            chat=self.chat, sender_id=self.user, sender_name=self.user, text=text,
            # Unique across runs too: the inbox treats a repeated id as a redelivery.
            message_id=f"console-{time.time_ns()}-{self._count}", attachments=attachments,
        )

    def _reader(self) -> asyncio.Queue[str | None]:
        """Lines from stdin on a daemon thread, so a blocked read never holds up shutdown."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        for stream in (self.stdin, self.stdout):  # a stray byte becomes U+FFFD, never a dead reader or writer
            reconfigure = getattr(stream, "reconfigure", None)
            with suppress(io.UnsupportedOperation):  # stdin already read from (onboarding asked for the key first)
                if reconfigure is not None:
                    reconfigure(errors="replace")

        def pump() -> None:
            try:
                for line in iter(self.stdin.readline, ""):
                    loop.call_soon_threadsafe(queue.put_nowait, line)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=pump, name="console-stdin", daemon=True).start()
        return queue

    def _write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def save_media(self, media: Media) -> Path:
        """Write a file under the media dir and return its path."""
        self.media_dir.mkdir(parents=True, exist_ok=True)
        name = Path(media.filename).name or "media"
        stem, suffix = f"{datetime.now():%Y%m%d-%H%M%S}-{Path(name).stem}", Path(name).suffix
        for n in itertools.count(1):  # two tracks made in the same second are two files
            path = self.media_dir / (f"{stem}{suffix}" if n == 1 else f"{stem}-{n}{suffix}")
            try:
                with path.open("xb") as file:  # created here or not at all: nothing is overwritten
                    file.write(media.data)
                return path
            except FileExistsError:
                continue
        raise AssertionError("unreachable")


class _ConsoleStream:
    def __init__(self, channel: ConsoleChannel) -> None:
        self.channel = channel
        self.shown = ""

    async def delta(self, text: str) -> None:
        if not text:
            return
        if not self.shown:
            self.channel._write("chorus> " if self.channel.interactive else "")
        self.shown += text
        self.channel._write(text)

    async def notice(self, text: str) -> None:
        """A status line of its own, outside the answer."""
        self.channel._write(("\n" if self.shown else "") + f"[{text}]\n")

    async def close(self, reply: Reply) -> None:
        # Show whatever of the final text the deltas did not (an error note, a reply sent whole).
        if reply.text.startswith(self.shown) or self.shown.startswith(reply.text):
            rest = reply.text[len(self.shown):]
        else:
            rest = "\n" + reply.text
        await self.delta(rest)
        if self.shown:
            self.channel._write("\n")
        for media in [*reply.media, *([reply.voice] if reply.voice else [])]:
            path = self.channel.save_media(media)
            caption = f" — {media.caption}" if media.caption else ""
            self.channel._write(f"[{media.kind.value} saved: {path}]{caption}\n")
