"""The config file as OpenClaw users write it: provider-page snippets load as pasted, stale spellings are mapped."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from bot.config import ConfigError, config_path, load_config, load_dotenv, parse_config, set_in, state_dir, update_config
from bot.json5_text import strip_digit_separators
from tests.conftest import ROOT, chorus, onboarded
from tests.fakes.openrouter import Text


def test_digit_separators_in_numbers_load_and_nothing_else_changes(tmp_path):
    path = tmp_path / "chorus.json5"
    path.write_text("""{
      // timeoutMs: 1_000 in a comment stays a comment
      env: { LIMIT_1_2: "1_000", other: '2_000' },
      agents: { defaults: {
        contextTokens: 200_000, /* 3_000 */
        imageGenerationModel: { primary: "openrouter/google/gemini-3.1-flash-image-preview", timeoutMs: 180_000 },
        models: { "openrouter/x/y": { params: { extraBody: { max_tokens: 1_024, top_p: 0.9_5, seed: 0xFF_FF } } } },
      } },
    }""")
    config = load_config(path, env={}).config
    defaults = config.agents.defaults
    assert defaults.context_tokens == 200000 and defaults.image_generation_model.timeout_ms == 180000
    assert defaults.models["openrouter/x/y"].params["extraBody"] == {"max_tokens": 1024, "top_p": 0.95, "seed": 65535}
    assert config.env == {"LIMIT_1_2": "1_000", "other": "2_000"}  # strings and keys are never touched
    assert strip_digit_separators('{v1_2: "a\\"1_0", b: 1_0}') == '{v1_2: "a\\"1_0", b: 10}'  # an escaped quote


def test_a_stale_thinking_max_is_xhigh_with_a_note(tmp_path):
    path = tmp_path / "chorus.json5"
    path.write_text('{ agents: { defaults: { thinkingDefault: "max" } } }')
    loaded = load_config(path, env={})
    assert loaded.config.agents.defaults.thinking_default == "xhigh"
    assert loaded.warnings == ["agents.defaults.thinkingDefault: 'max' is now called 'xhigh'; using 'xhigh'"]


async def test_infer_honours_thinking_default(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    home.write_config(fake_openrouter, agents={"defaults": {"thinkingDefault": "max"}})
    fake_openrouter.queue(Text("ok"), Text("ok"))
    result = await chorus(home, "infer", "model", "run", "--local", "--model", "openrouter/anthropic/claude-sonnet-4.6",
                          "--prompt", "hi", "--json")
    assert result.code == 0, result.err
    assert result.err == "warning: agents.defaults.thinkingDefault: 'max' is now called 'xhigh'; using 'xhigh'\n"
    assert fake_openrouter.chat_requests()[0].json["reasoning"] == {"effort": "xhigh"}
    plain = await chorus(home, "infer", "model", "run", "--local", "--model", "openrouter/openai/gpt-4o-mini",
                         "--prompt", "hi", "--json")
    assert json.loads(plain.out)["text"] == "ok"
    assert "reasoning" not in fake_openrouter.chat_requests()[1].json  # the catalog says it does not reason


def test_the_documented_provider_page_snippet_loads_as_pasted(tmp_path):
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    after = reference.split("<!-- provider-page snippet:", 1)[1]
    snippet = after.split("```json5\n", 1)[1].split("```", 1)[0]
    assert "timeoutMs: 180_000" in snippet  # the page's own spelling, kept in the docs
    path = tmp_path / "chorus.json5"
    path.write_text(snippet)
    loaded = load_config(path, env={})
    defaults = loaded.config.agents.defaults
    assert loaded.warnings == []
    assert (defaults.model.primary, defaults.image_generation_model.timeout_ms, defaults.music_generation_model.timeout_ms,
            defaults.video_generation_model.primary) == ("openrouter/auto", 180000, 180000, "openrouter/google/veo-3.1-fast")
    assert loaded.config.env == {"OPENROUTER_API_KEY": "sk-or-..."}


def test_a_config_rewritten_by_chorus_and_its_backup_are_readable_by_the_owner_only(tmp_path):
    """The file holds keys and tokens: a rewrite must not leave it (or the copy of the old one) world-readable."""
    path = tmp_path / "chorus.json5"
    path.write_text('{ models: { providers: { openrouter: { apiKey: "sk-or-v1-secret" } } } }')
    path.chmod(0o644)
    update_config(path, lambda raw: set_in(raw, "agents.defaults.model.primary", "openrouter/openai/gpt-4o-mini"), env={})
    assert load_config(path, env={}).config.agents.defaults.model.primary == "openrouter/openai/gpt-4o-mini"
    backup = tmp_path / "chorus.json5.bak"
    assert (stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(backup.stat().st_mode)) == (0o600, 0o600)


def test_where_the_state_and_the_config_are():
    assert state_dir({"HOME": "/home/ann"}) == Path("/home/ann/.chorus")
    assert state_dir({"HOME": "/home/ann", "CHORUS_HOME": "/srv/chorus"}) == Path("/srv/chorus")
    env = {"HOME": "/home/ann", "CHORUS_CONFIG": "/etc/chorus.json5"}
    assert config_path("./mine.json5", env) == Path("./mine.json5")  # --config wins over CHORUS_CONFIG
    assert config_path(None, env) == Path("/etc/chorus.json5")
    assert config_path(None, {"HOME": "/home/ann"}) == Path("/home/ann/.chorus/chorus.json5")


def test_variables_resolve_from_the_environment_then_the_configs_env_block():
    raw = {"env": {"TEAM": "blue"}, "agents": {"defaults": {"systemPrompt": "${GREETING}, team ${TEAM}; $${LITERAL}"}}}
    config, _ = parse_config(raw, env={"GREETING": "Hello"})
    assert config.agents.defaults.system_prompt == "Hello, team blue; ${LITERAL}"
    with pytest.raises(ConfigError) as missing:
        parse_config({"agents": {"defaults": {"systemPrompt": "${NOWHERE}"}}}, env={})
    assert str(missing.value) == ("agents.defaults.systemPrompt: refers to ${NOWHERE}, which is not set in the "
                                  "environment or the config's env block")


def test_dotenv_lines_as_shells_write_them(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# a comment\nexport OPENROUTER_API_KEY=sk-or-v1-abc\nQUOTED=\"two words\"\nSINGLE='x # y'\n"
                    "TRAILING=value # why\nEMPTY=\nnot a line\n")
    assert load_dotenv(path) == {"OPENROUTER_API_KEY": "sk-or-v1-abc", "QUOTED": "two words", "SINGLE": "x # y",
                                 "TRAILING": "value", "EMPTY": ""}


def test_a_base_url_loses_its_trailing_slash_and_discord_edits_are_at_most_four_a_second():
    config, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": "http://proxy.local/api/v1/"}}}}, env={})
    assert config.models.providers.openrouter.base_url == "http://proxy.local/api/v1"
    with pytest.raises(ConfigError) as fast:
        parse_config({"channels": {"discord": {"streaming": {"throttleMs": 249}}}}, env={})
    assert str(fast.value).startswith("channels.discord.streaming.throttleMs: found 249 (integer); ")


def test_a_secret_of_the_wrong_type_is_not_shown_in_the_error():
    with pytest.raises(ConfigError) as wrong:
        parse_config({"channels": {"discord": {"token": 987654321012345678}}}, env={})
    assert str(wrong.value).startswith("channels.discord.token: found a value (hidden: it is a secret); ")
    assert "987654321012345678" not in str(wrong.value)


def test_nan_or_infinity_where_a_request_would_carry_it_is_refused_by_name(tmp_path):
    path = tmp_path / "chorus.json5"
    path.write_text('{ agents: { defaults: { models: { "openrouter/x/y": { params: { extraBody: {'
                    ' temperature: NaN, stop: [1, -Infinity], top_p: 0.5 } } } } } } }')
    with pytest.raises(ConfigError) as bad:
        load_config(path, env={})
    where = "agents.defaults.models.openrouter/x/y.params.extraBody"
    assert str(bad.value).splitlines()[-2:] == [
        f"{where}.temperature: found nan; allowed: a finite number (JSON has no NaN or Infinity)",
        f"{where}.stop.1: found -inf; allowed: a finite number (JSON has no NaN or Infinity)",
    ]
