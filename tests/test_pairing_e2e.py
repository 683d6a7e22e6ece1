"""Pairing as a conversation, through the real ``chorus run`` and the fake Telegram: the code at once on
/start and only once, approval answered in the chat, deny, revoke, the list of who is in, and a full queue
that says when to come back and frees up when the owner denies."""

from __future__ import annotations

import re

from bot.access import APPROVED_TEXT
from tests.conftest import chorus
from tests.fakes.telegram import user
from tests.telegram_service import running
from tests.test_discord_e2e import chorus_on_discord, fake_discord  # noqa: F401 (a fixture)


def code_in(text: str | None) -> str:
    return re.search(r"Your pairing code: (\w+)", text or "")[1]


async def test_a_stranger_gets_the_code_once_and_is_answered_when_the_owner_approves(home, fake_openrouter,
                                                                                     fake_telegram):
    tg, ai, grace = fake_telegram, fake_openrouter, 5001
    async with running(home, tg, ai, dmPolicy="pairing"):
        tg.message(grace, "/start", sender=user(grace, "Grace", "grace"),
                   entities=[{"type": "bot_command", "offset": 0, "length": 6}])
        (sent,) = await tg.wait_sent(grace)
        code = code_in(sent.text)  # at once, on /start
        tg.message(grace, "what's the weather?", sender=user(grace, "Grace", "grace"))
        tg.message(grace, "hello?", sender=user(grace, "Grace", "grace"))
        await tg.wait_for(lambda: sum(c.method == "getUpdates" for c in tg.calls) > 3 and not tg.updates)
        approved = await chorus(home, "pairing", "approve", "telegram", code)
        assert approved.code == 0, approved.err
        await tg.wait_sent(grace, 4)
        listed = await chorus(home, "pairing", "list", "telegram", "--approved")
        revoked = await chorus(home, "pairing", "revoke", "telegram", str(grace))
        tg.message(grace, "still there?", sender=user(grace, "Grace", "grace"))
        await tg.wait_sent(grace, 5)
    texts = tg.texts_in(grace)
    # The code was not said again to the two messages; once approved, both are answered in order.
    assert texts[1:4] == [APPROVED_TEXT, "echo: what's the weather?", "echo: hello?"], texts
    assert listed.out.splitlines()[1].split()[:2] == [str(grace), "Grace"]
    assert revoked.out == f"Revoked Grace (@grace), telegram id {grace}: they can no longer chat with the bot.\n"
    assert code_in(texts[-1]) != code  # a stranger again: a new code


async def test_a_full_queue_says_when_to_come_back_and_a_denial_frees_a_place(home, fake_openrouter, fake_telegram):
    tg, ai = fake_telegram, fake_openrouter
    async with running(home, tg, ai, dmPolicy="pairing"):
        codes = {}
        for sender in (6001, 6002, 6003):
            tg.message(sender, "hi", sender=user(sender, f"S{sender}", None))
            (sent,) = await tg.wait_sent(sender)
            codes[sender] = code_in(sent.text)
        tg.message(6004, "hi", sender=user(6004, "Dan", None))
        (full,) = await tg.wait_sent(6004)
        denied = await chorus(home, "pairing", "deny", "telegram", codes[6002])
        tg.message(6004, "and now?", sender=user(6004, "Dan", None))
        await tg.wait_sent(6004, 2)
        pending = await chorus(home, "pairing", "list", "telegram")
    assert full.text == ("Sorry, I can't take your request right now: the owner has too many pending requests. "
                         "Please try again in 60 minutes.")
    assert denied.out == "Denied S6002, telegram id 6002.\n"
    assert code_in(tg.texts_in(6004)[1])
    assert codes[6002] not in pending.out and codes[6001] in pending.out


async def test_the_owner_is_asked_in_a_dm_and_approves_with_a_button(home, fake_openrouter, fake_telegram):
    tg, ai, grace, owner = fake_telegram, fake_openrouter, 5001, 7777
    tg.chat(owner)  # the owner opened a chat with the bot once: it may write to them
    async with running(home, tg, ai, dmPolicy="pairing", ownerId=owner, allowFrom=[5003]):
        tg.message(grace, "hi, can we talk?", sender=user(grace, "Grace", "grace"))
        (sent,) = await tg.wait_sent(grace)
        code = code_in(sent.text)
        (asked,) = await tg.wait_sent(owner)
        tg.press(asked, "Approve", sender=user(owner, "Owner", None))
        await tg.wait_sent(owner, 2)
        await tg.wait_sent(grace, 3)
        tg.message(5002, "me too", sender=user(5002, "Mallory", None))
        (other,) = await tg.wait_sent(5002)
        tg.message(5002, f"/approve {code_in(other.text)}", sender=user(5002, "Mallory", None))
        tg.message(5003, f"/approve {code_in(other.text)}", sender=user(5003, "Trent", None))  # allowed, not the owner
        (refused,) = await tg.wait_sent(5003)
        tg.message(grace, "marker", sender=user(grace, "Grace", "grace"))  # after Mallory's: handled in order
        await tg.wait_sent(grace, 4)
        approved = await chorus(home, "pairing", "list", "telegram", "--approved")
    assert asked.text == f"Grace (5001) asks to talk: /approve {code}"
    assert tg.buttons(asked) == [("Approve", f"/approve {code}"), ("Deny", f"/deny {code}")]
    assert tg.texts_in(owner)[1] == "Approved Grace (@grace) (5001)."
    assert tg.texts_in(grace)[1:] == [APPROVED_TEXT, "echo: hi, can we talk?", "echo: marker"]
    assert len(tg.texts_in(5002)) == 1 and "Mallory" not in approved.out  # their own /approve approved nothing
    assert "Grace" in approved.out
    assert refused.text == "Only the owner can answer pairing requests, in a private chat with me."


async def test_the_discord_owner_is_asked_in_a_dm_and_approves_with_a_button(home, fake_openrouter, fake_discord):
    discord, grace, owner = fake_discord, fake_discord.user("grace"), fake_discord.user("owner")
    dm = discord.dm(grace)
    async with chorus_on_discord(home, fake_openrouter, discord, dmPolicy="pairing", ownerId=owner["id"]):
        await discord.say(dm, grace, "hi, can we talk?")
        (sent,) = await discord.wait_sent(dm)
        code = code_in(sent.content)
        await discord.wait_for(lambda: any(m.data["channel_id"] != dm["id"] for m in discord.sent.values()))
        (owners,) = {m.data["channel_id"] for m in discord.sent.values()} - {dm["id"]}
        owners_dm = discord.channels[owners]
        (asked,) = await discord.wait_sent(owners_dm)
        await discord.choose(asked, owner, "Approve")
        await discord.wait_sent(owners_dm, 2)
        await discord.wait_sent(dm, 3)
    assert owners_dm["recipients"] == [owner]  # a DM with the owner, opened by the bot
    assert asked.content == f"Grace ({grace['id']}) asks to talk: /approve {code}"
    assert discord.choices(asked) == [("Approve", f"chorus:/approve {code}"), ("Deny", f"chorus:/deny {code}")]
    assert discord.bot_messages(owners_dm)[1].content == f"Approved Grace (@grace) ({grace['id']})."
    assert [m.content for m in discord.bot_messages(dm)][1:] == [APPROVED_TEXT, "echo: hi, can we talk?"]
