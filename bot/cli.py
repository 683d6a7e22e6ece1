"""The ``chorus`` command line."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from net import loop
from net.http import Proxy, ProxyURLError
from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.keys import probe_key
from providers.openrouter.refs import ModelRef, ModelRefError
from providers.openrouter.request import ChatSpec
from providers.redact import remember_secrets

from . import doctor
from .auth import Credential, save_key
from .catalog import Catalog, matches_modality
from .config import ChorusConfig, ConfigError, LoadedConfig, config_path, load_config, set_in, update_config
from .db.base import DB_ERRORS
from .redact import redact, setup_logging
from .store import Store
from .lock import AlreadyRunning, StateLock
from .runtime import Env, Runtime, make_client, openrouter_proxy
from .migrate import MigrationError
from .cron.commands import cron_cli
from .pairing_cli import (channel_names, pairing_approve, pairing_approved, pairing_deny, pairing_list,
                          pairing_revoke)

DEFAULT_MODEL = "openrouter/auto"


class UsageError(Exception):
    """A problem the user fixes by running a different command; printed without a traceback."""


class Cli:
    """The state every subcommand shares: parsed arguments, environment, and the config, loaded once."""

    def __init__(self, args: argparse.Namespace, env: Env) -> None:
        self.args = args
        self.env = env
        self.path = config_path(args.config, env.vars)
        self._loaded: LoadedConfig | None = None

    @property
    def database(self) -> Path | str:
        """The SQLite file or PostgreSQL URL of the state (``storage.url``, ``CHORUS_DATABASE_URL``)."""
        return self.env.database(self.loaded.config)

    @property
    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.path, env={**self.env.dotenv, **self.env.vars})
            remember_config_secrets(self._loaded.config, self.env)
            for warning in self._loaded.warnings:
                print(f"warning: {warning}", file=sys.stderr)
        return self._loaded

    def update(self, mutate: Callable[[dict[str, Any]], None]) -> LoadedConfig:
        self._loaded = update_config(self.path, mutate, env={**self.env.dotenv, **self.env.vars})
        remember_config_secrets(self._loaded.config, self.env)
        return self._loaded

    def credential_or_fail(self) -> Credential:
        cred = self.env.credential(self.loaded.config)
        if cred is None:
            raise UsageError(
                "No OpenRouter key is configured. Run `chorus onboard` (or set OPENROUTER_API_KEY, "
                "or models.providers.openrouter.apiKey in the config)."
            )
        return cred


def remember_config_secrets(config: ChorusConfig, env: Env) -> None:
    """Mask this process's key and bot tokens in everything it logs or sends, whatever their shape."""
    cred = env.credential(config)
    slots = (config.models.providers.openrouter.api_key, config.messages.tts.providers.openrouter.api_key,
             config.channels.telegram.bot_token, config.channels.discord.token)
    database = env.database(config)
    remember_secrets(cred.key if cred else None, *(s.get_secret_value() for s in slots if s is not None),
                     urlsplit(database).password if isinstance(database, str) else None)


# ---- onboarding -------------------------------------------------------------------------------


def onboard(cli: Cli, *, then: str = "Next: `make run` (or `chorus run`) to chat in the terminal.") -> int:
    """Store an OpenRouter key in the auth profile and make sure the config names a default model;
    ``then`` says what comes next (``chorus run`` onboarding on the way into the console says so)."""
    given_key = getattr(cli.args, "openrouter_api_key", None)
    choice = getattr(cli.args, "auth_choice", None) or ("openrouter-api-key" if given_key else None)
    if choice is None:
        if not _interactive():
            raise UsageError("onboard needs --auth-choice openrouter-api-key|openrouter-oauth when not run in a terminal")
        choice = _ask_choice()
    if choice == "openrouter-oauth":
        (key, user_id), method = asyncio.run(_oauth(cli)), "oauth"
    else:
        base_url = cli.loaded.config.models.providers.openrouter.base_url
        proxy = openrouter_proxy(cli.loaded.config)
        key, user_id, method = asyncio.run(_ask_key(given_key, base_url, proxy)), None, "api-key"
    remember_secrets(key)
    path = save_key(cli.env.state, key, method=method, user_id=user_id)
    print(f"Saved the OpenRouter key in profile openrouter:default ({path}, mode 0600).")
    loaded = cli.update(_default_model)
    print(f"Config: {loaded.path} (default model {loaded.config.agents.defaults.model.primary}).")
    print(then)
    return 0


