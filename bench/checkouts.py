"""Chorus from several checkouts (and the bare bot) through Telegram, in alternating launches: before and after.

``python -m bench.checkouts before=../chorus-old after=. [--bare] [--rounds 4] [--seconds 20] [--chats 130]
[--history N]``: each named checkout runs as ``python -m bot run`` with that directory first on its path (the side
by side's Chorus: fake Telegram and fake OpenRouter in this process, the load pace), warms up (10 chats for 4 s),
then ``--chats`` chats talk for ``--seconds``; its CPU per turn is the process's, read from ``/proc``. With
``--history``, each talking chat already has that many messages stored, as in a long conversation: what a turn costs
that grows with it (the history turned into the request, fitted to the window) then shows; the bare bot keeps no
history, so its figure does not move. Launches alternate (A B bare, then bare B A, ...) so the machine's drift falls
on all; on a shared VM one launch can differ from the next by a tenth, which is why a change is judged by the
medians of several rounds, never by one. ``make bench`` does not run this: it compares code, so it needs a second
checkout (``git worktree add``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
from pathlib import Path

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import scenarios
from .products import BareBot, Chorus

BARE = "bare bot"


async def _launch(name: str, root: Path | None, chats: int, seconds: float, history: int, tg: FakeTelegram,
                  ai: FakeOpenRouter, ids: scenarios.ChatIds) -> tuple[float, int]:
    """One launch: CPU per turn (ms) and the turns answered."""
    home = scenarios.fresh_home("chorus-checkouts-")
    talking = ids.take(chats)
    if root is None:
        launch = BareBot().launch(home, tg, ai, ids.all, voice=False)
    else:
        launch = Chorus().launch(home, tg, ai, ids.all, voice=False)
        launch = dataclasses.replace(launch, env={**launch.env, "PYTHONPATH": str(root)}, cwd=root)
        if history:
            scenarios.with_history(root, home / "chorus.db", talking, history)
    async with scenarios.serving(launch, home, tg, ai, ids) as svc:
        talk = await scenarios.talk(tg, ai, svc, talking, seconds, 30, scenarios.LOAD_PACE)
    done = scenarios.answered(talk.turns)
    return talk.cpu * 1000 / len(done), len(done)


async def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("checkouts", nargs="+", help="name=directory of a Chorus checkout")
    args.add_argument("--bare", action="store_true", help="the bare bot too (the floor)")
    args.add_argument("--rounds", type=int, default=4)
    args.add_argument("--seconds", type=float, default=20)
    args.add_argument("--chats", type=int, default=130)
    args.add_argument("--history", type=int, default=0, help="earlier messages each talking chat has stored")
    opts = args.parse_args(argv)
    contenders: list[tuple[str, Path | None]] = []
    for given in opts.checkouts:
        name, _, where = given.rpartition("=")
        root = Path(where).resolve()
        if not (root / "bot" / "__main__.py").exists():
            args.error(f"{where} is not a Chorus checkout")
        contenders.append((name or root.name, root))
    if opts.bare:
        contenders.append((BARE, None))
    print(f"CPU per turn (ms), {opts.chats} chats for {opts.seconds:g} s"
          + (f", each with {opts.history} earlier messages" if opts.history else "")
          + f", {opts.rounds} alternating rounds", flush=True)
    found: dict[str, list[float]] = {name: [] for name, _ in contenders}
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        ids = scenarios.ChatIds()
        for n in range(opts.rounds):
            for name, root in contenders if n % 2 == 0 else contenders[::-1]:
                ms, turns = await _launch(name, root, opts.chats, opts.seconds, opts.history, tg, ai, ids)
                found[name].append(ms)
                print(f"  round {n + 1} {name:<12} {ms:.2f} ({turns} turns)", flush=True)
    floor = statistics.median(found[BARE]) if opts.bare else None
    for name, values in found.items():
        ratio = f"  {statistics.median(values) / floor:.2f}x the bare bot" if floor and name != BARE else ""
        print(f"{name:<14} median {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}){ratio}")


if __name__ == "__main__":
    asyncio.run(main())
