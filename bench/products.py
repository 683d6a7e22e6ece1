"""The services under test, each told to use the same fake Telegram and fake OpenRouter.

A product knows how to write its home (config, credentials, caches), the command that starts it, how to seed
stored sessions, and its version. Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Protocol

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import peer, pgserver
from .tls_shim import TelegramShim

MODEL = "openai/gpt-4o-mini"
ROOT = Path(__file__).resolve().parent.parent
PUBLIC_TEST_IP = "149.154.167.220"  # hermes ignores loopback here; with fallback IPs disabled it is never dialled


@dataclass(frozen=True)
class Launch:
    """How to start a product: argv, environment and working directory."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


class Product(Protocol):
    name: str

    def version(self) -> str: ...

    def launch(self, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, users: list[int], *, voice: bool) -> Launch:
        """Write the home for this run and say how to start the service."""
        ...

    def seed(self, home: Path, sessions: int) -> None:
        """Store ``sessions`` past conversations (a few messages each) before the service starts."""
        ...


def _python_module(module: str, home: Path) -> list[str]:
    """``python -m module``; with ``BENCH_PROFILE=DIR``, under ``bench/cpu_profile.py``, its profile in
    ``DIR/<product>-<phase>.prof`` (a phase's home is ``<product>/<phase>``)."""
    profile = os.environ.get("BENCH_PROFILE")
    if not profile:
        return [sys.executable, "-m", module]
    out = Path(profile) / f"{home.parent.name}-{home.name}.prof".replace(" ", "-")
    return [sys.executable, "-m", "bench.cpu_profile", str(out), module]


