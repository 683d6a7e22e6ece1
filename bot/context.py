"""Keeping a long conversation inside the model's context window."""

from __future__ import annotations

import json
from typing import Any

# A rough count is enough: the budget keeps a margin, and a real tokenizer per model is not worth its weight.
CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
OUTPUT_RESERVE = 0.2  # of the window, left for the answer
IMAGE_TOKENS = 1600  # what a vision model counts for one image of up to 2048 px, about; never its URL's length


def _size(part: Any) -> int:
    if isinstance(part, dict) and part.get("type") == "image_url":
        return IMAGE_TOKENS * CHARS_PER_TOKEN  # a short reference or a long data URL: the same image to the model
    return len(json.dumps(part))


def estimate_tokens(message: dict[str, Any]) -> int:
    """Tokens a message costs, estimated from its JSON size (an image at a fixed cost)."""
    content = message.get("content")
    if isinstance(content, list):
        size = sum(map(_size, content))
    else:
        size = len(content) if isinstance(content, str) else len(json.dumps(content or ""))
    if message.get("tool_calls"):
        size += len(json.dumps(message["tool_calls"]))
    return size // CHARS_PER_TOKEN + MESSAGE_OVERHEAD


def _turns(history: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split history into turns, each starting at a user message, so a tool call never loses its result."""
    turns: list[list[dict[str, Any]]] = []
    for message in history:
        if message["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def fit_context(
    system: list[dict[str, Any]], history: list[dict[str, Any]], current: list[dict[str, Any]], window: int
) -> tuple[list[dict[str, Any]], int]:
    """The messages to send: the system prompt and the current turn always, then as many of the
    newest earlier turns as fit in ``window`` minus the answer's reserve. Returns (messages, turns dropped)."""
    budget = int(window * (1 - OUTPUT_RESERVE)) - sum(map(estimate_tokens, system + current))
    kept: list[list[dict[str, Any]]] = []
    turns = _turns(history)
    for turn in reversed(turns):
        cost = sum(map(estimate_tokens, turn))
        if cost > budget:
            break
        budget -= cost
        kept.append(turn)
    dropped = len(turns) - len(kept)
    return system + [m for turn in reversed(kept) for m in turn] + current, dropped
