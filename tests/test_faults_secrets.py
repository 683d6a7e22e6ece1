"""Issue 8, "Secrets": no key or token ever reaches a chat, an error line or a log, and onboarding and
``doctor`` check the key with OpenRouter itself. Through the real CLI and the fake OpenRouter."""

from __future__ import annotations

import pytest

from tests.conftest import chorus, onboarded
from tests.fakes.openrouter import EchoAuth, FakeOpenRouter

AUTH_ADVICE = "Run `chorus onboard` or `chorus models auth login --provider openrouter` to store a valid key."


async def test_an_error_body_echoing_the_key_reaches_the_chat_masked(home, fake_openrouter):
    await onboarded(home, fake_openrouter)
    fake_openrouter.queue(EchoAuth(401))
    result = await chorus(home, "run", stdin="hi\n")
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "⚠️ OpenRouter did not accept the API key (it is wrong or was revoked) "
        f"(Authorization header 'Bearer ***' was refused for key ***). {AUTH_ADVICE}"
    ]
    assert fake_openrouter.api_key not in result.out + result.err
    assert "0123456789abcdef" not in result.out + result.err  # no tail of the key either


async def test_a_key_of_any_shape_is_masked_because_chorus_knows_it(home):
    # A proxy's own key has no sk-or- shape: only knowing it as the configured key can mask it.
    async with FakeOpenRouter(api_key="proxy-7f3a9c21e8b4d605") as fake:
        home.write_config(fake, models={"providers": {"openrouter": {"apiKey": fake.api_key}}})
        fake.queue(EchoAuth(400))
        result = await chorus(home, "run", stdin="hi\n")
        fake.assert_clean()
    assert result.out.splitlines() == [
        "⚠️ OpenRouter refused the request as malformed (Authorization header 'Bearer ***' was refused for key ***). "
        "Check the model name and the request settings in the config."
    ]
    assert "proxy-7f3a9c21e8b4d605" not in result.out + result.err
