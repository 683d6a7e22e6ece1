"""The side-by-side bench's own helpers (no benchmark runs here): quantiles, ratios, the fakes' bench clocks,
and the observer that times a turn from the fake Telegram's calls."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading
import time
import types
from collections import defaultdict

import aiohttp
import httpx

from bench import probe, procstat
from bench.stats import pct, ratio
from bench.users import Observer
from tests.fakes.openrouter import BenchPace, FakeOpenRouter
from tests.fakes.telegram import FakeTelegram


def test_quantiles_and_ratios():
    assert pct([5, 1, 3, 2, 4], 0.5) == 3
    assert pct(list(range(100)), 0.99) == 99
    assert pct([], 0.5) != pct([], 0.5)  # NaN
    assert ratio(10, 30) == "3.0x"  # lower is better: Chorus 3x ahead
    assert ratio(30, 10, higher_is_better=True) == "3.0x"
    assert ratio(None, 5) == "-"


def test_process_figures_come_from_proc():
    assert procstat.memory_kib(os.getpid(), "VmHWM") > 1000


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_readings_are_exact_and_count_a_thread_that_ended():
    """Clock ticks read CPU in 10 ms steps: two bursts 3 ms apart cannot both come within 1 ms of what the
    process's own clock says. A thread that has ended shows only in the ticks."""
    for burst in (0.002, 0.005):
        before, process_before = procstat.CpuReading.of(os.getpid()), time.process_time()
        _burn(burst)
        spent, process_spent = procstat.CpuReading.of(os.getpid()) - before, time.process_time() - process_before
        assert abs(spent - process_spent) < 0.001, (burst, spent, process_spent)
    before = procstat.CpuReading.of(os.getpid())
    # The ticks' rounding given up grows with the process tree: this worker's PostgreSQL server, if an earlier
    # test started it, is part of it. Burn past it, so the figure still shows the ended thread.
    worker = threading.Thread(target=_burn, args=(0.2 + before.slack,))
    worker.start()
    worker.join()
    assert procstat.CpuReading.of(os.getpid()) - before > 0.1  # at most 4 ticks of rounding are given up


def test_a_process_that_has_ended_has_no_cpu_figure():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    before = procstat.CpuReading.of(proc.pid)
    proc.wait()
    assert math.isnan(procstat.CpuReading.of(proc.pid) - before)


async def test_the_fake_model_paces_its_stream_and_clocks_the_first_token():
    async with FakeOpenRouter() as ai:
        ai.bench(BenchPace(first_token=0.2, tokens_per_second=100, tokens=20, chunk_seconds=0.05))
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        async with httpx.AsyncClient() as http:
            start = time.monotonic()
            async with http.stream("POST", ai.base_url + "/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {ai.api_key}"}) as resp:
                text = "".join([line async for line in resp.aiter_lines()])
        rec = ai.chat_requests()[0]
        assert rec.first_token_at is not None and rec.done_at is not None
        assert 0.2 <= rec.first_token_at - start < 2.0  # paced; the upper bound only rules out a stall
        assert rec.done_at - rec.first_token_at >= 0.15  # 20 tokens at 100/s, 5 per chunk: 4 chunks 0.05 s apart
        assert "steady" in text


async def test_the_observer_times_a_turn_from_the_fakes_calls():
    async with FakeTelegram() as tg, aiohttp.ClientSession() as http:
        observer = Observer(tg, tail="all done.")
        turn = observer.send(7)

        async def call(method: str, **params: object) -> None:
            async with http.post(f"{tg.api_root}/bot{tg.token}/{method}", json=params) as resp:
                assert resp.status == 200, await resp.text()

        await call("sendChatAction", chat_id=7, action="typing")
        await call("sendMessageDraft", chat_id=7, draft_id=1, text="all")
        assert not turn.done.is_set()
        await call("sendMessage", chat_id=7, text="all done.")
        await asyncio.wait_for(turn.done.wait(), 1)
        assert turn.available <= turn.first_sign <= turn.first_text <= turn.final  # type: ignore[operator]
        assert turn.sign_ms is not None and turn.sign_ms >= 0
        observer.close()
        tg.assert_clean()


def test_most_streams_open_at_once_counts_overlapping_streamed_calls():
    from multidict import CIMultiDict

    from bench.scenarios import _most_open
    from tests.fakes.openrouter import Recorded

    def call(at: float, done: float, stream: bool = True) -> Recorded:
        return Recorded("POST", "/api/v1/chat/completions", {}, CIMultiDict(), b"", json={"stream": stream},
                        at=at, done_at=done)

    assert _most_open([call(0, 3), call(1, 2), call(2.5, 4), call(1.5, 5, stream=False)]) == 2


def test_the_table_prints_chorus_against_each_peer():
    from bench.products import BareBot, Chorus, Hermes, Nanobot
    from bench.scenarios import Figures, Plan
    from bench.side_by_side import render

    figures = {"Chorus": Figures({"cpu/turn": 10.0}), "bare bot": Figures({"cpu/turn": 4.0}),
               "hermes": Figures({"cpu/turn": 200.0}), "nanobot": Figures({"cpu/turn": 50.0}, ["a note"])}
    table = render([Chorus(), BareBot(), Hermes(), Nanobot()], figures)
    head, _, row = table.splitlines()[:3]
    assert head.split()[-4:] == ["vs", "hermes", "vs", "nanobot"]  # the bare bot is a floor, not a peer
    assert row.split()[-6:] == ["10.0", "4.0", "200", "50.0", "20.0x", "5.0x"]
    assert "nanobot: a note" in table
    assert row.startswith("CPU per text turn (10 chats) ")
    assert render([Chorus()], figures, Plan.quick()).splitlines()[2].startswith("CPU per text turn (2 chats) ")
    figures["Chorus"].values.update({"tps 130": 29.9, "cpu/turn 130": 2.9})  # any load row the plan has is shown
    rows = render([Chorus()], figures, Plan().only_rows([130])).splitlines()[2:5]
    assert [line.split()[-1] for line in rows] == ["10.0", "29.9", "2.9"]
    assert rows[1].startswith("turns/s, 130 chats ") and rows[2].startswith("  CPU per turn, 130 chats ")


