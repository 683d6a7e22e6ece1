"""What the side-by-side bench does to one product, phase by phase; each returns figures for the table.

Every phase is bounded in time: users stop writing at a deadline, and a turn still unanswered after its
patience is counted as unanswered, never waited for without end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.media import make_audio
from tests.fakes.openrouter import BenchPace, FakeOpenRouter, Recorded, last_user_text
from tests.fakes.telegram import FakeTelegram

from .products import Launch, Product
from .service import Service, settle
from .stats import pct
from .users import THINK, Observer, Turn, converse

LATENCY_PACE = BenchPace(first_token=0.3, tokens_per_second=50, tokens=40)
LOAD_PACE = BenchPace(first_token=2.0, tokens_per_second=50, tokens=40)  # the slow model: 2 s to answer
TRANSCRIPT = "hello from the fake transcriber"  # what the fake OpenRouter hears in any voice note
HISTORY = (("user", "What should I keep in mind when I plant tomatoes on a balcony that gets sun only in the morning?"),
           ("assistant", "Pick a compact or cherry variety, use a pot of at least 20 litres, water deeply in the "
                         "morning and feed every two weeks once the first flowers open; with half a day of sun "
                         "the harvest is smaller but the plants are easier to keep watered."))


@dataclass(frozen=True)
class Plan:
    """How long each phase runs (seconds); ``quick`` shrinks everything for a smoke run."""

    latency_chats: int = 10
    latency_seconds: float = 12.0
    # The 1/10/100/1,000 concurrent chats, and 130: with the load pace, about 30 turns/s, all that
    # Telegram lets one bot send, where the issue asks for under 10% of a core.
    row_seconds: dict[int, float] = field(default_factory=lambda: {1: 8.0, 10: 8.0, 100: 10.0, 130: 10.0,
                                                                   1000: 15.0})
    patience: float = 20.0
    stored_sessions: int = 10_000
    voice_seconds: int = 30

    @classmethod
    def quick(cls) -> Plan:
        return cls(latency_chats=2, latency_seconds=3.0, row_seconds={1: 3.0, 10: 3.0}, patience=10.0,
                   stored_sessions=200, voice_seconds=3)

    def only_rows(self, chats: list[int]) -> Plan:
        """The same plan with only these load rows (a row this plan lacks runs as long as in the full plan)."""
        full = Plan().row_seconds
        return dataclasses.replace(self, row_seconds={n: self.row_seconds.get(n, full.get(n, 10.0)) for n in chats})


@dataclass
class Figures:
    """One product's column: figure name -> value (``None``: not measured), and notes on why not."""

    values: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class ChatIds:
    """Fresh private-chat ids (= user ids) for each phase, so no phase sees another's replies."""

    def __init__(self, first: int = 5001) -> None:
        self._ids = itertools.count(first)
        self.all = list(range(first, first + 20_000))  # the allowlist the peer is given

    def take(self, n: int) -> list[int]:
        return [next(self._ids) for _ in range(n)]


def tail_of(pace: BenchPace) -> str:
    return pace.answer().text[-24:]


@dataclass
class Talk:
    """What one stretch of conversations gave: the turns, the wall time until the last answer, the CPU seconds
    spent meanwhile by the service and by this process (simulated users, fakes, shim), how late this process's
    event loop ran (p99, ms: the fakes' clocks can be that late), and the most model streams open at once."""

    turns: list[Turn]
    wall: float
    cpu: float
    driver_cpu: float
    lag_ms: float
    streams: int


async def talk(tg: FakeTelegram, ai: FakeOpenRouter, svc: Service, chats: list[int], seconds: float,
               patience: float, pace: BenchPace) -> Talk:
    """Each chat writes, waits for the whole answer, writes again, for ``seconds``."""
    ai.bench(pace)
    observer = Observer(tg, tail_of(pace))
    requests_before = len(ai.requests)
    turns: list[Turn] = []
    lags: list[float] = []
    probe = asyncio.ensure_future(_loop_lag(lags))
    # Users write at their own moments, not all in one millisecond: their first messages are spread evenly
    # over one turn's length (model time and a pause), as independent people's would be.
    period = pace.first_token + pace.tokens / pace.tokens_per_second + THINK
    with _no_collections():
        cpu0, driver0, start = svc.cpu(), time.process_time(), time.monotonic()
        try:
            await asyncio.gather(*(converse(observer, c, start + seconds, patience, turns, i * period / len(chats))
                                   for i, c in enumerate(chats)))
        finally:
            observer.close()
            probe.cancel()
    cpu, driver = svc.cpu() - cpu0, time.process_time() - driver0
    answered = [t.final for t in turns if t.final is not None]
    wall = (max(answered) if answered else time.monotonic()) - start
    Observer.match_model(turns, ai.requests[requests_before:])
    return Talk(turns, wall, cpu, driver, pct(lags, 0.99) * 1000, _most_open(ai.requests[requests_before:]))


