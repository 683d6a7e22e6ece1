"""Images users send, end to end: the real ``chorus run`` console (``/image PATH``) and the fake OpenRouter.

What reached the model is decoded; what the database and the media directory hold is read back.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
import time

from PIL import Image

from bot.store import Store, StoredMessage
from channels.base import ChatRef
from providers.openrouter.media import data_url
from tests.conftest import Home, chorus, chorus_peak_rss
from tests.fakes.media import make_noise_bmp, make_photo, make_png, make_png_header
from tests.fakes.openrouter import FakeOpenRouter, Images, Text, ToolCalls

CONSOLE = ChatRef("console", "local")


def setup(home: Home, fake: FakeOpenRouter, **config) -> None:
    """A config with the fake's key in it (no onboarding run: one process less per test)."""
    home.write_config(fake, models={"providers": {"openrouter": {"apiKey": fake.api_key}}}, **config)


def rows(home: Home) -> list[str]:
    """The content column of every stored message, as SQLite holds it."""
    with sqlite3.connect(home.path / "chorus.db") as db:
        return [r[0] or "" for r in db.execute("SELECT content FROM messages ORDER BY id")]


def decoded_size(url: str) -> tuple[str, tuple[int, int]]:
    """(format, size) of the image in a data URL, as Pillow decodes it."""
    assert url.startswith("data:image/"), url[:40]
    with Image.open(io.BytesIO(base64.b64decode(url.partition(",")[2]))) as image:
        image.load()
        return image.format, image.size


def user_parts(request) -> list:
    return request.json["messages"][-1]["content"]


async def test_too_large_or_not_an_image_is_refused_before_anything_is_stored_or_sent(home, fake_openrouter, tmp_path):
    setup(home, fake_openrouter)  # the default cap: 20 MB
    huge, notes, bomb, cut = (tmp_path / name for name in ("huge.png", "notes.png", "bomb.png", "cut.jpg"))
    with huge.open("wb") as f:
        f.truncate(200_000_000)  # sparse: 200 MB of size that take no disk
    notes.write_text("milk, eggs, bread\n")
    bomb.write_bytes(make_png_header(20_000, 20_000))
    photo = make_photo(600, 400)
    cut.write_bytes(photo[: len(photo) // 2])  # an upload that broke off halfway
    stdin = "".join(f"/image {path}\n" for path in (huge, notes, bomb, cut))
    result, peak_mb = await chorus_peak_rss(home, "run", stdin=stdin)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "That image is 200 MB; the limit is 20 MB.",
        "notes.png is not an image I can read; please send a photo, or a PNG, JPEG, WebP or GIF file.",
        "That image is 20000×20000 pixels; the limit is 40 megapixels.",
        "That image could not be decoded: it looks corrupt or truncated.",
    ]
    print(f"peak RSS, refusals: {peak_mb:.0f} MB")
    assert peak_mb < 180, f"{peak_mb:.0f} MB: the 200 MB file was read (or the bomb decoded) before it was refused"
    assert fake_openrouter.chat_requests() == []
    assert rows(home) == []
    assert not (home.path / "media" / "in").exists()


async def test_a_large_photo_reaches_the_model_fitted_and_is_kept_as_one_file(home, fake_openrouter, tmp_path):
    setup(home, fake_openrouter)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_photo(4000, 3000))
    fake_openrouter.queue(ToolCalls([("image_generate", {"prompt": "this photo, as a watercolour"})]), Images(),
                          Text("Here is the watercolour."), Text("A gradient."), Text("The same photo."))
    result = await chorus(home, "run", stdin=f"/image {photo}\nwhat was in the photo?\n/image {photo}\n")
    assert result.code == 0, result.err
    assert "Here is the watercolour." in result.out and "A gradient." in result.out and "The same photo." in result.out
    first, edit, _, second, third = fake_openrouter.chat_requests()

    text, image = user_parts(first)
    assert text == {"type": "text", "text": "(image)"}
    assert decoded_size(image["image_url"]["url"]) == ("JPEG", (2048, 1536))
    assert edit.json["messages"][0]["content"][1] == image  # the image tool got the fitted photo as its reference
    assert image in second.json["messages"][1]["content"]  # the next turn still carries it, from history
    assert second.json["messages"][-1]["content"] == "what was in the photo?"

    stored = rows(home)
    assert all(len(content) < 1000 and "base64" not in content for content in stored), [len(c) for c in stored]
    (ref,) = [p["image_url"]["url"] for p in json.loads(stored[0]) if p["type"] == "image_url"]
    assert ref.startswith("chorus-media:in/") and ref.endswith(".jpg")
    files = list((home.path / "media" / "in").iterdir())
    assert [f.name for f in files] == [ref.removeprefix("chorus-media:in/")]  # sent twice, kept once
    data = files[0].read_bytes()
    assert files[0].stem == hashlib.sha256(data).hexdigest()
    assert image["image_url"]["url"] == data_url(data, "image/jpeg")
    assert user_parts(third)[1] == image


