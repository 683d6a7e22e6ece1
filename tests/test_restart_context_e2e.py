"""What a conversation keeps across a restart of the real ``chorus run`` (fake Telegram): a stranger's messages
awaiting the owner's approval, and the reply context of a message answered only after the restart."""

from __future__ import annotations

from bot.access import APPROVED_TEXT
from tests.conftest import chorus
from tests.fakes.openrouter import Hang
from tests.fakes.telegram import BOT, user
from tests.telegram_service import running, start
from tests.test_pairing_e2e import code_in


async def test_an_approval_given_while_stopped_answers_the_waiting_messages_once_after_the_restart(
        home, fake_openrouter, fake_telegram):
    tg, ai, grace = fake_telegram, fake_openrouter, 5001
    async with running(home, tg, ai, dmPolicy="pairing"):
        tg.message(grace, "what's the weather?", sender=user(grace, "Grace", "grace"))
        (sent,) = await tg.wait_sent(grace)
        tg.message(grace, "hello?", sender=user(grace, "Grace", "grace"))
        await tg.wait_for(lambda: sum(c.method == "getUpdates" for c in tg.calls) > 3 and not tg.updates)
    approved = await chorus(home, "pairing", "approve", "telegram", code_in(sent.text))  # while Chorus is stopped
    assert approved.code == 0, approved.err
    service = await start(home, tg)
    try:
        await tg.wait_sent(grace, 4)
    finally:
        await service.stop()
    service = await start(home, tg)  # again: nothing is answered a second time
    try:  # another stranger approved: the pass that answers them would have answered Grace again first
        tg.message(5002, "me too", sender=user(5002, "Bob", None))
        (bobs,) = await tg.wait_sent(5002)
        assert (await chorus(home, "pairing", "approve", "telegram", code_in(bobs.text))).code == 0
        await tg.wait_sent(5002, 3)
    finally:
        await service.stop()
    assert tg.texts_in(grace)[1:] == [APPROVED_TEXT, "echo: what's the weather?", "echo: hello?"]
    assert tg.texts_in(5002)[1:] == [APPROVED_TEXT, "echo: me too"]


async def test_a_reply_answered_after_a_restart_keeps_what_it_replied_to(home, fake_openrouter, fake_telegram):
    tg, ai, chat = fake_telegram, fake_openrouter, 5001
    async with running(home, tg, ai) as service:
        tg.message(chat, "capital of France?")
        (answer,) = await tg.wait_sent(chat)
        bots = {"message_id": answer.message_id, "date": 0, "chat": tg.chat(chat).as_api(), "from": BOT,
                "text": answer.text}
        ai.queue(Hang(60))
        tg.message(chat, "and Lyon?", reply_to_message=bots)
        await tg.wait_for(lambda: len(ai.chat_requests()) == 2, what="the reply's turn begun")
        await service.kill()
    restarted = await start(home, tg)
    try:
        await tg.wait_sent(chat, 2)
    finally:
        await restarted.stop()
    user_says = [m["content"] for m in ai.chat_requests()[-1].json["messages"] if m["role"] == "user"][-1]
    assert user_says == ("[Replying to your own earlier answer - for context]\n> echo: capital of France?\n"
                         "[The user's message]\nand Lyon?")
