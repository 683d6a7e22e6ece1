"""The config file: JSON5 whose keys follow OpenClaw's, validated into typed models.

A wrong type or value is refused with its full key path, what was found and what
is allowed; a key that looks like a typo of a known one is refused with "did you
mean"; keys Chorus does not use are named in one warning.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Any, Literal

import json5
from dotenv import dotenv_values
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from net.http import check_proxy_url
from providers.openrouter.refs import ModelRef, ModelRefError
from providers.openrouter.request import OPENAI_ONLY, stale_effort
from providers.redact import looks_secret, redact

from .json5_text import strip_digit_separators

DEFAULT_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_SYSTEM_PROMPT = (
    "You are Chorus, a helpful assistant in a chat app. Answer concisely and in the language the user writes in."
)


def _model_ref(value: str) -> str:
    try:
        ModelRef.parse(value)
    except ModelRefError as exc:
        raise ValueError(str(exc)) from None
    return value


ModelRefStr = Annotated[str, AfterValidator(_model_ref)]  # "openrouter/<model id>", checked at load


def _url(schemes: tuple[str, ...], example: str) -> AfterValidator:
    """A check that a setting is an absolute URL of one of ``schemes`` (a token pasted there is refused, unshown)."""
    def check(value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            parts = None
        if parts is None or parts.scheme not in schemes or not parts.hostname or re.search(r"\s", value):
            raise ValueError(f"must be a URL ({' or '.join(schemes)}) such as {example}")
        return value
    return AfterValidator(check)


BotApiUrl = Annotated[str, _url(("https", "http"), "https://api.telegram.org")]
WebhookUrl = Annotated[str, _url(("https", "http"), "https://bot.example.com/telegram-webhook")]
DiscordApiUrl = Annotated[str, _url(("https", "http"), "https://discord.com/api/v10")]
GatewayUrl = Annotated[str, _url(("wss", "ws"), "wss://gateway.discord.gg")]



def _one_line(value: SecretStr) -> SecretStr:
    if problem := one_line_problem(value.get_secret_value().strip()):  # a pasted trailing newline is trimmed later
        raise ValueError(problem)
    return value


def one_line_problem(secret: str) -> str:
    """Why ``secret`` cannot go into an HTTP header (a line break would be sent as extra header lines), or ""."""
    if any(c in secret for c in "\r\n\0"):
        return "holds a line break (CR or LF) or NUL, which would be sent as extra header lines; put it on one line"
    return ""


def check_secret(secret: str | None, where: str) -> str | None:
    """``secret`` (from a variable or file named by ``where``), or ``ConfigError`` when it is not one line."""
    if secret and (problem := one_line_problem(secret.strip())):
        raise ConfigError(f"{where}: {problem}")
    return secret


# A key or token: shown nowhere, and refused at load when it could not stand in a header.
Secret = Annotated[SecretStr, AfterValidator(_one_line)]
# A proxy URL: http(s)://, socks5:// or socks5h://, a login allowed (then hidden like a secret).
ProxyURL = Annotated[str, AfterValidator(check_proxy_url)]
Thinking = Literal["off", "minimal", "low", "medium", "high", "xhigh"]
DmPolicy = Literal["pairing", "allowlist", "open", "disabled"]
GroupPolicy = Literal["allowlist", "open", "disabled"]


class ConfigError(Exception):
    """The config cannot be used; ``str()`` lists every problem, one per line."""


class Section(BaseModel):
    """camelCase in the file, snake_case in code; frozen once loaded."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")


class ProviderParams(Section):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="allow")
    provider: dict[str, Any] = Field(default_factory=dict)