async def test_the_telegram_shim_answers_tls_for_telegram_only(tmp_path):
    import ssl

    from bench.tls_shim import TelegramShim

    async with FakeTelegram() as tg, TelegramShim(tg.port, tmp_path) as shim:
        trust = ssl.create_default_context(cafile=str(shim.cert))
        async with httpx.AsyncClient(proxy=shim.proxy_url, verify=trust) as http:
            resp = await http.get(f"https://api.telegram.org/bot{tg.token}/getMe")
            assert resp.json()["result"]["username"] == "chorus_test_bot"
            try:
                await http.get("https://example.org/")
                raise AssertionError("the shim let a connection elsewhere through")
            except httpx.ProxyError:
                pass
        assert shim.refused == ["CONNECT example.org:443"]
        assert [c.method for c in tg.calls] == ["getMe"]


_BENCH_THAT_DIES = """
import asyncio, sys
from pathlib import Path
from bench.products import Launch
from bench.service import Service

async def main():
    sleeper = Launch([sys.executable, "-c", "import time; time.sleep(60)"], {}, Path.cwd())
    svc = await Service.start(sleeper, Path(sys.argv[1]))
    print(svc.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_the_bare_bot_does_a_chorus_turn_and_nothing_else(tmp_path):
    """The floor under the CPU rows only means something if it makes the calls a Chorus turn makes."""
    from bench.products import BareBot
    from bench.service import Service

    async with FakeTelegram() as tg, FakeOpenRouter() as ai:
        pace = BenchPace(first_token=0.1, tokens_per_second=50, tokens=60, chunk_seconds=0.1)  # 1.2 s of text
        ai.bench(pace)
        svc = await Service.start(BareBot().launch(tmp_path, tg, ai, [7], voice=False), tmp_path / "bare.log")
        try:
            await svc.ready(tg)
            tg.message(7, "hello there")
            (final,) = await tg.wait_sent(7)
        finally:
            await svc.stop()
        answer = pace.answer().text
        assert final.text == answer
        (request,) = ai.chat_requests()
        assert request.json["stream"] is True and request.json["messages"] == [{"role": "user", "content": "hello there"}]
        assert [c.params["action"] for c in tg.calls_to("sendChatAction")] == ["typing"]
        # 1.2 s of text: a draft, then at most one every 0.7 s (two, or three when this machine is slow), growing
        drafts = tg.calls_to("sendMessageDraft")
        texts = [c.params["text"] for c in drafts]
        assert len(texts) >= 2 and all(answer.startswith(t) for t in texts), texts
        assert all(later.at - earlier.at >= 0.65 for earlier, later in zip(drafts, drafts[1:]))
        assert all(len(a) < len(b) for a, b in zip(texts, [*texts[1:], answer]))
        tg.assert_clean()


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a reaper that never comes in a container)."""
    try:
        return procstat._stat_fields(pid)[0] != "Z"
    except FileNotFoundError:
        return False


async def test_a_service_does_not_outlive_a_bench_that_was_killed(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    bench = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _BENCH_THAT_DIES, str(tmp_path / "service.log"), cwd=root,
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        service = int(await asyncio.wait_for(bench.stdout.readline(), 30))  # type: ignore[union-attr]
        assert _running(service)
        bench.kill()  # no finally runs: only the kernel can end the service now
        await bench.wait()
        deadline = time.monotonic() + 5
        while _running(service) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not _running(service), "the service outlived the bench that started it"
    finally:
        if bench.returncode is None:
            bench.kill()
            await bench.wait()


def _spin(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    while time.thread_time() < end:
        pass


def test_the_probe_times_a_function_where_it_is_called_and_a_coroutine_without_its_waits():
    target, holder = types.ModuleType("probe_target"), types.ModuleType("probe_holder")

    async def work() -> str:
        _spin(20)
        await asyncio.sleep(0.2)  # another task spins 100 ms meanwhile: not this coroutine's CPU
        _spin(20)
        return "done"

    async def main() -> str:
        async def other() -> None:
            await asyncio.sleep(0.05)
            _spin(100)

        busy = asyncio.create_task(other())
        answer = await target.work()
        await busy
        return answer

    def spin(ms: float) -> None:  # not _spin itself: every module holding the function gets the timed one
        _spin(ms)

    target.spin, target.work, holder.spin = spin, work, spin  # holder imported spin by name
    sums: probe.Sums = defaultdict(lambda: [0, 0])
    sys.modules.update(probe_target=target, probe_holder=holder)
    try:
        probe.wrap("probe_target:spin", sums)
        probe.wrap("probe_target:work", sums)
        holder.spin(5)
        assert asyncio.run(main()) == "done"
    finally:
        del sys.modules["probe_target"], sys.modules["probe_holder"]
    assert sums["spin"][1] == 1 and 4e6 <= sums["spin"][0] < 30e6
    ns, calls = sums["work"]
    assert calls == 1 and 38e6 <= ns < 90e6, ns
