"""The service's own process-wide settings, checked in-process."""

from __future__ import annotations

import gc
import io
import weakref
from dataclasses import replace
from pathlib import Path

import pytest

from bot.auth import Credential
from bot.config import LoadedConfig, parse_config
from bot.channel_settings import telegram_token
from bot.runtime import Env, Runtime, collect_if_quiet


async def test_serving_freezes_what_start_up_built(tmp_path, fake_openrouter):
    """A full garbage collection scanned every module, schema and type built at start-up (~220,000 objects in
    ``chorus run``: 60-200 ms with the loop stopped, the p99 of a turn). Serving freezes them first."""
    env = Env({"CHORUS_HOME": str(tmp_path)})
    config, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url}}}}, env={})
    runtime = await Runtime.open(LoadedConfig(config, tmp_path / "chorus.json5", {}, []), env,
                                 Credential(fake_openrouter.api_key, "test"))
    gc.unfreeze()
    try:
        await runtime.serve(runtime.channels(io.StringIO("/quit\n"), io.StringIO(), env=env))
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # the rest of the test process collects as usual
        await runtime.close()


class _Cycle:
    """An object in a reference cycle, holding a buffer as an error's traceback might hold a download."""

    def __init__(self) -> None:
        self.me = self
        self.data = bytearray(1_000_000)


def test_a_quiet_service_collects_its_cycles_and_a_busy_one_is_left_to_its_collector():
    gc.collect()
    gc.disable()  # no automatic collection in between: the counts below move only when told to
    try:
        quiet = weakref.ref(_Cycle())
        seen = collect_if_quiet(gc.get_stats()[0]["collections"])  # none ran since: collected now
        assert quiet() is None
        busy = weakref.ref(_Cycle())
        assert collect_if_quiet(seen - 1) == seen  # one ran since (as under load): no pause added here
        assert busy() is not None
    finally:
        gc.enable()
    gc.collect()
    assert busy() is None


def test_the_telegram_token_is_read_without_the_whitespace_around_it(tmp_path: Path):
    """A token pasted with a space, or a secret file ending in a newline (as ``echo`` writes it), still works."""
    pasted, _ = parse_config({"channels": {"telegram": {"botToken": " 123:abc \n"}}}, env={})
    assert telegram_token(pasted, Env({}, {}).lookup) == "123:abc"
    secret = tmp_path / "telegram.token"
    secret.write_text("456:def\n", encoding="utf-8")
    mounted, _ = parse_config({"channels": {"telegram": {"tokenFile": str(secret)}}}, env={})
    assert telegram_token(mounted, Env({}, {}).lookup) == "456:def"
    neither, _ = parse_config({"env": {"TELEGRAM_BOT_TOKEN": "789:config"}}, env={})
    assert telegram_token(neither, Env({}, {"TELEGRAM_BOT_TOKEN": "789:dotenv"}).lookup) == "789:config"
    assert telegram_token(neither, Env({"TELEGRAM_BOT_TOKEN": " 789:env "}, {}).lookup) == "789:env"  # the environment first


def test_the_projects_env_file_wins_over_the_state_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state, project = tmp_path / "state", tmp_path / "project"
    state.mkdir()
    project.mkdir()
    (state / ".env").write_text("TELEGRAM_BOT_TOKEN=1:state\nDISCORD_BOT_TOKEN=d-state\n")
    (project / ".env").write_text("TELEGRAM_BOT_TOKEN=1:project\n")
    monkeypatch.setenv("CHORUS_HOME", str(state))
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    monkeypatch.delenv("DISCORD_BOT_TOKEN", raising=False)
    monkeypatch.chdir(project)
    assert Env.load().dotenv == {"TELEGRAM_BOT_TOKEN": "1:project", "DISCORD_BOT_TOKEN": "d-state"}


async def test_a_telegram_section_that_is_turned_off_starts_no_telegram_channel(tmp_path, fake_openrouter):
    """``enabled: false`` keeps a token on file without the bot answering: the console is what runs."""
    env = Env({"CHORUS_HOME": str(tmp_path), "TELEGRAM_BOT_TOKEN": "123:abc"})
    raw = {"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url}}},
           "channels": {"telegram": {"enabled": False}}}
    config, _ = parse_config(raw, env={})
    runtime = await Runtime.open(LoadedConfig(config, tmp_path / "chorus.json5", {}, []), env,
                                 Credential(fake_openrouter.api_key, "test"))
    try:
        assert [ch.name for ch in runtime.channels(io.StringIO(), io.StringIO(), env=env)] == ["console"]
        turned_on, _ = parse_config({**raw, "channels": {"telegram": {"enabled": True}}}, env={})
        assert [ch.name for ch in replace(runtime, config=turned_on).channels(env=env)] == ["telegram"]
    finally:
        await runtime.close()
