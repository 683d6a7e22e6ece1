"""The config file as OpenClaw users write it: provider-page snippets load as pasted, stale spellings are mapped."""

from __future__ import annotations

import json

from bot.config import load_config
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


def test_the_readme_provider_page_snippet_loads_as_pasted(tmp_path):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    after = readme.split("<!-- provider-page snippet:", 1)[1]
    snippet = after.split("```json5\n", 1)[1].split("```", 1)[0]
    assert "timeoutMs: 180_000" in snippet  # the page's own spelling, kept in the README
    path = tmp_path / "chorus.json5"
    path.write_text(snippet)
    loaded = load_config(path, env={})
    defaults = loaded.config.agents.defaults
    assert loaded.warnings == []
    assert (defaults.model.primary, defaults.image_generation_model.timeout_ms, defaults.music_generation_model.timeout_ms,
            defaults.video_generation_model.primary) == ("openrouter/auto", 180000, 180000, "openrouter/google/veo-3.1-fast")
    assert loaded.config.env == {"OPENROUTER_API_KEY": "sk-or-..."}
