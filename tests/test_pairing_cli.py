"""``chorus pairing list|approve`` through the real process, beside a store the "service" keeps open."""

from __future__ import annotations

import time

import pytest

from bot.access import AccessPolicy, Decision
from bot.config import parse_config
from bot.store import Store
from channels.base import ChatRef, Inbound
from tests.conftest import Home, chorus


def dm(sender: str, name: str, username: str | None = None) -> Inbound:
    return Inbound(chat=ChatRef("telegram", sender), sender_id=sender, sender_name=name, text="hi",
                   sender_username=username)


@pytest.fixture
async def service(home: Home):
    """The running service's store (opened once, as ``chorus run`` does) and its policy, asking ``ago`` seconds back."""
    store = await Store.open(home.path / "chorus.db")
    config, _ = parse_config({}, env={})

    def policy(ago: float = 0) -> AccessPolicy:
        return AccessPolicy(store, config, clock=lambda: time.time() - ago)

    yield policy
    await store.close()


async def codes(policy: AccessPolicy) -> dict[str, str]:
    return {r.sender.id: r.code for r in await policy.pairing.pending("telegram")}


async def test_list_shows_who_waits_and_approve_lets_them_in_without_a_restart(home, service):
    assert (await chorus(home, "pairing", "list", "telegram")).out == "No pending pairing requests on telegram.\n"
    running = service()
    await service(ago=330).check(dm("111", "Ada", "ada"))
    await service(ago=90).check(dm("22", "Bob"))
    code = await codes(running)

    listed = await chorus(home, "pairing", "list", "telegram")
    assert (listed.code, listed.err) == (0, "")
    assert listed.out == (
        "CODE      SENDER ID  NAME        AGE  EXPIRES IN\n"
        f"{code['111']}  111        Ada (@ada)  5m   54m\n"
        f"{code['22']}  22         Bob         1m   58m\n"
        "Approve one with: chorus pairing approve telegram CODE\n"
    )
    assert (await running.check(dm("111", "Ada"))).reason == "pairing-pending"

    approved = await chorus(home, "pairing", "approve", "telegram", code["111"].lower())
    assert (approved.code, approved.err) == (0, "")
    assert approved.out == "Approved Ada (@ada), telegram id 111: they can chat with the bot now.\n"
    assert await running.check(dm("111", "Ada")) == Decision(True, "approved")  # same open store, next message
    assert (await running.check(dm("22", "Bob"))).reason == "pairing-pending"

    left = await chorus(home, "pairing", "list", "telegram")
    assert left.out.splitlines()[1:] == [f"{code['22']}  22         Bob   1m   58m",
                                         "Approve one with: chorus pairing approve telegram CODE"]
    assert (await chorus(home, "pairing", "list", "discord")).out == "No pending pairing requests on discord.\n"


async def test_an_expired_or_unknown_code_is_refused_with_a_reason(home, service):
    await service(ago=3601).check(dm("111", "Ada"))
    (code,) = [r.code for r in await service(ago=3601).pairing.pending("telegram")]
    assert (await chorus(home, "pairing", "list", "telegram")).out == "No pending pairing requests on telegram.\n"

    expired = await chorus(home, "pairing", "approve", "telegram", code)
    assert (expired.code, expired.out) == (1, "")
    assert expired.err == f"error: code {code} expired; Ada gets a new one by writing again\n"

    unknown = await chorus(home, "pairing", "approve", "discord", code)
    assert (unknown.code, unknown.out) == (1, "")
    assert unknown.err == (f"error: no pairing request with code {code} on discord; "
                           "`chorus pairing list discord` shows the pending ones\n")
    assert (await service().check(dm("111", "Ada"))).reason == "pairing-new"
