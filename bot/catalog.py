"""The OpenRouter model catalog, cached in the database for a day: model lookup, reasoning support, context length."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.openrouter.client import OpenRouterClient
from providers.openrouter.errors import OpenRouterError
from providers.openrouter.refs import ModelRef

from .bundled_catalog import BUNDLED_MODELS
from .db.base import DB_ERRORS, Database
from .kept import KeptValues

log = logging.getLogger("chorus.catalog")
MAX_AGE = 24 * 3600
CATALOG_KEY = "openrouter:models"  # its row in ``shared_values``
LIVE, CACHED = "OpenRouter's live catalog", "OpenRouter's catalog as cached today"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What Chorus needs to know of one catalog entry."""

    id: str
    name: str
    context_length: int | None
    input_modalities: tuple[str, ...]  # empty when the catalog does not say
    output_modalities: tuple[str, ...]
    supported_parameters: tuple[str, ...]
    prompt_price: str | None
    completion_price: str | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> ModelInfo:
        arch = raw.get("architecture") or {}
        pricing = raw.get("pricing") or {}
        return cls(
            id=raw["id"], name=raw.get("name") or raw["id"], context_length=raw.get("context_length"),
            input_modalities=tuple(arch.get("input_modalities") or ()),
            output_modalities=tuple(arch.get("output_modalities") or ("text",)),
            supported_parameters=tuple(raw.get("supported_parameters") or ()),
            prompt_price=pricing.get("prompt"), completion_price=pricing.get("completion"),
        )

    @property
    def sees_images(self) -> bool:
        """Whether the model takes images (assumed when the catalog does not list its inputs)."""
        return not self.input_modalities or "image" in self.input_modalities

    @property
    def supports_tools(self) -> bool:
        """Whether the model takes tools (assumed when the catalog does not list its parameters)."""
        return not self.supported_parameters or "tools" in self.supported_parameters

    @property
    def supports_reasoning(self) -> bool:
        return "reasoning" in self.supported_parameters


class Catalog:
    """``GET /models?output_modalities=all``, kept for a day in the database (``shared_values``), where every
    instance on it finds what one fetched. Without a database (``db`` ``None``), in memory only."""

    def __init__(self, llm: OpenRouterClient, db: Database | None, *, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.time) -> None:
        self.llm = llm
        self.kept = KeptValues(db, clock) if db is not None else None
        self.max_age = max_age
        self.clock = clock
        self._models: dict[str, ModelInfo] | None = None
        self._fetched_at = 0.0  # when the models in memory were fetched (by whichever instance fetched them)
        self.source = LIVE  # which catalog ``models`` gave, in words for the user

    async def models(self, *, refresh: bool = False) -> dict[str, ModelInfo]:
        """Every model by id: from memory or the database's copy if younger than ``max_age``, else the API.

        The memory copy ages like the database's: a service that runs for weeks still sees new models."""
        if self._models is not None and not refresh and not self._stale(self._fetched_at):
            return self._models
        raw = None if refresh else await self._read_cache()
        self.source = CACHED
        if raw is None:
            try:
                raw, self.source = await self.llm.models("all"), LIVE
            except OpenRouterError:
                if self._models is None or refresh:
                    raise
                return self._models  # an outage keeps the day-old catalog rather than none at all
            self._fetched_at = self.clock()
            await self._write_cache(raw)
        return self._keep(raw)

    async def models_or_bundled(self, *, refresh: bool = False) -> dict[str, ModelInfo]:
        """Like ``models``, but when OpenRouter cannot be reached: an older cache, else the bundled catalog."""
        try:
            return await self.models(refresh=refresh)
        except OpenRouterError as exc:
            stale = await self._read_cache(max_age=float("inf"))
            self.source = f"{'a stale cache' if stale else 'the bundled catalog'} (OpenRouter's could not be reached: {exc.headline()})"
            return self._keep(stale or BUNDLED_MODELS)

    def _keep(self, raw: list[dict[str, Any]]) -> dict[str, ModelInfo]:
        self._models = {m["id"]: ModelInfo.parse(m) for m in raw if isinstance(m, dict) and m.get("id")}
        return self._models

    async def lookup(self, ref: ModelRef) -> ModelInfo | None:
        """The entry for ``ref``, or ``None`` when unknown or the catalog cannot be had (never fails a turn)."""
        try:
            return (await self.models()).get(ref.slug)
        except OpenRouterError as exc:
            log.warning("model catalog unavailable: %s", exc)
            return None

    async def available(self) -> bool:
        """Whether the catalog can be had at all (so an outage never blocks a /model change)."""
        try:
            await self.models()
        except OpenRouterError:
            return False
        return True

    def _stale(self, fetched_at: float) -> bool:
        return self.clock() - fetched_at > self.max_age

    async def _read_cache(self, max_age: float | None = None) -> list[dict[str, Any]] | None:
        """The database's copy if younger than ``max_age`` (default ``self.max_age``); ``None`` when there is
        none, or the database cannot be read now (the catalog is then fetched, or the bundled one used)."""
        if self.kept is None:
            return None
        try:
            found = await self.kept.get(CATALOG_KEY, max_age=self.max_age if max_age is None else max_age)
            if found is None:
                return None
            raw = json.loads(found[0])
        except DB_ERRORS as exc:
            log.warning("the model catalog's cache cannot be read (%s: %s)", type(exc).__name__, exc)
            return None
        except ValueError:
            return None
        if not isinstance(raw, list):
            return None
        self._fetched_at = found[1]
        return raw

    async def _write_cache(self, raw: list[dict[str, Any]]) -> None:
        if self.kept is None:
            return
        try:
            await self.kept.put(CATALOG_KEY, json.dumps(raw))
        except DB_ERRORS as exc:  # the catalog stays in memory; the next instance (or day) fetches it again
            log.warning("the model catalog could not be cached (%s: %s)", type(exc).__name__, exc)


async def model_choices(catalog: Catalog | None, configured: list[str]) -> list[tuple[ModelRef, ModelInfo | None]]:
    """The models a chat is offered: the configured short list (``agents.defaults.models``), else the bundled
    chat models; each with its catalog entry (the live one, else the bundled one, else ``None``)."""
    bundled = {m["id"]: ModelInfo.parse(m) for m in BUNDLED_MODELS}
    return [(ref, (await catalog.lookup(ref) if catalog else None) or bundled.get(ref.slug))
            for ref in offered_refs(configured)]


def offered_refs(configured: list[str]) -> list[ModelRef]:
    """The configured short list (``agents.defaults.models``), else the bundled chat models."""
    return [ModelRef.parse(r) for r in configured] or [
        ModelRef.from_slug(m["id"]) for m in BUNDLED_MODELS if ModelInfo.parse(m).output_modalities == ("text",)]


def takes(info: ModelInfo | None) -> str:
    """``takes images and audio``, ``takes images``, or nothing: what a model hears and sees besides text."""
    kinds = [word for kind, word in (("image", "images"), ("audio", "audio"))
             if info is not None and kind in info.input_modalities]
    return f"takes {' and '.join(kinds)}" if kinds else ""


def matches_modality(info: ModelInfo, modality: str | None) -> bool:
    """Whether ``info`` produces ``modality`` (``transcription`` and ``speech`` are OpenRouter's own kinds)."""
    return modality is None or modality in info.output_modalities
