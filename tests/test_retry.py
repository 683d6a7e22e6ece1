"""Retries: which failures, how long between tries, and never after the answer started."""

from __future__ import annotations

import pytest

from providers.openrouter.errors import (
    AuthError, BadRequestError, ConnectionFailedError, CreditsError, ModerationError, RateLimitError,
    RequestTimeoutError, UpstreamError,
)
from providers.openrouter.retry import RetryPolicy, with_retries


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def run(call: Flaky, policy: RetryPolicy = RetryPolicy(attempts=4)) -> tuple[object, list[float]]:
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return await with_retries(call, policy, sleep=sleep, rng=lambda: 1.0), delays


async def test_rate_limit_waits_as_long_as_retry_after_says():
    result, delays = await run(Flaky(RateLimitError(retry_after=7), RateLimitError(retry_after=500)))
    assert result == "ok" and delays == [7, 60.0]  # capped at max_retry_after


@pytest.mark.parametrize("error", [
    RequestTimeoutError(), UpstreamError(status=502), UpstreamError(status=503), ConnectionFailedError("ConnectError"),
])
async def test_transient_failures_back_off_exponentially_until_attempts_run_out(error):
    call = Flaky(error, error, error, error)
    with pytest.raises(type(error)):
        await run(call)
    assert call.calls == 4
    _, delays = await run(Flaky(error, error, error))
    assert delays == [0.5, 1.0, 2.0]


@pytest.mark.parametrize("error", [BadRequestError(), AuthError(), CreditsError(), ModerationError()])
async def test_client_errors_are_never_retried(error):
    call = Flaky(error)
    with pytest.raises(type(error)):
        await run(call)
    assert call.calls == 1


async def test_jitter_stays_within_the_backoff_window():
    policy = RetryPolicy(attempts=2, base_delay=1.0)
    for r in (0.0, 0.25, 0.999):
        delays: list[float] = []

        async def sleep(seconds: float) -> None:
            delays.append(seconds)

        await with_retries(Flaky(UpstreamError()), policy, sleep=sleep, rng=lambda: r)
        assert 0.0 <= delays[0] <= 1.0 and delays[0] == pytest.approx(r)


def test_a_wait_that_ends_exactly_at_the_budget_is_still_waited():
    policy = RetryPolicy(attempts=3, budget=10.0)
    assert policy.wait_before_retry(0, RateLimitError(retry_after=2), elapsed=8.0) == 2.0
    assert policy.wait_before_retry(0, RateLimitError(retry_after=2), elapsed=8.5) is None  # past it: say so now


async def test_backoff_stops_growing_at_max_delay():
    _, delays = await run(Flaky(*[UpstreamError(status=502)] * 5), RetryPolicy(attempts=6, base_delay=8.0, max_delay=20.0))
    assert delays == [8.0, 16.0, 20.0, 20.0, 20.0]


async def test_the_budget_counts_the_time_already_spent_trying():
    """Each try takes 4 s on this clock: after two tries and a 1 s wait, a 1 s wait would end past the 10 s budget."""
    now = 0.0
    delays: list[float] = []

    async def call() -> str:
        nonlocal now
        now += 4.0
        raise UpstreamError(status=502)

    async def sleep(seconds: float) -> None:
        nonlocal now
        delays.append(seconds)
        now += seconds

    with pytest.raises(UpstreamError):
        await with_retries(call, RetryPolicy(attempts=5, base_delay=1.0, budget=10.0), sleep=sleep,
                           rng=lambda: 1.0, clock=lambda: now)
    assert delays == [1.0]  # 4 s + 1 s + 4 s = 9 s spent; 9 + 2 > 10
