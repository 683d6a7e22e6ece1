"""Chat-completions request shaping: one function of (model, settings, conversation) → (path, headers, body).

``build_chat_request`` applies a short list of named steps, each one rule of the
contract (``openrouter-contract.md``, "Request shaping"), so each can be checked
against it on its own:

| rule                                   | step                    | test (tests/test_request_shaping.py)          |
| -------------------------------------- | ----------------------- | --------------------------------------------- |
| model ref → upstream slug              | ``_base``               | test_model_refs_become_upstream_slugs         |
| usage accounting, stream, tools        | ``_base``               | test_base_body_has_usage_stream_and_tools     |
| attribution headers, real URL only     | ``_attribution``        | test_attribution_headers_only_on_openrouter_ai |
|   (and on every other request)         | ``attribution_headers`` | test_attribution_on_every_request_to_openrouter_ai (client) |
| response cache headers, real URL only  | ``_response_cache``     | test_response_cache_headers_and_aliases       |
| provider routing default + override    | ``_routing``            | test_provider_routing_default_and_override    |
|   default on text models only          | ``_routing``            | test_default_routing_only_on_text_models      |
| extraBody merged as is                 | ``_extra_body``         | test_extra_body_is_merged                     |
| Fusion: system note, no forced tools   | ``_fusion``             | test_fusion_note_and_no_forced_tool_choice    |
|   model names as slugs only            | ``_model_name``         | test_fusion_note_names_only_slugs             |
| thinking → reasoning.effort            | ``_reasoning``          | test_thinking_levels_map_to_reasoning         |
|   none for retired hunter-alpha        | ``_reasoning_on``       | test_retired_hunter_alpha_gets_no_reasoning   |
| stored reasoning replayed per family   | ``_reasoning_replay``   | test_gemini_reasoning_details_are_replayed    |
| DeepSeek V4 replay + reasoning_effort  | ``_deepseek``           | test_deepseek_v4_replay_and_effort            |
| Anthropic cache_control, prefill drop  | ``_anthropic``          | test_anthropic_cache_markers_and_prefill_drop |
|   quirks on the real URL only          | both of the above       | test_model_quirks_only_on_the_real_openrouter |
| Gemini reasoning_details kept          | ``_gemini``             | test_gemini_reasoning_details_are_replayed    |
| OpenAI-only fields never forwarded     | ``_strip_openai_only``  | test_openai_only_fields_are_never_sent        |
|   nor extraBody's OpenAI-only fields   | ``_strip_openai_only``  | test_openai_only_extra_body_fields_are_stripped |
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .refs import ModelRef

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
PROJECT_URL = "https://github.com/chorus-bot/chorus"
TITLE = "Chorus"
CATEGORIES = ("general-chat", "personal-agent")  # names from OpenRouter's category list, as the provider page spells them
EFFORTS = ("minimal", "low", "medium", "high", "xhigh")
STALE_EFFORTS = {"max": "xhigh"}  # older OpenClaw / DeepSeek spellings of the highest level
DEEPSEEK_V4 = ("deepseek/deepseek-v4-flash", "deepseek/deepseek-v4-pro")
OPENAI_ONLY = ("service_tier", "store", "prompt_cache_key", "prompt_cache_retention", "reasoning_summary", "previous_response_id")
NO_REASONING = ("openrouter/hunter-alpha",)  # retired route: it answers in the reasoning fields, so never ask for them
FUSION_NAME_MAX = 100  # a model slug is far shorter; anything longer is not a name
FUSION_PANEL_MAX = 12  # names in the note at most: it is a hint for the agent, not a config dump


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """The provider-level knobs from the config, as plain data (providers never import the bot's config)."""

    base_url: str = DEFAULT_BASE_URL
    provider_params: Mapping[str, Any] = field(default_factory=dict)  # models.providers.openrouter.params.provider
    model_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # agents.defaults.models.<ref>.params

    @property
    def is_openrouter(self) -> bool:
        """Only the real OpenRouter gets attribution and cache headers, never a custom proxy."""
        return self.base_url.rstrip("/") == DEFAULT_BASE_URL

    def params_for(self, ref: ModelRef) -> Mapping[str, Any]:
        return self.model_params.get(str(ref)) or {}


def attribution_headers(settings: ProviderSettings) -> dict[str, str]:
    """The app attribution headers, for every request to the real openrouter.ai (never a custom proxy)."""
    if not settings.is_openrouter:
        return {}
    # X-Title is the name OpenRouter's dashboard reads today; X-OpenRouter-Title is the contract's.
    return {"HTTP-Referer": PROJECT_URL, "X-OpenRouter-Title": TITLE, "X-Title": TITLE,
            "X-OpenRouter-Categories": ",".join(CATEGORIES)}


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

    @property
    def is_text(self) -> bool:
        """A text-model request (chat), not image or music generation through chat completions."""
        return set(self.extra.get("modalities") or ["text"]) <= {"text"}


@dataclass(slots=True)
class PreparedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


Step = Callable[[PreparedRequest, ChatSpec, ProviderSettings], None]


def build_chat_request(spec: ChatSpec, settings: ProviderSettings) -> PreparedRequest:
    """The request for ``spec``; the caller's messages are never modified."""
    req = PreparedRequest("/chat/completions", {}, {})
    for step in STEPS:
        step(req, spec, settings)
    return req


def stale_effort(level: object) -> str | None:
    """Today's name of a stale thinking level (``max`` → ``xhigh``), or ``None`` when ``level`` is not stale."""
    return STALE_EFFORTS.get(level.strip().lower()) if isinstance(level, str) else None


def _param(params: Mapping[str, Any], camel: str, snake: str) -> Any:
    return params[camel] if camel in params else params.get(snake)


def _base(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    # Each step below sets, pops or replaces a message's own keys and never changes what they hold, so a copy
    # of each message keeps the caller's history as it was (a deep copy was 87% of this function's time).
    req.body.update(model=spec.ref.slug, messages=[dict(m) for m in spec.messages], usage={"include": True})
    req.body.update(copy.deepcopy(spec.extra))
    if spec.stream:
        req.body["stream"] = True
    if spec.tools:
        req.body["tools"] = spec.tools


def _attribution(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    req.headers.update(attribution_headers(settings))


def _response_cache(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    if not settings.is_openrouter:
        return
    params = settings.params_for(spec.ref)
    if _param(params, "responseCache", "response_cache"):
        req.headers["X-OpenRouter-Cache"] = "true"
        ttl = _param(params, "responseCacheTtlSeconds", "response_cache_ttl_seconds")
        if ttl:
            req.headers["X-OpenRouter-Cache-TTL"] = str(int(ttl))
        if _param(params, "responseCacheClear", "response_cache_clear"):
            req.headers["X-OpenRouter-Cache-Clear"] = "true"


def _routing(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    # A model's own provider object replaces the default whole: routing fields interact
    # (order vs sort, only vs ignore), so mixing two objects could route where neither meant.
    # The default object is for text models; image and music generation take only their model's own.
    provider = settings.params_for(spec.ref).get("provider") or (settings.provider_params if spec.is_text else None)
    if provider:
        req.body["provider"] = copy.deepcopy(dict(provider))


def _extra_body(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    extra = _param(settings.params_for(spec.ref), "extraBody", "extra_body")
    if isinstance(extra, Mapping):
        req.body.update(copy.deepcopy(dict(extra)))


def fusion_note(params: Mapping[str, Any]) -> str | None:
    """The system-prompt note naming a Fusion panel's analysis models and judge, when one is configured."""
    extra = _param(params, "extraBody", "extra_body") or {}
    for plugin in extra.get("plugins") or []:
        if isinstance(plugin, Mapping) and plugin.get("id") == "fusion":
            listed = plugin.get("analysis_models")
            names = [n for n in map(_model_name, listed if isinstance(listed, list) else []) if n][:FUSION_PANEL_MAX]
            panel = ", ".join(names) or "OpenRouter's default panel"
            judge = _model_name(plugin.get("model")) or "OpenRouter's default judge"
            return f"You answer through OpenRouter Fusion: the analysis models {panel} draft answers and {judge} judges them into one."
    return None


def _model_name(name: object) -> str:
    """A configured model name as it may enter the system prompt: its leading slug characters, bounded.

    The note is prompt text, so a "name" holding newlines and instructions must not reach it whole.
    """
    slug = re.match(r"[A-Za-z0-9._:/@-]*", str(name or ""))
    return slug.group(0)[:FUSION_NAME_MAX] if slug else ""


def _fusion(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    note = fusion_note(settings.params_for(spec.ref))
    if note is None:
        return
    if req.body.get("tool_choice") == "required":
        del req.body["tool_choice"]  # Fusion's panel cannot be forced into a tool call
    messages = req.body["messages"]
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        messages[0]["content"] = f"{messages[0]['content']}\n\n{note}"
    else:
        messages.insert(0, {"role": "system", "content": note})


def _reasoning_on(spec: ChatSpec) -> bool:
    return (spec.thinking in EFFORTS and not spec.ref.is_auto and spec.ref.slug not in NO_REASONING
            and spec.supports_reasoning is not False)


def _reasoning(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    # "off" sends nothing: the model's own default applies, which for most is no reasoning.
    if _reasoning_on(spec) and spec.ref.slug not in DEEPSEEK_V4:
        req.body["reasoning"] = {"effort": spec.thinking}


_REPLAY_DETAIL_TYPES = ("reasoning.text", "reasoning.summary", "reasoning.encrypted")
_DETAIL_FIELDS = ("type", "id", "format", "index", "text", "summary", "signature", "data")


def sanitize_reasoning_details(details: object) -> list[dict[str, Any]]:
    """The ``reasoning_details`` entries fit to replay to Gemini: known types, Gemini's own (or no) format,
    plain string/number fields only; anything else (another family's signatures, odd shapes) is dropped."""
    kept = []
    for entry in details if isinstance(details, list) else ():
        if not isinstance(entry, Mapping) or entry.get("type") not in _REPLAY_DETAIL_TYPES:
            continue
        if not str(entry.get("format") or "google").startswith(("google", "unknown")):
            continue
        kept.append({k: entry[k] for k in _DETAIL_FIELDS
                     if isinstance(entry.get(k), (str, int)) and not isinstance(entry.get(k), bool)})
    return kept


def _reasoning_replay(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    # Stored thoughts go back only to the family that reads them: DeepSeek V4 its reasoning_content,
    # Gemini its sanitised reasoning_details (thought signatures); other models get neither.
    deepseek, gemini = spec.ref.slug in DEEPSEEK_V4, spec.ref.slug.startswith("google/")
    for message in req.body["messages"]:
        if message.get("role") != "assistant":
            continue
        thought, stored = message.pop("reasoning", None), message.pop("reasoning_details", None)
        details = sanitize_reasoning_details(stored) if gemini else []  # popped for every family, kept for Gemini
        if details:
            message["reasoning_details"] = details
        if not deepseek:
            message.pop("reasoning_content", None)
        elif message.get("reasoning_content") is None and thought:
            message["reasoning_content"] = thought


def _deepseek(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    if spec.ref.slug not in DEEPSEEK_V4:
        return
    for message in req.body["messages"] if settings.is_openrouter else ():
        if message.get("role") == "assistant" and message.get("reasoning_content") is None:
            message["reasoning_content"] = ""  # thinking + tools replays must keep DeepSeek's shape
    effort = req.body.pop("reasoning_effort", None) or (spec.thinking if _reasoning_on(spec) else None)
    if effort:
        req.body["reasoning_effort"] = stale_effort(effort) or effort


def _anthropic(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    if not (spec.ref.slug.startswith("anthropic/") and settings.is_openrouter):
        return  # OpenRouter's own Anthropic markers: a custom proxy may not know them
    for message in req.body["messages"]:
        if message.get("role") in ("system", "developer") and isinstance(message.get("content"), str):
            message["content"] = [{"type": "text", "text": message["content"], "cache_control": {"type": "ephemeral"}}]
    messages = req.body["messages"]
    if _reasoning_on(spec) and messages and messages[-1].get("role") == "assistant" and not messages[-1].get("tool_calls"):
        messages.pop()  # Anthropic refuses a prefill while thinking: end on the user's turn


_GEMINI_REPLAY_KEYS = {"role", "content", "tool_calls", "reasoning_details", "name"}


def _gemini(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    if not spec.ref.slug.startswith("google/"):
        return
    for i, message in enumerate(req.body["messages"]):
        if message.get("role") == "assistant":
            req.body["messages"][i] = {k: v for k, v in message.items() if k in _GEMINI_REPLAY_KEYS}


def _strip_openai_only(req: PreparedRequest, spec: ChatSpec, settings: ProviderSettings) -> None:
    for key in OPENAI_ONLY:
        req.body.pop(key, None)
    if spec.ref.slug not in DEEPSEEK_V4:
        req.body.pop("reasoning_effort", None)  # OpenAI's form; OpenRouter takes reasoning.effort
    text = req.body.get("text")
    if isinstance(text, dict):  # Responses-API verbosity has no meaning on chat completions
        text.pop("verbosity", None)
        if not text:
            del req.body["text"]


STEPS: tuple[Step, ...] = (
    _base, _attribution, _response_cache, _routing, _extra_body, _fusion,
    _reasoning, _reasoning_replay, _deepseek, _anthropic, _gemini, _strip_openai_only,
)
