"""Server-sent events, as OpenRouter streams them."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """Yield each event's data until ``[DONE]``.

    Comment lines (``: OPENROUTER PROCESSING``) are keep-alives and skipped; an
    event's several ``data:`` lines are joined with newlines, as the SSE spec says.
    """
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                payload = "\n".join(data)
                data.clear()
                if payload == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data and (payload := "\n".join(data)) != "[DONE]":
        yield payload
