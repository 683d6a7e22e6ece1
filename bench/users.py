"""Simulated Telegram users: they write through the fake Telegram, and each turn is timed from the fake's own
clocks (when the update became available, when each bot call arrived, when the model's first token went out)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

from tests.fakes.openrouter import Recorded, last_user_text
from tests.fakes.telegram import Call, FakeTelegram

SIGNS = {"sendChatAction", "setMessageReaction", "sendMessageDraft", "sendMessage", "editMessageText", "sendVoice"}
TEXTS = {"sendMessageDraft", "sendMessage", "editMessageText"}
FINAL = {"sendMessage", "editMessageText"}
MARKER = re.compile(r"\bq(\d+)x(\d+)\b")
CURSOR = "▉"


@dataclass
class Turn:
    """One user message and what the bot did about it, as seconds on the shared monotonic clock."""

    chat_id: int
    marker: str
    available: float
    first_message_id: int = 0  # the bot's messages for this turn have ids from here on (older ones are stale)
    first_sign: float | None = None
    first_text: float | None = None
    final: float | None = None
    first_token: float | None = None  # from the fake model, filled in by ``Observer.match_model``
    model_seconds: float = 0.0  # time the fake model spent on this turn's streamed calls
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def sign_ms(self) -> float | None:
        return None if self.first_sign is None else (self.first_sign - self.available) * 1000

    @property
    def token_visible_ms(self) -> float | None:
        if self.first_text is None or self.first_token is None:
            return None
        return (self.first_text - self.first_token) * 1000

    @property
    def overhead_ms(self) -> float | None:
        """Turn time minus the model's own time: what the service added."""
        if self.final is None:
            return None
        return (self.final - self.available - self.model_seconds) * 1000


class Observer:
    """Listens to every call the fake Telegram receives and fills in the turn in progress in that chat.

    A turn is finished when a message or edit shows the whole answer (``tail`` is its end, compared without
    Markdown escapes and without a streaming cursor), or when ``final_method`` (e.g. ``sendVoice``) is called.
    """

    def __init__(self, tg: FakeTelegram, tail: str, final_method: str | None = None) -> None:
        self.tg = tg
        self.tail = tail
        self.final_method = final_method
        self.open: dict[int, Turn] = {}
        self._counter = 0
        tg.listeners.append(self._on_call)

    def close(self) -> None:
        self.tg.listeners.remove(self._on_call)

    def send(self, chat_id: int, words: str = "hello") -> Turn:
        """The user writes; the turn starts when the update is available."""
        self._counter += 1
        marker = f"q{chat_id}x{self._counter}"
        self.tg.message(chat_id, f"{words} {marker}")
        return self._open(chat_id, marker)

    def _open(self, chat_id: int, marker: str) -> Turn:
        turn = Turn(chat_id, marker, self.tg.pushed_at[self.tg.last_update_id], self.tg.chat(chat_id).next_message_id)
        self.open[chat_id] = turn
        return turn

    def voice(self, chat_id: int, data: bytes, seconds: int) -> Turn:
        """The user records a voice note."""
        self._counter += 1
        self.tg.voice(chat_id, data, seconds)
        return self._open(chat_id, f"voice{self._counter}")

    def _on_call(self, call: Call) -> None:
        turn = self.open.get(call.params.get("chat_id"))  # type: ignore[arg-type]
        if turn is None or call.at < turn.available or call.status != 200:
            return
        if call.method == "editMessageText" and call.params.get("message_id", 0) < turn.first_message_id:
            return  # a late edit of the previous turn's answer
        if call.method in SIGNS and turn.first_sign is None:
            turn.first_sign = call.at
        text = call.params.get("text")
        if call.method in TEXTS and isinstance(text, str) and text.strip():
            if turn.first_text is None:
                turn.first_text = call.at
            if call.method in FINAL and not self.final_method and self._whole(text):
                self._finish(turn, call.at)
        if self.final_method and call.method == self.final_method:
            self._finish(turn, call.at)

    def _whole(self, text: str) -> bool:
        return CURSOR not in text and text.replace("\\", "").rstrip().endswith(self.tail)

    def _finish(self, turn: Turn, at: float) -> None:
        if turn.final is None:
            turn.final = at
            turn.done.set()
            if self.open.get(turn.chat_id) is turn:
                del self.open[turn.chat_id]

    @staticmethod
    def match_model(turns: list[Turn], requests: list[Recorded]) -> None:
        """Give each turn its model time and first-token time, from the streamed chat calls that carry its marker."""
        by_marker: dict[str, list[Recorded]] = {}
        for rec in requests:
            if rec.path.endswith("/chat/completions") and isinstance(rec.json, dict) and rec.json.get("stream"):
                found = MARKER.search(last_user_text(rec.json.get("messages") or []))
                if found:
                    by_marker.setdefault(found.group(0), []).append(rec)
        for turn in turns:
            recs = by_marker.get(turn.marker, [])
            firsts = [r.first_token_at for r in recs if r.first_token_at is not None]
            turn.first_token = min(firsts) if firsts else None
            turn.model_seconds = sum((r.done_at or r.at) - r.at for r in recs)


THINK = 0.5  # seconds a user takes before writing again; a bot's late typing or draft then is not credited


async def converse(observer: Observer, chat_id: int, until: float, patience: float, out: list[Turn],
                   first_after: float = 0.0) -> None:
    """One user: ``first_after`` seconds in, write, wait for the whole answer, write again after ``THINK`` seconds,
    until ``until``; a turn not answered within ``patience`` seconds ends the conversation (counted as unanswered)."""
    await asyncio.sleep(first_after)
    while time.monotonic() < until:
        turn = observer.send(chat_id)
        out.append(turn)
        try:
            await asyncio.wait_for(turn.done.wait(), patience)
        except TimeoutError:
            return
        await asyncio.sleep(THINK)
