"""Chorus, hermes-agent and nanobot side by side, as real processes, through the same fake Telegram and fake
OpenRouter; and a bare bot (``bench/bare_bot.py``) beside them as the floor under the CPU rows.

``python -m bench.side_by_side [--quick] [--only Chorus|hermes|nanobot|"bare bot"] [--rows 1000]``.
Everything listens and connects on 127.0.0.1; ``bench/__main__`` runs this inside a network namespace of its own
where only loopback exists, so no product can reach anything else even if it tried. Each phase runs for every
product in the same run, one after the other, so all meet the same machine load; on a shared 2-core machine the
figures are still noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import peer, scenarios
from .products import ROOT, BareBot, Chorus, Hermes, Nanobot, Product
from .scenarios import ChatIds, Figures, Plan
from .service import Service
from .stats import ratio
from .tls_shim import TelegramShim

Row = tuple[str, str, str, bool | None]  # key, label, unit, higher is better (None: a figure of the bench, no ratio)
LATENCY_ROWS: list[Row] = [
    ("sign p50", "update -> first visible sign, p50", "ms", False),
    ("sign p99", "update -> first visible sign, p99", "ms", False),
    ("token p50", "first model token -> visible, p50", "ms", False),
    ("token p99", "first model token -> visible, p99", "ms", False),
    ("cpu/turn", "CPU per text turn ({latency_chats} chats)", "ms", False),
]
LAST_ROWS: list[Row] = [
    ("sustained", "turns/s sustained before p99 turn doubles", "/s", True),
    ("voice", "voice turn beyond STT+model+TTS, 30 s note", "ms", False),
    ("rss idle", "peak RSS idle", "MiB", False),
    ("rss load", "peak RSS after the load rows", "MiB", False),
    ("rss stored", "peak RSS, 10,000 stored sessions + load", "MiB", False),
    ("cold", "cold start -> first message answered", "s", False),
]


def rows(plan: Plan) -> list[Row]:
    """The table's rows: latency, then a group for each load row of ``plan``, then the rest."""
    load = [row for n in plan.row_seconds for row in (
        (f"tps {n}", f"turns/s, {n} chats (model 2 s)", "/s", True),
        (f"p99 over {n}", f"  p99 service overhead, {n} chats", "ms", False),
        (f"cpu/turn {n}", f"  CPU per turn, {n} chats", "ms", False),
        (f"service cpu {n}", f"  service CPU, {n} chats", "%", None),
        (f"streams {n}", f"  model streams open at once, {n} chats", "", None),
        (f"driver {n}", f"  bench driver + fakes CPU, {n} chats", "%", None),
        (f"lag {n}", f"  bench event loop late, p99, {n} chats", "ms", None))]
    return [*LATENCY_ROWS, *load, *LAST_ROWS]


Phase = Callable[[Product, Path, Figures], Awaitable[None]]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal")) / 2**20
    hot, cold = wake_cost()
    return (f"machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}; "
            f"load average at start {load}; python {sys.version.split()[0]}; "
            f"a slice of work that takes {hot * 1e6:.0f} us of CPU back to back takes {cold * 1e6:.0f} us right "
            f"after 20 ms asleep")


def _slice() -> None:
    """A fixed slice of the kind of work an event loop does on a wake-up: encode and decode a small JSON body."""
    body = {"ok": True, "result": [{"update_id": n, "message": {"chat": {"id": n}, "text": "hello " * 8}} for n in range(8)]}
    for _ in range(4):
        json.loads(json.dumps(body))


def wake_cost(slices: int = 40, asleep: float = 0.02) -> tuple[float, float]:
    """CPU seconds for one slice of work (``_slice``) run back to back, and run right after ``asleep`` seconds
    of sleep (its wake-up included); medians of ``slices``. Where caches outlast a short sleep the two are
    close; in the VM the README's table ran on the second was 3.7 times the first. An event loop at light load
    wakes about twenty times per turn, each after such a sleep, so this sets a floor under every product's CPU
    per turn at 1 to 100 chats."""
    def median_cpu(gap: float) -> float:
        costs = []
        for _ in range(slices):
            start = time.thread_time()
            if gap:
                time.sleep(gap)
            _slice()
            costs.append(time.thread_time() - start)
        return statistics.median(costs)

    median_cpu(0)  # warm up
    return median_cpu(0), median_cpu(asleep)


