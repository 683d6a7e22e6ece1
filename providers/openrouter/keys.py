"""Is this OpenRouter, and does it take this key? ``GET /models`` and ``GET /key``, asked once, never retried.

Used by ``chorus doctor`` and by onboarding before a key is saved. ``GET /key`` answers
``{data: {label, limit, limit_remaining, usage, is_free_tier, ...}}`` for a good key and 401 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp

from .client import Response, one_off_session

Verdict = Literal["ok", "refused", "unreachable", "unexpected"]


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one probe: a verdict, the HTTP status if any answer came, and the JSON ``data``."""

    verdict: Verdict
    status: int | None = None
    data: Any = field(default=None, repr=False)
    error: str = ""


async def _get(base_url: str, path: str, key: str | None, timeout: float) -> tuple[Response | None, str]:
    """The whole answer, or ``None`` and why there was none."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.rstrip("/") + path
    try:
        async with one_off_session(url, aiohttp.ClientTimeout(total=timeout)) as http:
            async with http.get(url, headers=headers) as resp:
                return Response(resp.status, resp.headers, await resp.read()), ""
    except (TimeoutError, aiohttp.ClientError) as exc:
        return None, type(exc).__name__


def _data(resp: Response) -> Any:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body.get("data") if isinstance(body, dict) else None


async def probe_models(base_url: str, *, timeout: float = 10.0) -> Probe:
    """``GET /models`` must answer 200 with ``{data: [{id, ...}, ...]}``: the shape of OpenRouter's catalog."""
    resp, error = await _get(base_url, "/models", None, timeout)
    if resp is None:
        return Probe("unreachable", error=error)
    data = _data(resp) if resp.status == 200 else None
    if not (isinstance(data, list) and data and all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data)):
        return Probe("unexpected", resp.status)
    return Probe("ok", 200, data)


async def probe_key(base_url: str, key: str, *, timeout: float = 10.0) -> Probe:
    """``GET /key`` with ``key``: ``ok`` with the key's details, ``refused`` on 401/403."""
    resp, error = await _get(base_url, "/key", key, timeout)
    if resp is None:
        return Probe("unreachable", error=error)
    if resp.status in (401, 403):
        return Probe("refused", resp.status)
    data = _data(resp) if resp.status == 200 else None
    if not isinstance(data, dict):
        return Probe("unexpected", resp.status)
    return Probe("ok", 200, data)
