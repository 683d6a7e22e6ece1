"""PostgreSQL against SQLite: what a turn costs Chorus and the database server, and which driver to use.

``python -m bench.postgres`` (and ``make bench``) starts a throwaway server from the machine's PostgreSQL
binaries (``bench/pgserver.py``; production settings: fsync and synchronous_commit on) and measures, in
alternating rounds:

- drivers: a turn's statements through the real ``Store`` (inbox accept, the turn's reads, the answer's part
  committed with the turn's settlement: the user's message and the answer, inbox done; then the sent part's
  delete) on asyncpg (``bot.db.postgres``) and on
  psycopg 3 (``bench/psycopg_db.py``: async, binary, prepared), when psycopg is installed;
- engines: ``bench/turn_overhead.py``'s turn (the real dispatcher and agent, a model answering at once) on
  ``Store.open(url)`` against ``Store.open(path)``, with the fake model in a process of its own so that this
  process's CPU is Chorus's alone; the server's CPU is read from ``/proc`` for all its processes.

Turns/s with several instances on one database and the failover time are measured by the multi-instance bench
(to come, beside this one: ``bench/README.md``, "PostgreSQL").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import pgserver, turn_overhead
from bench.model_process import fake_model
from bench.procstat import CpuReading
from bench.stats import pct
from bot.db.postgres import PostgresDatabase
from bot.outbox import StoredParts
from bot.store import Inbox, Settlement, Store, StoredMessage, appending, marked_answered
from channels.base import ChatRef, Inbound
from channels.outbox import Part

ROUNDS = 4  # per contender, alternating A B B A ...: the machine's drift falls on both alike
DRIVER_LOAD = {1: 150, 10: 30}  # concurrent chats -> turns each, per round
ENGINE_LOAD = {1: 60, 10: 15, 100: 3}
ANSWER = "Sure thing, here is a short answer that streams at a steady pace. " * 3


@dataclass
class Tally:
    """One contender's figures over its rounds."""

    times: list[float] = field(default_factory=list)  # each turn's wall time, s
    accepts: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU per turn, s, one per round
    server: list[float] = field(default_factory=list)  # the PostgreSQL server's CPU per turn, s, one per round
    rate: list[float] = field(default_factory=list)  # turns/s, one per round
    peak: float = float("nan")  # MiB traced at most in a separate pass


async def measured(run: Callable[[], Awaitable[int]], tally: Tally, server_pid: int | None) -> None:
    """Run one round (``run`` returns how many turns it made) and add its CPU, the server's and its rate."""
    before = CpuReading.of(server_pid) if server_pid else None
    cpu, wall = time.process_time(), time.perf_counter()
    turns = await run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    tally.cpu.append(cpu / turns)
    tally.rate.append(turns / wall)
    tally.server.append((CpuReading.of(server_pid) - before) / turns if before else float("nan"))


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value * 1000:.3f}" if value < 0.001 else f"{value * 1000:.2f}"


def spread(values: list[float]) -> str:
    """The median of the rounds and their range, in ms."""
    if not values or any(v != v for v in values):
        return "n/a"
    return f"{ms(statistics.median(values))} ({ms(min(values))}-{ms(max(values))})"


def table(title: str, rows: dict[str, Tally]) -> None:
    print(title)
    print(f"{'':24} {'turn med ms':>11} {'turn p99 ms':>11} {'accept med':>10} {'CPU/turn ms (range)':>22} "
          f"{'PG CPU/turn ms (range)':>24} {'turns/s':>8} {'peak MiB':>8}")
    for name, t in rows.items():
        accept = ms(statistics.median(t.accepts)) if t.accepts else "-"
        print(f"{name:24} {ms(statistics.median(t.times)):>11} {ms(pct(t.times, 0.99)):>11} {accept:>10} "
              f"{spread(t.cpu):>22} {spread(t.server):>24} {statistics.median(t.rate):>8.0f} {t.peak:>8.1f}")


# ---- drivers: a turn's statements ------------------------------------------------------------------------


async def statement_turns(store: Store, chats: int, turns: int, tag: str, times: list[float]) -> int:
    """A turn's statements, ``turns`` in a row in each of ``chats`` chats at once: its three writes, as the
    dispatcher, the agent and the outbox make them."""
    inbox = Inbox(store)
    parts = StoredParts(store, Path(tempfile.gettempdir()))  # text parts only: no file is written

    async def chat(i: int) -> None:
        where = ChatRef("bench", f"{tag}-{i}")
        for t in range(turns):
            start = time.perf_counter()
            inbound = Inbound(chat=where, sender_id="u", sender_name="u", text=f"s{i} t{t}", message_id=f"{tag}-{i}-{t}")
            await inbox.accept(inbound)
            state = await store.turn_state(where)
            answer = [Part(where, {"call": "sendMessage", "params": {"chat_id": i, "text": ANSWER}})]
            await parts.add(answer, Settlement([marked_answered([inbound]), appending(state.session_id, [
                StoredMessage("user", inbound.text),
                StoredMessage("assistant", ANSWER, model="openrouter/auto", prompt_tokens=40, completion_tokens=40, cost=1e-5),
            ])]))
            await parts.done(answer)  # sent
            times.append(time.perf_counter() - start)

    await asyncio.gather(*(chat(i) for i in range(chats)))
    return chats * turns


