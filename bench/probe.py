"""Run a module with chosen functions timed by the thread's CPU clock, inside the running process.

``python -m bench.probe OUT TARGETS MODULE [ARGS...]``: as ``python -m MODULE ARGS``, with each target in
``TARGETS`` (comma-separated ``module:qualname``, e.g. ``bot.db.sqlite:_commit_together`` or
``bot.agent:Agent.turn``) wrapped so that its CPU time and calls add up. A coroutine function is timed step by
step, its suspensions left out, so it counts what it and what it calls do, never other tasks' work while it
waits. ``TARGETS`` may be ``handles``: then the loop is asyncio's own (uvloop's cannot be watched) and every
callback it runs is timed, by the task's coroutine or the callback's name. Every second ``OUT`` gets the sums
so far, so a reader takes the difference over the seconds it cares about.

Why not a profiler: cProfile times every call and inflates code that makes many small ones, and a sampler
(py-spy) at a rate that divides the fakes' 0.1 s ticks samples the same instants of every turn. A wrapper
costs about a microsecond a call and measures what the function costs where it runs, its caches shared
with the rest of the turn, which is 4-6 times what it costs in a loop of its own.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import runpy
import sys
import threading
import time
import types
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

_clock = time.thread_time_ns
Sums = defaultdict[str, list[int]]


def _timed_sync(name: str, fn: Callable[..., Any], sums: Sums) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = _clock()
        try:
            return fn(*args, **kwargs)
        finally:
            s = sums[name]
            s[0] += _clock() - started
            s[1] += 1

    return timed


def _timed_async(name: str, fn: Callable[..., Any], sums: Sums) -> Callable[..., Any]:
    @types.coroutine
    def drive(coro: Any) -> Any:  # the coroutine stepped by hand, each step timed, the waits between not
        s, value, error, spent = sums[name], None, None, 0
        try:
            while True:
                started = _clock()
                try:
                    waited = coro.send(value) if error is None else coro.throw(error)
                except StopIteration as stop:
                    return stop.value
                finally:
                    spent += _clock() - started
                try:
                    value, error = (yield waited), None
                except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as a task would
                    value, error = None, exc
        finally:
            s[0] += spent
            s[1] += 1

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        return await drive(fn(*args, **kwargs))

    return timed


def wrap(target: str, sums: Sums) -> None:
    """Replace ``module:qualname`` by its timed self (import the module; patch it, or the class that owns it)."""
    module, _, qualname = target.partition(":")
    owner: Any = importlib.import_module(module)
    *path, attr = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    raw = inspect.getattr_static(owner, attr)
    fn = raw.__func__ if isinstance(raw, (staticmethod, classmethod)) else raw
    timed = (_timed_async if inspect.iscoroutinefunction(fn) else _timed_sync)(qualname, fn, sums)
    setattr(owner, attr, type(raw)(timed) if isinstance(raw, (staticmethod, classmethod)) else timed)
    if not path:  # a module's function: modules that imported it by name already hold the original
        for loaded in list(sys.modules.values()):
            names = getattr(loaded, "__dict__", {})
            for key, value in list(names.items()):
                if value is fn:
                    names[key] = timed


def watch_handles(sums: Sums) -> None:
    """Time every callback of asyncio's loop, named by the task it steps or by the callback itself."""
    sys.modules["uvloop"] = None  # type: ignore[assignment]  # net.loop falls back to asyncio's loop
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        started = _clock()
        try:
            run(handle)
        finally:
            callback = handle._callback  # type: ignore[attr-defined]
            task = getattr(callback, "__self__", None)
            if isinstance(task, asyncio.Task):
                name = "task " + getattr(task.get_coro(), "__qualname__", "?")
            else:
                name = "callback " + getattr(callback, "__qualname__", type(callback).__name__)
            s = sums[name]
            s[0] += _clock() - started
            s[1] += 1

    asyncio.events.Handle._run = timed  # type: ignore[method-assign]


def _write_every_second(out: Path, sums: Sums) -> None:
    while True:
        time.sleep(1)
        figures = {name: list(s) for name, s in list(sums.items())}
        tmp = out.with_suffix(".tmp")
        tmp.write_text(repr(figures))
        tmp.replace(out)


def main() -> None:
    out, targets, module, *args = sys.argv[1:]
    sums: Sums = defaultdict(lambda: [0, 0])
    for target in filter(None, targets.split(",")):
        watch_handles(sums) if target == "handles" else wrap(target, sums)
    threading.Thread(target=_write_every_second, args=(Path(out), sums), daemon=True).start()
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
