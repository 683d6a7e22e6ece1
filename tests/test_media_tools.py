"""The media tools as the model calls them, run in-process against the fake OpenRouter (no patching)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.auth import Credential
from bot.config import parse_config
from bot.media.jobs import MediaJobs
from bot.media.tools import media_tools
from bot.runtime import make_client
from bot.store import Store
from bot.tools import ToolContext, ToolRegistry
from channels.base import Attachment, AttachmentKind, ChatRef, Inbound
from providers.openrouter.media import data_url
from tests.fakes.media import make_png
from tests.fakes.openrouter import Hang

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


def urls(*attachments: Attachment) -> list[str]:
    return [data_url(a._data or b"", "image/png") for a in attachments]


async def test_music_takes_a_reference_image_and_offers_the_lyria_clip_model(tools, fake_openrouter):
    (music_tool,) = [d for d in tools.definitions() if d["function"]["name"] == "music_generate"]
    assert music_tool["function"]["parameters"]["properties"]["model"]["enum"] == [
        "openrouter/google/lyria-3-pro-preview", "openrouter/google/lyria-3-clip-preview"]
    photo = images((40, 30))
    out = await call(tools, "music_generate", photo, prompt="a calm loop", image="attached",
                     model="openrouter/google/lyria-3-clip-preview")
    assert out == "The track is attached to your reply with its lyrics."
    await call(tools, "music_generate", prompt="a calm loop", image="https://example.com/sea.png")
    clip, pro = (r.json for r in fake_openrouter.chat_requests())
    assert clip["model"] == "google/lyria-3-clip-preview" and pro["model"] == "google/lyria-3-pro-preview"
    assert clip["messages"][0]["content"][1:] == [{"type": "image_url", "image_url": {"url": urls(*photo)[0]}}]
    assert pro["messages"][0]["content"][1:] == [{"type": "image_url", "image_url": {"url": "https://example.com/sea.png"}}]
    refused = await call(tools, "music_generate", prompt="x", image="/etc/passwd")
    assert refused == "error: an image must be an https URL or 'attached', not '/etc/passwd'"


def frames(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}, "frame_type": kind} for url, kind in pairs]


def references(*found: str) -> list[dict[str, Any]]:
    return [{"type": "image_url", "image_url": {"url": url}} for url in found]


async def test_video_takes_several_images_with_the_pages_roles(tools, fake_openrouter):
    photos = images((40, 30), (30, 40), (20, 20))
    a, b, c = urls(*photos)
    assert (await call(tools, "video_generate", photos, prompt="morph")).startswith("The video job was accepted.")
    await call(tools, "video_generate", photos[:2], prompt="in this style", imageRoles=["reference_image", "reference_image"])
    await call(tools, "video_generate", photos[:1], prompt="like this", imageRole="reference_image")
    await call(tools, "video_generate", photos, prompt="end here", imageRoles=["last_frame", "", "first_frame"])
    bodies = [job.body for job in fake_openrouter.videos.values()]
    assert [(body.get("frame_images"), body.get("input_references")) for body in bodies] == [
        (frames((a, "first_frame"), (b, "last_frame")), references(c)),
        (None, references(a, b)),
        (None, references(a)),
        (frames((a, "last_frame"), (c, "first_frame")), references(b)),  # the unnamed one: no frame left, a reference
    ]
    twice = await call(tools, "video_generate", photos[:2], prompt="x", imageRoles=["first_frame", "first_frame"])
    assert twice == "error: a video has one first_frame; 2 images were given that role"
    assert len(fake_openrouter.videos) == 4


async def test_an_image_that_takes_longer_than_timeout_ms_says_which_setting_to_raise(fake_openrouter, tmp_path):
    """The request's own timeout is what runs out for an image: the model is told to raise timeoutMs, not just
    that the request took too long."""
    image_model = {"primary": "openrouter/google/gemini-3.1-flash-image-preview", "timeoutMs": 1000}
    cfg, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url, "maxRetries": 0}}},
                           "agents": {"defaults": {"imageGenerationModel": image_model}}}, env={})
    store = await Store.open(tmp_path / "chorus.db")
    llm = make_client(cfg, Credential(fake_openrouter.api_key, "test"))
    try:
        fake_openrouter.queue(Hang(30))
        out = await call(ToolRegistry(media_tools(cfg, llm, MediaJobs(store, llm, None))), "image_generate", prompt="a cat")
        assert out == "error: the image was not ready within 1 s; try again, perhaps with a larger timeoutMs"
    finally:
        await llm.aclose()
        await store.close()
