"""The config file is watched by the real ``chorus run``: an access list changed in the file counts from the
next message, a change that needs a restart says so in one line, and a broken edit keeps the running config."""

from __future__ import annotations

import json
import os

from tests.fakes.telegram import user
from tests.telegram_service import running, telegram_config


async def test_an_allowlist_change_applies_without_a_restart(home, fake_openrouter, fake_telegram):
    tg, ai, eve = fake_telegram, fake_openrouter, 5401
    async with running(home, tg, ai, dmPolicy="allowlist") as service:
        tg.message(eve, "hello", sender=user(eve, "Eve", None))
        (refused,) = await tg.wait_sent(eve)
        home.config.write_text("{ not json5")  # a half-saved file: refused, the running config stays
        await tg.wait_for(lambda: "the changed config was not taken" in service.log)
        config = json.loads(json.dumps({"models": {"providers": {"openrouter": {"baseUrl": ai.base_url, "maxRetries": 0}}},
                                        **telegram_config(tg, dmPolicy="allowlist", allowFrom=[eve], streamThrottleMs=300)}))
        home.config.write_text(json.dumps(config))
        os.utime(home.config, (os.path.getmtime(home.config) + 5,) * 2)  # a new mtime, however quick the writes
        await tg.wait_for(lambda: "config reloaded" in service.log)
        tg.message(eve, "hello again", sender=user(eve, "Eve", None))
        await tg.wait_sent(eve, 2)
    assert "Your telegram id is 5401" in (refused.text or "")
    assert tg.texts_in(eve)[1] == "echo: hello again"
    assert "config reloaded: channels changed" in service.log
    assert ("the change to channels.telegram takes effect after a restart of Chorus (the rest applies now)"
            in service.log)  # streamThrottleMs is the adapter's, built at start
