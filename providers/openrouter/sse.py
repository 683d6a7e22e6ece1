"""Server-sent events, as OpenRouter streams them."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

DONE = "[DONE]"  # the last event of a complete stream


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield each event's data up to and including ``[DONE]``.

    Comment lines (``: OPENROUTER PROCESSING``) are keep-alives and skipped; an
    event's several ``data:`` lines are joined with newlines, as the SSE spec says.
    The lines after ``[DONE]`` are still read, so the connection goes back to the pool.
    """
    data: list[str] = []
    done = False
    async for line in lines:
        if done:
            continue
        if not line:
            if data:
                payload = "\n".join(data)
                data.clear()
                done = payload == DONE
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and not done:
        yield "\n".join(data)
