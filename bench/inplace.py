"""Where a turn's CPU goes inside the running bot: chosen functions, or the event loop's callbacks, per turn.

``python -m bench.inplace [--chats 130] [--seconds 20] [--history N] [--bare | --bare-only] TARGET...``:
Chorus from this checkout (the side by side's: fake Telegram and fake OpenRouter in this process, the load
pace) runs under ``bench/probe.py`` with each ``TARGET`` timed (``module:qualname``, e.g.
``bot.db.sqlite:_commit_together``, or ``handles`` for every callback of the loop by task). After a warm-up,
``--chats`` chats (each with ``--history`` messages stored before, as in ``bench/checkouts.py``) talk for
``--seconds``; each target's CPU per turn, calls per turn and CPU per call are printed, largest first, beside
the process's CPU per turn. ``--bare`` runs the bare bot the same way after Chorus, ``--bare-only`` instead
of it: with ``handles``, its loop's callbacks are the floor's side of the same table (a function of
``bench/bare_bot.py`` itself cannot be named: it runs as ``__main__``; aiohttp's can). With ``handles`` the
loop is asyncio's own, not uvloop: the split is what to read, the total is higher than in the side by side.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import dataclasses
import sys
from pathlib import Path

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import scenarios
from .products import ROOT, BareBot, Chorus, Product

async def _figures(out: Path) -> dict[str, list[int]]:
    """The probe's sums as they stand (it writes them every second)."""
    await asyncio.sleep(1.2)
    figures: dict[str, list[int]] = ast.literal_eval(out.read_text())
    return figures


async def _run(product: Product, targets: list[str], chats: int, seconds: float, history: int, tg: FakeTelegram,
               ai: FakeOpenRouter, ids: scenarios.ChatIds) -> None:
    home = scenarios.fresh_home("chorus-inplace-")
    out = home / "probe.txt"
    talking = ids.take(chats)
    launch = product.launch(home, tg, ai, ids.all, voice=False)
    if history and isinstance(product, Chorus):
        scenarios.with_history(ROOT, home / "chorus.db", talking, history)
    module = launch.argv.index("-m") + 1  # python -m MODULE ARGS -> python -m bench.probe OUT TARGETS MODULE ARGS
    argv = [*launch.argv[:module], "bench.probe", str(out), ",".join(targets), *launch.argv[module:]]
    launch = dataclasses.replace(launch, argv=argv, env={**launch.env, "PYTHONPATH": str(ROOT)})
    async with scenarios.serving(launch, home, tg, ai, ids) as svc:
        before = await _figures(out)
        talk = await scenarios.talk(tg, ai, svc, talking, seconds, 30, scenarios.LOAD_PACE)
        after = await _figures(out)
    turns = len(scenarios.answered(talk.turns))
    spent = {name: [a - b for a, b in zip(sums, before.get(name, [0, 0]), strict=True)] for name, sums in after.items()}
    print(f"{product.name}: {turns} turns, CPU per turn {talk.cpu * 1e6 / turns:.0f} µs")
    rows = sorted(((ns / 1000 / turns, calls / turns, name) for name, (ns, calls) in spent.items() if calls),
                  reverse=True)
    print(f"  {'µs/turn':>9} {'calls/turn':>10} {'µs/call':>8}  target")
    for us, calls, name in rows:
        print(f"  {us:9.1f} {calls:10.2f} {us / calls:8.1f}  {name}")
    print(f"  {sum(r[0] for r in rows):9.1f} {'':>10} {'':>8}  (sum: nested targets count twice)")


async def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("targets", nargs="+", help="module:qualname, or handles")
    args.add_argument("--chats", type=int, default=130)
    args.add_argument("--seconds", type=float, default=20)
    args.add_argument("--history", type=int, default=0, help="earlier messages each talking chat has stored")
    args.add_argument("--bare", action="store_true", help="the bare bot the same way, after Chorus")
    args.add_argument("--bare-only", action="store_true", help="the bare bot alone")
    opts = args.parse_args(argv)
    products: list[Product] = [BareBot()] if opts.bare_only else [Chorus(), *([BareBot()] if opts.bare else [])]
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        ids = scenarios.ChatIds()
        for product in products:
            await _run(product, opts.targets, opts.chats, opts.seconds, opts.history, tg, ai, ids)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
