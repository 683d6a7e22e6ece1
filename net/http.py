"""The HTTP client side every remote shares (the Bot API, OpenRouter, Discord): aiohttp sessions with one set of
rules for trust, proxies, deadlines and what a failure tells about the request's fate.

- Trust: certifi's bundle, plus ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set (a company's TLS inspection or a
  private CA works without code changes); verification is never off.
- Proxies: a configured URL (``http://``, ``https://``, ``socks5://``, ``socks5h://``, with a login or not), else
  ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` unless ``NO_PROXY`` exempts the host. SOCKS goes through
  aiohttp-socks; an HTTP(S) proxy through aiohttp's own CONNECT, its login sent to the proxy only, never inside
  the tunnel. ``Proxy.shown`` is the only form of a proxy URL that may be logged or printed.
- Deadlines: each request gets ``ClientTimeout(total=...)``, a deadline, not a bound on silence between bytes;
  ``upload_deadline`` scales one to a body's size.
- Fate: ``unsent`` tells whether a failed request certainly never reached the remote whole (its ``Body``
  tracks whether it was handed over).
"""

from __future__ import annotations

import functools
import math
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment

import aiohttp
import aiohttp_socks
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult

CONNECT_TIMEOUT = 10.0  # DNS, TCP, proxy handshake and TLS of a new connection
# An idle pooled connection is closed after this: below the 60-120 s after which servers and NATs drop idle
# connections silently, so a reused one is rarely dead (a POST on a dead one fails rather than being resent).
KEEPALIVE_TIMEOUT = 30.0
UPLOAD_RATE = 64 * 1024  # bytes/s an upload is given beyond its call's own deadline: a slow uplink still makes it
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class ProxyURLError(ValueError):
    """A proxy URL that cannot be used; its text never holds the login."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """A proxy to reach a remote through, and where the setting came from (a config key or a variable)."""

    url: str
    source: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in PROXY_SCHEMES or not parts.hostname or port is None:
            raise ProxyURLError(f"{self.source}: the proxy must be {'/'.join(PROXY_SCHEMES)}://[user:password@]host:port,"
                                f" not {self.shown!r}")

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def shown(self) -> str:
        """The URL with its login masked: what logs, errors and ``chorus doctor`` may show."""
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return f"{parts.scheme}://{'***@' if '@' in parts.netloc else ''}{host}"


def check_proxy_url(url: str) -> str:
    """``url`` when it is a usable proxy URL, else ``ValueError`` (for config validators)."""
    Proxy(url, "proxy")
    return url


def choose_proxy(configured: str | None, target: str, env: Mapping[str, str] | None = None,
                 key: str = "proxy") -> Proxy | None:
    """The proxy for requests to ``target``: ``configured`` (from the config key ``key``), else the environment's
    ``HTTPS_PROXY`` (``HTTP_PROXY`` for an http target), then ``ALL_PROXY``, unless ``NO_PROXY`` lists the host."""
    if configured:
        return Proxy(configured, key)
    env = os.environ if env is None else env
    scheme = urlsplit(target).scheme or "https"
    for name in (f"{scheme}_proxy", "all_proxy"):
        value = env.get(name) or env.get(name.upper())
        if value:
            break
    else:
        return None
    no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
    if no_proxy and proxy_bypass_environment(urlsplit(target).netloc, {"no": no_proxy}):
        return None
    if "://" not in value:  # curl and requests read a bare host:port as an HTTP proxy
        value = f"http://{value}"
    return Proxy(value, name.upper())


def tls_context() -> ssl.SSLContext:
    """Certificates checked against certifi's bundle and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (colon-separated).

    One context per value of those variables: loading the bundles takes 20-200 ms, which a first call would pay."""
    return _tls_context(os.environ.get("SSL_CERT_FILE") or "", os.environ.get("SSL_CERT_DIR") or "")


@functools.cache
def _tls_context(cafile: str, capath: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    if cafile:
        context.load_verify_locations(cafile=cafile)
    for directory in filter(None, capath.split(os.pathsep)):
        context.load_verify_locations(capath=directory)
    return context


class _DialAs(AbstractResolver):
    """Resolves every host to one address (as curl's ``--connect-to``): tests reach a fake under a real host's
    name, whose TLS name check still applies."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host=self._host, port=self._port, family=socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        pass


def connector(origin: str, *, proxy: Proxy | None, tls: ssl.SSLContext | None = None, limit: int = 0,
              connect_to: tuple[str, int] | None = None) -> tuple[aiohttp.TCPConnector, str | None]:
    """The connector for ``origin`` and the proxy URL a session must be given (an HTTP(S) proxy is aiohttp's
    own, per request; a SOCKS one lives in the connector). Made in the running loop."""
    plain = urlsplit(origin).scheme == "http" and (proxy is None or proxy.scheme != "https")
    # A plain-HTTP remote (a self-hosted Bot API server, a test's fake) never needs the bundles loaded.
    options: dict[str, Any] = {"ssl": tls or (True if plain else tls_context()), "limit": limit,
                               "keepalive_timeout": KEEPALIVE_TIMEOUT}
    if connect_to:
        options["resolver"] = _DialAs(*connect_to)
    if proxy is None or not proxy.scheme.startswith("socks"):
        return aiohttp.TCPConnector(**options), proxy.url if proxy else None
    parts = urlsplit(proxy.url)
    assert parts.hostname is not None and parts.port is not None
    options.pop("resolver", None)  # the proxy resolves (socks5h) or aiohttp-socks does (socks5)
    return aiohttp_socks.ProxyConnector(
        proxy_type=aiohttp_socks.ProxyType.SOCKS5, host=parts.hostname, port=parts.port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        rdns=proxy.scheme == "socks5h", **options), None


def session(origin: str, *, proxy: Proxy | None, tls: ssl.SSLContext | None = None,
            headers: Mapping[str, str] | None = None, limit: int = 0,
            connect_to: tuple[str, int] | None = None) -> aiohttp.ClientSession:
    """A session for ``origin`` (``scheme://host[:port]``), made in the running loop; the caller closes it.

    ``limit`` 0: no cap on connections (each streamed answer holds one for its length, so chats answered at once
    need as many). DNS answers are cached for aiohttp's 10 s.
    """
    pool, session_proxy = connector(origin, proxy=proxy, tls=tls, limit=limit, connect_to=connect_to)
    return aiohttp.ClientSession(
        connector=pool, proxy=session_proxy, headers=headers, skip_auto_headers=("Accept-Encoding",),
        cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)


@functools.lru_cache(maxsize=256)
def deadline(seconds: float) -> aiohttp.ClientTimeout:
    """The whole request, connection to last byte, in ``seconds``: a stalled answer is ended by it.

    Made once for each length (a ``ClientTimeout`` is immutable): in a running bot, making one for every call
    cost ~5 µs, a lookup a fifth of that."""
    return aiohttp.ClientTimeout(total=seconds, connect=CONNECT_TIMEOUT)


def upload_deadline(seconds: float, size: int, rate: float = UPLOAD_RATE) -> float:
    """A call's deadline with time for a ``size``-byte body at ``rate`` bytes/s added, in tenths of a second (so
    the small bodies of most calls share one deadline)."""
    return seconds + math.ceil(size * 10 / rate) / 10


# ---- what a failure says about the request's fate ---------------------------------------------------------

TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, aiohttp_socks.ProxyError, aiohttp_socks.ProxyConnectionError,
                    aiohttp_socks.ProxyTimeoutError)


class Body(aiohttp.payload.Payload):
    """A request body that knows whether it was handed to the connection whole (``done``): until then, a failure
    certainly left the request incomplete at the remote, which cannot have acted on it."""

    def __init__(self, data: bytes, content_type: str) -> None:
        super().__init__(data, content_type=content_type)
        self._size = len(data)
        self.done = False

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def write(self, writer: Any) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer: Any, content_length: int | None) -> None:
        await writer.write(self._value if content_length is None else self._value[:content_length])
        self.done = True


def unsent(body: Body | None) -> bool:
    """Whether a request that failed certainly did not reach the remote whole: it failed before ``body`` was
    handed over (no connection, tunnel or TLS session; a reset or its deadline while it was being written).
    A request without a body is never known to be unsent."""
    return body is not None and not body.done


def describe(exc: BaseException) -> str:
    """A transport failure in words, without the URL (which may hold a token)."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate not trusted ({exc.certificate_error.__class__.__name__}: {exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        why = os.strerror(error.errno) if error.errno else error.strerror or str(error) or type(error).__name__
        return f"cannot connect to {exc.host}:{exc.port}: {why}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy refused the tunnel (HTTP {exc.status})"
    if isinstance(exc, TimeoutError):
        return "no answer before the deadline"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
