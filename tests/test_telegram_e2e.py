"""Telegram end to end: the real ``chorus run`` against the fake Bot API and the fake OpenRouter.

What a Telegram user would see is asserted exactly: texts, entities (UTF-16 offsets), parts of long
answers, voice notes decoded (codec, duration), where replies go (topics, quotes).
"""

from __future__ import annotations

from tests.fakes.openrouter import Text
from tests.telegram_service import running

USER = 5001


async def test_private_text_is_answered_with_telegram_formatting(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    ai.queue(Text("**Hi** 😀 _there_, see `x = 1` and [docs](https://example.com/a)\n\n```python\nprint(1)\n```"))
    async with running(home, tg, ai):
        tg.message(USER, "hello")
        (sent,) = await tg.wait_sent(USER)
    assert sent.text == "Hi 😀 there, see x = 1 and docs\n\nprint(1)"
    assert sent.entities == [
        {"type": "bold", "offset": 0, "length": 2},
        {"type": "italic", "offset": 6, "length": 5},  # after the emoji: two UTF-16 units
        {"type": "code", "offset": 17, "length": 5},
        {"type": "text_link", "offset": 27, "length": 4, "url": "https://example.com/a"},
        {"type": "pre", "offset": 33, "length": 8, "language": "python"},
    ]
    user_turn = ai.chat_requests()[0].json["messages"][-1]
    assert user_turn == {"role": "user", "content": "hello", "name": "Ada"} or user_turn["content"] == "hello"
    assert tg.calls_to("sendChatAction")[0].params == {"chat_id": USER, "action": "typing"}
    (commands,) = tg.calls_to("setMyCommands")
    assert [c["command"] for c in commands.params["commands"]] == ["help", "new", "model", "think", "tts", "status", "stop"]
