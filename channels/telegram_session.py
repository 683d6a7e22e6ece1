"""Cross-cutting request concerns of the Telegram bot, as one aiogram session middleware.

aiogram raises ``TelegramRetryAfter`` on a 429 instead of waiting, so a plain bot drops that reply. Here
the request is sent again after ``retry_after`` seconds: nothing is lost. A chat whose user blocked the
bot (403) is logged once and the error raised at once, never retried.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramForbiddenError, TelegramRetryAfter
from aiogram.methods import SendChatAction, SendMessageDraft, TelegramMethod
from aiogram.methods.base import Response, TelegramType

log = logging.getLogger("chorus.telegram")

# A late typing indicator or draft is worthless: these are dropped on 429, never queued behind the wait.
EPHEMERAL = (SendChatAction, SendMessageDraft)


class FloodControl(BaseRequestMiddleware):
    """Wait out 429s and resend; log 403s once per chat."""

    def __init__(self, *, max_wait: float = 300.0) -> None:
        self.max_wait = max_wait
        self._blocked: set[Any] = set()
        # aiogram parses every answer through ``Response[T]``, a pydantic generic that pydantic caches only
        # weakly: unreferenced, it is rebuilt (schema and all) on every call, ~1 ms of CPU per request.
        # Holding each one here makes it built once per answer type.
        self._response_types: dict[Any, type[Response[Any]]] = {}

    async def __call__(self, make_request: NextRequestMiddlewareType[TelegramType], bot: Bot,
                       method: TelegramMethod[TelegramType]) -> Response[TelegramType]:
        returning = method.__returning__
        if returning not in self._response_types:
            self._response_types[returning] = Response[returning]  # type: ignore[valid-type]
        waited = 0.0
        while True:
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                if isinstance(method, EPHEMERAL) or waited + exc.retry_after > self.max_wait:
                    raise
                log.warning("Telegram flood control on %s: waiting %s s, then sending again",
                            method.__api_method__, exc.retry_after)
                waited += exc.retry_after
                await asyncio.sleep(exc.retry_after)
            except TelegramForbiddenError as exc:
                chat = getattr(method, "chat_id", None)
                if chat not in self._blocked:
                    self._blocked.add(chat)
                    log.warning("Telegram refuses messages to chat %s (%s); not retrying", chat, exc.message)
                raise
