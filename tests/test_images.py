"""How ``bot.media.images.prepare`` fits an image for the model, in-process (the end-to-end path is in test_images_e2e)."""

from __future__ import annotations

import io
import os
import time

import pytest
from PIL import Image

from bot.config import ImageTools
from bot.context import IMAGE_TOKENS, estimate_tokens
from bot.media.images import ImageError, Images, prepare, too_large
from channels.base import Attachment, AttachmentKind, ChatRef, Inbound
from tests.fakes.media import make_png, make_png_header


def encoded(image: Image.Image, fmt: str, **kw: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **kw)
    return out.getvalue()


def opened(data: bytes) -> tuple[str, tuple[int, int], str]:
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.size, image.mode


def test_a_small_image_in_a_common_format_goes_as_it_came():
    small = make_png(40, 30)
    assert prepare(small).data is small


def test_transparency_stays_png_and_a_photo_becomes_jpeg():
    clear = prepare(encoded(Image.new("RGBA", (3000, 1000), (9, 9, 9, 100)), "PNG"))
    assert (clear.ext, opened(clear.data)) == ("png", ("PNG", (2048, 683), "RGBA"))
    bitmap = prepare(encoded(Image.new("RGB", (300, 200)), "BMP"))  # small, but not a format every model reads
    assert (bitmap.ext, opened(bitmap.data)) == ("jpg", ("JPEG", (300, 200), "RGB"))


def test_a_sideways_phone_photo_is_turned_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to view
    fitted = prepare(encoded(Image.new("RGB", (3000, 1000)), "JPEG", exif=exif))
    assert opened(fitted.data) == ("JPEG", (683, 2048), "RGB")


def test_a_size_just_over_the_limit_never_reads_as_equal_to_it():
    assert too_large(20_040_000, 20_000_000) == "That image is 20.1 MB; the limit is 20 MB."
    assert too_large(200_000_000, 20_000_000) == "That image is 200 MB; the limit is 20 MB."


def test_an_image_costs_the_context_budget_the_same_as_a_reference_or_as_an_old_data_url():
    text = {"type": "text", "text": "look"}
    ref = {"type": "image_url", "image_url": {"url": f"chorus-media:in/{'0' * 64}.jpg"}}
    old = {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + "A" * 4_000_000}}
    cost = estimate_tokens({"role": "user", "content": [text, ref]})
    assert cost == estimate_tokens({"role": "user", "content": [text, old]}) == IMAGE_TOKENS + 12


def test_sweep_deletes_images_unused_for_keep_days_and_leftovers_of_interrupted_writes(tmp_path):
    now = time.time()
    folder = tmp_path / "in"
    folder.mkdir()
    ages = {"old.jpg": 31 * 86400, "recent.jpg": 29 * 86400, "crashed.part": 7200, "writing.part": 1800}
    for name, age in ages.items():
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (now - age, now - age))
    assert Images(tmp_path, ImageTools(keep_days=0)).sweep(now) == 1  # 0 keeps images; a dead write still goes
    assert sorted(p.name for p in folder.iterdir()) == ["old.jpg", "recent.jpg", "writing.part"]
    assert Images(tmp_path, ImageTools(keep_days=30)).sweep(now) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["recent.jpg", "writing.part"]
    assert Images(tmp_path / "nothing-yet", ImageTools()).sweep(now) == 0


@pytest.mark.parametrize("fmt, ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif")])
def test_every_format_models_read_goes_as_it_came_up_to_2048_pixels(fmt, ext):
    """Re-encoding would cost quality (and a GIF its frames) for nothing: all four go to every model as they are."""
    wide = encoded(Image.new("RGB", (2048, 8), (200, 30, 30)), fmt)
    assert (prepare(wide).data, prepare(wide).ext) == (wide, ext)
    wider = encoded(Image.new("RGB", (2049, 8), (200, 30, 30)), fmt)
    assert opened(prepare(wider).data)[1] == (2048, 8)


def test_a_file_over_5_mb_is_re_encoded_even_when_small_enough():
    noise = encoded(Image.frombytes("RGB", (2048, 1024), os.urandom(2048 * 1024 * 3)), "PNG")
    assert len(noise) > 5_000_000
    fitted = prepare(noise)
    assert (fitted.ext, opened(fitted.data)) == ("jpg", ("JPEG", (2048, 1024), "RGB"))
    assert len(fitted.data) < 5_000_000  # what Anthropic's models take per image


def test_exactly_40_megapixels_is_decoded_and_one_pixel_row_more_is_refused():
    with pytest.raises(ImageError) as at_limit:
        prepare(make_png_header(8000, 5000))  # 40,000,000 pixels: allowed, so it is decoded (and is a bare header)
    assert str(at_limit.value) == "That image could not be decoded: it looks corrupt or truncated."
    with pytest.raises(ImageError) as over:
        prepare(make_png_header(8000, 5001))
    assert str(over.value) == "That image is 8000×5001 pixels; the limit is 40 megapixels."


def test_a_palette_image_with_a_transparent_colour_stays_transparent():
    palette = Image.new("P", (3000, 100), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    fitted = prepare(encoded(palette, "PNG", transparency=1))  # colour 1 is see-through: an all-clear picture
    assert (fitted.ext, opened(fitted.data)) == ("png", ("PNG", (2048, 68), "RGBA"))


async def test_an_image_of_exactly_max_bytes_is_accepted(tmp_path):
    data = make_png(40, 30)
    images = Images(tmp_path, ImageTools(max_bytes=len(data)))
    photo = Attachment.from_bytes(AttachmentKind.IMAGE, data, mime="image/png", filename="cat.png")
    (stored,) = await images.accept(Inbound(chat=ChatRef("t", "c"), sender_id="u", sender_name="U", attachments=[photo]))
    assert stored.path.read_bytes() == data
    over = Images(tmp_path, ImageTools(max_bytes=len(data) - 1))
    with pytest.raises(ImageError) as refused:
        await over.accept(Inbound(chat=ChatRef("t", "c"), sender_id="u", sender_name="U", attachments=[photo]))
    assert str(refused.value) == f"That image is 0.1 MB; the limit is {(len(data) - 1) / 1_000_000:g} MB."
