"""The splitter both platform adapters use for replies longer than a message."""

from __future__ import annotations

import re

import pytest

from channels.chunking import split_text, utf16_length

FENCE = "```"


def code(lines: list[str], lang: str = "python") -> str:
    return "\n".join([FENCE + lang, *lines, FENCE])


def without_fences_and_space(text: str) -> str:
    """What must survive splitting: everything but fence lines (the splitter adds some) and whitespace (dropped at cuts)."""
    return re.sub(r"\s+", "", re.sub(r"^```.*$", "", text, flags=re.M))


def test_a_short_text_is_one_part_and_blank_text_none():
    assert split_text("hello there", 20) == ["hello there"]
    assert split_text("  \n\nhello\n\n", 20) == ["hello"]
    assert split_text("", 20) == []
    assert split_text(" \n \n", 20) == []


def test_paragraph_breaks_win_over_line_breaks():
    text = "First paragraph one.\nStill first.\n\nSecond paragraph.\nMore of it."
    assert split_text(text, 40) == [
        "First paragraph one.\nStill first.",
        "Second paragraph.\nMore of it.",
    ]


def test_a_paragraph_break_that_leaves_the_part_under_half_full_loses_to_a_line_break():
    text = "Hi.\n\n" + "line one of many\nline two of many\nline three of many"
    assert split_text(text, 45) == [
        "Hi.\n\nline one of many\nline two of many",
        "line three of many",
    ]


def test_lines_then_sentences_then_words():
    assert split_text("alpha beta gamma\ndelta epsilon zeta", 20) == ["alpha beta gamma", "delta epsilon zeta"]
    assert split_text("One sentence here. Another one follows it.", 30) == [
        "One sentence here.",
        "Another one follows it.",
    ]
    assert split_text("one two three four five six seven", 15) == ["one two three", "four five six", "seven"]
    assert split_text("Wait for it… Then it came back.", 20) == ["Wait for it…", "Then it came back."]