async def drivers(server: pgserver.Server, rounds: int) -> None:
    url = await server.fresh_database("bench_drivers")
    stores = {"asyncpg": Store(await PostgresDatabase.open(url))}  # migrates the schema both use
    try:
        from bench.psycopg_db import PsycopgDatabase

        stores["psycopg 3"] = Store(await PsycopgDatabase.open(url))
    except ImportError:
        print("psycopg 3 is not installed here: asyncpg alone (pip install 'psycopg[binary,pool]' to compare)")
    try:
        for chats, turns in DRIVER_LOAD.items():
            tallies = {name: Tally() for name in stores}
            for name, store in stores.items():  # prepare every statement on the pool's connections
                await statement_turns(store, chats, 3, f"warm{chats}{name}", [])
            for r in range(rounds):
                order = list(stores) if r % 2 == 0 else list(reversed(stores))
                for name in order:
                    tally = tallies[name]
                    tag = f"{chats}-{r}-{name}"
                    await measured(lambda: statement_turns(stores[name], chats, turns, tag, tally.times), tally, server.pid)
            for name, store in stores.items():
                tallies[name].peak = await traced_peak(lambda: statement_turns(store, chats, turns, f"trace{chats}{name}", []))
            table(f"a turn's statements, {chats} chat(s) at once, {turns} turns each, {rounds} rounds", tallies)
    finally:
        for store in stores.values():
            await store.close()


async def traced_peak(run: Callable[[], Awaitable[object]]) -> float:
    """The most memory Python held while ``run`` ran, in MiB (a pass of its own: tracing slows every allocation)."""
    tracemalloc.start()
    try:
        await run()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# ---- engines: a whole turn ---------------------------------------------------------------------------------


async def engines(server: pgserver.Server, rounds: int) -> None:
    async with fake_model() as model:
        with tempfile.TemporaryDirectory() as tmp:
            for sessions, turns in ENGINE_LOAD.items():
                base = await turn_overhead.baseline(model, sessions, turns)
                tallies = {"SQLite": Tally(), "PostgreSQL": Tally()}
                for r in range(rounds):
                    for name in (tallies if r % 2 == 0 else reversed(tallies)):
                        where: str | Path = (await server.fresh_database(f"bench_turns_{r}") if name == "PostgreSQL"
                                             else Path(tmp) / f"turns-{sessions}-{r}.db")
                        store = await Store.open(where)
                        pid = server.pid if name == "PostgreSQL" else None
                        await whole_turns(store, model, sessions, turns, tallies[name], pid)
                for name in tallies:
                    where = (await server.fresh_database("bench_traced") if name == "PostgreSQL"
                             else Path(tmp) / f"traced-{sessions}.db")
                    store = await Store.open(where)
                    tallies[name].peak = await traced_peak(lambda: whole_turns(store, model, sessions, turns, Tally(), None))
                med_base = statistics.median(base)
                table(f"a whole turn (dispatcher, agent, store; model answers at once, bare request med "
                      f"{ms(med_base)} ms), {sessions} chat(s) at once, {turns} turns each, {rounds} rounds", tallies)
                sqlite, pg = (statistics.median(tallies[n].cpu) for n in tallies)
                print(f"  Chorus CPU per turn, PostgreSQL / SQLite: {pg / sqlite:.2f}x (target <= 1.3x); "
                      f"PostgreSQL's own CPU per turn {spread(tallies['PostgreSQL'].server)} ms (target <= 1 ms)")


async def whole_turns(store: Store, model: turn_overhead.ModelServer, sessions: int, turns: int, tally: Tally,
                      server_pid: int | None) -> int:
    """One round on ``store`` (closed at the end): a warm-up turn per chat, then the timed ones."""
    dispatcher, channel, llm = turn_overhead.chorus(model, store)
    try:
        await turn_overhead.turns_through(dispatcher, channel, sessions, 1, tag="warm")
        await dispatcher.drain()

        async def run() -> int:
            tally.times += await turn_overhead.turns_through(dispatcher, channel, sessions, turns, tally.accepts, "timed")
            await dispatcher.drain()  # the last inbox writes follow the replies: part of the turns' cost
            return sessions * turns

        await measured(run, tally, server_pid)
    finally:
        await llm.aclose()
        await store.close()
    return sessions * turns


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="rounds per contender (alternating)")
    parser.add_argument("--only", choices=("drivers", "engines"), help="one of the two measurements")
    args = parser.parse_args(argv)
    print(f"PostgreSQL (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    with pgserver.running() as server:
        if server is None:
            return
        if args.only != "engines":
            await drivers(server, args.rounds)
        if args.only != "drivers":
            await engines(server, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
