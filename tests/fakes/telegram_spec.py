"""What Telegram checks before it accepts a call: the Bot API spec's fields and types, and its formatting rules.

``check_call`` returns the first problem in a call's parameters (as they arrive in a form or JSON body), or
``None``. The fake server answers a problem 400 and records it as a contract violation.
"""

from __future__ import annotations

import json
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

SPEC_PATH = Path(__file__).resolve().parents[3] / "shared" / "specs" / "telegram-bot-api.json"
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
ENTITY_TYPES = {
    "mention", "hashtag", "cashtag", "bot_command", "url", "email", "phone_number", "bold", "italic", "underline",
    "strikethrough", "spoiler", "blockquote", "expandable_blockquote", "code", "pre", "text_link", "text_mention",
    "custom_emoji", "date_time",
}
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre",
             "blockquote", "tg-emoji", "tg-time"}
MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")


@cache
def spec() -> dict[str, Any]:
    """The Bot API description the fake is faithful to."""
    return json.loads(SPEC_PATH.read_text(encoding="utf-8"))


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP is two)."""
    return len(text.encode("utf-16-le")) // 2


class Problem(Exception):
    """A call Telegram would refuse; ``str()`` says why, as a Bot API error description would."""


def check_call(method: str, params: dict[str, Any], files: set[str]) -> None:
    """Raise ``Problem`` when ``params`` (decoded values) break the spec of ``method``."""
    described = spec()["methods"].get(method)
    if described is None:
        raise Problem(f"Not Found: method {method!r} is not in the Bot API")
    fields = {f["name"]: f for f in described.get("fields", [])}
    for name in params:
        if name not in fields:
            raise Problem(f"Bad Request: unknown parameter {name!r} of {method}")
    for name, field in fields.items():
        if name not in params:
            if field["required"]:
                raise Problem(f"Bad Request: parameter {name!r} of {method} is required")
            continue
        _check_value(params[name], field["types"], f"{method}.{name}", files)


def decode_form_value(method: str, name: str, value: str) -> Any:
    """A form field as Telegram reads it: a String field stays text; numbers, booleans, arrays and objects
    are JSON (as aiogram serializes them)."""
    described = spec()["methods"].get(method) or {}
    types = next((f["types"] for f in described.get("fields", []) if f["name"] == name), ["String"])
    if types == ["String"] or (value.startswith("attach://") and "InputFile" in types):
        return value
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return value if isinstance(decoded, str) else decoded


def _check_value(value: Any, types: list[str], where: str, files: set[str]) -> None:
    errors = []
    for kind in types:
        try:
            _check_one(value, kind, where, files)
            return
        except Problem as exc:
            errors.append(str(exc))
    raise Problem(errors[0] if len(errors) == 1 else f"Bad Request: {where} matches none of {types}: {errors}")


def _check_one(value: Any, kind: str, where: str, files: set[str]) -> None:
    if kind.startswith("Array of "):
        if not isinstance(value, list):
            raise Problem(f"Bad Request: {where} must be an array, found {type(value).__name__}")
        for i, item in enumerate(value):
            _check_one(item, kind.removeprefix("Array of "), f"{where}[{i}]", files)
        return
    if kind == "Integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise Problem(f"Bad Request: {where} must be an Integer, found {value!r}")
    elif kind == "Float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Problem(f"Bad Request: {where} must be a Float, found {value!r}")
    elif kind == "String":
        if not isinstance(value, str):
            raise Problem(f"Bad Request: {where} must be a String, found {value!r}")
    elif kind == "Boolean":
        if not isinstance(value, bool):
            raise Problem(f"Bad Request: {where} must be a Boolean, found {value!r}")
    elif kind == "InputFile":
        if not (isinstance(value, str) and value.startswith("attach://") and value[9:] in files):
            raise Problem(f"Bad Request: {where} must be an uploaded file (attach://NAME with a NAME part)")
    else:
        _check_object(value, kind, where, files)


def _check_object(value: Any, kind: str, where: str, files: set[str]) -> None:
    described = spec()["types"].get(kind)
    if described is None:
        raise Problem(f"Bad Request: {where}: unknown type {kind}")
    if described.get("subtypes"):
        _check_value(value, described["subtypes"], where, files)
        return
    if not isinstance(value, dict):
        raise Problem(f"Bad Request: {where} must be a JSON object ({kind}), found {value!r}")
    fields = {f["name"]: f for f in described.get("fields", [])}
    for name in value:
        if name not in fields:
            raise Problem(f"Bad Request: {where}: {kind} has no field {name!r}")
    for name, field in fields.items():
        if name in value:
            # Media inside an album may be a file_id/URL or attach://NAME: "String" in the spec.
            _check_value(value[name], field["types"], f"{where}.{name}", files)
        elif field["required"]:
            raise Problem(f"Bad Request: {where}: {kind}.{name} is required")
    if "type" in fields and isinstance(value.get("type"), str) and kind.startswith(("InputMedia", "BotCommandScope")):
        expected = _subtype_tag(kind)
        if expected and value["type"] != expected:
            raise Problem(f"Bad Request: {where}: type {value['type']!r} is not {kind}")


def _subtype_tag(kind: str) -> str | None:
    """The ``type`` value a subtype carries: InputMediaPhoto → photo, BotCommandScopeAllPrivateChats → all_private_chats."""
    for prefix in ("InputMedia", "BotCommandScope"):
        if kind.startswith(prefix):
            rest = kind.removeprefix(prefix)
            return "".join(("_" + c.lower()) if c.isupper() else c for c in rest).lstrip("_")
    return None


# ---- formatting --------------------------------------------------------------------------------


def rendered_text(text: str, parse_mode: str | None, entities: list[dict[str, Any]] | None, where: str) -> str:
    """The text a user sees after Telegram parses ``parse_mode`` or applies ``entities``; raises ``Problem``
    for what Telegram refuses ("can't parse entities")."""
    if parse_mode and entities:
        raise Problem(f"Bad Request: {where}: parse_mode and entities are mutually exclusive")
    if parse_mode == "HTML":
        return _parse_html(text, where)
    if parse_mode == "MarkdownV2":
        return _parse_markdown_v2(text, where)
    if parse_mode is not None:
        raise Problem(f"Bad Request: unsupported parse_mode {parse_mode!r}")
    length = utf16_len(text)
    for i, entity in enumerate(entities or []):
        if entity["type"] not in ENTITY_TYPES:
            raise Problem(f"Bad Request: {where}: entity {i} has unknown type {entity['type']!r}")
        if entity["offset"] < 0 or entity["length"] <= 0 or entity["offset"] + entity["length"] > length:
            raise Problem(f"Bad Request: {where}: entity {i} ({entity['offset']}+{entity['length']}) lies outside "
                          f"the text ({length} UTF-16 units)")
        if entity["type"] == "text_link" and not entity.get("url"):
            raise Problem(f"Bad Request: {where}: text_link entity {i} without url")
    return text


def check_length(text: str, limit: int, where: str, *, allow_empty: bool = False) -> None:
    """Telegram's length rules, counted after entity parsing."""
    if not text.strip() and not allow_empty:
        raise Problem(f"Bad Request: {where} is empty")
    if utf16_len(text) > limit:
        raise Problem(f"Bad Request: {where} is too long ({utf16_len(text)} > {limit})")


