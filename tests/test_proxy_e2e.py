"""Proxies through the real ``chorus run``: a local SOCKS5 and a local HTTP proxy that log what passes.

The fakes are given names that do not resolve (``telegram.proxied``, ``openrouter.proxied``): only a proxy that
resolves them (socks5h, or an HTTP proxy asked for the whole URL) can reach them, so every Bot API call and every
OpenRouter call that succeeded went through one. The logins must reach the proxies and appear in no log.
"""

from __future__ import annotations

from tests.conftest import Home, chorus, onboarded
from tests.fakes.openrouter import FakeOpenRouter, Text
from tests.fakes.proxies import HTTPProxy, SOCKS5Proxy
from tests.fakes.telegram import FakeTelegram
from tests.telegram_service import running

PASSWORD = "pr0xy-pa55word"


def named(url: str, name: str) -> tuple[str, int]:
    """``url`` with its 127.0.0.1 replaced by ``name``, and the port (for the proxies' dial maps)."""
    port = int(url.split("127.0.0.1:")[1].split("/")[0])
    return url.replace("127.0.0.1", name), port


async def test_configured_proxies_carry_every_bot_api_and_openrouter_call(home: Home, fake_telegram: FakeTelegram,
                                                                         fake_openrouter: FakeOpenRouter):
    """channels.telegram.proxy = socks5h:// with a login, models.providers.openrouter.proxy = http:// with one."""
    tg, ai = fake_telegram, fake_openrouter
    api_root, tg_port = named(tg.api_root, "telegram.proxied")
    base_url, ai_port = named(ai.base_url, "openrouter.proxied")
    async with SOCKS5Proxy(login=("bot", PASSWORD), dial={"telegram.proxied": ("127.0.0.1", tg_port)}) as socks, \
            HTTPProxy(login=("llm", PASSWORD), dial={"openrouter.proxied": ("127.0.0.1", ai_port)}) as web:
        await onboarded(home, ai)
        config = {"models": {"providers": {"openrouter": {"baseUrl": base_url, "maxRetries": 0,
                                                          "proxy": web.url_with_login("llm", PASSWORD)}}}}
        async with running(home, tg, ai, config, apiRoot=api_root, proxy=socks.url_with_login("bot", PASSWORD)
                           .replace("socks5://", "socks5h://")) as service:
            tg.chat(7001)
            ai.queue(Text("through two proxies"))
            tg.message(7001, "hello")
            (sent,) = await tg.wait_sent(7001)
            assert sent.text == "through two proxies"
        log = service.output
    assert socks.passed and all(p.target == f"telegram.proxied:{tg_port}" and p.login == f"bot:{PASSWORD}"
                                for p in socks.passed), socks.passed
    assert web.passed and all(p.target.startswith(f"http://openrouter.proxied:{ai_port}/api/v1/")
                              and p.login == f"llm:{PASSWORD}" for p in web.passed), web.passed
    assert ai.chat_requests()
    assert PASSWORD not in log


async def test_the_environment_s_proxy_carries_both_and_no_proxy_is_honoured(home: Home, fake_telegram: FakeTelegram,
                                                                             fake_openrouter: FakeOpenRouter):
    """No proxy key: ALL_PROXY=socks5h://… carries the Bot API and OpenRouter; NO_PROXY exempts a host."""
    tg, ai = fake_telegram, fake_openrouter
    api_root, tg_port = named(tg.api_root, "telegram.proxied")
    base_url, ai_port = named(ai.base_url, "openrouter.proxied")
    dial = {"telegram.proxied": ("127.0.0.1", tg_port), "openrouter.proxied": ("127.0.0.1", ai_port)}
    async with SOCKS5Proxy(login=("env", PASSWORD), dial=dial) as socks:
        await onboarded(home, ai)
        home.env.update(ALL_PROXY=socks.url_with_login("env", PASSWORD).replace("socks5://", "socks5h://"))
        config = {"models": {"providers": {"openrouter": {"baseUrl": base_url, "maxRetries": 0}}}}
        async with running(home, tg, ai, config, apiRoot=api_root):
            tg.chat(7002)
            ai.queue(Text("through the environment's proxy"))
            tg.message(7002, "hello")
            (sent,) = await tg.wait_sent(7002)
            assert sent.text == "through the environment's proxy"
        targets = {p.target for p in socks.passed}  # and onboarding's key check, to the fake by its address
        assert {f"telegram.proxied:{tg_port}", f"openrouter.proxied:{ai_port}"} <= targets, targets

        socks.passed.clear()
        home.env.update(NO_PROXY="127.0.0.1")
        async with running(home, tg, ai):  # the fakes by their address, which NO_PROXY exempts
            tg.chat(7003)
            ai.queue(Text("straight there"))
            tg.message(7003, "hello")
            (sent,) = await tg.wait_sent(7003)
            assert sent.text == "straight there"
        assert socks.passed == []


async def test_doctor_names_each_proxy_without_its_login_and_says_whether_a_call_through_it_works(
        home: Home, fake_telegram: FakeTelegram, fake_openrouter: FakeOpenRouter):
    tg, ai = fake_telegram, fake_openrouter
    api_root, tg_port = named(tg.api_root, "telegram.proxied")
    async with SOCKS5Proxy(login=("bot", PASSWORD), dial={"telegram.proxied": ("127.0.0.1", tg_port)}) as socks:
        await onboarded(home, ai)
        proxy = socks.url_with_login("bot", PASSWORD).replace("socks5://", "socks5h://")
        home.write_config(ai, channels={"telegram": {"botToken": tg.token, "apiRoot": api_root, "proxy": proxy}})
        home.env.update(HTTP_PROXY="http://127.0.0.1:9")  # nothing listens: OpenRouter's calls through it fail
        result = await chorus(home, "doctor")
    lines = result.out.splitlines()
    assert f"ok   telegram proxy: socks5h://***@127.0.0.1:{socks.port} (channels.telegram.proxy) works" in lines, lines
    assert "FAIL  openrouter proxy: http://127.0.0.1:9 (HTTP_PROXY): a call through it failed" in "\n".join(lines)
    assert PASSWORD not in result.out + result.err
