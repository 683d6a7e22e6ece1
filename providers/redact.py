"""Secret masking shared by every layer: key- and token-shaped strings, plus the secrets this process knows.

It lives under ``providers`` because provider errors are masked when they are built (their text reaches
chats), and providers import nothing from ``bot``; ``bot.redact`` builds the logging filter on it.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

MASK = "***"
# OpenRouter keys, Telegram bot tokens, Discord bot tokens, bearer headers, interaction tokens.
PATTERNS = [
    re.compile(r"sk-or-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_\-]{30,}"),  # also inside Bot API URLs: .../bot<token>/getMe
    re.compile(r"\b[A-Za-z0-9_\-]{24,28}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,40}\b"),
    re.compile(r"(?i)(bearer\s+)[^\s'\"]+"),
    # A Discord interaction's token (valid 15 minutes) in its callback or follow-up URL, as discord.py logs at -vv
    re.compile(r"(/(?:interactions|webhooks)/\d+/)[A-Za-z0-9_\-.]+"),
]
# Long unbroken runs of token characters; masked only when they also look random (see ``high_entropy``).
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_\-.+=]{32,}")
_known: set[str] = set()


def remember_secrets(*secrets: str | None) -> None:
    """Add secrets of this process (the key, bot tokens) to those masked everywhere from now on."""
    _known.update(s for s in secrets if s and len(s) >= 6)


def high_entropy(token: str) -> bool:
    """Whether ``token`` looks like a random credential rather than a word, slug, path or sentence:
    one unbroken run of 32+ token characters, mixing upper case, lower case and digits (or long hex),
    and close to random in its characters (at least 3.5 bits each)."""
    if not _TOKEN_RUN.fullmatch(token):
        return False
    mixed = all(re.search(c, token) for c in (r"[a-z]", r"[A-Z]", r"\d"))
    hexish = re.fullmatch(r"[0-9a-f\-]+", token) is not None and len(re.findall(r"\d", token)) >= 8
    if not (mixed or hexish):
        return False
    counts = Counter(token)
    bits = -sum(n / len(token) * math.log2(n / len(token)) for n in counts.values())
    return bits >= 3.5


def looks_secret(value: str) -> bool:
    """Whether a whole value has the shape of a key or token (for echoing config values)."""
    value = value.strip()
    return value in _known or any(p.search(value) for p in PATTERNS) or high_entropy(value)


def redact(text: str, secrets: Iterable[str] = (), *, entropy: bool = False) -> str:
    """``text`` with every known secret and every key-shaped string masked; with ``entropy``,
    long random-looking tokens too (for text that quotes values the user typed)."""
    for secret in sorted({*_known, *(s for s in secrets if s and len(s) >= 6)}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern in PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    if entropy:
        text = _TOKEN_RUN.sub(lambda m: MASK if high_entropy(m.group(0)) else m.group(0), text)
    return text
