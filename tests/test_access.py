"""The access policy and pairing, over a real SQLite store, with an injected clock."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bot.access import AccessPolicy, Decision
from bot.config import parse_config
from bot.pairing import CODE_ALPHABET, Pairing, PairingError, Sender
from bot.store import Inbox, Store
from channels.base import ChatRef, Inbound
from tests.test_conversation import make  # noqa: F401 (a fixture)

T0 = 1_800_000_000.0
CODE = re.compile(f"^[{CODE_ALPHABET}]{{8}}$")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> None:
        self.now += minutes * 60


@pytest.fixture
async def store(tmp_path):
    store = await Store.open(tmp_path / "chorus.db")
    yield store
    await store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def policy(store: Store, clock: Clock, **telegram: Any) -> AccessPolicy:
    config, _ = parse_config({"channels": {"telegram": telegram, "discord": {"dmPolicy": "open"}}}, env={})
    return AccessPolicy(store, config, clock)


def dm(sender: str = "111", name: str = "Ada", username: str | None = None, channel: str = "telegram") -> Inbound:
    return Inbound(chat=ChatRef(channel, sender), sender_id=sender, sender_name=name, text="hello",
                   message_id=f"m-{sender}", sender_username=username)


def in_group(sender: str = "111", group: str = "-100500", username: str | None = None) -> Inbound:
    return Inbound(chat=ChatRef("telegram", group, kind="group"), sender_id=sender, sender_name="Ada",
                   text="hi all", sender_username=username)


def pairing_text(name: str, code: str, minutes: str) -> str:
    return (f"Hi {name}! I only chat with people my owner has approved.\n"
            f"Your pairing code: {code}\n"
            f"Send it to the owner, who approves it with: chorus pairing approve telegram {code}\n"
            f"The code expires in {minutes}.")


def full(minutes: str) -> str:
    return ("Sorry, I can't take your request right now: the owner has too many pending requests. "
            f"Please try again in {minutes}.")  # when the oldest request expires


async def only_code(store: Store, clock: Clock, sender: str) -> str:
    (request,) = [r for r in await Pairing(store, clock).pending("telegram") if r.sender.id == sender]
    return request.code


async def test_an_unknown_sender_gets_a_code_and_the_same_code_while_it_is_valid(store, clock):
    access = policy(store, clock)
    first = await access.check(dm(username="ada"))
    code = await only_code(store, clock, "111")
    assert CODE.match(code)
    assert first == Decision(False, "pairing-new", pairing_text("Ada", code, "60 minutes"))

    clock.advance(10.7)  # the code was said once: later messages get no reply while it is valid
    assert await access.check(dm()) == Decision(False, "pairing-pending")
    clock.advance(49)
    assert await access.check(dm()) == Decision(False, "pairing-pending")
    (request,) = await Pairing(store, clock).pending()
    assert (request.channel, request.sender, request.created_at, request.expires_at) == (
        "telegram", Sender("111", "Ada", "ada"), T0, T0 + 3600)


async def test_a_code_expires_after_an_hour_and_a_new_one_is_issued(store, clock):
    access = policy(store, clock)
    await access.check(dm())
    old = await only_code(store, clock, "111")
    clock.advance(60)
    assert await Pairing(store, clock).pending() == []
    with pytest.raises(PairingError, match=f"^code {old} expired; Ada gets a new one by writing again$"):
        await access.pairing.approve("telegram", old)

    again = await access.check(dm())
    new = await only_code(store, clock, "111")
    assert new != old and again == Decision(False, "pairing-new", pairing_text("Ada", new, "60 minutes"))
    with pytest.raises(PairingError, match=f"^no pairing request with code {old} on telegram; "):
        await access.pairing.approve("telegram", old)  # the expired request is gone, not approvable


async def test_at_most_three_requests_wait_per_channel(store, clock):
    access = policy(store, clock)
    for i, sender in enumerate(("1", "2", "3")):
        assert (await access.check(dm(sender))).reason == "pairing-new"
        clock.advance(10)
    assert await access.check(dm("4", "Dan")) == Decision(False, "pairing-full", full("30 minutes"))
    assert (await access.check(dm("1"))).reason == "pairing-pending"  # those waiting keep their code
    assert (await policy(store, clock).check(dm("9", channel="discord"))).allowed  # other channels are apart

    clock.advance(31)  # the first request (at T0) has expired now, the others have not
    assert (await access.check(dm("4", "Dan"))).reason == "pairing-new"
    assert sorted(r.sender.id for r in await access.pairing.pending("telegram")) == ["2", "3", "4"]
    assert await access.check(dm("5")) == Decision(False, "pairing-full", full("9 minutes"))


async def test_an_approval_counts_from_the_next_message_even_from_another_connection(store, clock, tmp_path):
    access = policy(store, clock)
    await access.check(dm(username="ada"))
    code = await only_code(store, clock, "111")

    cli = await Store.open(tmp_path / "chorus.db")  # what `chorus pairing approve` does beside the service
    try:
        approved = await Pairing(cli, clock).approve("telegram", f" {code[:4].lower()}-{code[4:]} ")
    finally:
        await cli.close()
    assert approved.sender == Sender("111", "Ada", "ada")
    assert await access.check(dm()) == Decision(True, "approved")
    assert await access.pairing.pending() == []
    with pytest.raises(PairingError, match=f"^code {code} was approved already: Ada \\(@ada\\) can chat$"):
        await access.pairing.approve("telegram", code)
    assert (await access.check(dm("222"))).reason == "pairing-new"  # approving one sender approves no one else


async def test_an_unknown_code_is_refused(store, clock):
    with pytest.raises(PairingError) as err:
        await Pairing(store, clock).approve("telegram", "ABCD2345")
    assert str(err.value) == ("no pairing request with code ABCD2345 on telegram; "
                              "`chorus pairing list telegram` shows the pending ones")


async def test_allowlist_by_id_and_by_username(store, clock):
    access = policy(store, clock, dmPolicy="allowlist", allowFrom=[111, "@Grace", "tg:333"])
    assert await access.check(dm("111")) == Decision(True, "allow-from")
    assert await access.check(dm("222", "Grace", username="grace")) == Decision(True, "allow-from")
    assert await access.check(dm("333")) == Decision(True, "allow-from")
    assert await access.check(dm("444", "Mallory", username="mallory")) == Decision(
        False, "not-allowed",
        "Sorry, I only chat with people my owner has allowed. "
        "Your telegram id is 444; the owner can add it to channels.telegram.allowFrom.",
    )
    assert await access.check(dm("555", "Gracie", username=None)) == Decision(
        False, "not-allowed",
        "Sorry, I only chat with people my owner has allowed. "
        "Your telegram id is 555; the owner can add it to channels.telegram.allowFrom.",
    )
    assert await access.pairing.pending() == []  # an allowlist hands out no codes


async def test_allowlist_also_lets_in_senders_the_owner_paired(store, clock):
    await policy(store, clock).check(dm("444"))
    await Pairing(store, clock).approve("telegram", await only_code(store, clock, "444"))
    assert await policy(store, clock, dmPolicy="allowlist").check(dm("444")) == Decision(True, "approved")


async def test_open_and_disabled_and_the_console(store, clock):
    assert await policy(store, clock, dmPolicy="open").check(dm("999")) == Decision(True, "dm-open")
    disabled = policy(store, clock, dmPolicy="disabled", allowFrom=["*"])
    assert await disabled.check(dm("111")) == Decision(False, "dm-disabled")
    console = Inbound(chat=ChatRef("console", "local"), sender_id="me", sender_name="me", text="hi")
    assert await disabled.check(console) == Decision(True, "local")
    assert await policy(store, clock, allowFrom=["*"]).check(dm("777")) == Decision(True, "allow-from")


@pytest.mark.parametrize(("settings", "message", "expected"), [
    ({}, in_group(), Decision(False, "group-not-allowed")),  # the default: groups are closed
    ({"groupPolicy": "open"}, in_group(), Decision(True, "group-open")),
    ({"groupPolicy": "disabled", "groupAllowFrom": ["*"]}, in_group(), Decision(False, "group-disabled")),
    ({"groupAllowFrom": ["-100500"]}, in_group(), Decision(True, "group-allow-from")),  # the group itself
    ({"groupAllowFrom": ["-100500"]}, in_group(group="-100600"), Decision(False, "group-not-allowed")),
    ({"groupAllowFrom": ["111"]}, in_group(group="-100600"), Decision(True, "group-allow-from")),  # the sender
    ({"groupAllowFrom": ["@ada"]}, in_group("5", username="Ada"), Decision(True, "group-allow-from")),
    ({"groupAllowFrom": ["@ada"]}, in_group("5"), Decision(False, "group-not-allowed")),
    ({"allowFrom": ["111"]}, in_group(), Decision(True, "group-allow-from")),  # falls back to allowFrom
    ({"allowFrom": ["111"], "groupAllowFrom": ["222"]}, in_group(), Decision(False, "group-not-allowed")),
])
async def test_group_policy(store, clock, settings, message, expected):
    assert await policy(store, clock, **settings).check(message) == expected


async def test_a_paired_sender_is_not_thereby_allowed_in_groups(store, clock):
    await policy(store, clock).check(dm("111"))
    await Pairing(store, clock).approve("telegram", await only_code(store, clock, "111"))
    assert await policy(store, clock).check(in_group("111")) == Decision(False, "group-not-allowed")


async def test_the_dispatcher_answers_a_stranger_with_the_code_and_never_calls_the_model(make):
    rig = await make({"channels": {"telegram": {}}})
    await rig.say("hello bot", chat="42", channel="telegram", sender="42", name="Eve")
    (request,) = await rig.dispatcher.access.pairing.pending("telegram")
    assert rig.channel.texts("42") == [pairing_text("Eve", request.code, "60 minutes")]
    assert rig.channel.replies["42"][0].reply_to is not None
    await rig.say("anyone?", chat="-100", channel="telegram", sender="42", kind="group", mentioned=True)
    assert "-100" not in rig.channel.replies  # refusals in groups are silent
    assert rig.fake.chat_requests() == []
    assert await Inbox(rig.store).pending() == []  # refused messages are done, not answered after a restart

    await rig.dispatcher.access.pairing.approve("telegram", request.code)
    await rig.say("hello again", chat="42", channel="telegram", sender="42")
    assert len(rig.fake.chat_requests()) == 1
    assert rig.channel.texts("42")[1:] == ["echo: hello again"]


async def test_the_inbox_keeps_the_senders_handle_so_a_restart_checks_it_the_same(store):
    inbox = Inbox(store)
    assert await inbox.accept(dm("222", "Grace", username="grace"))
    (again,) = await inbox.pending()
    assert (again.sender_id, again.sender_name, again.sender_username) == ("222", "Grace", "grace")


async def test_the_channel_prefix_of_an_allow_from_entry_is_read_in_any_case(store, clock):
    access = policy(store, clock, dmPolicy="allowlist", allowFrom=["TG:333", "Telegram: 444"])
    assert await access.check(dm("333")) == Decision(True, "allow-from")
    assert await access.check(dm("444")) == Decision(True, "allow-from")


async def test_approved_senders_do_not_count_against_the_three_pending_requests(store, clock):
    """Only requests still waiting fill the channel: an owner who approved three people can pair a fourth."""
    access = policy(store, clock)
    for sender in ("1", "2", "3"):
        await access.check(dm(sender))
        await access.pairing.approve("telegram", await only_code(store, clock, sender))
    assert (await access.check(dm("4", "Dan"))).reason == "pairing-new"


async def test_a_server_the_discord_config_lists_is_let_in_whatever_the_allowlists_say(store, clock):
    config, _ = parse_config({"channels": {"discord": {"guilds": {"900": {}}, "allowFrom": ["1"]}}}, env={})
    message = Inbound(chat=ChatRef("discord", "c-55", kind="group"), sender_id="77", sender_name="Ada", text="hi")
    assert await AccessPolicy(store, config, clock).check(message) == Decision(True, "group-listed")


@pytest.mark.parametrize("channel", ["telegram", "discord"])
async def test_a_strangers_commands_get_only_the_pairing_text_and_change_nothing(make, channel):
    """Mutation: commands routed before the access check. A stranger's ``/model``, ``/tts always`` and
    ``/status`` get the pairing text once (a code is said once), nothing else, and their chat keeps the default
    settings."""
    rig = await make({"channels": {channel: {}}})
    stranger = {"chat": "77", "channel": channel, "sender": "77", "name": "Mallory"}
    for command in ("/model openrouter/openai/gpt-4o", "/tts always", "/think high", "/status"):
        await rig.say(command, **stranger)
    (request,) = await rig.dispatcher.access.pairing.pending(channel)
    pairing = pairing_text("Mallory", request.code, "60 minutes").replace("approve telegram", f"approve {channel}")
    assert rig.channel.texts("77") == [pairing]
    settings = await rig.store.chat_settings(ChatRef(channel, "77"))
    assert (settings.model, settings.tts, settings.thinking) == (None, None, None)
    assert rig.fake.chat_requests() == []
