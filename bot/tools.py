"""Agent tools: what a tool is, and the registry the agent loop takes definitions from."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from channels.base import ChatRef, Inbound, Media

log = logging.getLogger("chorus.tools")


class ToolError(Exception):
    """A failure the model can read and perhaps fix (bad arguments, nothing generated)."""


@dataclass(slots=True)
class ToolContext:
    """What a tool may know about the turn that called it."""

    chat: ChatRef
    session_id: int
    inbound: Inbound | None = None
    history_media: list[Media] = field(default_factory=list)  # images from the conversation, for references
    deliver_later: Callable[..., Awaitable[None]] | None = None


@dataclass(slots=True)
class ToolResult:
    """The text the model sees, and the media that joins the reply."""

    content: str
    media: list[Media] = field(default_factory=list)


class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> ToolResult: ...


class ToolRegistry:
    """The tools offered to the model, by name."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools = {t.name: t for t in tools}

    def add(self, *tools: Tool) -> None:
        """Register more tools (those that need the runtime, e.g. the media job runner, come after it)."""
        self._tools.update((t.name, t) for t in tools)

    def definitions(self) -> list[dict[str, Any]]:
        """Tool definitions in chat-completions shape."""
        return [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in self._tools.values()
        ]

    async def call(self, name: str, arguments: str, ctx: ToolContext) -> ToolResult:
        """Run one call; any failure comes back as a result the model can read, never as an exception."""
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(f"error: there is no tool named {name!r}; available: {', '.join(self._tools) or 'none'}")
        try:
            args = json.loads(arguments or "{}")
            if not isinstance(args, dict):
                raise ToolError("arguments must be a JSON object")
            return await tool.run(args, ctx)
        except json.JSONDecodeError as exc:
            return ToolResult(f"error: the arguments are not valid JSON ({exc.msg} at position {exc.pos})")
        except ToolError as exc:
            return ToolResult(f"error: {exc}")
        except Exception as exc:  # a bug or an upstream failure: the model can still tell the user
            log.exception("tool %s failed (chat %s)", name, ctx.chat.session_key)
            return ToolResult(f"error: the tool failed: {exc}")
