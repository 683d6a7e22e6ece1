"""The service's own process-wide settings, checked in-process."""

from __future__ import annotations

import gc
import io

from bot.auth import Credential
from bot.config import LoadedConfig, parse_config
from bot.runtime import Env, Runtime


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
