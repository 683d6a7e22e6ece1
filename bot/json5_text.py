"""JSON5 text as OpenClaw users write it: numbers with digit separators (``180_000``).

The ``json5`` library follows the JSON5 spec, which has no digit separators, yet the
provider page's own snippets use them. They are removed before parsing, and only
there: between two digits of a number literal, never inside a string, a comment or
an unquoted key such as ``v1_2``.
"""

from __future__ import annotations

import re

# One token at a time, so strings and comments are skipped whole; anything else is left as is.
_TOKEN = re.compile(
    r"""
      "(?:[^"\\]|\\.)*"              # double-quoted string
    | '(?:[^'\\]|\\.)*'              # single-quoted string
    | //[^\n]*                       # line comment
    | /\*.*?\*/                      # block comment
    | (?:[^\W\d]|\$)[\w$]*           # identifier (unquoted key, true, Infinity...)
    | \.?\d(?:[eE][+-]|[\w.])*       # number literal, digit separators included
    """,
    re.VERBOSE | re.DOTALL,
)
_DECIMAL_SEPARATOR = re.compile(r"(?<=\d)_(?=\d)")
_HEX_SEPARATOR = re.compile(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])")


def strip_digit_separators(text: str) -> str:
    """``text`` with the underscores between digits of number literals removed (``180_000`` → ``180000``)."""
    return _TOKEN.sub(_number_without_separators, text)


def _number_without_separators(match: re.Match[str]) -> str:
    token = match.group(0)
    if not (token[0].isdigit() or token[0] == "."):
        return token  # a string, comment or identifier: untouched
    separator = _HEX_SEPARATOR if token[:2].lower() == "0x" else _DECIMAL_SEPARATOR
    return separator.sub("", token)
