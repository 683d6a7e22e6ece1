"""JSON bodies on the wire: orjson for what it takes, the standard library for the rest.

A text turn encodes a ~4 KB chat request and about five Bot API calls, and decodes every streamed piece of
the answer and every Bot API answer. The standard library takes ~15 µs for that request and 1-3 µs a decode;
orjson ~1 µs and 0.4-0.9 µs. What orjson refuses (integers past 64 bits, lone surrogates, keys that are not
strings, ``NaN`` literals in an answer, bytes that are not UTF-8) goes through ``json``, so what is accepted
and every error stay as they were. Two differences are left, neither reachable from Telegram or OpenRouter:
orjson reads an integer past 64 bits as a float, and writes a float NaN or infinity as ``null`` where ``json``
refused it (the config, the only place such a number could come from, refuses them first).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        # ASCII escapes: a lone surrogate still makes valid JSON (as "\ud800"), and the bytes always encode.
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


def loads(data: bytes, errors: str = "strict") -> Any:
    """The JSON in ``data``; ``errors="replace"`` reads bytes that are not UTF-8 as U+FFFD. Raises
    ``ValueError`` (``json.JSONDecodeError`` or ``UnicodeDecodeError``) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", errors))