def render(products: list[Product], figures: dict[str, Figures], plan: Plan | None = None) -> str:
    """The table: one column per product, then Chorus against each peer (``vs hermes``, ``vs nanobot``)."""
    plan = plan or Plan()
    names = [p.name for p in products]
    peers = [n for n in names[1:] if n in peer.PEERS] if names[0] == Chorus.name else []
    head = (f"{'figure':<44} {'unit':>4} " + " ".join(f"{n:>10}" for n in names)
            + "".join(f" {'vs ' + p:>11}" for p in peers))
    lines = [head, "-" * len(head)]
    for key, label, unit, higher in rows(plan):
        vals = [figures[n].values.get(key) for n in names]
        if all(v is None for v in vals):
            continue
        cells = " ".join(f"{_fmt(v):>10}" for v in vals)
        ratios = "".join(f" {'' if higher is None else ratio(vals[0], figures[p].values.get(key), higher_is_better=higher):>11}"
                         for p in peers)
        label = label.format(latency_chats=plan.latency_chats)
        lines.append(f"{label:<44} {unit:>4} {cells}{ratios}")
    if peers:
        lines.append("vs PEER: how many times better Chorus is than that peer (above 1.0x: Chorus ahead)")
    lines += NOTES
    for n in names:
        lines += [f"{n}: {note}" for note in figures[n].notes]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 1 else f"{v:.2f}"


async def run(products: list[Product], plan: Plan, workdir: Path) -> dict[str, Figures]:
    figures = {p.name: Figures() for p in products}
    async with FakeTelegram() as tg, FakeOpenRouter() as ai, TelegramShim(tg.port, workdir / "tls") as shim:
        ai.lenient = True  # the peers send fields our contract check does not know; counted, not refused
        for product in products:
            if isinstance(product, Nanobot):
                product.shim = shim
                figures[product.name].notes.append(SHIM_NOTE)
        ids = ChatIds()

        async def main_run(product: Product, home: Path, out: Figures) -> None:
            svc = await Service.start(product.launch(home, tg, ai, ids.all, voice=True), home / "service.log")
            try:
                await svc.ready(tg)
                await asyncio.sleep(2)
                out.values["rss idle"] = svc.peak_mib()
                await scenarios.latency(tg, ai, svc, ids, plan, out)
                await scenarios.concurrency(tg, ai, svc, ids, plan, out)
                if isinstance(product, Chorus):
                    await scenarios.voice(tg, ai, svc, ids, plan, out)
                elif product.name in VOICE_NOTES:
                    out.notes.append(VOICE_NOTES[product.name])
            finally:
                await svc.stop()

        async def cold(product: Product, home: Path, out: Figures) -> None:
            await scenarios.cold_start(tg, ai, product, home, ids, plan, out)

        async def stored(product: Product, home: Path, out: Figures) -> None:
            await scenarios.stored(tg, ai, product, home, ids, plan, out)

        phases: list[tuple[str, Phase]] = [("cold start", cold), ("load", main_run), ("stored sessions", stored)]
        tolerated: dict[str, list[str]] = {p.name: [] for p in products}
        for title, phase in phases:
            for product in products:
                if isinstance(product, BareBot) and phase is not main_run:  # it has no storage, and starts in no time
                    continue
                out = figures[product.name]
                print(f"  {product.name}: {title} ...", flush=True)
                started, before = time.monotonic(), len(ai.tolerated)
                try:
                    await phase(product, workdir / product.name / title.replace(" ", "-"), out)
                except Exception as exc:  # one product failing must not hide the others' columns
                    out.notes.append(f"{title} failed: {type(exc).__name__}: {exc}")
                    traceback.print_exc(limit=3)
                tolerated[product.name] += ai.tolerated[before:]
                print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
        for name, problems in tolerated.items():
            if problems:
                kinds = sorted({t.split(":")[0] for t in problems})[:5]
                figures[name].notes.append(f"the fake OpenRouter tolerated {len(problems)} of its requests outside "
                                           f"its contract ({'; '.join(kinds)})")
        if shim.refused:
            figures.get("nanobot", Figures()).notes.append(f"the Telegram shim refused {len(shim.refused)} "
                                                           f"connections elsewhere ({shim.refused[0]}, ...)")
    return figures


