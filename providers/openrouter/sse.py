"""Server-sent events, as OpenRouter streams them: read straight from the response bytes.

Lines are split on the bytes as they arrive and each event's data is handed on as bytes, so a streamed
answer is decoded once, by the JSON parser, rather than bytes to text to lines to text again. The parser is
plain code fed by the reader, not an async generator stacked on it: a streamed answer comes in many small
pieces, and each layer of generators cost every piece another trip through the event loop's machinery.
"""

from __future__ import annotations

from collections.abc import Iterable

DONE = b"[DONE]"  # the last event of a complete stream


class SSEParser:
    """Feed it the body's bytes as they arrive; it returns each event's data up to and including ``[DONE]``.

    Comment lines (``: OPENROUTER PROCESSING``) are keep-alives and skipped; an event's several ``data:``
    lines are joined with newlines, and lines may end in LF, CRLF or CR, as the SSE spec says. Nothing after
    ``[DONE]`` counts (the reader still reads the body to its end, so the connection goes back to the pool).
    """

    def __init__(self) -> None:
        self._data: list[bytes] = []
        self._pending = b""  # a line not yet ended (or ended by a CR that may be the first half of a CRLF)
        self._done = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The events that ``chunk`` completes."""
        if self._done:
            return []
        if not self._pending and not self._data and chunk.endswith(b"\n\n") and b"\r" not in chunk:
            if chunk.find(b"\n") == len(chunk) - 2:  # one line: an event or a comment, as nearly every read is
                if chunk.startswith(b"data: "):
                    self._done = (payload := chunk[6:-2]) == DONE
                    return [payload]
                if chunk.startswith(b":"):
                    return []
            return self._whole_events(chunk)
        lines = (self._pending + chunk).splitlines(keepends=True)
        self._pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        return self._events(line.rstrip(b"\r\n") for line in lines)

    def end(self) -> list[bytes]:
        """The body ended: an event without the blank line after it still counts."""
        if self._done:
            return []
        lines, self._pending = [*self._pending.splitlines(), b""], b""
        return self._events(lines)

    def _whole_events(self, chunk: bytes) -> list[bytes]:
        """``chunk`` is whole events, LF-ended, as a stream nearly always arrives: each ``data: …`` or comment
        event taken at once, anything else line by line."""
        events = []
        for event in chunk[:-2].split(b"\n\n"):
            if b"\n" in event or not event.startswith((b"data: ", b":")):
                payloads = self._events([*event.split(b"\n"), b""])
            elif event.startswith(b":"):
                continue
            else:
                payloads = [event[6:]]
            for payload in payloads:
                events.append(payload)
                if payload == DONE:
                    self._done = True
                    return events
        return events

    def _events(self, lines: Iterable[bytes]) -> list[bytes]:
        events = []
        for line in lines:
            if (payload := _feed(self._data, line)) is not None:
                events.append(payload)
                if payload == DONE:
                    self._done = True
                    break
        return events


def _feed(data: list[bytes], line: bytes) -> bytes | None:
    """Take one line of an event; at the blank line that ends it, return its data (``None`` until then)."""
    if not line:
        if not data:
            return None
        payload = data[0] if len(data) == 1 else b"\n".join(data)
        data.clear()
        return payload
    if line.startswith(b":"):
        return None
    field, _, value = line.partition(b":")
    if field == b"data":
        data.append(value[1:] if value.startswith(b" ") else value)
    return None