async def test_history_in_the_old_data_url_shape_and_a_deleted_file_still_work(home, fake_openrouter):
    setup(home, fake_openrouter)
    old = {"type": "image_url", "image_url": {"url": data_url(make_png(40, 30), "image/png")}}
    gone = {"type": "image_url", "image_url": {"url": f"chorus-media:in/{'0' * 64}.jpg"}}  # the media dir was wiped
    store = await Store.open(home.path / "chorus.db")
    session = await store.active_session(CONSOLE)
    await store.append(session, [StoredMessage("user", [{"type": "text", "text": "my cat"}, old]),
                                 StoredMessage("assistant", "A grey cat.")])
    await store.append(session, [StoredMessage("user", [{"type": "text", "text": "my dog"}, gone]),
                                 StoredMessage("assistant", "A brown dog.")])
    await store.close()
    fake_openrouter.queue(Text("A cat and a dog."))
    result = await chorus(home, "run", stdin="what did I show you?\n")
    assert result.code == 0, result.err
    assert "A cat and a dog." in result.out
    users = [m["content"] for m in fake_openrouter.chat_requests()[0].json["messages"] if m["role"] == "user"]
    assert users == [
        [{"type": "text", "text": "my cat"}, old],
        [{"type": "text", "text": "my dog"}, {"type": "text", "text": "[image no longer available]"}],
        "what did I show you?",
    ]


async def test_a_50_mb_image_costs_a_fraction_of_its_size_in_memory(home, fake_openrouter, tmp_path):
    setup(home, fake_openrouter, tools={"media": {"image": {"maxBytes": 100_000_000}}})
    noise = tmp_path / "noise.bmp"
    noise.write_bytes(make_noise_bmp(4096, 4096))  # 50.3 MB of pixels no codec can shrink
    fake_openrouter.queue(Text("Static."))
    result, peak_mb = await chorus_peak_rss(home, "run", stdin=f"/image {noise}\n")
    assert result.code == 0, result.err
    assert "Static." in result.out
    assert decoded_size(user_parts(fake_openrouter.chat_requests()[0])[1]["image_url"]["url"]) == ("JPEG", (2048, 2048))
    # Before: the bytes, their base64, the JSON row and the request body, all at once (~480 MB here).
    print(f"peak RSS, 50 MB image: {peak_mb:.0f} MB")
    assert peak_mb < 260, f"peak RSS {peak_mb:.0f} MB"


async def test_an_image_unused_for_keep_days_is_deleted_at_start_and_one_in_use_is_kept(home, fake_openrouter, tmp_path):
    setup(home, fake_openrouter, tools={"media": {"image": {"keepDays": 30}}})
    (tmp_path / "old.png").write_bytes(make_png(40, 30))
    (tmp_path / "kept.png").write_bytes(make_png(50, 30))
    fake_openrouter.queue(Text("An old one."), Text("A kept one."), Text("Still the kept one."))
    first = await chorus(home, "run", stdin=f"/image {tmp_path / 'old.png'}\n/new\n/image {tmp_path / 'kept.png'}\n")
    assert first.code == 0, first.err
    folder = home.path / "media" / "in"
    by_size = {f.stat().st_size: f for f in folder.iterdir()}
    old, kept = by_size[len(make_png(40, 30))], by_size[len(make_png(50, 30))]
    long_ago, a_while_ago = time.time() - 40 * 86400, time.time() - 20 * 86400
    os.utime(old, (long_ago, long_ago))
    os.utime(kept, (a_while_ago, a_while_ago))
    second = await chorus(home, "run", stdin="and that one?\n")
    assert second.code == 0, second.err
    assert sorted(folder.iterdir()) == [kept]  # the old one went at start; the kept one is in the conversation
    assert kept.stat().st_mtime > time.time() - 60  # used by the turn just now: its 30 days start again
    history = fake_openrouter.chat_requests()[-1].json["messages"]  # the new turn's request carries it from history
    assert history[1]["content"][1]["image_url"]["url"] == data_url(kept.read_bytes(), "image/png")
    assert history[-1]["content"] == "and that one?"


