"""Is this OpenRouter, and does it take this key? ``GET /models`` and ``GET /key``, asked once, never retried.

Used by ``chorus doctor`` and by onboarding before a key is saved. ``GET /key`` answers
``{data: {label, limit, limit_remaining, usage, is_free_tier, ...}}`` for a good key and 401 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from net.http import Proxy

from .client import OpenRouterClient, Response
from .errors import OpenRouterError
from .request import ProviderSettings
from .retry import RetryPolicy

Verdict = Literal["ok", "refused", "unreachable", "unexpected"]


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one probe: a verdict, the HTTP status if any answer came, and the JSON ``data``."""

    verdict: Verdict
    status: int | None = None
    data: Any = field(default=None, repr=False)
    error: str = ""


async def _get(base_url: str, path: str, key: str | None, timeout: float,
               proxy: Proxy | None) -> tuple[Response | None, str]:
    """The whole answer, or ``None`` and why there was none; through the client every call to OpenRouter takes
    (its attribution headers, trust and proxy), tried once."""
    try:
        async with OpenRouterClient(key, ProviderSettings(base_url=base_url), timeout=timeout, proxy=proxy,
                                    retry=RetryPolicy(attempts=1)) as client:
            return await client.fetch("GET", path), ""
    except OpenRouterError as exc:
        return None, exc.detail or str(exc)


def _data(resp: Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("data") if isinstance(body, dict) else None


async def probe_models(base_url: str, *, timeout: float = 10.0, proxy: Proxy | None = None) -> Probe:
    """``GET /models`` must answer 200 with ``{data: [{id, ...}, ...]}``: the shape of OpenRouter's catalog."""
    resp, error = await _get(base_url, "models", None, timeout, proxy)
    if resp is None:
        return Probe("unreachable", error=error)
    data = _data(resp) if resp.status == 200 else None
    if not (isinstance(data, list) and data and all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data)):
        return Probe("unexpected", resp.status)
    return Probe("ok", 200, data)


async def probe_key(base_url: str, key: str, *, timeout: float = 10.0, proxy: Proxy | None = None) -> Probe:
    """``GET /key`` with ``key``: ``ok`` with the key's details, ``refused`` on 401/403."""
    resp, error = await _get(base_url, "key", key, timeout, proxy)
    if resp is None:
        return Probe("unreachable", error=error)
    if resp.status in (401, 403):
        return Probe("refused", resp.status)
    data = _data(resp) if resp.status == 200 else None
    if not isinstance(data, dict):
        return Probe("unexpected", resp.status)
    return Probe("ok", 200, data)
