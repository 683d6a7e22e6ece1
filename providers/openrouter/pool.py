"""The connection pool for OpenRouter: httpcore's, with its bookkeeping made linear and its liveness checks
made rare.

Every answer streams on a connection of its own, so a busy bot holds hundreds of connections. httpcore 1.0
re-counts all of them (``len([c.is_idle() for c in connections])``) for each idle one, every time any request
starts or ends: quadratic work that took 40% of the CPU at 300 open chats. ``LinearPool`` is the same pool
with that count taken as ``len(connections)``, which is what the list's length always was.

httpcore also asks every connection ``has_expired()`` at each of those events; for an idle connection that
builds anyio's socket attribute table (a ``getpeername`` call) and polls the socket: 5% of the CPU at 100
chats. ``LinearPool`` sweeps all connections at most once a second, and checks the one idle connection it is
about to reuse every time, so a request never goes out on a connection the server has closed.
"""

from __future__ import annotations

import time

import httpcore
import httpx
from httpcore._async.interfaces import AsyncConnectionInterface

# One answer holds one connection for its whole length, so chats answered at once need as many connections.
# httpx's default (100 at most, 20 kept) made the 101st chat wait for a free connection and closed every
# connection that fell idle while more than 20 were open (the next request paid a DNS lookup in a thread and
# a TCP handshake).
LIMITS = httpx.Limits(max_connections=2000, max_keepalive_connections=2000, keepalive_expiry=30.0)
SWEEP_SECONDS = 1.0  # how stale an expired idle connection may get before it is closed (it holds one socket)


class LinearPool(httpcore.AsyncConnectionPool):
    """``httpcore.AsyncConnectionPool`` whose per-event bookkeeping is linear in the number of connections."""

    _swept_at = float("-inf")  # a class default: ``linearize`` swaps the class in, so ``__init__`` never runs

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        closing: list[AsyncConnectionInterface] = []
        now = time.monotonic()
        sweep = now - self._swept_at >= SWEEP_SECONDS
        if sweep:
            self._swept_at = now
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif (sweep and connection.has_expired()) or (
                    connection.is_idle() and len(self._connections) > self._max_keepalive_connections):
                self._connections.remove(connection)
                closing.append(connection)
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = self._reusable(origin, closing)
            if available is not None:
                pool_request.assign_to_connection(available)
            elif len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
            elif idle := next((c for c in self._connections if c.is_idle()), None):
                self._connections.remove(idle)
                closing.append(idle)
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
        return closing

    def _reusable(self, origin: httpcore.URL | object, closing: list[AsyncConnectionInterface]) -> AsyncConnectionInterface | None:
        """An available connection to ``origin`` that is still alive; expired ones met on the way are closed."""
        for connection in [c for c in self._connections if c.can_handle_request(origin) and c.is_available()]:  # type: ignore[arg-type]
            if not connection.has_expired():
                return connection
            self._connections.remove(connection)
            closing.append(connection)
        return None


def linearize(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client``'s own transports the linear pool (same state, same behaviour, less work); proxies
    from the environment and a transport passed in by a test are left as they are."""
    for transport in [client._transport, *client._mounts.values()]:
        pool = getattr(transport, "_pool", None)
        if type(pool) is httpcore.AsyncConnectionPool:
            pool.__class__ = LinearPool
    return client
