"""Where the OpenRouter key comes from: config, auth profile, or environment, in that order."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .config import check_secret

PROFILE = "openrouter:default"
ENV_VAR = "OPENROUTER_API_KEY"


@dataclass(frozen=True, slots=True)
class Credential:
    """A key and a description of where it came from (safe to print; the key is not)."""

    key: str = field(repr=False)
    source: str


def profiles_path(state: Path) -> Path:
    return state / "auth-profiles.json"


def read_profiles(state: Path) -> dict[str, Any]:
    """The auth-profiles file, or an empty one."""
    path = profiles_path(state)
    if not path.exists():
        return {"version": 1, "profiles": {}}
    data = json.loads(path.read_text(encoding="utf-8"))
    data.setdefault("profiles", {})
    return data


def save_key(state: Path, key: str, *, method: str, user_id: str | None = None, profile: str = PROFILE) -> Path:
    """Store ``key`` in ``profile``, written atomically with mode 0600 from the first byte."""
    data = read_profiles(state)
    entry: dict[str, Any] = {
        "provider": profile.split(":", 1)[0], "type": "api_key", "key": key, "method": method,
        "updatedAt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if user_id:
        entry["userId"] = user_id
    data["profiles"][profile] = entry
    path = profiles_path(state)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=state, prefix=".auth-", suffix=".json")  # mkstemp creates it 0600
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def resolve_key(
    config_key: str | None,
    state: Path,
    env: Mapping[str, str],
    config_env: Mapping[str, str] = {},
    dotenv: Mapping[str, str] = {},
) -> Credential | None:
    """The first key found: config ``apiKey``, the auth profile, then ``OPENROUTER_API_KEY``
    from the process environment, the config's ``env`` block, or ``.env``."""
    if config_key:
        return Credential(config_key, "config (models.providers.openrouter.apiKey)")
    profile = read_profiles(state)["profiles"].get(PROFILE) or {}
    if profile.get("key"):
        return Credential(profile["key"], f"auth profile {PROFILE} ({profiles_path(state)})")
    for where, values in (("environment", env), ("config env block", config_env), (".env file", dotenv)):
        if values.get(ENV_VAR):
            return Credential(check_secret(values[ENV_VAR], f"{ENV_VAR} ({where})") or "", f"{ENV_VAR} ({where})")
    return None
