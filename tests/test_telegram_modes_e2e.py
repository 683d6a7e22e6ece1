"""Telegram end to end, each test with its own ``chorus run``: webhook mode, a kill -9 and restart, doctor.

The chat behaviour itself is tested against one shared service in ``test_telegram_e2e.py``.
"""

from __future__ import annotations

import asyncio
import base64
import resource
import re
import statistics

import aiohttp

from bot.access import APPROVED_TEXT
from tests.conftest import chorus, onboarded
from tests.fakes.media import make_png
from tests.fakes.openrouter import Hang, Text
from tests.fakes.telegram import user
from tests.service import start_chorus
from tests.telegram_service import free_port, running, start, telegram_config

USER = 5001


async def test_webhook_mode_checks_the_secret_never_polls_and_streams_group_answers_by_edits(
        home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram-webhook"
    group = -1002222
    tg.chat(group, "supergroup", title="Edits")
    async with running(home, tg, ai, ready="setWebhook", streaming="block", streamThrottleMs=200, webhookUrl=url,
                       webhookSecret="s3cret-Token_1", webhookPort=port):
        forged = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": USER, "type": "private"},
                                              "from": {"id": USER, "is_bot": False, "first_name": "Eve"}, "text": "hi"}}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}) as resp:
                assert resp.status == 401
            async with http.post(url, json=forged) as resp:
                assert resp.status == 401
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["ok"] is True
        tg.message(USER, "through the webhook")
        (sent,) = await tg.wait_sent(USER)
        ai.queue(Text("A **growing** answer that arrives in small pieces, and is edited into place as it grows.",
                      pace=0.08))  # ~2 s of writing: room for several throttled edits even on a busy machine
        tg.message(group, "@chorus_test_bot go", chat_type="supergroup",
                   entities=[{"type": "mention", "offset": 0, "length": 16}])
        (grown,) = await tg.wait_sent(group)
        await tg.wait_for(lambda: grown.text.endswith("as it grows."))
        # An answer whose preview already shows all of it: the final edit is refused as "message is not
        # modified", which is success, not a reason to post the answer again.
        ai.queue(Text("Yes.", pace=1.0))  # one piece, then a pause: the preview shows the whole answer
        tg.message(group, "@chorus_test_bot ok?", chat_type="supergroup",
                   entities=[{"type": "mention", "offset": 0, "length": 16}])
        await tg.wait_sent(group, 2)
        tg.message(group, "@chorus_test_bot marker", chat_type="supergroup",
                   entities=[{"type": "mention", "offset": 0, "length": 16}])
        await tg.wait_sent(group, 3)  # the lane runs in order: whatever the earlier answers sent came before this
    assert sent.text == "echo: through the webhook"
    assert tg.texts_in(group) == [grown.text, "Yes.", "echo: @chorus_test_bot marker"]
    _, yes, _ = tg.messages_in(group)
    assert [c.status for c in tg.calls if c.method == "editMessageText" and c.params["message_id"] == yes.message_id] \
        == [400]  # refused as "not modified": the preview already was the answer
    # In a group with streaming "block": one preview message, edited (throttled) as the answer grows, then into it.
    assert grown.text == "A growing answer that arrives in small pieces, and is edited into place as it grows."
    assert grown.entities == [{"type": "bold", "offset": 2, "length": 7}]
    preview = [c for c in tg.calls_to("sendMessage") if c.params["chat_id"] == group][0]
    *growing, final = [c for c in tg.calls_to("editMessageText") if c.params["message_id"] == grown.message_id]
    # Throttled to one edit per 0.2 s (unthrottled, one would follow each 0.08 s piece). Measured where the calls
    # arrive, where one request held up on a loaded machine makes the gap after it short: the median gap says it.
    gaps = [b.at - a.at for a, b in zip([preview, *growing], growing)]
    assert len(growing) >= 3 and statistics.median(gaps) >= 0.18, gaps
    assert final.params["text"] == grown.text  # the final answer is not held back by the throttle
    assert tg.webhook["secret"] == "s3cret-Token_1" and tg.webhook["url"] == url
    assert tg.webhook_results[-1][1] == 200
    assert not [c for c in tg.calls if c.method in ("getUpdates", "deleteWebhook")]
    assert [r.json["messages"][-1]["content"] for r in ai.chat_requests()][:2] == \
        ["through the webhook", "[Ada]: @chorus_test_bot go"]  # the forged update never reached the model


