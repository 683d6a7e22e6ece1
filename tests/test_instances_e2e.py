"""Three real ``chorus run`` on one PostgreSQL database behind a round-robin balancer, Telegram in webhook mode:
every message answered once and in order per chat whichever instance it reaches, /stop and /status reaching
the instance that runs the turn. (Failures: test_instances_failover_e2e.py.)"""

from __future__ import annotations

from tests.fakes.openrouter import Text
from tests.instances import instances

CHATS = 30
PER_CHAT = 10


async def test_a_burst_through_the_balancer_is_answered_once_and_in_order_per_chat(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    chats = [7000 + i for i in range(CHATS)]
    async with instances(tmp_path, tg, ai, pg_url) as cluster:
        for n in range(PER_CHAT):  # interleaved, as many users writing at once
            for chat in chats:
                tg.message(chat, f"c{chat} m{n}")
        await tg.wait_for(lambda: all(len(tg.messages_in(c)) >= PER_CHAT for c in chats), timeout=90,
                          what="every message answered")
        settled = {chat: [s.text for s in await tg.settled(chat)] for chat in chats[:3]}
    for chat in chats:
        assert tg.texts_in(chat)[:PER_CHAT] == [f"echo: c{chat} m{n}" for n in range(PER_CHAT)], chat
    for chat, texts in settled.items():  # nothing answered twice, even late: the marker's answer came after all
        assert texts == [f"echo: c{chat} m{n}" for n in range(PER_CHAT)]
    # A chat's turns moved between the instances; each turn's request carried the whole conversation, the turns
    # another instance answered included (no instance's cached history served stale)
    for chat in chats:
        last = next(r.json["messages"] for r in reversed(ai.chat_requests())
                    if r.json["messages"][-1]["content"] == f"c{chat} m{PER_CHAT - 1}")
        assert [m["content"] for m in last if m["role"] in ("user", "assistant")] == [
            text for n in range(PER_CHAT) for text in (f"c{chat} m{n}", f"echo: c{chat} m{n}")][:-1], chat
    assert tg.updates == []
    served = {p.port for p in cluster.balancer.passed if p.status == 200}
    assert served == {node.port for node in cluster.nodes}, "the balancer spread the updates over all instances"


async def test_stop_and_status_sent_to_one_instance_reach_the_turn_running_on_another(
        tmp_path, fake_telegram, fake_openrouter, pg_url):
    tg, ai = fake_telegram, fake_openrouter
    chat = 7200
    ai.for_text["think long"] = [Text("the long answer", delay=8)]  # unless stopped, it arrives in 8 s
    async with instances(tmp_path, tg, ai, pg_url) as cluster:
        tg.message(chat, "think long")
        await tg.wait_for(lambda: any(r.json["messages"][-1]["content"] == "think long" for r in ai.chat_requests()),
                          what="the long turn began")
        holder = await cluster.holder(f"telegram:{chat}")
        assert holder is not None
        other = next(n for n in cluster.nodes if n is not holder)
        cluster.balancer.pin = lambda update: other.port  # /status and /stop reach an instance not running it
        tg.message(chat, "/status")
        commands = [tg.last_update_id]
        await tg.wait_sent(chat)
        tg.message(chat, "/stop")
        commands.append(tg.last_update_id)
        await tg.wait_sent(chat, 2)
        cluster.balancer.pin = lambda update: None
        texts = [s.text for s in await tg.settled(chat)]
    pinned = {p.port for p in cluster.balancer.passed if p.update_id in commands}
    # every instance set the webhook at start, and none removed it when it stopped (the others still use it)
    assert len(tg.calls_to("setWebhook")) == 3 and not tg.calls_to("deleteWebhook")
    assert tg.webhook["url"] == cluster.balancer.url("/telegram-webhook")
    status, stopped = texts
    assert "Answering now (/stop to cancel)." in status  # said by the instance running the turn
    assert stopped == "⏹ Stopped."
    assert "the long answer" not in texts  # (the marker's answer came after the stopped turn)
    assert pinned == {other.port}
