"""Server-sent events, as OpenRouter streams them: read straight from the response bytes.

Lines are split on the bytes as they arrive and each event's data is handed on as bytes, so a streamed
answer is decoded once, by the JSON parser, rather than bytes to text to lines to text again.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

DONE = b"[DONE]"  # the last event of a complete stream


async def sse_data(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Yield each event's data up to and including ``[DONE]``, from the body's chunks as they arrive.

    Comment lines (``: OPENROUTER PROCESSING``) are keep-alives and skipped; an event's several ``data:``
    lines are joined with newlines, and lines may end in LF, CRLF or CR, as the SSE spec says. The body after
    ``[DONE]`` is still read, so the connection goes back to the pool.
    """
    data: list[bytes] = []
    pending = b""  # a line not yet ended (or ended by a CR that may be the first half of a CRLF)
    done = False
    async for chunk in chunks:
        if done:
            continue
        lines = (pending + chunk).splitlines(keepends=True)
        pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        for line in lines:
            if (payload := _feed(data, line.rstrip(b"\r\n"))) is not None:
                yield payload
                if done := payload == DONE:
                    break
    if not done:  # the body ended without a blank line after its last event: that event still counts
        for line in [*pending.splitlines(), b""]:
            if (payload := _feed(data, line)) is not None:
                yield payload


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
