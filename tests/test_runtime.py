"""The service's own process-wide settings, checked in-process."""

from __future__ import annotations

import gc
import io
import weakref

from bot.auth import Credential
from bot.config import LoadedConfig, parse_config
from bot.runtime import Env, Runtime, collect_if_quiet


async def test_serving_freezes_what_start_up_built(tmp_path, fake_openrouter):
    """A full garbage collection scanned every module, schema and type built at start-up (~220,000 objects in
    ``chorus run``: 60-200 ms with the loop stopped, the p99 of a turn). Serving freezes them first."""
    env = Env({"CHORUS_HOME": str(tmp_path)})
    config, _ = parse_config({"models": {"providers": {"openrouter": {"baseUrl": fake_openrouter.base_url}}}}, env={})
    runtime = await Runtime.open(LoadedConfig(config, tmp_path / "chorus.json5", {}, []), env,
                                 Credential(fake_openrouter.api_key, "test"))
    gc.unfreeze()
    try:
        await runtime.serve(runtime.channels(io.StringIO("/quit\n"), io.StringIO(), env=env))
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # the rest of the test process collects as usual
        await runtime.close()


class _Cycle:
    """An object in a reference cycle, holding a buffer as an error's traceback might hold a download."""

    def __init__(self) -> None:
        self.me = self
        self.data = bytearray(1_000_000)


def test_a_quiet_service_collects_its_cycles_and_a_busy_one_is_left_to_its_collector():
    gc.collect()
    gc.disable()  # no automatic collection in between: the counts below move only when told to
    try:
        quiet = weakref.ref(_Cycle())
        seen = collect_if_quiet(gc.get_stats()[0]["collections"])  # none ran since: collected now
        assert quiet() is None
        busy = weakref.ref(_Cycle())
        assert collect_if_quiet(seen - 1) == seen  # one ran since (as under load): no pause added here
        assert busy() is not None
    finally:
        gc.enable()
    gc.collect()
    assert busy() is None
