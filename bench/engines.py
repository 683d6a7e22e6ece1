"""One Chorus through Telegram on SQLite and on PostgreSQL, alternating: CPU per turn of each, and the server's.

``python -m bench.engines [--rounds 3] [--seconds 25] [--rows 10,130]``: the side by side's Chorus (real
``chorus run``, fake Telegram and fake OpenRouter in this process, the load pace: 2 s to the first token) on its
SQLite file, then on a fresh database of the bench's PostgreSQL (``bench/pgserver.py``: fsync on), in the order
S P P S ... so the machine's drift falls on both. Each launch warms up (10 chats for 6 s: sessions opened,
caches filled), then runs each row. Per row: Chorus's CPU per turn (its process tree), PostgreSQL's (every
server process, from /proc), the service overhead and the first visible sign (p50/p99).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
from dataclasses import dataclass

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import pgserver, procstat, scenarios
from .products import Chorus
from .stats import pct


@dataclass(frozen=True, slots=True)
class Run:
    chorus_ms: float  # Chorus's CPU per turn
    server_ms: float  # PostgreSQL's CPU per turn (0 on SQLite)
    overhead: tuple[float, float]  # service overhead p50, p99 (ms)
    sign: tuple[float, float]  # update -> first visible sign p50, p99 (ms)


async def _launch(engine: str, server: pgserver.Server | None, rows: list[int], seconds: float, tg: FakeTelegram,
                  ai: FakeOpenRouter, ids: scenarios.ChatIds) -> dict[int, Run]:
    home = scenarios.fresh_home("chorus-engines-", engine)
    if server is not None:  # read by Chorus.launch: each launch on a fresh database of that server
        os.environ["BENCH_CHORUS_POSTGRES"] = server.admin_url
    runs: dict[int, Run] = {}
    try:
        async with scenarios.serving(Chorus().launch(home, tg, ai, ids.all, voice=False), home, tg, ai, ids,
                                     warm_up=6) as svc:
            for chats in rows:
                before = procstat.CpuReading.of(server.pid) if server is not None and server.pid else None
                talk = await scenarios.talk(tg, ai, svc, ids.take(chats), seconds, 30, scenarios.LOAD_PACE)
                done = scenarios.answered(talk.turns)
                spent = (procstat.CpuReading.of(server.pid) - before
                         if before is not None and server is not None else 0.0)
                over, sign = scenarios.values(done, "overhead_ms"), scenarios.values(done, "sign_ms")
                runs[chats] = Run(talk.cpu * 1000 / len(done), spent * 1000 / len(done),
                                  (pct(over, 0.5), pct(over, 0.99)), (pct(sign, 0.5), pct(sign, 0.99)))
                print(f"  {engine:<10} {chats:>4} chats: {len(done)} turns, "
                      f"Chorus {runs[chats].chorus_ms:.2f} ms a turn"
                      + (f", PostgreSQL {runs[chats].server_ms:.2f}" if server is not None else ""), flush=True)
    finally:
        os.environ.pop("BENCH_CHORUS_POSTGRES", None)
    return runs


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


async def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--seconds", type=float, default=25)
    args.add_argument("--rows", default="10,130")
    opts = args.parse_args(argv)
    rows = [int(r) for r in opts.rows.split(",")]
    print("Chorus through Telegram, SQLite against PostgreSQL (alternating launches; CPU per turn in ms)")
    with pgserver.running() as server:
        if server is None:
            return
        found: dict[str, list[dict[int, Run]]] = {"SQLite": [], "PostgreSQL": []}
        async with FakeTelegram() as tg, FakeOpenRouter() as ai:
            ai.lenient = True
            ids = scenarios.ChatIds()
            for r in range(opts.rounds):
                for engine in (("SQLite", "PostgreSQL") if r % 2 == 0 else ("PostgreSQL", "SQLite")):
                    found[engine].append(await _launch(engine, server if engine == "PostgreSQL" else None, rows,
                                                       opts.seconds, tg, ai, ids))
    print(f"{'chats':>6} {'SQLite':>18} {'PostgreSQL':>18} {'ratio':>6} {'server':>18} "
          f"{'overhead p50/p99 S | P':>24} {'first sign p50/p99 S | P':>26}")
    for chats in rows:
        s, p = ([run[chats] for run in found[e]] for e in ("SQLite", "PostgreSQL"))
        ratio = statistics.median(x.chorus_ms for x in p) / statistics.median(x.chorus_ms for x in s)
        lat = {name: [statistics.median(getattr(x, name)[i] for x in runs) for runs in (s, p) for i in (0, 1)]
               for name in ("overhead", "sign")}
        print(f"{chats:>6} {_median([x.chorus_ms for x in s]):>18} {_median([x.chorus_ms for x in p]):>18} "
              f"{ratio:>5.2f}x {_median([x.server_ms for x in p]):>18} "
              f"{'{:.1f}/{:.1f} | {:.1f}/{:.1f}'.format(*lat['overhead']):>24} "
              f"{'{:.1f}/{:.1f} | {:.1f}/{:.1f}'.format(*lat['sign']):>26}")


if __name__ == "__main__":
    asyncio.run(main())
