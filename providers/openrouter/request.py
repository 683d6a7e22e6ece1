"""Chat-completions request shaping: one function of (model, settings, conversation) → (path, headers, body).

PLACEHOLDER: the full rule-by-rule builder replaces this (issue 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .refs import ModelRef

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """The provider-level knobs from the config, as plain data (providers never import the bot's config)."""

    base_url: str = DEFAULT_BASE_URL
    provider_params: Mapping[str, Any] = field(default_factory=dict)  # models.providers.openrouter.params.provider
    model_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # agents.defaults.models.<ref>.params


@dataclass(slots=True)
class ChatSpec:
    """One chat-completions call as the agent asks for it."""

    ref: ModelRef
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    stream: bool = False
    thinking: str = "off"
    supports_reasoning: bool | None = None  # from the catalog; None = unknown
    extra: dict[str, Any] = field(default_factory=dict)  # modalities, image_config, audio, max_tokens...


@dataclass(slots=True)
class PreparedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def build_chat_request(spec: ChatSpec, settings: ProviderSettings) -> PreparedRequest:
    """Build the request for ``spec``."""
    body: dict[str, Any] = {"model": spec.ref.slug, "messages": spec.messages, **spec.extra}
    if spec.tools:
        body["tools"] = spec.tools
    if spec.stream:
        body["stream"] = True
    body["usage"] = {"include": True}
    return PreparedRequest("/chat/completions", {}, body)
