"""Chorus and hermes-agent side by side, as real processes, through the same fake Telegram and fake OpenRouter.

``python -m bench.side_by_side [--quick] [--only Chorus]``. Everything listens and connects on 127.0.0.1;
``bench/__main__`` runs this inside a network namespace of its own where only loopback exists, so neither
product can reach anything else even if it tried. Each phase runs for both products in the same run, one
after the other, so both meet the same machine load; on a shared 2-core machine the figures are still noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.telegram import FakeTelegram

from . import peer, scenarios
from .products import Chorus, Hermes, Product
from .scenarios import CONCURRENCY, ChatIds, Figures, Plan
from .service import Service
from .stats import ratio

# (key, label, unit, higher is better)
ROWS: list[tuple[str, str, str, bool]] = [
    ("sign p50", "update -> first visible sign, p50", "ms", False),
    ("sign p99", "update -> first visible sign, p99", "ms", False),
    ("token p50", "first model token -> visible, p50", "ms", False),
    ("token p99", "first model token -> visible, p99", "ms", False),
    ("cpu/turn", "CPU per text turn (10 chats)", "ms", False),
    *[row for n in CONCURRENCY for row in (
        (f"tps {n}", f"turns/s, {n} chats (model 2 s)", "/s", True),
        (f"p99 over {n}", f"  p99 service overhead, {n} chats", "ms", False),
        (f"cpu/turn {n}", f"  CPU per turn, {n} chats", "ms", False))],
    ("voice", "voice turn beyond STT+model+TTS, 30 s note", "ms", False),
    ("rss idle", "peak RSS idle", "MiB", False),
    ("rss load", "peak RSS after the load rows", "MiB", False),
    ("rss stored", "peak RSS, 10,000 stored sessions + load", "MiB", False),
    ("cold", "cold start -> first message answered", "s", False),
]

Phase = Callable[[Product, Path, Figures], Awaitable[None]]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal")) / 2**20
    return (f"machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}; "
            f"load average at start {load}; python {sys.version.split()[0]}")


def render(products: list[Product], figures: dict[str, Figures]) -> str:
    names = [p.name for p in products]
    head = f"{'figure':<44} {'unit':>4} " + " ".join(f"{n:>10}" for n in names) + (f" {'ratio':>7}" if len(names) == 2 else "")
    lines = [head, "-" * len(head)]
    for key, label, unit, higher in ROWS:
        vals = [figures[n].values.get(key) for n in names]
        if all(v is None for v in vals):
            continue
        cells = " ".join(f"{_fmt(v):>10}" for v in vals)
        extra = f" {ratio(vals[0], vals[1], higher_is_better=higher):>7}" if len(vals) == 2 else ""
        lines.append(f"{label:<44} {unit:>4} {cells}{extra}")
    lines.append("ratio: how many times better Chorus is (above 1.0x: Chorus ahead)")
    for n in names:
        lines += [f"{n}: {note}" for note in figures[n].notes]
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None or v != v:
        return "n/a"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 1 else f"{v:.2f}"


async def run(products: list[Product], plan: Plan, workdir: Path) -> dict[str, Figures]:
    figures = {p.name: Figures() for p in products}
    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        ai.lenient = True  # the peer sends fields our contract check does not know; counted, not refused
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
                else:
                    out.notes.append(VOICE_NOTE)
            finally:
                await svc.stop()

        async def cold(product: Product, home: Path, out: Figures) -> None:
            await scenarios.cold_start(tg, ai, product, home, ids, plan, out)

        async def stored(product: Product, home: Path, out: Figures) -> None:
            await scenarios.stored(tg, ai, product, home, ids, plan, out)

        phases: list[tuple[str, Phase]] = [("cold start", cold), ("load", main_run), ("stored sessions", stored)]
        for title, phase in phases:
            for product in products:
                out = figures[product.name]
                print(f"  {product.name}: {title} ...", flush=True)
                started = time.monotonic()
                try:
                    await phase(product, workdir / product.name / title.replace(" ", "-"), out)
                except Exception as exc:  # one product failing must not hide the other's column
                    out.notes.append(f"{title} failed: {type(exc).__name__}: {exc}")
                    traceback.print_exc(limit=3)
                print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
        if ai.tolerated:
            kinds = sorted({t.split(":")[0] for t in ai.tolerated})[:5]
            figures[products[-1].name].notes.append(
                f"the fake OpenRouter tolerated {len(ai.tolerated)} requests outside its contract ({'; '.join(kinds)})")
    return figures


VOICE_NOTE = ("voice not measured: hermes-agent 0.19 transcribes with local faster-whisper (a model download) or "
              "OpenAI/Groq/Mistral/xAI/ElevenLabs hosts; it has no OpenRouter speech-to-text to point at the fake")


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--quick", action="store_true", help="short phases, for a smoke run")
    args.add_argument("--only", choices=["Chorus", "hermes"], help="run one product")
    args.add_argument("--peer-problem", help="why the peer is missing (set by bench/__main__)")
    opts = args.parse_args(argv)
    products: list[Product] = [Chorus()]
    hermes_note = opts.peer_problem or (None if peer.version() else "hermes-agent is not installed in bench/.peer-venv")
    if opts.only != "Chorus" and not hermes_note:
        products.append(Hermes())
    if opts.only == "hermes":
        products = [p for p in products if p.name == "hermes"]
    plan = Plan.quick() if opts.quick else Plan()
    print(machine())
    print("versions: " + ", ".join(f"{p.name} {p.version()}" for p in products) +
          (f"; hermes not run: {hermes_note}" if hermes_note and opts.only != "Chorus" else ""))
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
    print(render(products, figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
