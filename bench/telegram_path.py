"""The Telegram path end to end: the real ``chorus run`` polling the fake Bot API, answered by the fake OpenRouter.

Figures: time from an update reaching the fake to the bot's first visible sign in that chat (chat action or
draft), and to the final message, p50/p99; turns per second with many chats writing at once.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.conftest import new_home, onboarded
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram
from tests.telegram_service import start, telegram_config

ROUNDS = ((1, 20), (20, 5))  # (chats writing at once, messages per chat)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _round(tg: FakeTelegram, chats: int, per_chat: int, base: int) -> tuple[list[float], list[float], float]:
    """``chats`` chats each send ``per_chat`` messages, one after the other's answer."""
    first_sign: list[float] = []
    answered: list[float] = []

    async def chat(chat_id: int) -> None:
        for _ in range(per_chat):
            calls, sent = len(tg.calls), len(tg.messages_in(chat_id))
            pushed = time.monotonic()
            tg.message(chat_id, "hello")
            await tg.wait_for(lambda: any(c.params.get("chat_id") == chat_id and c.method in
                                          ("sendChatAction", "sendMessageDraft") for c in tg.calls[calls:]), 30)
            sign = next(c.at for c in tg.calls[calls:] if c.params.get("chat_id") == chat_id
                        and c.method in ("sendChatAction", "sendMessageDraft"))
            first_sign.append(sign - pushed)
            await tg.wait_for(lambda: len(tg.messages_in(chat_id)) > sent, 30)
            answered.append(time.monotonic() - pushed)

    started = time.monotonic()
    await asyncio.gather(*(chat(base + i) for i in range(chats)))
    return first_sign, answered, chats * per_chat / (time.monotonic() - started)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = new_home(Path(tmp))
        async with FakeTelegram() as tg, FakeOpenRouter() as ai:
            ai.chunk_size = 64
            await onboarded(home, ai)
            home.write_config(ai, **telegram_config(tg, pollTimeoutSeconds=10))
            service = await start(home, tg)
            try:
                print("telegram path (real chorus run, fake Bot API + fake OpenRouter on loopback)")
                for n, (chats, per_chat) in enumerate(ROUNDS):
                    sign, done, rate = await _round(tg, chats, per_chat, 10_000 * (n + 1))
                    print(f"  {chats:>3} chats x {per_chat:>2} msgs: first sign p50 {pct(sign, .5) * 1000:6.1f} ms "
                          f"p99 {pct(sign, .99) * 1000:6.1f} ms | answer p50 {statistics.median(done) * 1000:6.1f} ms "
                          f"p99 {pct(done, .99) * 1000:6.1f} ms | {rate:5.1f} turns/s")
            finally:
                await service.stop()
