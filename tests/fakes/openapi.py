"""Just enough of OpenAPI 3.1 / JSON Schema to check requests against a platform's published spec.

Supports what Discord's spec uses: ``$ref``, ``allOf``, ``oneOf``/``anyOf`` (both read as "any of", as
Discord's own unions overlap), ``const``, ``type`` lists, ``required``, ``properties``, ``items``,
``maxLength``/``minLength``, ``maxItems``, ``minimum``/``maximum``. Snowflakes may be sent as integers:
Discord accepts both, and discord.py sends some ids as ints.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,), "null": (type(None),),
}


@dataclass(frozen=True)
class Operation:
    template: str
    method: str
    spec: dict[str, Any]

    def body_schema(self, content_type: str) -> dict[str, Any] | None:
        content = (self.spec.get("requestBody") or {}).get("content") or {}
        entry = content.get(content_type) or content.get("application/json")
        return entry.get("schema") if entry else None


class OpenApi:
    """A loaded spec: find the operation for a request, validate a body against a schema."""

    def __init__(self, path: Path) -> None:
        self.doc = json.loads(path.read_text())
        self._routes = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$"), t) for t in self.doc["paths"]]

    def operation(self, path: str, method: str) -> Operation | None:
        """The operation for ``method path`` (path relative to the API base), or ``None``."""
        for pattern, template in self._routes:
            if pattern.match(path):
                op = self.doc["paths"][template].get(method.lower())
                if op is not None:
                    return Operation(template, method.upper(), op)
        return None

    def check(self, schema: dict[str, Any], value: Any, where: str = "body") -> list[str]:
        """Every way ``value`` breaks ``schema`` (empty when it conforms)."""
        schema = self._resolve(schema)
        problems: list[str] = []
        for sub in schema.get("allOf", []):
            problems += self.check(sub, value, where)
        union = schema.get("oneOf") or schema.get("anyOf")
        if union:
            results = [self.check(sub, value, where) for sub in union]
            if all(results):
                shortest = min(results, key=len)
                problems.append(f"{where}: matches none of its allowed shapes ({'; '.join(shortest[:2])})")
        if "const" in schema and value != schema["const"]:
            problems.append(f"{where}: must be {schema['const']!r}")
        types = schema.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else types
            if not any(self._is(value, name, schema) for name in names):
                return problems + [f"{where}: expected {'/'.join(names)}, found {type(value).__name__}"]
        if isinstance(value, str):
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"{where}: {len(value)} characters, more than {schema['maxLength']}")
            if "minLength" in schema and len(value) < schema["minLength"]:
                problems.append(f"{where}: shorter than {schema['minLength']}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"] or "maximum" in schema and value > schema["maximum"]:
                problems.append(f"{where}: {value} out of range")
        elif isinstance(value, list):
            if "maxItems" in schema and len(value) > schema["maxItems"]:
                problems.append(f"{where}: more than {schema['maxItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    problems += self.check(schema["items"], item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key in schema.get("required", []):
                if key not in value:
                    problems.append(f"{where}.{key}: required, but missing")
            for key, sub in (schema.get("properties") or {}).items():
                if key in value:
                    problems += self.check(sub, value[key], f"{where}.{key}")
        return problems

    def _is(self, value: Any, name: str, schema: dict[str, Any]) -> bool:
        if name == "string" and schema.get("format") == "snowflake" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if isinstance(value, bool) and name in ("integer", "number"):
            return False
        return isinstance(value, _TYPES[name])

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.doc
            for part in schema["$ref"].lstrip("#/").split("/"):
                node = node[part]
            schema = node
        return schema
