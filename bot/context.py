"""The conversation as a model is sent it: inside its context window, and in a shape it takes."""

from __future__ import annotations

import hashlib
import json
import re
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


def fit_context(
    system: list[dict[str, Any]], history: list[dict[str, Any]], current: list[dict[str, Any]], window: int
) -> tuple[list[dict[str, Any]], int]:
    """The messages to send: the system prompt and the current turn always, then as many of the
    newest earlier turns as fit in ``window`` minus the answer's reserve. Returns (messages, turns dropped).

    A turn starts at a user message (or the history's first), so a tool call never loses its result. One pass
    from the newest message back, no list per turn: it runs on the whole history every turn."""
    def starts_turn(i: int) -> bool:
        return i == 0 or history[i]["role"] == "user"

    budget = int(window * (1 - OUTPUT_RESERVE)) - sum(map(estimate_tokens, system + current))
    kept, cost = len(history), 0  # history[kept:] is sent; cost: of the turn being walked, so far
    for i in range(len(history) - 1, -1, -1):
        cost += estimate_tokens(history[i])
        if starts_turn(i):
            if cost > budget:
                break
            budget, cost, kept = budget - cost, 0, i
    return system + history[kept:] + current, sum(map(starts_turn, range(kept)))


def plain_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` for a model without tool use: each tool round told in words inside the assistant's turn,
    and user and assistant strictly taking turns (two user messages in a row, as after a failed turn, become one).

    Such models run on chat templates that refuse a ``tool`` role, tool calls, or two turns of one role in a
    row ("Conversation roles must alternate user/assistant/..."); a chat that used a tool with one model must
    go on when it moves to such a model. History itself is left as it is.
    """
    calls = {c["id"]: f'{c["function"]["name"]} {c["function"].get("arguments") or "{}"}'
             for m in messages for c in m.get("tool_calls") or ()}
    out: list[dict[str, Any]] = []
    for m in messages:
        role, content = m["role"], m.get("content")
        if role == "tool":
            m = {"role": "assistant", "content": f"[{calls.get(m.get('tool_call_id'), 'a tool')} → {content}]"}
        elif m.get("tool_calls"):
            m = {key: value for key, value in m.items() if key != "tool_calls"}
            if not content:
                continue  # the call itself is told with its result
        elif role == "assistant" and not content:
            continue
        if out and out[-1]["role"] == m["role"] != "system":
            out[-1] = {**out[-1], "content": _joined(out[-1].get("content"), m.get("content"))}
        else:
            out.append(m)
    return out


# Mistral's chat templates (its own API, and the hosts that serve its weights) refuse a tool-call id that is
# not exactly 9 letters or digits; other families' ids (``call_…``, ``toolu_…``) are longer.
_SHORT_ID = re.compile(r"[A-Za-z0-9]{9}")
_MISTRAL = re.compile(r"mistral|mixtral|codestral|devstral|pixtral|ministral|magistral|voxtral", re.IGNORECASE)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def wants_short_tool_ids(model: str) -> bool:
    """Whether ``model`` (an OpenRouter model id) is of Mistral's family, whose templates take only 9-character
    tool-call ids. OpenRouter passes ids through as they are."""
    return bool(_MISTRAL.search(model))


def short_tool_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with every tool-call id made 9 letters or digits, for a Mistral model that follows one of
    another family (a chat that used a tool, then ``/model``). The same id always becomes the same short one, so
    a call and its result still pair; ids that already fit are kept. History itself is left as it is."""
    def short(call_id: Any) -> Any:
        if not isinstance(call_id, str) or _SHORT_ID.fullmatch(call_id):
            return call_id
        n = int.from_bytes(hashlib.sha256(call_id.encode()).digest()[:8], "big")
        return "".join(_BASE62[(n // 62**i) % 62] for i in range(9))

    out = []
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "id": short(c.get("id"))} for c in m["tool_calls"]]}
        elif "tool_call_id" in m:
            m = {**m, "tool_call_id": short(m["tool_call_id"])}
        out.append(m)
    return out


def _joined(first: Any, second: Any) -> Any:
    """Two turns' contents as one: text joined by a blank line, or parts one after the other."""
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}\n\n{second}"
    return _parts(first) + _parts(second)


def _parts(content: Any) -> list[Any]:
    return content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