def _default_model(raw: dict[str, Any]) -> None:
    primary = raw.get("agents", {}).get("defaults", {}).get("model", {}).get("primary")
    if not primary:
        set_in(raw, "agents.defaults.model.primary", DEFAULT_MODEL)


ASKS = 3  # a terminal user gets this many tries at a question before onboarding gives up
CHOICES = {"": "openrouter-api-key", "k": "openrouter-api-key", "key": "openrouter-api-key",
           "o": "openrouter-oauth", "oauth": "openrouter-oauth", "browser": "openrouter-oauth"}
KEY_SHAPE = re.compile(r"sk-or-[A-Za-z0-9_\-]{16,}")
KEYS_PAGE = "https://openrouter.ai/settings/keys"


def _ask_choice() -> str:
    """Browser sign-in or a pasted key; anything but a listed answer is asked again, never taken as the default."""
    for _ in range(ASKS):
        answer = input("Sign in with OpenRouter in the browser (o) or paste an API key (k)? [k] ").strip().lower()
        if answer in CHOICES:
            return CHOICES[answer]
        print(f"Please answer o (browser) or k (API key), not {answer[:20]!r}.")
    raise UsageError("no valid answer to 'browser or key?'; nothing was changed")


async def _ask_key(given: str | None, base_url: str, proxy: Proxy | None) -> str:
    """A key that has OpenRouter's shape and, when ``base_url`` can be reached, that OpenRouter accepts.

    On a terminal a bad key is asked for again; on a pipe or in CI it is refused with the reason."""
    key = (given or "").strip()
    for _ in range(ASKS):
        if not key:
            if not _interactive():
                raise UsageError("no key given: pass --openrouter-api-key KEY, or run onboarding in a terminal")
            key = (await asyncio.to_thread(getpass.getpass, f"OpenRouter API key (input hidden; from {KEYS_PAGE}): ")).strip()
        problem = "no key entered" if not key else _key_shape_problem(key) or await _key_refused(key, base_url, proxy)
        if problem is None:
            return key
        if not _interactive():
            raise UsageError(f"{problem}; nothing was saved")
        print(f"{problem}. Try again.")
        key = ""
    raise UsageError("no usable key after three tries; nothing was saved")


def _key_shape_problem(key: str) -> str | None:
    if any(c.isspace() for c in key):
        return "that key contains spaces; paste it exactly as OpenRouter shows it"
    if not KEY_SHAPE.fullmatch(key):
        return f"that is not an OpenRouter API key (they look like sk-or-v1-…; copy yours from {KEYS_PAGE})"
    return None


async def _key_refused(key: str, base_url: str, proxy: Proxy | None) -> str | None:
    """Why OpenRouter refuses ``key``, or ``None``; when it cannot be asked, the key is taken with a warning."""
    probe = await probe_key(base_url, key, proxy=proxy)
    if probe.verdict == "refused":
        return f"OpenRouter did not accept that key (HTTP {probe.status}): it is wrong or was revoked ({KEYS_PAGE})"
    if probe.verdict != "ok":
        why = f"{base_url} is unreachable" if probe.verdict == "unreachable" else f"{base_url}/key answered HTTP {probe.status}"
        print(f"warning: could not check the key with OpenRouter ({why}); saving it anyway. "
              "`chorus doctor` checks it once OpenRouter can be reached.", file=sys.stderr)
    return None


async def _oauth(cli: Cli) -> tuple[str, str | None]:
    import webbrowser

    from providers.openrouter import oauth

    async def read_line(prompt: str) -> str:
        return await asyncio.to_thread(input, prompt)

    result = await oauth.login(
        base_url=cli.loaded.config.models.providers.openrouter.base_url,
        proxy=openrouter_proxy(cli.loaded.config),
        open_browser=webbrowser.open,
        read_line=read_line,
        say=print,
        headless=getattr(cli.args, "headless", False) or oauth.is_headless(),
    )
    return result.key, result.user_id


