"""Small pure pieces: the SSE reader, secret redaction, context trimming."""

from __future__ import annotations

import json
import logging
import math

import pytest

from bot.context import fit_context
from bot.redact import RedactingFilter, redact
from net import wirejson
from providers.openrouter.sse import SSEParser


async def collect(*items: bytes) -> list[bytes]:
    """Every event, the body given in ``items`` as the network cut it."""
    parser = SSEParser()
    return [event for item in items for event in parser.feed(item)] + parser.end()


async def test_sse_skips_keepalive_comments_and_stops_at_done():
    got = await collect(b": OPENROUTER PROCESSING\n\n", b'data: {"a":1}\n\n: OPENROUTER PROCESSING\n\n',
                        b'data: {"b":2}\n\ndata: [DONE]\n\ndata: {"late":1}\n\n')
    assert got == [b'{"a":1}', b'{"b":2}', b"[DONE]"]
    # An unended line after [DONE] in the same chunk is not an event of this answer either.
    assert await collect(b'data: {"a":1}\n\ndata: [DONE]\n\ndata: late') == [b'{"a":1}', b"[DONE]"]
    # An event or a comment to each read, as a stream nearly always comes; a field other than data is no event.
    one_each = [b": OPENROUTER PROCESSING\n\n", b'data: {"a":1}\n\n', b"event: x\n\n", b'data:{"b":2}\n\n',
                b"data: [DONE]\n\n", b'data: {"late":1}\n\n']
    assert await collect(*one_each) == [b'{"a":1}', b'{"b":2}', b"[DONE]"]


async def test_sse_joins_multiline_data_and_flushes_an_unterminated_event():
    assert await collect(b'data: {"a":\ndata: 1}\n\ndata:{"b":2}') == [b'{"a":\n1}', b'{"b":2}']
    # One space after the colon is the separator, and only one: the spec keeps the rest as data.
    assert await collect(b'data:  two\n\n') == [b" two"]


async def test_sse_lines_split_anywhere_across_chunks_in_any_line_ending():
    """The network cuts the body where it likes: inside a field name, between CR and LF, inside UTF-8."""
    body = 'data: {"a":"é"}\r\n\r\n: keep-alive\r\rdata: {"b":\r\ndata: 2}\n\ndata: [DONE]\n\n'.encode()
    whole = [b'{"a":"\xc3\xa9"}', b'{"b":\n2}', b"[DONE]"]  # a CR LF split across two chunks ends one line
    for size in (1, 2, 3, 7, len(body)):
        assert await collect(*(body[i:i + size] for i in range(0, len(body), size))) == whole, size


def test_redact_masks_keys_tokens_and_bearer_headers():
    text = ("key sk-or-v1-0123456789abcdef0123 token 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw "
            "Authorization: Bearer abc.def secret-value")
    clean = redact(text, ["secret-value"])
    assert "sk-or-v1" not in clean and "AAHdq" not in clean and "abc.def" not in clean and "secret-value" not in clean
    assert clean.count("***") == 4


def test_a_telegram_token_is_masked_inside_a_bot_api_url():
    url = "GET https://api.telegram.org/bot123456789:AAFakeTokenForTestsOnly_abcdefghijklmn/getMe failed"
    assert redact(url) == "GET https://api.telegram.org/bot***/getMe failed"


def test_a_discord_interaction_token_is_masked_inside_its_urls():
    """Mutation: the pattern removed (discord.py logs each webhook request's URL at -vv)."""
    token = "aW50ZXJhY3Rpb246MTIzNDU2Nzg5MDpBYmNEZWZHaGlK_x-y.z"
    for path in (f"/webhooks/1234567890/{token}", f"/interactions/42/{token}/callback"):
        assert redact(f"POST https://discord.com/api/v10{path}?wait=1 returned 200") == (
            f"POST https://discord.com/api/v10{path.replace(token, '***')}?wait=1 returned 200")


def test_logging_filter_redacts_arguments_and_tracebacks(caplog):
    logger = logging.getLogger("chorus.test-redact")
    logger.addFilter(RedactingFilter(["hunter2-password"]))
    try:
        raise RuntimeError("failed with sk-or-v1-aaaaaaaaaaaaaaaa")
    except RuntimeError:
        with caplog.at_level(logging.ERROR, logger="chorus.test-redact"):
            logger.exception("call with %s", "hunter2-password")
    record = caplog.records[-1]
    assert record.getMessage() == "call with ***"
    assert "sk-or-v1-aaaa" not in (record.exc_text or "") and "***" in record.exc_text


def test_fit_context_drops_whole_old_turns_and_keeps_system_and_current():
    system = [{"role": "system", "content": "sys"}]
    history = []
    for i in range(10):
        history += [
            {"role": "user", "content": f"q{i} " + "x" * 100},
            {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": "r" * 100},
        ]
    current = [{"role": "user", "content": "now"}]
    messages, dropped = fit_context(system, history, current, window=400)
    assert messages[0] == system[0] and messages[-1] == current[0]
    assert 0 < dropped < 10
    kept = messages[1:-1]
    assert kept[0]["role"] == "user" and len(kept) == 3 * (10 - dropped)
    assert fit_context(system, history, current, window=1_000_000)[1] == 0


def test_json_that_orjson_refuses_is_read_and_written_as_the_json_module_would():
    """Bodies go through orjson, which refuses some JSON the standard library takes: each such body still works."""
    assert wirejson.loads(b'{"t": "caf\xe9"}', "replace") == {"t": "caf\ufffd"}  # a streamed piece: not UTF-8
    with pytest.raises(ValueError):
        wirejson.loads(b'{"t": "caf\xe9"}')  # a Bot API answer: refused, as before
    odd = wirejson.loads(b'{"t": "\\ud800", "n": NaN}')  # a lone surrogate escape, a NaN literal
    assert odd["t"] == "\ud800" and math.isnan(odd["n"])
    big = 2**70
    assert json.loads(wirejson.dumps({"n": big, 1: "key", "s": "\ud800"})) == {"n": big, "1": "key", "s": "\ud800"}
    assert wirejson.dumps({"t": "é", "l": [1, 2.5]}) == '{"t":"é","l":[1,2.5]}'.encode()  # compact UTF-8