def _base_env(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", CI="true")
    return env


class Chorus:
    """``python -m bot run`` from this checkout, with its state directory in ``home``."""

    name = "Chorus"

    def version(self) -> str:
        try:
            return metadata.version("chorus")
        except metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
            return "checkout"

    def launch(self, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, users: list[int], *, voice: bool) -> Launch:
        home.mkdir(parents=True, exist_ok=True)
        config: dict[str, object] = {
            "models": {"providers": {"openrouter": {"baseUrl": ai.base_url, "apiKey": ai.api_key}}},
            "agents": {"defaults": {"model": {"primary": f"openrouter/{MODEL}"}}},
            "channels": {"telegram": {"botToken": tg.token, "apiRoot": tg.api_root, "dmPolicy": "open"}},
        }
        if voice:
            config["messages"] = {"tts": {"auto": "inbound"}}
            config["tools"] = {"media": {"audio": {"enabled": True}}}
        (home / "chorus.json5").write_text(json.dumps(config, indent=2))
        env = _base_env(home) | {"CHORUS_HOME": str(home), "PYTHONPATH": str(ROOT)}
        if admin_url := os.environ.get("BENCH_CHORUS_POSTGRES"):  # a server's admin URL: each run on a fresh database
            env["CHORUS_DATABASE_URL"] = pgserver.fresh_database_now(admin_url, "bench_" + re.sub(r"\W", "_", home.name))
        return Launch([*_python_module("bot", home), "run"], env, home)

    def seed(self, home: Path, sessions: int) -> None:
        subprocess.run([sys.executable, "-m", "bench.seed", "chorus", str(home / "chorus.db"), str(sessions)],
                       check=True, cwd=ROOT)


class BareBot:
    """``bench/bare_bot.py``: the same Bot API calls and stream as a Chorus turn and nothing else, as a floor."""

    name = "bare bot"

    def version(self) -> str:
        return "-"

    def launch(self, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, users: list[int], *, voice: bool) -> Launch:
        home.mkdir(parents=True, exist_ok=True)
        argv = [*_python_module("bench.bare_bot", home), tg.api_root, tg.token, ai.origin, ai.api_key, MODEL]
        return Launch(argv, _base_env(home) | {"PYTHONPATH": str(ROOT)}, home)

    def seed(self, home: Path, sessions: int) -> None:
        """It stores nothing."""


class Hermes:
    """``hermes gateway run`` from the bench's own venv, set up as issue 12 describes."""

    name = "hermes"

    def version(self) -> str:
        return peer.HERMES.version() or "not installed"

    def launch(self, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, users: list[int], *, voice: bool) -> Launch:
        (home / "cache").mkdir(parents=True, exist_ok=True)
        # Offline it would fetch the model list from the real host on every turn: give it the cache it keeps.
        entry = {"context_length": 128000, "max_completion_tokens": 4096, "name": MODEL,
                 "pricing": {"prompt": "0.000001", "completion": "0.000002"}}
        (home / "cache" / "openrouter_model_metadata.json").write_text(
            json.dumps({MODEL: entry, MODEL.split("/", 1)[1]: entry}))
        (home / "config.yaml").write_text(
            f"model:\n  provider: openrouter\n  default: {MODEL}\n"
            f"telegram:\n  extra:\n    base_url: \"{tg.api_root}/bot\"\n"
            f"auxiliary:\n  title_generation:\n    base_url: {ai.base_url}\n    api_key: {ai.api_key}\n"
            f"    model: {MODEL}\n"
            # Streaming on (drafts in private chats), as Chorus streams by default: same visible behaviour.
            "streaming:\n  mode: auto\n")
        (home / ".env").write_text("\n".join([
            f"TELEGRAM_BOT_TOKEN={tg.token}",
            f"TELEGRAM_ALLOWED_USERS={','.join(map(str, users))}",
            f"TELEGRAM_HOME_CHANNEL={users[0]}",
            f"OPENROUTER_API_KEY={ai.api_key}",
            f"OPENROUTER_BASE_URL={ai.base_url}",
            "HERMES_TELEGRAM_DISABLE_FALLBACK_IPS=1",
            f"TELEGRAM_FALLBACK_IPS={PUBLIC_TEST_IP}",
        ]) + "\n")
        env = _base_env(home) | {"HERMES_HOME": str(home)}
        return Launch([str(peer.HERMES.bin / "hermes"), "gateway", "run"], env, home)

    def seed(self, home: Path, sessions: int) -> None:
        _seed_with(peer.HERMES, "hermes", str(home), home, sessions, {"HERMES_HOME": str(home)})


class Nanobot:
    """``nanobot gateway`` from its own venv, its config in ``$HOME/.nanobot/config.json``.

    Its model provider takes a base URL (``providers.openrouter.apiBase``); its Telegram channel does not (it
    always dials api.telegram.org), so it goes through ``shim``, set by the caller before ``launch``: the
    channel's own ``proxy`` setting, and the shim's certificate as the only CA it trusts.
    """

    name = "nanobot"

    def __init__(self) -> None:
        self.shim: TelegramShim | None = None

    def version(self) -> str:
        return peer.NANOBOT.version() or "not installed"

    def launch(self, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, users: list[int], *, voice: bool) -> Launch:
        assert self.shim is not None, "nanobot reaches the fake Telegram only through the TLS shim"
        (home / ".nanobot").mkdir(parents=True, exist_ok=True)
        config = {
            "agents": {"defaults": {"model": MODEL, "provider": "openrouter", "workspace": str(home / "workspace")}},
            "providers": {"openrouter": {"apiKey": ai.api_key, "apiBase": ai.base_url}},
            # Open to anyone, as Chorus runs with dmPolicy open; streaming is on by default, as in Chorus.
            "channels": {"telegram": {"enabled": True, "token": tg.token, "allowFrom": ["*"],
                                      "proxy": self.shim.proxy_url}},
        }
        (home / ".nanobot" / "config.json").write_text(json.dumps(config, indent=2))
        env = _base_env(home) | {"SSL_CERT_FILE": str(self.shim.cert)}
        return Launch([str(peer.NANOBOT.bin / "nanobot"), "gateway"], env, home)

    def seed(self, home: Path, sessions: int) -> None:
        _seed_with(peer.NANOBOT, "nanobot", str(home / "workspace"), home, sessions, {})


def _seed_with(venv: peer.PeerVenv, kind: str, where: str, home: Path, sessions: int, env: dict[str, str]) -> None:
    """Run ``bench/seed.py`` with a peer's own Python, so the sessions are written by the peer's own code."""
    subprocess.run([str(venv.bin / "python"), str(Path(__file__).with_name("seed.py")), kind, where, str(sessions)],
                   check=True, env=_base_env(home) | env, cwd=home)