def auth_login(cli: Cli) -> int:
    """``models auth login``: replace the stored key without re-running onboarding."""
    cli.args.auth_choice = "openrouter-oauth" if cli.args.method == "oauth" else "openrouter-api-key"
    return onboard(cli)


# ---- models -----------------------------------------------------------------------------------


@asynccontextmanager
async def catalog_of(cli: Cli, llm: OpenRouterClient) -> AsyncIterator[Catalog]:
    """The model catalog with its day's cache in the state's database, shared with the running service (without
    the cache, said on stderr, when the database cannot be opened: the catalog is OpenRouter's, not ours)."""
    store = None
    try:
        store = await Store.open(cli.database)
    except (*DB_ERRORS, MigrationError) as exc:
        print(f"warning: the model catalog's cache is not available ({exc})", file=sys.stderr)
    try:
        yield Catalog(llm, store.db if store is not None else None)
    finally:
        if store is not None:
            await store.close()


async def models_set(cli: Cli) -> int:
    ref = ModelRef.parse(cli.args.ref)
    loaded = cli.update(lambda raw: set_in(raw, "agents.defaults.model.primary", str(ref)))
    print(f"Default model set to {loaded.config.agents.defaults.model.primary} in {loaded.path}.")
    async with make_client(loaded.config, cli.env.credential(loaded.config)) as llm, catalog_of(cli, llm) as catalog:
        try:
            known = ref.slug in await catalog.models()
        except OpenRouterError as exc:
            print(f"warning: could not check the model catalog ({exc})", file=sys.stderr)
            return 0
    if not known:
        print(f"warning: {ref.slug} is not in OpenRouter's model catalog; check the spelling with `chorus models list`",
              file=sys.stderr)
    return 0


async def models_list(cli: Cli) -> int:
    """The catalog, optionally only the models that produce one modality."""
    config = cli.loaded.config
    async with make_client(config, cli.env.credential(config)) as llm, catalog_of(cli, llm) as catalog:
        models = await catalog.models_or_bundled(refresh=cli.args.refresh)
    shown = [m for m in sorted(models.values(), key=lambda m: m.id) if matches_modality(m, cli.args.modality)]
    for m in shown:
        context = f"{m.context_length:>9,}" if m.context_length else "        -"
        print(f"{ModelRef.from_slug(m.id)!s:<55} {context}  {','.join(m.output_modalities)}")
    print(f"{len(shown)} models" + (f" with {cli.args.modality} output" if cli.args.modality else "")
          + f", from {catalog.source}", file=sys.stderr)
    return 0


def models_status(cli: Cli) -> int:
    config = cli.loaded.config
    cred = cli.env.credential(config)
    print(f"Config:        {cli.path}{'' if cli.path.exists() else ' (not created yet; defaults in use)'}")
    print(f"Default model: {config.agents.defaults.model.primary}")
    print(f"Credential:    {cred.source if cred else 'none — run `chorus onboard`'}")
    print(f"Base URL:      {config.models.providers.openrouter.base_url}")
    return 0


async def infer_run(cli: Cli) -> int:
    """One model call, printed as text or as one JSON object."""
    config = cli.loaded.config
    ref = ModelRef.parse(cli.args.model or config.agents.defaults.model.primary)
    async with make_client(config, cli.credential_or_fail()) as llm:
        async with catalog_of(cli, llm) as catalog:
            info = await catalog.lookup(ref)  # reasoning only where the model takes it
        started = time.monotonic()
        result = await llm.chat(ChatSpec(ref=ref, messages=[{"role": "user", "content": cli.args.prompt}],
                                         thinking=config.agents.defaults.thinking_default,
                                         supports_reasoning=info.supports_reasoning if info else None))
    if cli.args.json:
        print(json.dumps({
            "model": result.model, "ref": str(ref), "text": result.text,
            "usage": {"prompt_tokens": result.usage.prompt_tokens, "completion_tokens": result.usage.completion_tokens,
                      "total_tokens": result.usage.total_tokens, "cost": result.usage.cost},
            "finish_reason": result.finish_reason, "latency_ms": round((time.monotonic() - started) * 1000),
        }, ensure_ascii=False))
    else:
        print(result.text)
    return 0


# ---- config, doctor, run ----------------------------------------------------------------------