def test_a_single_line_longer_than_the_limit_is_cut_hard():
    assert split_text("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]
    assert split_text("see https://example.com/" + "x" * 30, 20) == [
        "see",
        "https://example.com/",
        "x" * 20,
        "x" * 10,
    ]


def test_a_code_block_across_the_cut_is_closed_and_reopened_with_its_language():
    text = "Here is the code:\n\n" + code(["a = 1", "b = 2", "c = 3", "d = 4"]) + "\n\nDone."
    parts = split_text(text, 45)
    assert parts == [
        "Here is the code:\n\n```python\na = 1\nb = 2\n```",
        "```python\nc = 3\nd = 4\n```\n\nDone.",
    ]
    assert all(len(p) <= 45 for p in parts)


def test_the_added_fences_count_towards_the_limit():
    # "```js\na = 1\nb = 2" is 17 characters, but closed with "\n```" it is 21.
    text = code(["a = 1", "b = 2", "c = 3"], lang="js")
    assert split_text(text, 20) == ["```js\na = 1\n```", "```js\nb = 2\n```", "```js\nc = 3\n```"]
    assert split_text(text, 21) == ["```js\na = 1\nb = 2\n```", "```js\nc = 3\n```"]


def test_no_part_is_an_empty_code_block():
    # A cut right after the opening fence (or right before the closing one) would leave ``` ``` alone.
    text = "Intro text here.\n" + code(["x" * 20]) + "\nOutro text."
    assert split_text(text, 40) == [
        "Intro text here.",
        "```python\n" + "x" * 20 + "\n```",
        "Outro text.",
    ]


def test_a_code_block_longer_than_a_whole_part_is_reopened_in_every_part():
    lines = [f"step_{i} = {i}" for i in range(10)]  # 10 or 11 characters each
    parts = split_text(code(lines, "py"), 35)
    assert parts == [
        "```py\nstep_0 = 0\nstep_1 = 1\n```",
        "```py\nstep_2 = 2\nstep_3 = 3\n```",
        "```py\nstep_4 = 4\nstep_5 = 5\n```",
        "```py\nstep_6 = 6\nstep_7 = 7\n```",
        "```py\nstep_8 = 8\nstep_9 = 9\n```",
    ]
    assert all(len(p) <= 35 for p in parts)


def test_a_code_line_longer_than_a_part_is_cut_and_still_fenced():
    text = code(["z" * 30], lang="")
    assert split_text(text, 20) == ["```\n" + "z" * 12 + "\n```", "```\n" + "z" * 12 + "\n```", "```\n" + "z" * 6 + "\n```"]


def test_indentation_after_a_cut_inside_code_is_kept():
    text = code(["def f():", "    x = 1", "    return x"])
    assert split_text(text, 33) == [
        "```python\ndef f():\n    x = 1\n```",
        "```python\n    return x\n```",
    ]


def test_backticks_with_more_backticks_after_them_are_inline_code_not_a_fence():
    """CommonMark: a backtick fence's info string holds no backtick, so this line opens no block to close."""
    text = "```a``` is inline.\nline two here\nline three here\nline four here"
    assert split_text(text, 34) == ["```a``` is inline.\nline two here", "line three here\nline four here"]


def test_longer_fences_and_an_unclosed_block():
    text = "````md\n```\ninner\n```\nmore\n````"
    assert split_text(text, 25) == ["````md\n```\ninner\n```\n````", "````md\nmore\n````"]
    # A reply cut off mid-block: earlier parts are closed, the last stays as the model wrote it.
    assert split_text("```sh\nls -la\necho hi", 18) == ["```sh\nls -la\n```", "```sh\necho hi"]


def test_emoji_count_in_utf16_units_when_asked_and_are_never_torn():
    assert split_text("👍" * 10, 7, utf16_length) == ["👍👍👍", "👍👍👍", "👍👍👍", "👍"]
    assert split_text("👍" * 10, 7) == ["👍" * 7, "👍" * 3]
    family = "👨\u200d👩\u200d👧"  # one picture, five code points
    assert split_text(family * 2, 6) == [family, family]
    assert split_text("🇫🇷🇩🇪🇮🇹", 3) == ["🇫🇷", "🇩🇪", "🇮🇹"]
    assert split_text("🇦🇺🇿🇦🇺🇦", 3) == ["🇦🇺", "🇿🇦", "🇺🇦"]  # letters A and Z: the ends of the range
    assert split_text("e\u0301" * 4, 3) == ["e\u0301", "e\u0301", "e\u0301", "e\u0301"]
    assert utf16_length("a👍") == 3


def test_a_9000_character_answer_with_a_code_block_across_the_telegram_limit():
    intro = ("Chorus answers long questions in parts. " * 25).strip()  # 999 characters
    lines = [f"total += {i:03d}  # add {i:03d} to the running sum" for i in range(190)]  # 42 each
    outro = "That is the whole program; run it with Python 3.11 or newer."
    text = intro + "\n\n" + code(lines) + "\n\n" + outro
    assert len(text) > 9000

    parts = split_text(text, 4096)

    # Part 1: 999 + 2 + 10 ("```python\n") + 43*k - 1 + 4 ("\n```") <= 4096 gives k = 71 lines.
    # Part 2: 10 + 43*k - 1 + 4 <= 4096 gives k = 94 lines. Part 3: the remaining 25 and the outro.
    assert parts == [
        intro + "\n\n```python\n" + "\n".join(lines[:71]) + "\n```",
        "```python\n" + "\n".join(lines[71:165]) + "\n```",
        "```python\n" + "\n".join(lines[165:]) + "\n```\n\n" + outro,
    ]
    assert [len(p) for p in parts] == [4067, 4055, 1150]


def test_the_same_answer_in_discord_parts():
    intro = ("Chorus answers long questions in parts. " * 25).strip()
    lines = [f"total += {i:03d}  # add {i:03d} to the running sum" for i in range(190)]
    text = intro + "\n\n" + code(lines) + "\n\nBye."
    parts = split_text(text, 2000)

    # Part 1: 1011 + 43*k - 1 + 4 <= 2000 gives k = 22; each next: 10 + 43*k - 1 + 4 <= 2000 gives k = 46.
    reopened = ["```python\n" + "\n".join(lines[i:i + 46]) + "\n```" for i in (22, 68, 114)]
    assert parts == [
        intro + "\n\n```python\n" + "\n".join(lines[:22]) + "\n```",
        *reopened,
        "```python\n" + "\n".join(lines[160:]) + "\n```\n\nBye.",
    ]
    assert [len(p) for p in parts] == [1960, 1991, 1991, 1991, 1309]


@pytest.mark.parametrize("limit", [40, 64, 100, 333])
def test_joining_the_parts_gives_back_the_text(limit):
    text = (
        "# Title\n\nSome prose that goes on for a while, with sentences. And more of them!\n\n"
        + code([f"for i in range({n}):\n    print(i, 'é👍')" for n in range(6)], "python")
        + "\n\n- a list item\n- another one that is rather long and wordy indeed\n\n"
        + "A" * 150 + "\n\n```\nplain block\n```\nend 🇫🇷"
    )
    parts = split_text(text, limit, utf16_length)
    assert all(0 < utf16_length(p) <= limit for p in parts)
    assert all(p == p.strip("\n") and p.strip() for p in parts)
    assert without_fences_and_space("\n".join(parts)) == without_fences_and_space(text)
    for part in parts:  # every part renders alone: its fences are balanced
        assert len(re.findall(r"^```", part, re.M)) % 2 == 0, part


def test_a_fence_line_nearly_as_long_as_a_part_is_cut_plainly_rather_than_looping():
    text = "```" + "x" * 30 + "\nprint(1)\n```"
    parts = split_text(text, 20)
    assert parts == ["```xxxxxxxxxxxxxxxxx", "xxxxxxxxxxxxx", "print(1)\n```"]


def test_a_limit_that_cannot_hold_one_character_is_refused():
    with pytest.raises(ValueError, match="limit 1 is too small to hold '👍'"):
        split_text("👍", 1, utf16_length)


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match="limit must be positive"):
        split_text("x", 0)
