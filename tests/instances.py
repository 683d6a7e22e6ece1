"""Several real ``chorus run`` processes on one PostgreSQL database, behind a round-robin balancer that the fake
Telegram posts its webhook updates to: what the several-instance tests drive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from tests.balancer import Balancer
from tests.conftest import Home, new_home, onboarded
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram
from tests.service import Service, start_chorus
from tests.telegram_service import free_port, telegram_config

LEASE_MS = 3000  # short, so a failover test waits seconds, not the default 15
SECRET = "hook-S3cret"
HOOK = "/telegram-webhook"


@dataclass
class Node:
    """One instance: its state directory, its webhook port, its process (replaced when it is restarted)."""

    home: Home
    port: int
    service: Service


@dataclass
class Cluster:
    nodes: list[Node]
    balancer: Balancer
    db: str = field(repr=False)  # holds the password
    lease_ms: int = LEASE_MS

    def by_port(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    async def holder(self, session_key: str) -> Node | None:
        """The instance holding a session's lease, as the database says."""
        pid = await self.query("SELECT i.pid FROM leases l JOIN instances i ON i.id = l.instance WHERE l.name = $1",
                               "session:" + session_key)
        return next((n for n in self.nodes if n.service.pid == pid), None)

    async def alive(self) -> int:
        """How many instances are alive by their heartbeats (the database's clock, as the cluster judges)."""
        return int(await self.query("SELECT count(*) FROM instances"
                                    " WHERE heartbeat_at >= extract(epoch from clock_timestamp()) - $1", self.lease_ms / 1000))

    async def restart(self, node: Node) -> None:
        """Start a stopped or killed instance again on its own state directory and port."""
        node.service = await start_chorus(node.home, "run", stdin=False)
        await _serving(node)

    async def query(self, sql: str, *args: Any) -> Any:
        """One value from the database, as an operator's ``psql`` would read it."""
        conn = await asyncpg.connect(self.db)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()


async def _serving(node: Node, timeout: float = 60) -> None:
    """Wait until the instance's webhook listener answers (it listens once it has joined the cluster)."""
    deadline = asyncio.get_running_loop().time() + timeout  # generous: six instances start at once on 2 cores
    async with aiohttp.ClientSession() as http:
        while asyncio.get_running_loop().time() < deadline and node.service.proc.returncode is None:
            try:
                async with http.get(f"http://127.0.0.1:{node.port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    code = node.service.proc.returncode
    state = "still starting" if code is None else f"exit {code}"
    raise AssertionError(f"instance on port {node.port} did not start ({state}): {(await node.service.stop()).err[-3000:]}")


@asynccontextmanager
async def instances(tmp_path: Path, tg: FakeTelegram, ai: FakeOpenRouter, db: str, count: int = 3,
                    *, lease_ms: int = LEASE_MS, **config: Any) -> AsyncIterator[Cluster]:
    """``count`` instances of Chorus on database ``db``, each with its own state directory and webhook port, the
    same config (``config``: more sections), behind one balancer that Telegram's webhook points at. Stopped
    (SIGTERM) afterwards; no instance's log may hold the database password or the bot token."""
    ports = [free_port() for _ in range(count)]
    async with Balancer(ports) as balancer:
        homes = [new_home(tmp_path / f"instance{i}") for i in range(count)]
        await asyncio.gather(*(onboarded(home, ai) for home in homes))
        for home, port in zip(homes, ports):
            home.write_config(ai, **telegram_config(tg, webhookUrl=balancer.url(HOOK), webhookSecret=SECRET,
                                                    webhookPort=port, streaming="off"),
                              storage={"url": db, "leaseMs": lease_ms}, **config)
        services = await asyncio.gather(*(start_chorus(home, "run", stdin=False) for home in homes))
        cluster = Cluster([Node(h, p, s) for h, p, s in zip(homes, ports, services)], balancer, db, lease_ms)
        try:
            await asyncio.gather(*(_serving(node) for node in cluster.nodes))
            await tg.wait_for(lambda: tg.webhook.get("url") == balancer.url(HOOK), what="the webhook set")
            yield cluster
        finally:
            logs = [(await node.service.stop()).err for node in cluster.nodes]
            password = urlsplit(db).password
            for log in logs:
                assert not password or password not in log, "the database password leaked into a log"
                assert tg.token.split(":")[1] not in log, "the bot token leaked into a log"
