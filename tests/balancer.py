"""A round-robin load balancer on 127.0.0.1 in front of several instances' webhooks, as an operator would put
nginx or a cloud balancer there: each request goes to the next backend; one that refuses the connection (its
instance is down) is skipped for the next, as nginx's ``proxy_next_upstream error`` does (a request already
sent is never sent twice: its failure is answered 502 and Telegram delivers it again)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

FORWARDED = ("Content-Type", "X-Telegram-Bot-Api-Secret-Token")


@dataclass(frozen=True, slots=True)
class Passed:
    update_id: int | None
    port: int  # the backend that answered (0: none could be reached)
    status: int


class Balancer:
    """``async with Balancer(ports) as lb:``; Telegram is given ``lb.url(path)``. ``pin`` may choose the backend
    of a request by its body (a test sending a command to one instance); ``passed`` records what went where."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.pin: Callable[[dict[str, Any]], int | None] = lambda update: None
        self.passed: list[Passed] = []
        self._next = itertools.count()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> Balancer:
        app = web.Application(client_max_size=100 * 2**20)
        app.add_routes([web.post("/{path:.*}", self._forward)])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http:
            await self._http.close()
        if self._runner:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        try:
            update = json.loads(body)
        except ValueError:
            update = {}
        update_id = update.get("update_id") if isinstance(update, dict) else None
        pinned = self.pin(update) if isinstance(update, dict) else None
        start = next(self._next)
        order = [pinned] if pinned else [self.ports[(start + i) % len(self.ports)] for i in range(len(self.ports))]
        headers = {k: v for k, v in request.headers.items() if k in FORWARDED}
        for port in order:
            try:
                async with self._http.post(f"http://127.0.0.1:{port}{request.path}", data=body,
                                           headers=headers) as resp:
                    answer = web.Response(status=resp.status, body=await resp.read())
            except aiohttp.ClientConnectorError:
                continue  # not connected: nothing was sent, the next backend may take it
            except (aiohttp.ClientError, TimeoutError):
                answer = web.Response(status=502, text="the backend failed mid-request")
            self.passed.append(Passed(update_id, port, answer.status))
            return answer
        self.passed.append(Passed(update_id, 0, 502))
        return web.Response(status=502, text="no backend reachable")
