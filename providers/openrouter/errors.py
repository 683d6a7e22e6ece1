"""Typed OpenRouter failures whose text a user can act on. No error ever carries the key."""

from __future__ import annotations

import json
import time
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import Any

from providers.redact import redact

DETAIL_LIMIT = 300


class OpenRouterError(Exception):
    """An OpenRouter request failed; ``str(err)`` is a sentence for the user."""

    status: int | None = None
    retryable = False
    # Whether sending the same message again would fail the same way (a refused input, a
    # provider that crashes on it): such a turn is kept but left out of later requests.
    repeats = True
    # Whether the advice is for whoever runs the bot (a key, credits), not for a group's members.
    for_operator = False
    advice = "Try again in a moment."

    def __init__(self, detail: str = "", *, status: int | None = None, code: Any = None, retry_after: float | None = None) -> None:
        # Masked here, once: the sentence reaches chats and logs by many paths, and an upstream or proxy
        # may echo the Authorization header back. Masked before cutting, so no half key survives the cut.
        self.detail = redact(detail)[:DETAIL_LIMIT]
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

    @property
    def refuses_images(self) -> bool:
        """The model (no provider of it) takes image input: OpenRouter says 404 "No endpoints found that
        support image input"; some providers say 400 "... does not support image input"."""
        return self.status in (400, 404) and "image input" in self.detail.lower()

    @property
    def refuses_tools(self) -> bool:
        """The model takes no tools: OpenRouter says 404 "No endpoints found that support tool use"."""
        return self.status in (400, 404) and "tool use" in self.detail.lower()

    @property
    def refuses_tool_ids(self) -> bool:
        """The model's template takes only Mistral's tool-call ids: "Tool call id was call_… but must be a-z,
        A-Z, 0-9, with a length of 9", passed on by OpenRouter as a provider's 400."""
        detail = self.detail.lower()
        return self.status == 400 and "tool call id" in detail and "length of 9" in detail


class BadRequestError(OpenRouterError):
    status = 400

    @property
    def by_provider(self) -> bool:
        """The model's provider refused what OpenRouter passed on (a prompt too long, a template's rule)."""
        return self.detail.startswith("Provider returned error")

    @property
    def advice(self) -> str:  # type: ignore[override]
        if self.by_provider:
            return "Start over with /new, or switch models with /model."
        return "Check the model name and the request settings in the config."

    def headline(self) -> str:
        return "The model's provider refused the request" if self.by_provider else "OpenRouter refused the request as malformed"


class AuthError(OpenRouterError):
    status = 401
    repeats = False  # the key's fault, not the message's: it stays in the conversation
    for_operator = True
    advice = "Run `chorus onboard` or `chorus models auth login --provider openrouter` to store a valid key."

    def headline(self) -> str:
        return "OpenRouter did not accept the API key (it is wrong or was revoked)"


class CreditsError(OpenRouterError):
    status = 402
    repeats = False  # once the owner tops up, the question is still there
    for_operator = True
    advice = "Add credits at https://openrouter.ai/settings/credits, or pick a cheaper or free model with /model."

    def headline(self) -> str:
        return "The OpenRouter account is out of credits"


class ModerationError(OpenRouterError):
    status = 403
    advice = "Rephrase the message."

    def headline(self) -> str:
        return "OpenRouter's moderation flagged the input"


class NoProviderError(OpenRouterError):
    status = 404
    advice = ("The model may be retired, or none of its providers meets the account's settings (privacy, "
              "provider order); pick another model with /model (`chorus models list` shows them).")

    def headline(self) -> str:
        return "OpenRouter has no provider that serves this request"


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
    repeats = False  # the provider's trouble, not the message's
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
    advice = "Try again."  # the headline already says it was cut off

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
    404: NoProviderError,
    408: RequestTimeoutError,
    429: RateLimitError,
}


def error_message(error: dict[str, Any]) -> str:
    """The sentence of an OpenRouter ``error`` object, with the upstream provider's own words when it passed
    them on (``metadata.provider_name`` and ``metadata.raw``): "Provider returned error" alone says nothing."""
    message = str(error.get("message") or "")
    meta = error.get("metadata")
    if not isinstance(meta, dict) or not meta.get("raw"):
        return message
    raw = meta["raw"]
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            pass
    while isinstance(raw, dict):  # {"error": {"message": ...}}, {"message": ...}, {"detail": ...}
        raw = raw.get("error") or raw.get("message") or raw.get("detail") or ""
    said = " ".join(str(raw).split())
    provider = meta.get("provider_name")
    return f"{message}: {provider + ' said ' if provider else ''}{said}" if said else message


def error_for_status(status: int, body: Any, retry_after: str | None = None) -> OpenRouterError:
    """Map an HTTP error response to its typed exception, taking the message from ``{error: {code, message}}``."""
    detail, code = "", None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = error_message(body["error"])
        code = body["error"].get("code")
    elif isinstance(body, str):
        detail = body.strip()
    cls = _BY_STATUS.get(status) or (UpstreamError if status >= 500 else OpenRouterError)
    return cls(detail, status=status, code=code, retry_after=parse_retry_after(retry_after))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (``"2"``) or an HTTP date
    (``"Wed, 21 Oct 2026 07:28:00 GMT"``, counted from ``now``); ``None`` when absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": still GMT, as every HTTP date is
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
