"""Model references as written in the config: ``<provider>/<model id>``."""

from __future__ import annotations

from dataclasses import dataclass

KNOWN_PROVIDERS = ("openrouter",)


def same_family(slug: str, other: str) -> bool:
    """Whether two upstream slugs are one vendor's models (``google/…``), whose stored thoughts the other reads."""
    return slug.partition("/")[0] == other.partition("/")[0]


class ModelRefError(ValueError):
    """A model ref that names no known provider or no model."""


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed ref: ``openrouter/moonshotai/kimi-k2.6`` → provider ``openrouter``, id ``moonshotai/kimi-k2.6``."""

    provider: str
    model_id: str

    @classmethod
    def parse(cls, ref: str) -> ModelRef:
        """Parse a ref. OpenRouter being the only provider, its own ids are refs too: ``anthropic/claude-sonnet-4.5``
        is ``openrouter/anthropic/claude-sonnet-4.5``, ``auto`` is ``openrouter/auto``."""
        ref = ref.strip()
        provider, sep, model_id = ref.partition("/")
        if ref == "auto" or (sep and provider and model_id and provider not in KNOWN_PROVIDERS
                             and not any(c.isspace() for c in ref)):
            return cls.from_slug("openrouter/auto" if ref == "auto" else ref)
        if not sep or provider not in KNOWN_PROVIDERS or not model_id:
            known = ", ".join(f"{p}/<model id>" for p in KNOWN_PROVIDERS)
            raise ModelRefError(f"model ref {ref!r} is not of the form {known} (known providers: {', '.join(KNOWN_PROVIDERS)})")
        return cls(provider, model_id)

    @classmethod
    def from_slug(cls, slug: str, provider: str = "openrouter") -> ModelRef:
        """The ref of an upstream slug: ``openrouter/auto`` → ``openrouter/auto``, ``x/y`` → ``openrouter/x/y``."""
        return cls(provider, "auto" if slug == "openrouter/auto" else slug)

    @property
    def slug(self) -> str:
        """The upstream ``model`` field: the id, except ``auto`` which OpenRouter calls ``openrouter/auto``."""
        return "openrouter/auto" if self.model_id == "auto" else self.model_id

    @property
    def is_auto(self) -> bool:
        return self.slug == "openrouter/auto"

    def __str__(self) -> str:
        return f"{self.provider}/{self.model_id}"
