"""Cross-cutting request concerns of the Telegram bot, as one middleware of ``TelegramAPI``.

A 429 (flood control) is waited out and the request sent again after ``retry_after`` seconds, up to
``max_wait`` in all; a longer wait is raised to the caller (the outbox waits out any length for the parts of
an answer, and says what happens to a chat that refuses the bot).
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
    """Wait out 429s and resend."""

    def __init__(self, *, max_wait: float = 300.0) -> None:
        self.max_wait = max_wait

    async def __call__(self, request: Request, send: Send) -> Any:
        waited = 0.0
        while True:
            try:
                return await send(request)
            except TelegramError as exc:
                if exc.flood and exc.retry_after is not None:
                    if request.method in EPHEMERAL or waited + exc.retry_after > self.max_wait:
                        raise
                    if not waited:  # once per request, however often Telegram asks again
                        log.warning("Telegram flood control on %s: waiting %s s, then sending again",
                                    request.method, exc.retry_after)
                    waited += exc.retry_after
                    await asyncio.sleep(exc.retry_after)
                    continue
                raise
