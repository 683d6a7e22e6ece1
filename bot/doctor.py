"""``chorus doctor``: is everything a turn needs in place?"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from channels.discord import setup as discord_setup
from net.http import Proxy
from providers.openrouter.keys import probe_key, probe_models

from .channel_settings import discord_settings, telegram_proxy, telegram_token
from .cluster import SharedCluster, members
from .config import DEFAULT_BASE_URL, ChorusConfig, ConfigError, load_config
from .lock import lock_holder
from .runtime import Env, openrouter_proxy
from .db.base import DB_ERRORS, masked
from .redact import redact
from .store import Store


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(path: Path, env: Env) -> list[Check]:
    """Config valid, credential present, state dir writable, database migrated, base URL answering like
    OpenRouter, and the key accepted by it; a configured Discord bot: token accepted, Message Content intent on.
    Each failure says what to do."""
    try:
        loaded = load_config(path, env={**env.dotenv, **env.vars})
    except ConfigError as exc:
        return [Check("config", False, str(exc))]
    checks = [Check("config", True, f"{path}" + ("" if path.exists() else " (missing: defaults in use)"))]
    cred = env.credential(loaded.config)
    checks.append(Check("credential", cred is not None, cred.source if cred else "none; run `chorus onboard`"))
    checks.append(_writable(env.state))
    where = env.database(loaded.config)
    checks += await _database(where, loaded.config.storage.lease_ms / 1000)
    if not isinstance(where, str):  # SQLite: one instance, which holds the state directory's lock
        checks.append(_service(env.state))
    base_url = loaded.config.models.providers.openrouter.base_url
    proxy = openrouter_proxy(loaded.config)
    checks.append(base := await _base_url(base_url, proxy))
    checks += _proxy("openrouter", proxy, base)
    if cred is not None:
        checks.append(await _key(base_url, cred.key, cred.source, proxy) if base.ok else Check(
            "key", False, "not checked: fix the base URL first"))
    checks += await _telegram(loaded.config, env, where)
    if (discord := discord_settings(loaded.config, env.lookup)) is not None:
        found = [Check(*found) for found in await discord_setup.check(discord)]
        checks += [*found, *_proxy("discord", discord.proxy, found[0])]
    return checks


def _proxy(name: str, proxy: Proxy | None, call: Check) -> list[Check]:
    """When ``name`` goes through a proxy: which (its login masked), where that was set, and whether ``call``,
    the first call made through it, worked."""
    if proxy is None:
        return []
    where = f"{proxy.shown} ({proxy.source})"
    return [Check(f"{name} proxy", call.ok, f"{where} works" if call.ok else f"{where}: a call through it failed")]


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


async def _database(where: Path | str, lease: float) -> list[Check]:
    """The database opens (PostgreSQL's URL shown masked) at which schema version; on a shared database, the
    instances registered there: alive, or silent (dead) and since when."""
    shown = masked(where) if isinstance(where, str) else where
    try:
        store = await Store.open(where)
    except Exception as exc:  # any failure (unreachable, migration refused, file unreadable) is the finding
        return [Check("database", False, f"{shown}: {redact(str(exc))}")]
    try:
        version = await store.db.fetchval("SELECT MAX(version) FROM schema_migrations")
        found = await members(store.db, lease) if store.db.shared else None
    finally:
        await store.close()
    checks = [Check("database", True, f"{shown} at schema version {version or 0}")]
    if found is not None:
        alive = sum(i.alive for i in found)
        silent = f", {len(found) - alive} silent (dead after {lease:g} s: their work is taken over)"
        checks.append(Check("instances", True, f"{alive} alive" + (silent if alive < len(found) else "")))
        checks += [Check(f"instance {i.id}", True, f"host {i.host}, pid {i.pid}, " + (
            f"last heartbeat {i.silent:.1f} s ago" if i.alive else f"silent for {i.silent:.0f} s (dead)"))
            for i in found]
    return checks


async def _poller(where: Path | str, bot_id: int, lease: float) -> str | None:
    """On a shared database, the live instance polling bot ``bot_id`` (id, host, pid); else ``None`` (the
    database check says why one cannot be read)."""
    if not isinstance(where, str):
        return None
    from channels.telegram.poller import poller_lease

    try:
        store = await Store.open(where)
    except Exception:
        return None
    try:
        cluster = SharedCluster(store.db, lease, url=where)
        if (holder := await cluster.holder(poller_lease(bot_id))) is None:
            return None
        found = next((i for i in await cluster.instances() if i.id == holder), None)
        return f"{holder} (host {found.host}, pid {found.pid})" if found else holder
    except DB_ERRORS:
        return None
    finally:
        await store.close()


def fix_base(base_url: str) -> str:
    """What to do about a base URL that does not answer as OpenRouter; never "set it to" the value it has."""
    if base_url.rstrip("/") == DEFAULT_BASE_URL:
        return "check the network, and HTTPS_PROXY if this machine needs a proxy"
    return f"check the network, or set models.providers.openrouter.baseUrl to {DEFAULT_BASE_URL} (or your proxy's OpenRouter API URL)"


FIX_KEY = ("store a valid key with `chorus onboard` or `chorus models auth login --provider openrouter` "
           "(keys: https://openrouter.ai/settings/keys)")


async def _base_url(base_url: str, proxy: Proxy | None) -> Check:
    probe = await probe_models(base_url, proxy=proxy)
    if probe.verdict == "unreachable":
        return Check("base URL", False, f"{base_url} is unreachable ({probe.error}): {fix_base(base_url)}")
    if probe.verdict != "ok":
        return Check("base URL", False, f"{base_url}/models answered HTTP {probe.status} without OpenRouter's model list: "
                                        f"this is not an OpenRouter API; {fix_base(base_url)}")
    count = len(probe.data)
    return Check("base URL", True, f"{base_url} lists {count} model{'' if count == 1 else 's'}")


async def _key(base_url: str, key: str, source: str, proxy: Proxy | None) -> Check:
    probe = await probe_key(base_url, key, proxy=proxy)
    if probe.verdict == "refused":
        return Check("key", False, f"OpenRouter refused the key from {source} (HTTP {probe.status}): {FIX_KEY}")
    if probe.status == 404:  # a proxy that speaks the chat API but has no key endpoint: nothing to check against
        return Check("key", True, f"not checked: {base_url} has no /key endpoint (a proxy?); the first chat will tell")
    if probe.verdict != "ok":
        what = f"is unreachable ({probe.error})" if probe.verdict == "unreachable" else f"answered HTTP {probe.status}"
        return Check("key", False, f"could not confirm the key: {base_url}/key {what}; try `chorus doctor` again shortly")
    limit, left = probe.data.get("limit"), probe.data.get("limit_remaining")
    spend = (f"${left:,.2f} of its ${limit:,.2f} limit left" if isinstance(limit, (int, float)) and isinstance(left, (int, float))
             else "no spending limit")
    return Check("key", True, f"accepted by OpenRouter ({spend})")


async def _telegram(config: ChorusConfig, env: Env, where: Path | str) -> list[Check]:
    """The bot token works (getMe), and nothing else takes the updates: a webhook left behind blocks polling,
    another process polling the same token makes Telegram answer 409 Conflict (unless it is the instance of a
    shared database ``where`` that holds the poller lease)."""
    settings = config.channels.telegram
    try:
        token = telegram_token(config, env.lookup)
    except OSError as exc:
        return [Check("telegram", False, f"tokenFile {settings.token_file}: {exc.strerror}")]
    if not token or not settings.enabled:
        return []
    from channels.telegram.api import TelegramAPI, TelegramError  # the channel's own client, its TLS and masking

    proxy = telegram_proxy(settings)
    api = TelegramAPI(token, settings.api_root, timeout=15, proxy=proxy)
    checks: list[Check] = []
    try:
        try:
            me = await api.call("getMe")
        except TelegramError as exc:  # answered (a refused token) means the proxy carried the call
            checks += _proxy("telegram", proxy, Check("getMe", exc.answered, ""))
            raise
        checks.append(Check("telegram", True, f"bot @{me.get('username')} (token accepted)"))
        checks += _proxy("telegram", proxy, checks[-1])
        hook = await api.call("getWebhookInfo") or {}
        if settings.webhook_url:
            same = hook.get("url") == settings.webhook_url
            return [*checks, Check("telegram webhook", True, f"set to {hook['url']}" if same else
                                   "not set yet; `chorus run` sets it to webhookUrl at start")]
        if hook.get("url"):
            return [*checks, Check("telegram updates", False, (
                f"a webhook ({hook['url']}) takes this bot's updates, so polling gets none; `chorus run` "
                "removes it at start, or set channels.telegram.webhookUrl to use webhook mode"))]
        if poller := await _poller(where, me["id"], config.storage.lease_ms / 1000):
            # Probing would end its long poll with 409: the lease tells who polls.
            return [*checks, Check("telegram updates", True, f"polled by instance {poller} (no webhook)")]
        # A short long-poll: another poller's next request ends this one with 409 Conflict. Nothing is
        # confirmed (no offset), so no update is lost to the service.
        await api.call("getUpdates", timeout=2, limit=1, request_timeout=15)
    except TelegramError as exc:
        if exc.conflict:
            return [*checks, Check("telegram updates", False, (
                f"Telegram answered 409 ({exc.description}): another process is polling this bot. If it is "
                "not this machine's `chorus run`, stop it: only one may receive updates"))]
        if exc.code == 0:
            problem = exc.description  # "<root> unreachable: <why>"
        elif not exc.answered:
            problem = f"{api.root} did not answer like the Bot API ({exc.description})"
        elif not any(c.name == "telegram" for c in checks):  # getMe itself was refused
            problem = f"the bot token was refused: {exc.description}; get a new one from @BotFather (/token)"
        else:
            problem = str(exc)
        return [*checks, Check("telegram", False, problem)]
    finally:
        await api.aclose()
    return [*checks, Check("telegram updates", True, "long polling works (no webhook, no other poller)")]
