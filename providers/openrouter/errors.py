"""Typed OpenRouter failures whose text a user can act on. No error ever carries the key."""

from __future__ import annotations

from typing import Any


class OpenRouterError(Exception):
    """An OpenRouter request failed; ``str(err)`` is a sentence for the user."""

    status: int | None = None
    retryable = False
    # Whether sending the same message again would fail the same way (a refused input, a
    # provider that crashes on it): such a turn is kept but left out of later requests.
    repeats = True
    advice = "Try again in a moment."

    def __init__(self, detail: str = "", *, status: int | None = None, code: Any = None, retry_after: float | None = None) -> None:
        self.detail = detail
        if status is not None:
            self.status = status
        self.code = code
        self.retry_after = retry_after
        super().__init__(self.sentence())

    def sentence(self) -> str:
        head = self.headline()
        detail = f" ({self.detail})" if self.detail else ""
        return f"{head}{detail}. {self.advice}".strip()

    def headline(self) -> str:
        return f"OpenRouter request failed with HTTP {self.status}" if self.status else "OpenRouter request failed"


class BadRequestError(OpenRouterError):
    status = 400
    advice = "Check the model name and the request settings in the config."

    def headline(self) -> str:
        return "OpenRouter refused the request as malformed"


class AuthError(OpenRouterError):
    status = 401
    advice = "Run `chorus onboard` or `chorus models auth login --provider openrouter` to store a valid key."

    def headline(self) -> str:
        return "OpenRouter did not accept the API key (it is wrong or was revoked)"


class CreditsError(OpenRouterError):
    status = 402
    advice = "Add credits at https://openrouter.ai/settings/credits, or pick a cheaper or free model with /model."

    def headline(self) -> str:
        return "The OpenRouter account is out of credits"


class ModerationError(OpenRouterError):
    status = 403
    advice = "Rephrase the message."

    def headline(self) -> str:
        return "OpenRouter's moderation flagged the input"


class RequestTimeoutError(OpenRouterError):
    repeats = False
    status = 408
    retryable = True

    def headline(self) -> str:
        return "The model took too long to answer"


class RateLimitError(OpenRouterError):
    repeats = False
    status = 429
    retryable = True

    @property
    def advice(self) -> str:  # type: ignore[override]
        wait = f"Try again in {self.retry_after:.0f} s" if self.retry_after else "Wait a little and try again"
        return f"{wait}, or switch models with /model."

    def headline(self) -> str:
        return "OpenRouter is rate limiting requests"


class UpstreamError(OpenRouterError):
    status = 502
    retryable = True
    advice = "The model's provider is having trouble; try again shortly or switch models with /model."

    def headline(self) -> str:
        if self.status == 503:
            return "No provider is available for this model right now"
        return "The model's provider is down or sent a broken answer"


class ConnectionFailedError(OpenRouterError):
    repeats = False
    retryable = True
    advice = "Check the network and `models.providers.openrouter.baseUrl`, then try again."

    def headline(self) -> str:
        return "Could not reach OpenRouter"


class StreamError(OpenRouterError):
    """An error chunk arrived after the answer had started."""

    advice = "The answer was cut off; try again."

    def headline(self) -> str:
        return "The model stopped with an error mid-answer"


class IncompleteStreamError(StreamError):
    """The stream broke off (no finish, malformed data, silence): worth another try while nothing was shown."""

    repeats = False
    retryable = True

    def headline(self) -> str:
        return "The answer was cut off before it was complete"


class EmptyAnswerError(OpenRouterError):
    repeats = False
    retryable = True
    advice = "Try again, or rephrase, or switch models with /model."

    def headline(self) -> str:
        return "The model sent back an empty answer"


_BY_STATUS: dict[int, type[OpenRouterError]] = {
    400: BadRequestError,
    401: AuthError,
    402: CreditsError,
    403: ModerationError,
    408: RequestTimeoutError,
    429: RateLimitError,
}


def error_for_status(status: int, body: Any, retry_after: str | None = None) -> OpenRouterError:
    """Map an HTTP error response to its typed exception, taking the message from ``{error: {code, message}}``."""
    detail, code = "", None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = str(body["error"].get("message") or "")[:300]
        code = body["error"].get("code")
    elif isinstance(body, str):
        detail = body.strip()[:300]
    cls = _BY_STATUS.get(status) or (UpstreamError if status >= 500 else OpenRouterError)
    return cls(detail, status=status, code=code, retry_after=parse_retry_after(retry_after))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds form; HTTP dates are rare here and ignored)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