def fresh_home(prefix: str, name: str = "home") -> Path:
    """An empty home directory for one launch."""
    home = Path(tempfile.mkdtemp(prefix=prefix)) / name
    home.mkdir()
    return home


def with_history(root: Path, db: Path, chats: list[int], messages: int) -> None:
    """Each of ``chats`` with a session of ``messages`` earlier messages (a question and an answer, in turn), in a
    database that ``root``'s own code has migrated (so an older checkout is not refused a newer schema)."""
    # bench.seed with no sessions: the database opened (and migrated) by that checkout's Store, nothing more
    subprocess.run([sys.executable, "-m", "bench.seed", "chorus", str(db), "0"], cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        for chat in chats:
            session = conn.execute("INSERT INTO sessions (key, channel, chat_id) VALUES (?, 'telegram', ?)",
                                   (f"telegram:{chat}", str(chat))).lastrowid
            conn.executemany("INSERT INTO messages (session_id, role, content) VALUES (?, ?, ?)",
                             [(session, *HISTORY[n % 2]) for n in range(messages)])


@asynccontextmanager
async def serving(launch: Launch, home: Path, tg: FakeTelegram, ai: FakeOpenRouter, ids: ChatIds,
                  warm_up: float = 4) -> AsyncIterator[Service]:
    """The service started, receiving, and warmed up (10 chats for ``warm_up`` seconds: imports, caches and
    connections are made before anything is measured); stopped on the way out."""
    svc = await Service.start(launch, home / "service.log")
    try:
        await svc.ready(tg)
        await talk(tg, ai, svc, ids.take(10), warm_up, 30, LOAD_PACE)
        yield svc
    finally:
        await svc.stop()


@contextmanager
def _no_collections() -> Iterator[None]:
    """No garbage collection in the bench process while a row runs (one before and after instead).

    The fakes keep every call they saw; collecting them stopped the fakes for 90-320 ms every ~3 s at
    1,000 chats, and each such stall was counted against the product being measured."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


async def _loop_lag(out: list[float], every: float = 0.01) -> None:
    """How much later than asked this process's event loop wakes up, sampled every ``every`` seconds."""
    while True:
        asked = time.monotonic() + every
        await asyncio.sleep(every)
        out.append(max(0.0, time.monotonic() - asked))


def _most_open(requests: list[Recorded]) -> int:
    """The most streamed chat calls the fake model had open at one moment."""
    edges = sorted(edge for r in requests if r.path.endswith("/chat/completions") and isinstance(r.json, dict)
                   and r.json.get("stream") for edge in ((r.at, 1), (r.done_at or time.monotonic(), -1)))
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def answered(turns: list[Turn]) -> list[Turn]:
    return [t for t in turns if t.final is not None]


def values(turns: list[Turn], attr: str) -> list[float]:
    return [v for t in turns if (v := getattr(t, attr)) is not None]


async def latency(tg: FakeTelegram, ai: FakeOpenRouter, svc: Service, ids: ChatIds, plan: Plan, out: Figures) -> None:
    """First visible sign and first token visible (p50/p99), and CPU per text turn, at a light load."""
    run = await talk(tg, ai, svc, ids.take(plan.latency_chats), plan.latency_seconds, plan.patience, LATENCY_PACE)
    turns, cpu = run.turns, run.cpu
    done = answered(turns)
    signs, shown = values(turns, "sign_ms"), values(done, "token_visible_ms")
    out.values |= {"sign p50": pct(signs, 0.5), "sign p99": pct(signs, 0.99),
                   "token p50": pct(shown, 0.5), "token p99": pct(shown, 0.99),
                   "cpu/turn": cpu * 1000 / len(done) if done else None}
    if len(done) < len(turns):
        out.notes.append(f"latency phase: {len(turns) - len(done)} of {len(turns)} turns unanswered")


async def concurrency(tg: FakeTelegram, ai: FakeOpenRouter, svc: Service, ids: ChatIds, plan: Plan,
                      out: Figures) -> None:
    """Turns per second and the service's own p99 overhead at each load row of the plan (1, 10, 100, 130 and
    1,000 concurrent chats), what the bench itself spent meanwhile, and the busiest row before the p99 turn time
    doubled."""
    baseline: float | None = None
    for chats, seconds in plan.row_seconds.items():
        if not await settle(tg):
            out.notes.append(f"{chats} chats: still busy with earlier messages after 30 s; measured anyway")
        run = await talk(tg, ai, svc, ids.take(chats), seconds, plan.patience, LOAD_PACE)
        done = answered(run.turns)
        tps = len(done) / run.wall if done else 0.0
        out.values[f"tps {chats}"] = tps
        out.values[f"p99 over {chats}"] = pct(values(done, "overhead_ms"), 0.99) if done else None
        out.values[f"cpu/turn {chats}"] = run.cpu * 1000 / len(done) if done else None
        out.values[f"service cpu {chats}"] = run.cpu * 100 / run.wall
        out.values[f"driver {chats}"] = run.driver_cpu * 100 / run.wall
        out.values[f"lag {chats}"] = run.lag_ms
        out.values[f"streams {chats}"] = float(run.streams)
        p99_turn = pct([t.final - t.available for t in done if t.final is not None], 0.99) if done else None
        baseline = baseline or p99_turn
        if len(done) < len(run.turns):
            out.notes.append(f"{chats} chats: {len(run.turns) - len(done)} of {len(run.turns)} turns unanswered "
                             f"within {plan.patience:.0f} s")
        elif baseline and p99_turn and p99_turn <= 2 * baseline:
            out.values["sustained"] = max(out.values.get("sustained") or 0.0, tps)
    out.values["rss load"] = svc.peak_mib()


async def voice(tg: FakeTelegram, ai: FakeOpenRouter, svc: Service, ids: ChatIds, plan: Plan, out: Figures) -> None:
    """A voice note in, a voice note out: turn time minus the fake's STT, model and TTS time."""
    if not await settle(tg, limit=60):
        out.notes.append("voice: measured while earlier turns were still being answered")
    ai.bench(LATENCY_PACE)
    observer = Observer(tg, tail_of(LATENCY_PACE), final_method="sendVoice")
    before = len(ai.requests)
    try:
        turn = observer.voice(ids.take(1)[0], make_audio("ogg_opus", plan.voice_seconds), plan.voice_seconds)
        await asyncio.wait_for(turn.done.wait(), plan.patience)
    except TimeoutError:
        out.notes.append("voice: no voice note came back")
        return
    finally:
        observer.close()
    assert turn.final is not None
    model = sum((r.done_at or r.at) - r.at for r in ai.requests[before:] if _voice_call(r))
    out.values["voice"] = (turn.final - turn.available - model) * 1000


def _voice_call(rec: Recorded) -> bool:
    """A call of the voice turn: its transcription, its speech, and the chat call that answers the transcript."""
    if rec.path.endswith(("/audio/transcriptions", "/audio/speech")):
        return True
    messages = rec.json.get("messages") if isinstance(rec.json, dict) else None
    return isinstance(messages, list) and bool(messages) and TRANSCRIPT in last_user_text(messages)


async def cold_start(tg: FakeTelegram, ai: FakeOpenRouter, product: Product, home: Path, ids: ChatIds,
                     plan: Plan, out: Figures) -> None:
    """From starting the process to the whole answer of a message sent the moment it first polls.

    (Sent then, not before: hermes drops updates that were waiting when it starts, by design.)"""
    ai.bench(LATENCY_PACE)
    observer = Observer(tg, tail_of(LATENCY_PACE))
    svc = await Service.start(product.launch(home, tg, ai, ids.all, voice=False), home / "service.log")
    try:
        await svc.ready(tg)
        turn = observer.send(ids.take(1)[0])
        await asyncio.wait_for(turn.done.wait(), 120)
        assert turn.final is not None
        out.values["cold"] = turn.final - svc.started
    except TimeoutError:
        out.notes.append("cold start: the first message was not answered within 120 s")
    finally:
        observer.close()
        await svc.stop()


async def stored(tg: FakeTelegram, ai: FakeOpenRouter, product: Product, home: Path, ids: ChatIds, plan: Plan,
                 out: Figures) -> None:
    """Peak memory with ``plan.stored_sessions`` sessions in the database and the busiest load row running."""
    launch = product.launch(home, tg, ai, ids.all, voice=False)
    product.seed(home, plan.stored_sessions)
    svc = await Service.start(launch, home / "service.log")
    try:
        await svc.ready(tg)
        chats = max(plan.row_seconds)
        await talk(tg, ai, svc, ids.take(chats), min(plan.row_seconds[chats], 10.0), plan.patience, LOAD_PACE)
        out.values["rss stored"] = svc.peak_mib()
    finally:
        await svc.stop()
