"""The model's markdown as Telegram text and entities: the plain-line shortcut past the converter changes nothing."""

from __future__ import annotations

import random

import pytest
from channels.telegram import format as fmt

EDGES = [
    "Sure thing, here is a short answer.", "1) one", "2024. A year", "7. seven", "123456789) many", "1.5 apples",
    "10 apples", "a  b ", "x (y) z: 50% / 2", "He said \"hi\" -- and left... ok", "it's fine", "Привет, мир!",
    "café au lait", "e.g. this", "word-word", "a - b", "done.",
    # Each a construct the shortcut must leave to the converter.
    "a *b* c", "**bold** text", "use `x` now", "a _b_ c", "~~gone~~ x", "||hidden|| x", "[link](http://x.com)",
    "# Title", "> quote", "- item", "+ item", "a <b>c</b>", "x &amp; y", "$x^2$ then", "a \\*b\\* c", "Title\n===",
    "tab\tsep", "two\nlines", "    code", "x ~~gone~~ y", "x ||hidden|| y", "see [x](y) z", "a `b` c",
]
# Letters (with non-ASCII ones), digits, spaces and the punctuation the shortcut takes; then some it must not.
PLAIN = "abcXYZéßжд0123456789 ,.;:!?%/()'\"-"
MARKUP = "*_`~|[]#>+=<&\\$\t\n"


def reference(markdown: str) -> tuple[str, list[dict[str, object]]]:
    """What the converter itself makes of ``markdown`` (as ``fmt`` trims it), never the shortcut."""
    text, entities = fmt._converted(markdown)
    return text, [e.to_dict() for e in entities]


def rendered(markdown: str) -> tuple[str, list[dict[str, object]]]:
    text, entities = fmt._convert(markdown)
    return text, [e.to_dict() for e in entities]


@pytest.mark.parametrize("line", EDGES)
def test_a_plain_line_renders_as_the_converter_renders_it(line):
    assert rendered(line) == reference(line)
    if fmt._plain(line):  # and so does a draft, or a whole answer, of it
        assert fmt.preview(line) == fmt.Part(*reference(line)) and fmt.render(line) == [fmt.Part(*reference(line))]


def test_random_lines_render_as_the_converter_renders_them():
    """Short lines from an alphabet near the shortcut's edge: whichever way each goes, the result is the same."""
    rng = random.Random(28)
    shortcut = 0
    for _ in range(4000):
        line = "".join(rng.choice(PLAIN) for _ in range(rng.randint(1, 24)))
        for _ in range(rng.choice((0, 0, 1, 2, 3))):  # half the lines get markup at random places
            at = rng.randint(0, len(line))
            line = line[:at] + rng.choice(MARKUP) * rng.randint(1, 2) + line[at:]
        assert rendered(line) == reference(line), line
        if fmt._plain(line):
            shortcut += 1
            assert fmt.render(line) == [fmt.Part(*reference(line))], line
    assert shortcut > 800, shortcut  # the shortcut itself was exercised, not only the converter


@pytest.mark.parametrize(("length", "parts"), [(4096, 1), (4097, 2)])
def test_a_plain_line_longer_than_a_message_is_split_at_the_limit_and_not_past_it(length, parts):
    line = "x" * length
    rendered_parts = fmt.render(line)
    assert len(rendered_parts) == parts and all(len(p.text) <= fmt.TEXT_LIMIT for p in rendered_parts)
    assert "".join(p.text for p in rendered_parts) == line