async def test_an_album_through_the_webhook_is_one_message_with_all_its_photos(home, fake_telegram, fake_openrouter):
    """Telegram posts a chat's next update only once the last one was answered, so an album's parts come one by
    one, each acknowledged before the next is sent (the fake does as Telegram's server does); the model still
    gets them as one message, answered once."""
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    dog, bird = make_png(50, 30), make_png(60, 30)
    async with running(home, tg, ai, ready="setWebhook", streaming="off", webhookPort=port,
                       webhookUrl=f"http://127.0.0.1:{port}/telegram-webhook", webhookSecret="s3cret"):
        ai.queue(Text("Two gradients."))
        tg.photo(USER, dog, media_group_id="album-w", caption="what are these?")
        dog_part = tg.last_update_id
        tg.photo(USER, bird, media_group_id="album-w")
        bird_part = tg.last_update_id
        tg.message(USER, "and a text after it")  # answered after the album, in the order sent
        await tg.wait_sent(USER, 2)
    assert tg.texts_in(USER) == ["Two gradients.", "echo: and a text after it"]
    (album,) = [r.json["messages"][-1]["content"] for r in ai.chat_requests()
                if isinstance(r.json["messages"][-1]["content"], list)]
    assert album[0] == {"type": "text", "text": "what are these?"}
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in album[1:]] == [dog, bird]
    posted = [u for u, status in tg.webhook_results if status == 200]
    assert posted.index(dog_part) < posted.index(bird_part)


async def test_an_update_cut_off_by_kill_9_is_answered_once_after_the_restart(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg, streaming="off"))
    ai.queue(Hang(60))
    first = await start(home, tg)
    tg.message(USER, "are you there?")
    await tg.wait_for(lambda: ai.chat_requests(), what="the model call")
    await first.kill()
    ai.queue(Text("Yes, I am."))
    second = await start(home, tg)
    await tg.wait_sent(USER)
    earlier = await tg.settled(USER)  # a second answer, if any, would come before the marker's
    await second.stop()
    assert [s.text for s in earlier] == ["Yes, I am."]
    assert len(ai.chat_requests()) == 3  # the call cut off, the one after the restart, the marker


async def test_doctor_checks_the_token_and_what_blocks_polling(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg))
    healthy = await chorus(home, "doctor")
    assert "ok   telegram: bot @chorus_test_bot (token accepted)" in healthy.out
    assert "ok   telegram updates: long polling works (no webhook, no other poller)" in healthy.out
    tg.webhook = {"url": "https://old.example/hook"}
    stale = await chorus(home, "doctor")
    assert stale.code == 1
    assert ("FAIL  telegram updates: a webhook (https://old.example/hook) takes this bot's updates, so polling "
            "gets none; `chorus run` removes it at start") in stale.out
    tg.webhook = {}
    service = await start(home, tg)
    busy = await chorus(home, "doctor")
    await service.stop()
    assert ("FAIL  telegram updates: Telegram answered 409 (Conflict: terminated by other getUpdates request; make "
            "sure that only one bot instance is running): another process is polling this bot.") in busy.out
    home.write_config(ai, **telegram_config(tg, botToken="123456789:AAWrongTokenWrongTokenWrongToken_xx"))
    refused = await chorus(home, "doctor")
    assert "FAIL  telegram: the bot token was refused: Unauthorized" in refused.out
    assert "AAWrongToken" not in refused.out + refused.err


