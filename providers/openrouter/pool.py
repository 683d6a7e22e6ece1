"""The connection pool for OpenRouter: httpcore's, with its bookkeeping made linear and its liveness checks
made rare.

Every answer streams on a connection of its own, so a busy bot holds hundreds of connections. httpcore 1.0
re-counts all of them (``len([c.is_idle() for c in connections])``) for each idle one, every time any request
starts or ends: quadratic work that took 40% of the CPU at 300 open chats. ``LinearPool`` is the same pool
with that count taken as ``len(connections)``, which is what the list's length always was.

httpcore also walks every connection at each of those events, asking each whether it is closed, idle or expired;
for an idle connection "expired" builds anyio's socket attribute table (a ``getpeername`` call) and polls the
socket: 5% of the CPU at 100 chats, and the walk itself was the largest single cost of a turn in-process.
``LinearPool`` walks all connections (dropping closed ones, closing expired ones and those over the keep-alive
limit) at most every ``SWEEP_SECONDS``, or when the pool is full; at each event it only looks for a connection
to reuse, stopping at the first idle one, and checks that one is still alive, so a request never goes out on a
connection the server has closed.
"""

from __future__ import annotations

import time

import anyio
import httpcore
import httpx
from httpcore._async.interfaces import AsyncConnectionInterface

# One answer holds one connection for its whole length, so chats answered at once need as many connections.
# httpx's default (100 at most, 20 kept) made the 101st chat wait for a free connection and closed every
# connection that fell idle while more than 20 were open (the next request paid a DNS lookup in a thread and
# a TCP handshake).
LIMITS = httpx.Limits(max_connections=2000, max_keepalive_connections=2000, keepalive_expiry=30.0)
SWEEP_SECONDS = 5.0  # how long a closed or expired connection may stay in the list (it holds one socket)


class LinearPool(httpcore.AsyncConnectionPool):
    """``httpcore.AsyncConnectionPool`` whose per-event bookkeeping is linear in the requests waiting, not in
    the connections open."""

    _swept_at = float("-inf")  # a class default: ``linearize`` swaps the class in, so ``__init__`` never runs

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        closing: list[AsyncConnectionInterface] = []
        now = time.monotonic()
        if now - self._swept_at >= SWEEP_SECONDS or len(self._connections) >= self._max_connections:
            self._swept_at = now
            self._sweep(closing)
        # A connection stays idle until its request is sent: without ``taken``, every request queued now
        # would be given the same idle connection, and all but one would come back to be placed again.
        taken: set[AsyncConnectionInterface] = set()
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = self._reusable(origin, closing, taken)
            if available is not None:
                taken.add(available)
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

    def _sweep(self, closing: list[AsyncConnectionInterface]) -> None:
        """Drop closed connections; close expired ones and idle ones beyond the keep-alive limit."""
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired() or (
                    len(self._connections) > self._max_keepalive_connections and connection.is_idle()):
                self._connections.remove(connection)
                closing.append(connection)

    def _reusable(self, origin: httpcore.URL | object, closing: list[AsyncConnectionInterface],
                  taken: set[AsyncConnectionInterface]) -> AsyncConnectionInterface | None:
        """The first available connection to ``origin`` not ``taken`` in this pass and still alive; expired
        ones met on the way are closed."""
        found = None
        expired = []
        for connection in self._connections:
            if connection not in taken and connection.can_handle_request(origin) and connection.is_available():  # type: ignore[arg-type]
                if not connection.has_expired():
                    found = connection
                    break
                expired.append(connection)
        for connection in expired:
            self._connections.remove(connection)
        closing += expired
        return found


def linearize(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client``'s own transports the linear pool (same state, same behaviour, less work); proxies
    from the environment and a transport passed in by a test are left as they are."""
    for transport in [client._transport, *client._mounts.values()]:
        pool = getattr(transport, "_pool", None)
        if type(pool) is httpcore.AsyncConnectionPool:
            pool.__class__ = LinearPool
    return client


def load_backend() -> None:
    """Import what the pool's first request would import (anyio's asyncio backend: ~20 ms with the loop
    stopped, paid by the first answer after a start). Call it from inside the running loop."""
    anyio.get_cancelled_exc_class()
