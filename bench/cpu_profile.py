"""Run a module under cProfile timed by the thread's CPU clock, not the wall clock.

``python -m bench.cpu_profile OUT.prof MODULE [ARGS...]``: as ``python -m MODULE ARGS``, the profile written to
``OUT.prof`` when it exits, or on SIGTERM (a module that handles SIGTERM itself exits in its own way). An event loop at light load spends most wall time
asleep in its selector; with ``time.thread_time`` that sleep costs nothing, so the profile shows where the CPU
of a turn goes. Only the main thread is profiled (aiosqlite's worker thread is not).
"""

from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below runs, and writes the profile
    profile = cProfile.Profile(time.thread_time)
    try:
        profile.runcall(runpy.run_module, module, run_name="__main__", alter_sys=True)
    finally:
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