def config_validate(cli: Cli) -> int:
    loaded = cli.loaded
    where = loaded.path if loaded.path.exists() else f"{loaded.path} (missing: all defaults)"
    print(f"Config is valid: {where}")
    return 0


async def run_doctor(cli: Cli) -> int:
    checks = await doctor.run_checks(cli.path, cli.env)
    for check in checks:
        print(f"{'ok ' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


async def run_service(cli: Cli) -> int:
    """Start the service: the configured channels, or the console."""
    loaded = cli.loaded
    cred = cli.env.credential(loaded.config)
    if cred is None and _interactive():
        print("No OpenRouter key yet: let's set one up.")
        await asyncio.to_thread(partial(onboard, cli, then="Starting Chorus now."))
        loaded, cred = cli.loaded, cli.env.credential(cli.loaded.config)
    if cred is None:
        cli.credential_or_fail()
    # SQLite is one instance's: the lock is taken before the database, so recovery never takes another run's
    # messages. On PostgreSQL several instances share the database, each its own state directory or not.
    lock = None if isinstance(cli.database, str) else StateLock.acquire(cli.env.state)
    try:
        runtime = await Runtime.open(loaded, cli.env, cred)
        try:
            refusals = await runtime.serve(runtime.channels(console=getattr(cli.args, "console", False), env=cli.env),
                                           watch=runtime.watch_config(loaded, cli.env))
        finally:
            await runtime.close()
    finally:
        if lock is not None:
            lock.release()
    return 1 if refusals else 0  # a supervisor must not take a refused token for a clean stop


# ---- plumbing ---------------------------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")


def _global_options(parser: argparse.ArgumentParser, kind: type) -> None:
    """``--config`` and ``-v``: on the top parser with defaults, on every subcommand without (so that
    ``chorus run --config X -v`` means what ``chorus --config X -v run`` does; ``-v`` counts on both)."""
    top = kind is argparse.ArgumentParser
    parser.add_argument("--config", default=None if top else argparse.SUPPRESS,
                        help="config file (default: $CHORUS_CONFIG or ~/.chorus/chorus.json5)")
    parser.add_argument("-v", "--verbose", action="count", dest="verbose" if top else "verbose_after",
                        default=0 if top else argparse.SUPPRESS,
                        help="-v: Chorus's debug lines; -vv: the libraries' too")


class _Subcommand(argparse.ArgumentParser):
    """A subcommand's parser: it takes the global options too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _global_options(self, _Subcommand)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chorus", description="Chorus: chat with OpenRouter models in Telegram, Discord and the terminal.")
    _global_options(p, argparse.ArgumentParser)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Subcommand)

    o = sub.add_parser("onboard", help="store an OpenRouter key and write a starter config")
    o.add_argument("--auth-choice", choices=["openrouter-api-key", "openrouter-oauth"])
    o.add_argument("--openrouter-api-key", metavar="KEY", help="the key, for scripts (else asked for)")
    o.add_argument("--headless", action="store_true", help="OAuth: print the URL and paste the redirect back")
    o.set_defaults(func=onboard)

    m = sub.add_parser("models", help="default model and credentials").add_subparsers(dest="models_cmd", required=True, parser_class=_Subcommand)
    ms = m.add_parser("set", help="set agents.defaults.model.primary")
    ms.add_argument("ref", help="openrouter/<provider>/<model>")
    ms.set_defaults(func=models_set)
    m.add_parser("status", help="default model, credential source, base URL").set_defaults(func=models_status)
    ml = m.add_parser("list", help="OpenRouter's model catalog (cached for a day)")
    ml.add_argument("--modality", choices=["text", "image", "audio", "video", "speech", "transcription"])
    ml.add_argument("--refresh", action="store_true", help="fetch the catalog again now")
    ml.set_defaults(func=models_list)
    auth = m.add_parser("auth", help="credentials").add_subparsers(dest="auth_cmd", required=True, parser_class=_Subcommand)
    login = auth.add_parser("login", help="replace the stored key")
    login.add_argument("--provider", choices=["openrouter"], default="openrouter")
    login.add_argument("--method", choices=["oauth", "api-key"], default="api-key")
    login.add_argument("--openrouter-api-key", metavar="KEY")
    login.add_argument("--headless", action="store_true")
    login.set_defaults(func=auth_login, auth_choice=None)

    i = sub.add_parser("infer", help="one-off model calls").add_subparsers(dest="infer_cmd", required=True, parser_class=_Subcommand)
    im = i.add_parser("model", help="model calls").add_subparsers(dest="infer_model_cmd", required=True, parser_class=_Subcommand)
    run = im.add_parser("run", help="one chat completion")
    run.add_argument("--local", action="store_true", help="call OpenRouter from this process (the only mode)")
    run.add_argument("--model", help="model ref (default: the configured default)")
    run.add_argument("--prompt", required=True)
    run.add_argument("--json", action="store_true", help="print one JSON object")
    run.set_defaults(func=infer_run)

    c = sub.add_parser("config", help="the config file").add_subparsers(dest="config_cmd", required=True, parser_class=_Subcommand)
    c.add_parser("validate", help="check the config and exit").set_defaults(func=config_validate)
    sub.add_parser("doctor", help="check config, credential, state dir, database, base URL").set_defaults(func=run_doctor)
    r = sub.add_parser("run", help="start the service")
    r.add_argument("--console", action="store_true", help="also chat in the terminal when Telegram is configured")
    r.set_defaults(func=run_service)

    pr = sub.add_parser("pairing", help="who may chat in direct messages").add_subparsers(dest="pairing_cmd", required=True, parser_class=_Subcommand)
    pl = pr.add_parser("list", help="a channel's pending pairing codes (--approved: who was let in)")
    pl.add_argument("channel", choices=channel_names())
    pl.add_argument("--approved", action="store_true", help="the approved senders instead")
    pl.set_defaults(func=lambda cli: (pairing_approved if cli.args.approved else pairing_list)(
        cli.database, cli.args.channel))
    pa = pr.add_parser("approve", help="let the sender who was given CODE chat")
    pa.add_argument("channel", choices=channel_names())
    pa.add_argument("code")
    pa.set_defaults(func=lambda cli: pairing_approve(cli.database, cli.args.channel, cli.args.code))
    pd = pr.add_parser("deny", help="refuse the sender who was given CODE")
    pd.add_argument("channel", choices=channel_names())
    pd.add_argument("code")
    pd.set_defaults(func=lambda cli: pairing_deny(cli.database, cli.args.channel, cli.args.code))
    pv = pr.add_parser("revoke", help="take back the approval of a sender")
    pv.add_argument("channel", choices=channel_names())
    pv.add_argument("sender_id")
    pv.set_defaults(func=lambda cli: pairing_revoke(cli.database, cli.args.channel, cli.args.sender_id))
    cr = sub.add_parser("cron", help="scheduled jobs (reminders) made in chats").add_subparsers(dest="cron_cmd", required=True)
    cl = cr.add_parser("list", help="jobs with their next run")
    cl.add_argument("--all", action="store_true", help="also jobs with no next run, and each last run's outcome")
    cl.set_defaults(func=lambda cli: cron_cli(cli.database, cli.loaded.config, "list", show_all=cli.args.all))
    for verb, what in (("rm", "remove job ID"), ("run", "fire job ID now (in the running service)")):
        cv = cr.add_parser(verb, help=what)
        cv.add_argument("id", type=int)
        cv.set_defaults(func=lambda cli: cron_cli(cli.database, cli.loaded.config, cli.args.cron_cmd, cli.args.id))
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``chorus`` and ``python -m bot``."""
    args = build_parser().parse_args(argv)
    env = Env.load()
    setup_logging(args.verbose + getattr(args, "verbose_after", 0))
    cli = Cli(args, env)
    try:
        outcome = args.func(cli)
        return loop.run(outcome) if asyncio.iscoroutine(outcome) else int(outcome)
    except ConfigError as exc:
        print(f"Config error in {cli.path}:\n{exc}", file=sys.stderr)
    except (UsageError, ModelRefError, MigrationError, AlreadyRunning, ProxyURLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except OpenRouterError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # last resort: a sentence, not a traceback with secrets in locals
        logging.getLogger("chorus").debug("unexpected failure", exc_info=True)
        print(f"error: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
    return 2
