"""Retries with backoff and jitter for the failures worth retrying (408, 429, 502, 503, connection errors),
within a total time budget so a user never waits minutes in silence."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from .errors import OpenRouterError

OnWait = Callable[[float, OpenRouterError], Awaitable[None]]  # told before each wait: seconds, and why

T = TypeVar("T")
log = logging.getLogger("chorus.openrouter")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``attempts`` counts the first try; delays grow as ``base_delay * 2**n`` up to ``max_delay``;
    no wait starts that would end more than ``budget`` seconds after the first try began."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    budget: float = 120.0

    def wait_before_retry(self, attempt: int, error: OpenRouterError, elapsed: float,
                          rng: Callable[[], float] = random.random) -> float | None:
        """Seconds to wait before try ``attempt + 2``, or ``None`` to give up: the error is final,
        the tries are used up, or the wait would overrun the budget (then waiting is worse than saying so)."""
        if not error.retryable or attempt + 1 >= self.attempts:
            return None
        wait = self.delay(attempt, error, rng)
        return wait if elapsed + wait <= self.budget else None

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
    on_wait: OnWait | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``call`` until it succeeds, fails for good, or the attempts run out.

    The caller guarantees that nothing has reached the user before ``call`` returns
    (the streaming client wraps only the opening of the stream); 400/401/402/403
    are never retried, since trying again cannot change their answer.
    """
    started = clock()
    for attempt in range(policy.attempts):
        try:
            return await call()
        except OpenRouterError as exc:
            wait = policy.wait_before_retry(attempt, exc, clock() - started, rng)
            if wait is None:
                raise
            await announce(wait, exc, attempt, policy, on_wait)
            await sleep(wait)
    raise AssertionError("unreachable: the loop returns or raises")


async def announce(wait: float, error: OpenRouterError, attempt: int, policy: RetryPolicy, on_wait: OnWait | None) -> None:
    """Log a coming retry and tell whoever waits for it."""
    log.info("retrying in %.2fs after: %s (attempt %d of %d)", wait, error.headline(), attempt + 2, policy.attempts)
    if on_wait is not None:
        await on_wait(wait, error)