async def test_a_model_that_cannot_see_images_gets_a_note_for_them_and_a_new_image_gets_a_sentence(
        home, fake_openrouter, tmp_path):
    """After a photo, the chat switches to a text-only model: OpenRouter would answer every later request
    that still carries the photo with 404 ("No endpoints found that support image input"), for good."""
    setup(home, fake_openrouter)
    photo = tmp_path / "cat.png"
    photo.write_bytes(make_png(40, 30))
    fake_openrouter.queue(Text("A grey cat."), Text("Cats sleep a lot."))
    result = await chorus(home, "run", stdin=(
        f"/image {photo}\n/model openrouter/deepseek/deepseek-v4-flash\ndo they sleep much?\n/image {photo}\n"))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "A grey cat." in lines and "Cats sleep a lot." in lines, result.out
    assert lines[-1] == ("⚠️ openrouter/deepseek/deepseek-v4-flash cannot see images. Choose a model that can "
                         "with /model, or say in words what the image shows.")
    seen, text_only = fake_openrouter.chat_requests()  # the refused image never reached the model
    assert seen.json["messages"][1]["content"][1]["type"] == "image_url"
    assert text_only.json["model"] == "deepseek/deepseek-v4-flash"
    assert text_only.json["messages"][1]["content"] == [
        {"type": "text", "text": "(image)"}, {"type": "text", "text": "[an image, which this model cannot see]"}]
    assert text_only.json["messages"][-1]["content"] == "do they sleep much?"
    assert len(rows(home)) == 4  # the photo's turn and the text turn; nothing of the refused one


async def test_a_model_the_catalog_does_not_list_is_sent_the_image(home, fake_openrouter, tmp_path):
    """New since the catalog was fetched, or behind a proxy: the model is trusted to see, not refused in advance."""
    setup(home, fake_openrouter, agents={"defaults": {"model": {"primary": "openrouter/acme/brand-new-vision"}}})
    photo = tmp_path / "cat.png"
    photo.write_bytes(make_png(40, 30))
    fake_openrouter.queue(Text("A grey cat."))
    result = await chorus(home, "run", stdin=f"/image {photo}\n")
    assert result.code == 0, result.err
    assert "A grey cat." in result.out.splitlines(), result.out
    (request,) = fake_openrouter.chat_requests()
    assert request.json["model"] == "acme/brand-new-vision"
    assert decoded_size(user_parts(request)[1]["image_url"]["url"]) == ("PNG", (40, 30))


async def test_a_model_the_catalog_does_not_describe_that_refuses_images_is_asked_again_without_them(
        home, fake_openrouter, tmp_path):
    """A model whose inputs the catalog does not list (as behind a proxy) answers an image with 404: the same
    call goes again with a note for each image, so neither this turn nor the next is lost."""
    for model in fake_openrouter.models:
        if model["id"] == "deepseek/deepseek-v4-flash":
            model["architecture"]["input_modalities"] = []  # the catalog says nothing; the model takes no images
    setup(home, fake_openrouter, agents={"defaults": {"model": {"primary": "openrouter/deepseek/deepseek-v4-flash"}}})
    photo = tmp_path / "cat.png"
    photo.write_bytes(make_png(40, 30))
    fake_openrouter.queue(Text("I cannot see it, but tell me about it."), Text("Cats sleep a lot."))
    result = await chorus(home, "run", stdin=f"/image {photo}\ndo they sleep much?\n")
    assert result.code == 0, result.err
    assert "I cannot see it, but tell me about it." in result.out and "Cats sleep a lot." in result.out, result.out
    refused, first, _, second = fake_openrouter.chat_requests()
    assert refused.json["messages"][1]["content"][1]["type"] == "image_url"
    note = {"type": "text", "text": "[an image, which this model cannot see]"}
    assert first.json["messages"][1]["content"] == [{"type": "text", "text": "(image)"}, note]
    assert second.json["messages"][1]["content"] == [{"type": "text", "text": "(image)"}, note]
    assert second.json["messages"][-1]["content"] == "do they sleep much?"
    assert "chorus-media:in/" in rows(home)[0]  # history keeps the image for a model that can see it