async def test_doctor_tells_an_unreachable_api_root_from_one_that_is_not_the_bot_api(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    nothing = f"http://127.0.0.1:{free_port()}"
    home.write_config(ai, **telegram_config(tg, apiRoot=nothing))
    down = await chorus(home, "doctor")
    assert down.code == 1
    port = nothing.rpartition(":")[2]
    assert f"FAIL  telegram: {nothing} unreachable: cannot connect to 127.0.0.1:{port}: Connection refused" \
        in down.out.splitlines(), down.out
    home.write_config(ai, **telegram_config(tg, apiRoot=ai.base_url))  # an HTTP server, but not the Bot API
    other = await chorus(home, "doctor")
    assert f"FAIL  telegram: {ai.base_url} did not answer like the Bot API (HTTP 401, not a Bot API answer)" \
        in other.out.splitlines(), other.out
    assert tg.token not in down.out + down.err + other.out + other.err


async def test_pairing_from_code_to_approval_while_running(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with running(home, tg, ai, dmPolicy="pairing", streaming="off"):
        tg.message(USER, "hi, who are you?", sender=user(USER, "Grace", "grace"))
        (code_message,) = await tg.wait_sent(USER)
        code = re.search(r"Your pairing code: (\S+)", code_message.text)[1]
        assert code_message.text == (
            f"Hi Grace! I only chat with people my owner has approved.\nYour pairing code: {code}\n"
            f"Send it to the owner, who approves it with: chorus pairing approve telegram {code}\n"
            "The code expires in 60 minutes.")
        listed = await chorus(home, "pairing", "list", "telegram")
        assert code in listed.out and str(USER) in listed.out
        approved = await chorus(home, "pairing", "approve", "telegram", code)
        assert approved.out.strip() == f"Approved Grace (@grace), telegram id {USER}: they can chat with the bot now."
        # Told they are in, and the message that waited is answered (not before the approval).
        await tg.wait_sent(USER, 3)
        tg.message(USER, "hello again", sender=user(USER, "Grace", "grace"))
        await tg.wait_sent(USER, 4)
    assert tg.texts_in(USER)[1:] == [APPROVED_TEXT, "echo: hi, who are you?", "echo: hello again"]
    assert [[m["content"] for m in r.json["messages"] if m["role"] == "user"] for r in ai.chat_requests()] == [
        ["hi, who are you?"], ["hi, who are you?", "hello again"]]  # the model was asked only once approved


async def test_allowlist_lets_in_a_listed_username_and_refuses_others(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with running(home, tg, ai, dmPolicy="allowlist", allowFrom=["@grace"], streaming="off"):
        tg.message(6001, "let me in", sender=user(6001, "Mallory", "mallory"))
        tg.message(6002, "hello", sender=user(6002, "Grace", "grace"))
        await tg.wait_sent(6001)
        await tg.wait_sent(6002)
    assert tg.texts_in(6001) == ["Sorry, I only chat with people my owner has allowed. Your telegram id is 6001; "
                                 "the owner can add it to channels.telegram.allowFrom."]
    assert tg.texts_in(6002) == ["echo: hello"]


async def test_an_update_the_inbox_could_not_store_is_received_again_and_answered_once(home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    async with running(home, tg, ai, streaming="off") as service:
        tg.message(USER, "before")
        await tg.wait_sent(USER)
        # The kernel's file-size limit stands in for a full disk: the inbox cannot store the next message.
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        tg.message(USER, "during")
        await tg.wait_sent(USER, 2)  # told at once that it could not be saved
        assert tg.updates != []  # not confirmed: Telegram keeps it
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await tg.wait_sent(USER, 3)
        texts = [s.text for s in await tg.settled(USER)]  # a second answer, if any, would come before the marker's
    assert texts[0] == "echo: before" and texts[2:] == ["echo: during"]
    assert texts[1].startswith("⚠️ I could not save your message")
    assert tg.updates == []


async def test_a_group_rule_can_require_a_mention_and_a_group_turned_supergroup_keeps_its_conversation(
        home, fake_telegram, fake_openrouter):
    tg, ai = fake_telegram, fake_openrouter
    relaxed, strict, upgraded = -100800, -100900, -1001800
    mention = [{"type": "mention", "offset": 0, "length": 16}]
    ada = user(42, "Ada")
    async with running(home, tg, ai, streaming="off", requireMention=False,
                       groups={str(strict): {"requireMention": True}}):
        tg.message(relaxed, "hello all", sender=ada, chat_type="group")  # no mention needed here
        await tg.wait_sent(relaxed)
        tg.message(strict, "chit chat", sender=ada, chat_type="group")  # this group's rule wants one
        tg.message(strict, "@chorus_test_bot hi", sender=ada, chat_type="group", entities=mention)
        await tg.wait_sent(strict)
        # Telegram moves the group to a new id; the first message there says where it came from.
        tg.message(upgraded, None, sender=ada, chat_type="supergroup", migrate_from_chat_id=relaxed)
        tg.message(upgraded, "what did I say first?", sender=ada, chat_type="supergroup")
        await tg.wait_sent(upgraded)
    assert tg.texts_in(strict) == ["echo: @chorus_test_bot hi"]
    assert ai.chat_requests()[1].json["messages"][-1]["content"] == (
        "[Chat messages since your last reply - for context]\n[Ada]: chit chat\n\n"
        "[Current message - respond to this]\n[Ada]: @chorus_test_bot hi")
    assert [(m["role"], m["content"]) for m in ai.chat_requests()[2].json["messages"][1:]] == [
        ("user", "[Ada]: hello all"), ("assistant", "echo: hello all"), ("user", "[Ada]: what did I say first?")]


async def test_polling_removes_a_stale_webhook_and_answers_what_waited_behind_it(home, fake_telegram, fake_openrouter):
    """The webhook goes, the updates it held stay: a message sent while it was set is answered."""
    tg, ai = fake_telegram, fake_openrouter
    tg.webhook = {"url": "https://old.example/hook"}
    tg.message(USER, "sent while the webhook was set")
    async with running(home, tg, ai, streaming="off"):
        await tg.wait_sent(USER)
    assert tg.texts_in(USER) == ["echo: sent while the webhook was set"]
    (delete,) = tg.calls_to("deleteWebhook")
    assert delete.params == {"drop_pending_updates": False}


async def test_a_webhook_update_the_inbox_could_not_store_is_refused_and_answered_once_redelivered(
        home, fake_telegram, fake_openrouter):
    """A 500 makes Telegram deliver the update again; a 200 would have lost it. The listener is where
    webhookHost says (a second loopback address here), and /healthz names the bot."""
    tg, ai = fake_telegram, fake_openrouter
    port = free_port()
    url = f"http://127.0.0.2:{port}/telegram-webhook"
    async with running(home, tg, ai, ready="setWebhook", streaming="off", webhookUrl=url, webhookSecret="s3cret",
                       webhookHost="127.0.0.2", webhookPort=port) as service:
        tg.message(USER, "before")
        await tg.wait_sent(USER)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.2:{port}/healthz") as resp:
                assert await resp.json() == {"ok": True, "bot": "chorus_test_bot"}
        # The kernel's file-size limit stands in for a full disk: the inbox cannot store the next message.
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        tg.message(USER, "during")
        update_id = tg.last_update_id
        await tg.wait_sent(USER, 2)  # told at once that it could not be saved
        await tg.wait_for(lambda: (update_id, 500) in tg.webhook_results)
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await tg.wait_for(lambda: "echo: during" in tg.texts_in(USER))
        texts = [s.text for s in await tg.settled(USER)]  # a second answer, if any, would come before the marker's
    assert texts[0] == "echo: before" and texts.count("echo: during") == 1
    assert texts[1].startswith("⚠️ I could not save your message")
    assert [s for u, s in tg.webhook_results if u == update_id][-1] == 200
    assert tg.updates == []


async def test_run_with_a_refused_token_says_so_and_stops(home, fake_telegram, fake_openrouter):
    """A 401 at start is a config mistake: one line naming the setting to fix, not a traceback."""
    tg, ai = fake_telegram, fake_openrouter
    await onboarded(home, ai)
    home.write_config(ai, **telegram_config(tg, botToken="123456789:AAWrongTokenWrongTokenWrongToken_xx"))
    service = await start_chorus(home, "run", stdin=False)
    await asyncio.wait_for(service.proc.wait(), 30)  # the service ends by itself: nothing can work
    assert service.proc.returncode == 1  # not 0: a supervisor must not take it for a clean stop
    result = await service.stop()
    assert ("Telegram refused the bot token (Unauthorized, 401); the Telegram channel stops. Put the token @BotFather "
            "gave you in channels.telegram.botToken (or TELEGRAM_BOT_TOKEN) and restart") in result.err
    assert "Traceback" not in result.err, result.err


async def test_an_album_the_inbox_could_not_store_is_received_again_and_answered_once(home, fake_telegram, fake_openrouter):
    """A message that fails to store between the parts of an album: the album is neither lost (its parts held
    back as fed) nor doubled (its parts held twice) when it all comes again."""
    tg, ai = fake_telegram, fake_openrouter
    dog, bird = make_png(50, 30), make_png(60, 30)
    async with running(home, tg, ai, streaming="off") as service:
        tg.message(USER, "before")
        await tg.wait_sent(USER)
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        tg.photo(USER, dog, media_group_id="album-9", caption="and these?")
        tg.message(USER, "in between")
        tg.photo(USER, bird, media_group_id="album-9")
        await tg.wait_sent(USER, 2)  # told at once that it could not be saved
        resource.prlimit(service.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await tg.wait_for(lambda: {"echo: in between", "echo: and these?"} <= set(tg.texts_in(USER)))
        answers = [s.text for s in await tg.settled(USER)]  # a second answer would come before the marker's
    assert answers.count("echo: in between") == answers.count("echo: and these?") == 1 and tg.updates == []
    (call,) = [r for r in ai.chat_requests() if isinstance(r.json["messages"][-1]["content"], list)]
    text, *images = call.json["messages"][-1]["content"]
    assert text == {"type": "text", "text": "and these?"}
    assert [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in images] == [dog, bird]
