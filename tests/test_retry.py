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
