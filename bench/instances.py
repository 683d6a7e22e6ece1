"""Several instances on one PostgreSQL database: turns/s at saturation with 1, 2 and 3 instances, each process's
CPU per turn and PostgreSQL's, and failover time after kill -9.

Each instance is a real ``chorus run`` (Telegram in webhook mode behind a round-robin balancer, the fake Telegram
and the fake OpenRouter answering at once, all on loopback), as tests/instances.py starts them for the tests.
Saturation: ``CHATS`` chats each send ``PER_CHAT`` messages at once; the figure is answered turns per second from
the first update to the last answer. CPU is read from /proc for every instance and every PostgreSQL process
(bench/procstat.py). Failover: an instance running a turn that never ends is killed (SIGKILL); the figure is the
time from the kill to the answer sent by another instance, with the production lease (``storage.leaseMs``
15 s) unless ``--lease-ms`` says otherwise.

``python -m bench.instances [--kills 10] [--lease-ms 15000]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from tests.fakes.openrouter import FakeOpenRouter, Hang
from tests.fakes.telegram import FakeTelegram
from tests.instances import instances
from . import pgserver, procstat

CHATS = 60
PER_CHAT = 10


def _postgres_cpu(server: pgserver.Server) -> procstat.CpuReading:
    assert server.pid is not None, "the PostgreSQL server's pid is unknown (BENCH_POSTGRES_PID)"
    return procstat.CpuReading.of(server.pid)


async def saturation(base: Path, server: pgserver.Server, count: int) -> dict[str, float]:
    """Turns/s and CPU per turn of ``count`` instances answering ``CHATS`` × ``PER_CHAT`` messages sent at once."""
    url = await server.fresh_database(f"instances_{count}")
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        async with instances(base / f"n{count}", tg, ai, url, count=count) as cluster:
            warm = [9000 + i for i in range(count * 3)]  # every instance loads its code paths once
            for chat in warm:
                tg.message(chat, "warm up")
            await tg.wait_for(lambda: all(tg.texts_in(c) for c in warm), timeout=60, what="warm-up answers")
            chats = [10_000 + i for i in range(CHATS)]
            before = [procstat.CpuReading.of(n.service.pid) for n in cluster.nodes]
            pg_before = _postgres_cpu(server)
            started = time.perf_counter()
            for n in range(PER_CHAT):
                for chat in chats:
                    tg.message(chat, f"c{chat} m{n}")
            await tg.wait_for(lambda: all(len(tg.texts_in(c)) >= PER_CHAT for c in chats), timeout=600,
                              what="every message answered")
            wall = time.perf_counter() - started
            cpu = [procstat.CpuReading.of(n.service.pid) - b for n, b in zip(cluster.nodes, before)]
            pg = _postgres_cpu(server) - pg_before
    turns = CHATS * PER_CHAT
    return {"instances": count, "turns/s": turns / wall, "instance ms/turn": sum(cpu) / turns * 1000,
            "max instance %core": max(cpu) / wall * 100, "postgres ms/turn": pg / turns * 1000,
            "postgres %core": pg / wall * 100}


async def failover(base: Path, server: pgserver.Server, kills: int, lease_ms: int) -> list[float]:
    """Seconds from kill -9 of the instance running a turn to the answer from another, ``kills`` times."""
    took: list[float] = []
    url = await server.fresh_database("instances_failover")
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        async with instances(base / "failover", tg, ai, url, count=3, lease_ms=lease_ms) as cluster:
            for k in range(kills):
                chat, text = 20_000 + k, f"slow {k}"
                ai.for_text[text] = [Hang(3600)]  # the first try never ends; the next is answered at once
                tg.message(chat, text)
                await tg.wait_for(lambda: any(r.json and r.json["messages"][-1]["content"] == text
                                              for r in ai.chat_requests()), timeout=30, what="the slow turn began")
                holder = await cluster.holder(f"telegram:{chat}")
                assert holder is not None, "no instance holds the session"
                await holder.service.kill()
                killed = time.monotonic()
                await tg.wait_for(lambda: tg.texts_in(chat), timeout=lease_ms / 1000 * 3, what="the answer from another")
                took.append(time.monotonic() - killed)
                await cluster.restart(holder)  # back to three for the next kill
    return took


def _table(rows: list[dict[str, float]]) -> None:
    keys = list(rows[0])
    print("  ".join(f"{k:>18}" for k in keys))
    for row in rows:
        print("  ".join(f"{row[k]:>18.2f}" if isinstance(row[k], float) else f"{row[k]:>18}" for k in keys))


async def main(kills: int = 10, lease_ms: int = 15_000, rows: list[int] | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix="chorus-bench-") as tmp, pgserver.running() as server:
        if server is None:
            return
        base = Path(tmp)
        print(f"several instances on one PostgreSQL: {CHATS} chats x {PER_CHAT} messages at once, "
              "fake Telegram (webhook behind a balancer) and fake OpenRouter answering at once")
        _table([await saturation(base, server, n) for n in rows or (1, 2, 3)])
        if kills:
            took = await failover(base, server, kills, lease_ms)
            print(f"failover after kill -9, lease {lease_ms} ms, {kills} kills: p50 {statistics.median(took):.1f} s, "
                  f"max {max(took):.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--lease-ms", type=int, default=15_000)
    parser.add_argument("--rows", default="1,2,3", help="instance counts to saturate, e.g. 1,3")
    args = parser.parse_args()
    asyncio.run(main(args.kills, args.lease_ms, [int(n) for n in args.rows.split(",") if n]))
