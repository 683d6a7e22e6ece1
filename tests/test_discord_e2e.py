"""Discord end to end: the real ``chorus run`` against the fake Discord (REST + gateway) and the fake OpenRouter.

The bot runs unpatched; the tests play the users through the gateway and read what they would see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.conftest import Home, onboarded
from tests.fakes.discord import FakeDiscord
from tests.fakes.openrouter import FakeOpenRouter, Text
from tests.service import Service, running


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """The fake Discord on 127.0.0.1; a request that breaks Discord's API fails the test."""
    async with FakeDiscord(heartbeat_ms=500) as fake:
        yield fake
        fake.assert_clean()


@asynccontextmanager
async def chorus_on_discord(home: Home, openrouter: FakeOpenRouter, discord: FakeDiscord,
                            **discord_config: Any) -> AsyncIterator[Service]:
    """Onboarded, configured for the fake Discord, running, and connected (READY sent)."""
    await onboarded(home, openrouter)
    home.write_config(openrouter, channels={"discord": discord.config(**discord_config)})
    async with running(home) as service:
        try:
            await discord.wait_for(lambda: discord.ready.is_set() and bool(discord.commands), timeout=30)
        except AssertionError:
            raise AssertionError("the bot never connected:\n" + service.output) from None
        yield service


async def test_dm_text_chat(home, fake_openrouter, fake_discord):
    ann = fake_discord.user("ann")
    dm = fake_discord.dm(ann)
    fake_openrouter.queue(Text("Hello Ann! How can I help?"))
    async with chorus_on_discord(home, fake_openrouter, fake_discord) as service:
        question = await fake_discord.say(dm, ann, "hi there")
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(dm))
        (answer,) = fake_discord.bot_messages(dm)
        assert answer.content == "Hello Ann! How can I help?"
        assert answer.data["message_reference"]["message_id"] == question["id"]
    assert fake_openrouter.chat_requests()[0].json["messages"][-1] == {"role": "user", "content": "hi there"}
    assert fake_discord.calls_to("POST", "/channels/{channel_id}/typing")
    assert fake_discord.token not in service.output
