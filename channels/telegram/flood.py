"""Cross-cutting request concerns of the Telegram bot, as one middleware of ``TelegramAPI``.

A 429 (flood control) is waited out and the request sent again after ``retry_after`` seconds: nothing is
lost. A chat whose user blocked the bot (403) is logged once and the error raised at once, never retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .api import Request, Send, TelegramError

log = logging.getLogger("chorus.telegram")

# A late typing indicator or draft is worthless: these are dropped on 429, never queued behind the wait.
EPHEMERAL = frozenset({"sendChatAction", "sendMessageDraft"})


class FloodControl:
    """Wait out 429s and resend; log 403s once per chat."""

    def __init__(self, *, max_wait: float = 300.0) -> None:
        self.max_wait = max_wait
        self._blocked: set[Any] = set()

    async def __call__(self, request: Request, send: Send) -> Any:
        waited = 0.0
        while True:
            try:
                return await send(request)
            except TelegramError as exc:
                if exc.flood and exc.retry_after is not None:
                    if request.method in EPHEMERAL or waited + exc.retry_after > self.max_wait:
                        raise
                    log.warning("Telegram flood control on %s: waiting %s s, then sending again",
                                request.method, exc.retry_after)
                    waited += exc.retry_after
                    await asyncio.sleep(exc.retry_after)
                    continue
                if exc.forbidden:
                    chat = request.params.get("chat_id")
                    if chat not in self._blocked:
                        self._blocked.add(chat)
                        log.warning("Telegram refuses messages to chat %s (%s); not retrying", chat, exc.description)
                raise
