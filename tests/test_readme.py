"""The README's promises, kept true: every config block it shows loads, every ``chorus`` command it shows
exists as written, and the ones that need no network beyond loopback run and succeed."""

from __future__ import annotations

import re
import shlex

import pytest

from bot.cli import build_parser
from bot.config import load_config
from tests.conftest import ROOT, chorus, onboarded

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", README, re.M | re.S)


def _commands() -> list[list[str]]:
    """Each ``chorus`` command the README shows (in shell blocks or inline), as the argument list after ``chorus``."""
    lines = [line.split("  #", 1)[0] for block in _blocks("sh") for line in block.splitlines()]
    lines += re.findall(r"`((?:\.venv/bin/)?chorus [^`]+)`", README)
    found = []
    for line in lines:
        line = line.rpartition("|")[2].strip()  # what a pipe feeds
        if line.startswith(("chorus ", ".venv/bin/chorus ")):
            found.append(shlex.split(line)[1:])
    return found


def test_the_readme_shows_commands_and_configs_to_check():
    assert len(_commands()) >= 15 and len(_blocks("json5")) >= 6


@pytest.mark.parametrize("block", _blocks("json5"), ids=lambda b: b.split("\n", 1)[0][:40])
def test_every_config_block_loads_without_a_warning(block, tmp_path):
    path = tmp_path / "chorus.json5"
    path.write_text(block, encoding="utf-8")
    assert load_config(path, env={}).warnings == []


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_shown_parses_as_written(argv):
    if "--help" in argv:
        with pytest.raises(SystemExit) as shown:
            build_parser().parse_args(argv)
        assert shown.value.code == 0
    else:
        assert build_parser().parse_args(argv).func is not None  # an unknown command or option exits instead


async def test_the_commands_that_need_no_network_run_as_shown(home, fake_openrouter):
    """Against the fake OpenRouter on loopback, with a key stored by onboarding, as after the first ``make run``."""
    await onboarded(home, fake_openrouter)
    shown = {" ".join(argv) for argv in _commands()}
    for argv, expected in ((["--help"], "usage: chorus"), (["config", "validate"], ""),
                           (["doctor"], "ok   key: accepted by OpenRouter"), (["models", "status"], "openrouter/auto"),
                           (["pairing", "list", "discord"], ""), (["run"], "echo: hello")):
        assert " ".join(argv) in shown, f"chorus {' '.join(argv)} is no longer in the README"
        result = await chorus(home, *argv, stdin="hello\n/quit\n")
        assert result.code == 0 and expected in result.out, (argv, result.out, result.err)