class _Html(HTMLParser):
    def __init__(self, where: str) -> None:
        super().__init__(convert_charrefs=True)
        self.where = where
        self.open: list[str] = []
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in HTML_TAGS:
            raise Problem(f"Bad Request: can't parse entities: unsupported start tag \"{tag}\" ({self.where})")
        if tag == "a" and not dict(attrs).get("href"):
            raise Problem(f"Bad Request: can't parse entities: <a> without href ({self.where})")
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            raise Problem(f"Bad Request: can't parse entities: can't find end tag corresponding to start tag "
                          f"\"{self.open[-1] if self.open else tag}\" ({self.where})")
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.out.append(data)


def _parse_html(text: str, where: str) -> str:
    parser = _Html(where)
    parser.feed(text)
    parser.close()
    if parser.open:
        raise Problem(f"Bad Request: can't parse entities: unclosed start tag \"{parser.open[-1]}\" ({where})")
    return "".join(parser.out)


def _parse_markdown_v2(text: str, where: str) -> str:
    """Only the escaping rule: a reserved character outside markup must be escaped with a backslash."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c in ".!-=+#|{}>()":
            raise Problem(f"Bad Request: can't parse entities: character '{c}' is reserved and must be escaped "
                          f"with the preceding '\\' ({where})")
        if c not in "*_~`[]|":
            out.append(c)
        i += 1
    return "".join(out)