class OpenRouterProvider(Section):
    api_key: Secret | None = None
    base_url: str = DEFAULT_BASE_URL
    proxy: ProxyURL | None = None  # else HTTPS_PROXY / ALL_PROXY (NO_PROXY honoured)
    params: ProviderParams = Field(default_factory=ProviderParams)
    timeout_ms: int = Field(120_000, gt=0)
    max_retries: int = Field(3, ge=0, le=10)
    # A streamed answer's bounds: nothing at all for this long (OpenRouter's keep-alive comments
    # do not count), then no data between chunks for this long, and all tries and waits together.
    first_byte_timeout_ms: int = Field(90_000, gt=0)
    idle_timeout_ms: int = Field(60_000, gt=0)
    retry_budget_ms: int = Field(120_000, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http(s) URL such as https://openrouter.ai/api/v1")
        return value.rstrip("/")


class Providers(Section):
    openrouter: OpenRouterProvider = Field(default_factory=OpenRouterProvider)


class Models(Section):
    providers: Providers = Field(default_factory=Providers)


class ModelChoice(Section):
    primary: ModelRefStr = "openrouter/auto"
    fallbacks: list[ModelRefStr] = Field(default_factory=list)


class ModelEntry(Section):
    alias: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class MediaModel(Section):
    primary: ModelRefStr
    timeout_ms: int = Field(180_000, gt=0)
    poll_interval_ms: int = Field(10_000, gt=0)  # long jobs (video): how often to ask whether they are done


class AgentDefaults(Section):
    model: ModelChoice = Field(default_factory=ModelChoice)
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    image_generation_model: MediaModel = Field(
        default_factory=lambda: MediaModel(primary="openrouter/google/gemini-3.1-flash-image-preview")
    )
    video_generation_model: MediaModel = Field(
        default_factory=lambda: MediaModel(primary="openrouter/google/veo-3.1-fast", timeout_ms=600_000)
    )
    music_generation_model: MediaModel = Field(
        default_factory=lambda: MediaModel(primary="openrouter/google/lyria-3-pro-preview")
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    thinking_default: Thinking = "off"
    context_tokens: int = Field(128_000, gt=0)
    max_tool_iterations: int = Field(8, ge=1, le=50)
    timezone: str | None = None  # IANA zone for times without an offset (reminders); None: the host's

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        from .cron.schedule import ScheduleError, zone  # the zone database is read only when a zone is set

        if value is not None:
            try:
                zone(value)
            except ScheduleError as exc:
                raise ValueError(str(exc)) from None
        return value


class Agents(Section):
    defaults: AgentDefaults = Field(default_factory=AgentDefaults)


class TtsOpenRouter(Section):
    model: str = "hexgrad/kokoro-82m"
    speaker_voice: str = "af_alloy"
    response_format: Literal["mp3", "pcm"] = "mp3"
    api_key: Secret | None = None


class TtsProviders(Section):
    openrouter: TtsOpenRouter = Field(default_factory=TtsOpenRouter)


class Tts(Section):
    auto: Literal["off", "always", "inbound", "tagged"] = "off"
    provider: Literal["openrouter"] = "openrouter"
    providers: TtsProviders = Field(default_factory=TtsProviders)
    max_text_length: int = Field(1500, gt=0)
    summary_model: ModelRefStr | None = None
    text_delivery: Literal["normal", "caption", "suppress"] = "normal"
    timeout_ms: int = Field(30_000, gt=0)


class GroupChat(Section):
    history_limit: int = Field(50, ge=0)


class InboundSettings(Section):
    debounce_ms: int = Field(0, ge=0)


class Queue(Section):
    mode: Literal["followup", "collect"] = "followup"


class Stt(Section):
    echo: bool = False  # show what a voice note was heard as, quoted before the answer


class Messages(Section):
    tts: Tts = Field(default_factory=Tts)
    stt: Stt = Field(default_factory=Stt)
    # A reaction put on a message while it is answered in a group (where no draft shows), taken off when the
    # answer is out; "" for none. Scope as OpenClaw's: group mentions, every group message, or all chats.
    ack_reaction: str = ""
    ack_reaction_scope: Literal["group-mentions", "group-all", "all"] = "group-mentions"

    @field_validator("ack_reaction")
    @classmethod
    def _whole_emoji(cls, value: str) -> str:
        # JSON's "\ud83d\udc40" escapes arrive as two halves of a surrogate pair: joined, they are "👀".
        return value.encode("utf-16", "surrogatepass").decode("utf-16")
    # An edited message: "answer" replaces it while it waits or is being answered, else answers the new
    # version as a correction; "ignore" leaves edits unseen.
    edits: Literal["answer", "ignore"] = "answer"
    group_chat: GroupChat = Field(default_factory=GroupChat)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    queue: Queue = Field(default_factory=Queue)


class SttModel(Section):
    provider: Literal["openrouter"] = "openrouter"
    model: str


class AudioTools(Section):
    enabled: bool = True
    models: list[SttModel] = Field(default_factory=lambda: [SttModel(model="openai/whisper-large-v3-turbo")])
    language: str | None = None
    max_bytes: int = Field(20_000_000, gt=0)
    max_duration_seconds: int = Field(600, gt=0)


class ImageTools(Section):
    max_bytes: int = Field(20_000_000, gt=0)  # checked before an image is read; larger ones are refused
    keep_days: int = Field(30, ge=0)  # a stored image no request has used for this long is deleted; 0: kept


class DocumentTools(Section):
    max_bytes: int = Field(10_000_000, gt=0)  # checked before a document is fetched; larger ones are refused
    max_chars: int = Field(100_000, gt=0)  # of one document's text in the turn; the rest is cut, saying so


class MediaTools(Section):
    audio: AudioTools = Field(default_factory=AudioTools)
    image: ImageTools = Field(default_factory=ImageTools)
    document: DocumentTools = Field(default_factory=DocumentTools)


class Tools(Section):
    media: MediaTools = Field(default_factory=MediaTools)


class Retry(Section):
    """How a channel retries sending a part of an answer (OpenClaw's ``retry`` block): ``attempts`` sends in
    all, pauses from ``minDelayMs`` doubling up to ``maxDelayMs``, each moved by up to ``jitter`` either way."""

    attempts: int = Field(3, ge=1, le=20)
    min_delay_ms: int = Field(400, ge=0)
    max_delay_ms: int = Field(30_000, ge=0)
    jitter: float = Field(0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Retry:
        if self.max_delay_ms < self.min_delay_ms:
            raise ValueError("maxDelayMs must not be below minDelayMs")
        return self


class ChannelBase(Section):
    enabled: bool = True
    retry: Retry = Field(default_factory=Retry)
    dm_policy: DmPolicy = "pairing"
    allow_from: list[str | int] = Field(default_factory=list)
    group_policy: GroupPolicy = "allowlist"
    group_allow_from: list[str | int] = Field(default_factory=list)
    require_mention: bool = True
    # Whether the answer replies to the user's message: its first part, every part, or none. Unset: Discord
    # replies with the first part; Telegram in groups only (in a private chat a quote is noise).
    reply_to_mode: Literal["off", "first", "all"] | None = None
    # The owner's user id on this platform: always let in, and asked in a DM of their own, with Approve and
    # Deny buttons, about each pairing request.
    owner_id: str | int | None = None

    def lists_groups(self) -> bool:
        """Whether the channel's own allowlist of groups (Discord's ``guilds``) already admitted a group message."""
        return False


class TelegramGroup(Section):
    """One group's overrides under ``channels.telegram.groups`` (key: chat id, or "*" for every group)."""

    require_mention: bool | None = None


class TelegramChannel(ChannelBase):
    bot_token: Secret | None = None
    proxy: ProxyURL | None = None  # OpenClaw's key; else HTTPS_PROXY / ALL_PROXY (NO_PROXY honoured)
    token_file: str | None = None  # a file holding the token (e.g. a mounted secret); else TELEGRAM_BOT_TOKEN
    api_root: BotApiUrl | None = None  # a self-hosted Bot API server; larger upload limits then apply
    webhook_url: WebhookUrl | None = None  # set: webhook mode (nothing polls); unset: long polling
    webhook_secret: SecretStr | None = None
    webhook_path: str = "/telegram-webhook"
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(8787, gt=0, lt=65536)
    # OpenClaw's values: drafts in private chats unless "off"; groups get the final message, or with
    # "block" a preview message edited as the answer grows.
    streaming: Literal["off", "partial", "block", "progress"] = "partial"
    stream_throttle_ms: int = Field(700, ge=100)
    poll_timeout_seconds: int = Field(30, ge=0, le=50)
    timeout_seconds: float = Field(60, gt=0)  # a Bot API call silent this long is given up (and retried)
    groups: dict[str, TelegramGroup] = Field(default_factory=dict)

    @field_validator("webhook_secret")
    @classmethod
    def _secret_chars(cls, value: SecretStr | None) -> SecretStr | None:
        # What Telegram accepts as secret_token; anything else makes setWebhook fail at start.
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramChannel:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError("webhookUrl needs webhookSecret: without it anyone could post updates to the bot")
        return self


class DiscordChannelRule(Section):
    """One server channel (keyed by id or name): whether the bot works there and needs a mention."""

    enabled: bool = True
    require_mention: bool | None = None
    users: list[str | int] | None = None


class DiscordGuild(Section):
    """One server (keyed by id), OpenClaw's shape: who may talk, which channels, mention rule."""

    slug: str | None = None
    require_mention: bool | None = None
    users: list[str | int] = Field(default_factory=list)
    channels: dict[str, DiscordChannelRule] = Field(default_factory=dict)


class DiscordStreaming(Section):
    mode: Literal["partial", "off"] = "partial"  # partial: the answer grows in place by edits
    throttle_ms: int = Field(1200, ge=250)  # Discord allows about 5 edits per 5 s per channel


class DiscordChannel(ChannelBase):
    token: Secret | None = None
    proxy: ProxyURL | None = None  # REST and gateway; else HTTPS_PROXY / ALL_PROXY (NO_PROXY honoured)
    api_base: DiscordApiUrl | None = None  # REST base with the version, as discord.py's https://discord.com/api/v10
    gateway_url: GatewayUrl | None = None  # else the one GET /gateway/bot names
    shard_count: int | None = Field(None, ge=1)  # gateway shards, spread over the instances; else Discord's recommendation
    allow_bots: bool = False
    media_max_mb: float | None = Field(None, gt=0)  # below Discord's own upload limit, if set
    guilds: dict[str, DiscordGuild] = Field(default_factory=dict)
    streaming: DiscordStreaming = Field(default_factory=DiscordStreaming)

    def lists_groups(self) -> bool:
        return bool(self.guilds)  # the adapter passes on messages from listed servers and channels only


class Channels(Section):
    telegram: TelegramChannel = Field(default_factory=TelegramChannel)
    discord: DiscordChannel = Field(default_factory=DiscordChannel)


class Cron(Section):
    """Scheduled jobs (the ``cron`` tool): how late a missed run may still fire, how many a chat may have."""

    enabled: bool = True
    misfire_grace_ms: int = Field(3_600_000, ge=0)
    max_jobs_per_chat: int = Field(20, ge=0)


class Storage(Section):
    """Where the state lives: SQLite in the state directory (one instance), or a PostgreSQL database that several
    instances share (``url``, or ``CHORUS_DATABASE_URL``)."""

    url: Secret | None = None  # postgresql://user:password@host:5432/db
    lease_ms: int = Field(15_000, ge=1_000)  # an instance silent this long is dead; its work is taken over

    @field_validator("url")
    @classmethod
    def _postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("storage.url is a PostgreSQL URL: postgresql://user:password@host:5432/database")
        return value


class ChorusConfig(Section):
    """The whole config file."""

    env: dict[str, str] = Field(default_factory=dict)
    models: Models = Field(default_factory=Models)
    agents: Agents = Field(default_factory=Agents)
    messages: Messages = Field(default_factory=Messages)
    tools: Tools = Field(default_factory=Tools)
    channels: Channels = Field(default_factory=Channels)
    cron: Cron = Field(default_factory=Cron)
    storage: Storage = Field(default_factory=Storage)


# Dicts whose keys are the user's own (env vars, model refs, routing fields): never checked as unknown keys.
_FREE_FORM = {"env", "agents.defaults.models", "models.providers.openrouter.params", "channels.telegram.groups"}
_SECRET_KEYS = {"apiKey", "botToken", "token", "webhookSecret", "proxy", "url"}  # a proxy or database URL holds a login


@dataclass(frozen=True)
class LoadedConfig:
    config: ChorusConfig
    path: Path
    raw: dict[str, Any]
    warnings: list[str]


def state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """``CHORUS_HOME``, else ``~/.chorus``."""
    return Path(env.get("CHORUS_HOME") or Path(env.get("HOME") or Path.home()) / ".chorus").expanduser()


def config_path(cli_path: str | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """``--config``, else ``CHORUS_CONFIG``, else ``<state dir>/chorus.json5``."""
    chosen = cli_path or env.get("CHORUS_CONFIG")
    return Path(chosen).expanduser() if chosen else state_dir(env) / "chorus.json5"


def read_raw(path: Path) -> dict[str, Any]:
    """The file as written (``${VAR}`` unresolved); a missing file is an empty config."""
    if not path.exists():
        return {}
    try:
        raw = json5.loads(strip_digit_separators(path.read_text(encoding="utf-8")))
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON5: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold one object {{...}}, found {type(raw).__name__}")
    return raw


def load_config(path: Path, *, env: Mapping[str, str] = os.environ) -> LoadedConfig:
    """Read, resolve and validate the config at ``path``."""
    raw = read_raw(path)
    config, warnings = parse_config(raw, env=env)
    return LoadedConfig(config, path, raw, warnings)


def parse_config(raw: dict[str, Any], *, env: Mapping[str, str] = os.environ) -> tuple[ChorusConfig, list[str]]:
    """Validate a raw config; returns the config and warnings, or raises ``ConfigError`` listing every problem."""
    problems: list[str] = []
    unknown: list[str] = []
    _check_keys(raw, ChorusConfig, "", problems, unknown)
    own_env = raw.get("env") if isinstance(raw.get("env"), dict) else {}
    resolved = _resolve(raw, {**env, **{k: str(v) for k, v in own_env.items()}}, "", problems)
    notes = _renamed_thinking(resolved)
    config = None
    try:
        config = ChorusConfig.model_validate(resolved)
    except ValidationError as exc:
        by_path: dict[str, list[str]] = {}
        for err in exc.errors():  # a union (str | int) fails once per member: one line per key
            path, text = _describe(err)
            by_path.setdefault(path, []).append(text)
        problems += [f"{path}: {' / '.join(dict.fromkeys(texts))}" for path, texts in by_path.items()]
    if problems:
        raise ConfigError("\n".join(problems))
    warnings = [f"keys Chorus does not use (ignored): {', '.join(unknown)}"] if unknown else []
    assert config is not None
    return config, notes + warnings + _unsent_params(config)


def _unsent_params(config: ChorusConfig) -> list[str]:
    """Model params the config takes but the request never carries: OpenAI's own (``serviceTier``, ``store``,
    ``promptCache*``), which OpenRouter's chat completions do not know and Chorus strips."""
    found = [(f"agents.defaults.models.{ref}.params", key) for ref, entry in config.agents.defaults.models.items()
             for key in entry.params]
    provider_wide = config.models.providers.openrouter.params.model_extra or {}
    found += [("models.providers.openrouter.params", key) for key in provider_wide]
    unsent = [f"{where}.{key}" for where, key in found if _snake(key) in OPENAI_ONLY]
    if not unsent:
        return []
    return [f"{', '.join(unsent)}: accepted but never sent (OpenAI's own parameters, which OpenRouter's chat "
            "completions do not take); remove them to silence this"]


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def update_config(path: Path, mutate: Callable[[dict[str, Any]], None], *, env: Mapping[str, str] = os.environ) -> LoadedConfig:
    """Change the file through ``mutate`` on its raw form, refuse an invalid result, keep ``.bak``.

    The file is rewritten as plain JSON5, so comments in it are lost (the ``.bak`` keeps them).
    """
    raw = read_raw(path)
    mutate(raw)
    config, warnings = parse_config(raw, env=env)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        backup.write_bytes(path.read_bytes())
        os.chmod(backup, 0o600)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json5.dumps(raw, indent=2, quote_keys=False) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return LoadedConfig(config, path, raw, warnings)


def set_in(raw: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating the dicts on the way."""
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def load_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a ``.env`` file, read by python-dotenv as shells and docker compose read them
    (``export``, quotes, escapes, inline comments); nothing is put into the process environment."""
    return {key: value for key, value in dotenv_values(path, interpolate=False).items() if value is not None}


_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _resolve(node: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    """``${VAR}`` references replaced from the environment (``$${X}`` stays a literal ``${X}``)."""
    if isinstance(node, dict):
        return {k: _resolve(v, env, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, env, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        if m[1] not in env:
            problems.append(f"{path}: refers to ${{{m[1]}}}, which is not set in the environment or the config's env block")
            return ""
        return env[m[1]]

    return _VAR.sub(sub, node)


def _renamed_thinking(resolved: dict[str, Any]) -> list[str]:
    """A stale thinking level (``max``) becomes today's name (``xhigh``), with a one-line note."""
    agents = resolved.get("agents")
    defaults = agents.get("defaults") if isinstance(agents, dict) else None
    level = defaults.get("thinkingDefault") if isinstance(defaults, dict) else None
    current = stale_effort(level)
    if current is None:
        return []
    defaults["thinkingDefault"] = current
    return [f"agents.defaults.thinkingDefault: {level!r} is now called {current!r}; using {current!r}"]


def _check_keys(node: Any, model: type[BaseModel], path: str, problems: list[str], unknown: list[str]) -> None:
    """Walk the raw config beside the models: typos are problems, other unknown keys are collected."""
    if not isinstance(node, dict):
        return  # a wrong type is reported by validation
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    known = set(fields) | set(model.model_fields)
    for key, value in node.items():
        here = f"{path}.{key}" if path else str(key)
        if key not in known:
            guess = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.75) or [
                k for k in fields if k.lower() == str(key).lower()
            ]
            if guess:
                problems.append(f"{here}: unknown key; did you mean '{guess[0]}'?")
            else:
                unknown.append(here)
            continue
        if here in _FREE_FORM:
            problems += _not_finite(value, here)
            continue
        sub = _submodel(fields.get(key) or model.model_fields[key])
        if sub is not None:
            _check_keys(value, sub, here, problems, unknown)


def _not_finite(node: Any, path: str) -> list[str]:
    """Where a free-form section holds NaN or Infinity: JSON5 writes them, the JSON requests they go into cannot."""
    if isinstance(node, float) and not math.isfinite(node):
        return [f"{path}: found {node}; allowed: a finite number (JSON has no NaN or Infinity)"]
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    return [problem for key, value in items for problem in _not_finite(value, f"{path}.{key}")]


def _submodel(field: Any) -> type[BaseModel] | None:
    annotation = field.annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _describe(err: Any) -> tuple[str, str]:
    """One validation error as (key path, ``found X; allowed: Y``), with secrets masked."""
    loc = [str(p) for p in err["loc"] if str(p) not in ("str", "int") and not str(p).startswith(("literal[", "function-"))]
    path = ".".join(_camel(p) for p in loc) or "(top level)"
    value = err.get("input")
    if any(p in _SECRET_KEYS for p in path.split(".")):
        found = "a value (hidden: it is a secret)"
    elif isinstance(value, str) and looks_secret(value):  # a key pasted into the wrong slot
        found = "a value that looks like a key or token (not shown: was it pasted into the wrong place?)"
    else:
        found = redact(f"{value!r} ({_type_name(value)})", entropy=True)  # a secret inside a list or object
    if err["type"] == "literal_error":
        allowed = err.get("ctx", {}).get("expected", "")
        return path, f"found {found}; allowed: {allowed}"
    if err["type"] == "missing":
        return path, "required, but missing"
    message = redact(err["msg"].removeprefix("Value error, "), [value] if isinstance(value, str) else (), entropy=True)
    return path, f"found {found}; {message[0].lower() + message[1:]}"


def _camel(part: str) -> str:
    return part if part.isdigit() or "_" not in part else to_camel(part)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", int: "integer", float: "number", bool: "boolean"}.get(
        type(value), type(value).__name__
    )
