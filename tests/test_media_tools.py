"""The media tools as the model calls them, run in-process against the fake OpenRouter (no patching)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.auth import Credential
from bot.config import parse_config
from bot.media_jobs import MediaJobs
from bot.media_tools import media_tools
from bot.runtime import make_client
from bot.store import Store
from bot.tools import ToolContext, ToolRegistry
from channels.base import Attachment, AttachmentKind, ChatRef, Inbound
from providers.openrouter.media import data_url
from tests.fakes.media import make_png

CHAT = ChatRef("test", "c1")


@pytest.fixture
async def tools(fake_openrouter, tmp_path):
    """The three media tools wired as the service wires them, against the fake."""
    cfg, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url, "maxRetries": 0}}}},
                          env={})
    store = await Store.open(tmp_path / "chorus.db")
    llm = make_client(cfg, Credential(fake_openrouter.api_key, "test"))

    async def deliver(*args: Any, **kw: Any) -> None:
        return None

    registry = ToolRegistry(media_tools(cfg, llm, MediaJobs(store, llm, deliver)))
    yield registry
    await llm.aclose()
    await store.close()


def images(*sizes: tuple[int, int]) -> list[Attachment]:
    return [Attachment.from_bytes(AttachmentKind.IMAGE, make_png(w, h), mime="image/png") for w, h in sizes]


async def call(registry: ToolRegistry, name: str, attachments: list[Attachment] = (), **args: Any) -> str:
    inbound = Inbound(CHAT, "u1", "Ada", "make it", message_id="m1", attachments=list(attachments))
    return (await registry.call(name, json.dumps(args), ToolContext(CHAT, 1, inbound))).content


async def test_video_resolution_in_the_pages_spelling(tools, fake_openrouter):
    out = await call(tools, "video_generate", prompt="waves", resolution="1080P")
    assert out.startswith("The video job was accepted.")
    (job,) = fake_openrouter.videos.values()
    assert job.body == {"model": "google/veo-3.1-fast", "prompt": "waves", "resolution": "1080p"}
