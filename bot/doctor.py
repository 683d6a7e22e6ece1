"""``chorus doctor``: is everything a turn needs in place?"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

from .config import ConfigError, load_config
from .lock import lock_holder
from channels import discord_setup

from .discord_config import discord_settings
from .runtime import Env
from .store import Store


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(path: Path, env: Env) -> list[Check]:
    """Config valid, credential present, state dir writable, database migrated, base URL reachable;
    a configured Discord bot: token accepted, Message Content intent on."""
    try:
        loaded = load_config(path, env={**env.dotenv, **env.vars})
    except ConfigError as exc:
        return [Check("config", False, str(exc))]
    checks = [Check("config", True, f"{path}" + ("" if path.exists() else " (missing: defaults in use)"))]
    cred = env.credential(loaded.config)
    checks.append(Check("credential", cred is not None, cred.source if cred else "none; run `chorus onboard`"))
    checks.append(_writable(env.state))
    checks.append(await _database(env.state / "chorus.db"))
    checks.append(_service(env.state))
    checks.append(await _reachable(loaded.config.models.providers.openrouter.base_url))
    if (discord := discord_settings(loaded.config)) is not None:
        checks += [Check(*found) for found in await discord_setup.check(discord)]
    return checks


def _writable(state: Path) -> Check:
    try:
        state.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state):
            pass
    except OSError as exc:
        return Check("state dir", False, f"{state}: {exc.strerror}")
    return Check("state dir", True, f"{state} is writable")


def _service(state: Path) -> Check:
    """Informational: whether a ``chorus run`` holds this state directory (and which one)."""
    pid = lock_holder(state)
    if pid is None:
        return Check("service", True, "not running on this state directory")
    return Check("service", True, f"running on this state directory ({f'pid {pid}' if pid > 0 else 'pid unknown'})")


async def _database(path: Path) -> Check:
    try:
        store = await Store.open(path)
    except Exception as exc:  # any failure (migration refused, file unreadable) is the finding
        return Check("database", False, f"{path}: {exc}")
    async with store.db.execute("SELECT MAX(version) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    await store.close()
    return Check("database", True, f"{path} at schema version {row[0] if row else 0}")


async def _reachable(base_url: str) -> Check:
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(base_url.rstrip("/") + "/models")
    except httpx.HTTPError as exc:
        return Check("base URL", False, f"{base_url} unreachable ({type(exc).__name__})")
    return Check("base URL", resp.status_code < 500, f"{base_url} answered HTTP {resp.status_code}")