VOICE_NOTES = {
    "hermes": "voice not measured: hermes-agent 0.19 transcribes with local faster-whisper (a model download) or "
              "OpenAI/Groq/Mistral/xAI/ElevenLabs hosts; it has no OpenRouter speech-to-text to point at the fake",
    "nanobot": "voice not measured: nanobot 0.3.5 can transcribe through OpenRouter, but it has no text-to-speech "
               "of its own and answers a voice note in text, so the row's STT+model+TTS turn does not exist for it",
}
SHIM_NOTE = (
    "its Telegram channel cannot be given a Bot API base URL (python-telegram-bot is built without "
    "base_url); it reaches the fake through its own `proxy` setting and bench/tls_shim.py, a CONNECT proxy in the "
    "bench process that answers TLS for api.telegram.org with a certificate made for the run (SSL_CERT_FILE) and "
    "forwards to the fake: its code is not patched, and it pays for TLS as against the real host (two loopback "
    "hops more per Bot API call)")
NOTES = [
    "chats: each simulated user writes, waits for the whole answer, pauses 0.5 s and writes again; their first "
    "messages are spread evenly over one turn's length, so N chats arrive as N independent people would, not all "
    "in one millisecond (a burst of 1,000 at once would mostly measure the queue it makes)",
    "service CPU: the product's process tree in % of one core during that row (100%: one core busy, which is all "
    "a single event loop can use). bench driver + fakes CPU: the bench process (simulated users, both fakes, the shim) in % of one core during "
    "that row; with 2 cores, what it takes the product cannot have. bench event loop late: how much later than "
    "asked the bench's event loop woke up (p99): the fakes' clocks, and so every latency, can be off by that much",
    "model streams open at once: the most streamed chat calls the fake model had open at one moment (at 1,000 "
    "chats the issue asks for 1,000)",
    "turns/s sustained before p99 turn doubles: the busiest row whose turns were all answered and whose p99 turn "
    "time (update to whole answer) stayed within twice that of 1 chat; only 1/10/100/130/1,000 chats are tried, so "
    "it is a lower bound",
    "first visible sign: a chat action, a draft, a message, or a reaction (nanobot marks a message it got with "
    "an emoji reaction)",
    "bare bot: bench/bare_bot.py, the same Bot API calls and model stream as a Chorus turn, over Chorus's HTTP "
    "client, JSON codec and event loop, and nothing else (no storage, history, formatting, access rules); a floor "
    "under any Python bot's CPU per turn on this machine, not a peer: Chorus's column minus its is what Chorus "
    "does beyond moving the bytes",
]


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="short phases, for a smoke run")
    args.add_argument("--only", choices=[Chorus.name, BareBot.name, *peer.PEERS], help="run one product")
    args.add_argument("--rows", help="only these load rows, e.g. 1000 or 1,100 (their seconds as in the plan)")
    args.add_argument("--peer-problem", action="append", default=[], metavar="NAME=WHY",
                      help="why a peer is missing (set by bench/__main__)")
    opts = args.parse_args(argv)
    problems = dict(p.split("=", 1) for p in opts.peer_problem)
    for name, venv in peer.PEERS.items():
        if name not in problems and not venv.version():
            problems[name] = f"{venv.dist} is not installed in {venv.venv.relative_to(ROOT)}"
    every: list[Product] = [Chorus(), BareBot(), Hermes(), Nanobot()]
    products = [p for p in every if p.name not in problems and opts.only in (None, p.name)]
    plan = Plan.quick() if opts.quick else Plan()
    if opts.rows:
        plan = plan.only_rows([int(n) for n in opts.rows.split(",")])
    print(machine())
    print("versions: " + ", ".join(f"{p.name} {p.version()}" for p in products) +
          "".join(f"; {name} not run: {why}" for name, why in problems.items() if opts.only in (None, name)))
    print(f"fake model: {scenarios.LATENCY_PACE.first_token:g} s to first token for latency rows, "
          f"{scenarios.LOAD_PACE.first_token:g} s for load rows; {scenarios.LOAD_PACE.tokens} tokens at "
          f"{scenarios.LOAD_PACE.tokens_per_second:g} tokens/s; loopback only")
    workdir = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    try:
        figures = asyncio.run(run(products, plan, workdir))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")
    print(render(products, figures, plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
