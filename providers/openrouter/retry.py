"""Retries with backoff and jitter for the failures worth retrying (408, 429, 502, 503, connection errors)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import OpenRouterError

T = TypeVar("T")
log = logging.getLogger("chorus.openrouter")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts the first try; delays grow as ``base_delay * 2**n`` up to ``max_delay``."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, error: OpenRouterError, rng: Callable[[], float] = random.random) -> float:
        """How long to wait before try ``attempt + 1``: the server's ``Retry-After`` when it gave one
        (capped), else exponential backoff with full jitter so many clients do not retry in step."""
        if error.retry_after is not None:
            return min(error.retry_after, self.max_retry_after)
        return rng() * min(self.max_delay, self.base_delay * 2**attempt)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the attempts run out.

    The caller guarantees that nothing has reached the user before ``call`` returns
    (the streaming client wraps only the opening of the stream); 400/401/402/403
    are never retried, since trying again cannot change their answer.
    """
    for attempt in range(policy.attempts):
        try:
            return await call()
        except OpenRouterError as exc:
            if not exc.retryable or attempt + 1 >= policy.attempts:
                raise
            wait = policy.delay(attempt, exc, rng)
            log.info("retrying in %.2fs after: %s (attempt %d of %d)", wait, exc.headline(), attempt + 2, policy.attempts)
            await sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")
