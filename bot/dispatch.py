"""From the channels to the agent: accept durably, then answer in one lane per session.

Accepting (``accept``) writes the message to the durable inbox and returns at once, so a
channel acknowledges messages as fast as they arrive (Telegram moves its offset, a webhook
answers 200). Answering runs afterwards in the session's lane, one turn at a time; ``/stop``
and ``/status`` skip the lane, so they work while a turn runs.

With several instances on one database, a session's lane runs on the instance holding its lease. The
instance that accepts a message takes the lease if it is free, or wakes the holder, which then reads the
session's waiting messages from the inbox in order (``_pull``). A lane that empties lets the lease go; the
heartbeat's sweep takes the waiting messages of sessions whose holder died.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from channels.base import Channel, ChatRef, Inbound, NotAccepted, Reply, clean_text

from .access import APPROVED_TEXT, AccessPolicy, owner_of
from .agent import CRASHED, STOP, Agent
from .cluster import Cluster, Solo
from .commands import IMMEDIATE, TURNS, CommandContext, command_name, run_command
from .config import Messages
from .db.base import DB_ERRORS
from .store import Inbox, Settlement, marked_answered

log = logging.getLogger("chorus.dispatch")

# The parts of an album come one by one (through a webhook each only once the last was acknowledged), each
# within moments of the last: this long without another, the album is complete.
ALBUM_QUIET = 0.5
AWAITING_MAX = 5  # a stranger's latest messages kept (in the inbox) to answer once they are approved
EDITED = "[The user edited an earlier message; this is its new version]"
NOT_SAVED = ("⚠️ I could not save your message (the disk is full or the database cannot be written), "
             "so I cannot answer it; please send it again in a moment.")


@dataclass(slots=True)
class _Scheduled:
    """A scheduled job's run waiting in the session's lane; ``done`` says whether it answered."""

    inbound: Inbound
    done: asyncio.Future[bool]


@dataclass(slots=True)
class _Lane:
    """One session's queue: waiting messages (a list per turn-to-be) and scheduled runs, the worker draining them,
    the turn running now."""

    items: list[list[Inbound] | _Scheduled] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    turn: asyncio.Task[object] | None = None
    answering: frozenset[str | None] = frozenset()  # the ids of the messages the running turn answers
    stop: bool = False  # /stop came while the next turn was still waiting: it stops as soon as it has begun


@dataclass(slots=True)
class _Held:
    """Text messages held back for debouncing."""

    inbounds: list[Inbound]
    timer: asyncio.TimerHandle | None = None


class Dispatcher:
    """Every inbound message passes here: ``accept`` returns once it is durable, answering follows in its lane."""

    def __init__(self, agent: Agent, inbox: Inbox, channels: dict[str, Channel] | None = None,
                 cluster: Cluster | None = None) -> None:
        self.agent = agent
        self.inbox = inbox
        self.channels = dict(channels or {})
        self.cluster: Cluster = cluster or Solo()
        self._routed: dict[str, set[str | None]] = {}  # session -> ids of its inbox rows routed here (shared only)
        self._pulling: dict[str, asyncio.Lock] = {}
        self._closing = False
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._told_not_saved: set[tuple[str, str]] = set()  # (session, sender) told their message was not saved
        self._idle: dict[str, asyncio.TimerHandle] = {}  # session -> when its lease is given back (shared only)
        self.access = AccessPolicy(inbox.store, agent.config)

    @property
    def messages(self) -> Messages:
        return self.agent.config.messages

    async def accept(self, inbound: Inbound, channel: Channel) -> bool:
        """Record ``inbound`` durably (once) and schedule its answer; ``False`` for a redelivery.

        Raises ``NotAccepted`` (after telling the user) when it could not be stored: the channel
        must then not acknowledge it, so the platform delivers it again.
        """
        self.channels.setdefault(channel.name, channel)
        inbound.text = clean_text(inbound.text)
        inbound.sender_name = clean_text(inbound.sender_name)
        if inbound.sender_username is not None:
            inbound.sender_username = clean_text(inbound.sender_username)
        for attachment in inbound.attachments:  # a broken client's file name must not make the message unstorable
            if attachment.filename is not None:
                attachment.filename = clean_text(attachment.filename)
        if inbound.message_id is not None:
            sender = (inbound.chat.session_key, inbound.sender_id)
            try:
                fresh = await self.inbox.accept(inbound)
            except DB_ERRORS as exc:
                log.error("could not store a message channel=%s chat=%s: %s", inbound.chat.channel, inbound.chat.chat_id, exc)
                if sender not in self._told_not_saved:  # once per sender, not on every redelivery
                    self._told_not_saved.add(sender)
                    self._spawn(self._tell(channel, inbound.chat, Reply(text=NOT_SAVED, reply_to=inbound.message_id)))
                raise NotAccepted(str(exc)) from exc
            self._told_not_saved.discard(sender)
            if not fresh:
                log.info("redelivered message ignored channel=%s chat=%s id=%s",
                         inbound.chat.channel, inbound.chat.chat_id, inbound.message_id)
                return False
        try:
            if self.cluster.shared and inbound.message_id is not None:
                await self._offer(inbound, channel)
            else:
                await self._route(inbound, channel)
        except DB_ERRORS as exc:  # stored, but not yet routed: unconfirmed, its redelivery is answered then
            log.error("could not route a message channel=%s chat=%s: %s", inbound.chat.channel, inbound.chat.chat_id, exc)
            raise NotAccepted(str(exc)) from exc
        return True

    async def _offer(self, inbound: Inbound, channel: Channel) -> None:
        """A message accepted here, on a shared database: answered here if this instance holds (or can take) its
        session's lease, else its holder is woken to read it from the inbox."""
        key = inbound.chat.session_key
        lease = _lease(key)
        if self.cluster.holds(lease) or await self.cluster.take(lease):
            await self._pull(key, channel, inbound)
        elif (holder := await self.cluster.holder(lease)) is not None:
            await self.cluster.notify(holder, key)
        elif await self.cluster.take(lease):  # its holder let go in between
            await self._pull(key, channel, inbound)

    async def heard(self, key: str) -> None:
        """Another instance accepted a message of session ``key`` while this one held it: read it, in order."""
        channel = self.channels.get(key.partition(":")[0])
        if channel is not None and (self.cluster.holds(_lease(key)) or await self.cluster.take(_lease(key))):
            await self._pull(key, channel)

    async def _pull(self, key: str, channel: Channel, fresh: Inbound | None = None) -> None:
        """Route the session's waiting messages not yet routed here, oldest first; ``fresh`` (just accepted here)
        is used as it came rather than as stored, with its attachments' bytes."""
        async with self._pulling.setdefault(key, asyncio.Lock()):
            # The lane may have let the lease go while this waited for the lock (then another instance may hold
            # it now: it is woken, and reads the message itself).
            if not (self.cluster.holds(_lease(key)) or await self.cluster.take(_lease(key))):
                if (holder := await self.cluster.holder(_lease(key))) is not None:
                    await self.cluster.notify(holder, key)
                return
            chat = fresh.chat if fresh is not None else None
            if chat is None:
                waiting = await self.inbox.pending_chats()
                chat = next((c for c in waiting if c.session_key == key), None)
                if chat is None:
                    return
            routed = self._routed.setdefault(key, set())
            for inbound in await self.inbox.pending_of(chat):
                if inbound.message_id in routed:
                    continue
                routed.add(inbound.message_id)
                try:
                    if fresh is not None and inbound.message_id == fresh.message_id:
                        await self._route(fresh, channel)
                    elif await self._reattached(inbound, channel):
                        await self._route(inbound, channel)
                except BaseException:
                    routed.discard(inbound.message_id)  # still pending: read again by the next pull
                    raise
            if not self.busy(chat) and not any(k[0] == key for k in self._held):
                self._let_go_later(key, channel)  # nothing was left to answer (a redelivery, a command)

    def _let_go_later(self, key: str, channel: Channel) -> None:
        """Give the session's lease back once the session has been idle for a third of the lease (the heartbeat
        keeps it meanwhile): the conversation's next message, if it reaches this instance, then needs no trip to
        take it again. Taking and giving back were 3 of a turn's 9 trips to a shared database."""
        if not self.cluster.shared or self._closing:
            return
        if (timer := self._idle.pop(key, None)) is not None:
            timer.cancel()
        self._idle[key] = asyncio.get_running_loop().call_later(
            self.cluster.lease / 3, lambda: self._spawn(self._let_go(key, channel)))

    async def _let_go(self, key: str, channel: Channel) -> None:
        """The session's lane is empty: give its lease back, unless a message came meanwhile (then take it again)."""
        self._idle.pop(key, None)
        if self._closing or not self.cluster.shared or key in self._lanes or any(k[0] == key for k in self._held):
            return  # (leaving, the cluster gives every lease back at once)
        async with self._pulling.setdefault(key, asyncio.Lock()):
            if key in self._lanes or any(k[0] == key for k in self._held):
                return
            try:
                await self.cluster.give_up(_lease(key))
            except DB_ERRORS as exc:  # still held: the sweep lets it go (or answers what waits) once it can
                log.warning("could not give a session's lease back session=%s: %s", key, exc)
                return
            self._routed.pop(key, None)
            self._pulling.pop(key, None)
        # A message accepted elsewhere while this instance held the lease, whose word may come after it let go.
        if any(c.session_key == key for c in await self.inbox.pending_chats()):
            await self.heard(key)

    async def sweep(self) -> None:
        """Take the sessions whose messages wait with no live instance holding them (their holder died, or a
        word was lost) and answer those messages, in order."""
        by_key = {c.session_key: c for c in await self.inbox.pending_chats() if c.channel in self.channels}
        for key in await self.cluster.free([_lease(k) for k in by_key]):
            key = key.removeprefix("session:")
            log.info("taking over a session left waiting channel=%s chat=%s", by_key[key].channel, by_key[key].chat_id)
            await self.heard(key)
        # Held here with nothing answering them: what a lane cut short by the database left (read again now)
        for key in by_key:
            if self.cluster.holds(_lease(key)) and key not in self._lanes and not any(k[0] == key for k in self._held):
                await self.heard(key)

    async def recover(self) -> None:
        """Schedule answers to what a previous run accepted but never answered (on a shared database: what no
        live instance is answering)."""
        if self.cluster.shared:
            await self.sweep()
            return
        for inbound in await self.inbox.pending():
            channel = self.channels.get(inbound.chat.channel)
            if channel is None:
                log.warning("pending message for channel %s, which is not running; kept for later", inbound.chat.channel)
                continue
            log.info("answering a message left pending by the last run channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id)
            if await self._reattached(inbound, channel):
                await self._route(inbound, channel)

    async def _reattached(self, inbound: Inbound, channel: Channel) -> bool:
        """Restore a stored message's attachments from their sources; a lost one is told to the user, and a
        message left with nothing to answer is marked done (``False``)."""
        reattach = getattr(channel, "reattach", None)
        saved = inbound.attachments
        inbound.attachments = [a for a in (reattach(x) if reattach else None for x in saved) if a is not None]
        if len(inbound.attachments) < len(saved):
            await self._tell(channel, inbound.chat, Reply(
                text="Sorry, I restarted while handling your last message and its attachment was lost; "
                     "please send it again.", reply_to=inbound.message_id))
            if not inbound.text and not inbound.attachments:
                await self.inbox.done([inbound])
                return False
        return True

    async def drain(self) -> None:
        """Wait until every accepted message has been answered (debounced ones included)."""
        while True:
            busy = [lane.worker for lane in self._lanes.values() if lane.worker] + list(self._tasks)
            if busy:
                await asyncio.gather(*busy, return_exceptions=True)
            elif self._held:
                await asyncio.sleep(min(self.messages.inbound.debounce_ms / 1000 or ALBUM_QUIET, ALBUM_QUIET))
            else:
                return

    async def shutdown(self) -> None:
        """Cancel every turn; their messages stay pending in the inbox and are answered after the restart."""
        self._closing = True
        for timer in self._idle.values():
            timer.cancel()  # the cluster gives every lease back as it leaves
        for held in self._held.values():
            if held.timer:
                held.timer.cancel()
        self._held.clear()
        running = [lane.worker for lane in self._lanes.values() if lane.worker] + list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def deliver(self, chat: ChatRef, reply: Reply) -> None:
        """Send a reply that was not asked for just now (a finished video); fails if the channel is not running."""
        channel = self.channels.get(chat.channel)
        if channel is None:
            raise RuntimeError(f"channel {chat.channel} is not running")
        await channel.send(chat, reply)

    async def run_scheduled(self, inbound: Inbound) -> bool:
        """Run a scheduled job's turn in its session's lane (after the turn running there, never beside it);
        ``True`` when it answered. Fails if the job's channel is not running."""
        channel = self.channels.get(inbound.chat.channel)
        if channel is None:
            raise RuntimeError(f"channel {inbound.chat.channel} is not running")
        lease = _lease(inbound.chat.session_key)
        while not (self.cluster.holds(lease) or await self.cluster.take(lease)):  # after the holder's turns
            await asyncio.sleep(min(1.0, self.cluster.lease / 3))
        item = _Scheduled(inbound, asyncio.get_running_loop().create_future())
        self._enqueue(item, channel)
        return await item.done
    async def watch_approvals(self, every: float = 1.0) -> None:
        """While the service runs: a stranger whom the owner approves (``chorus pairing approve``, another
        process, perhaps while this one was stopped) is told so, and the messages they sent while waiting
        (kept in the inbox) are answered, once."""
        while True:
            await asyncio.sleep(every)
            by_sender: dict[tuple[str, str], list[Inbound]] = {}
            for inbound in await self.inbox.awaiting_approved():
                by_sender.setdefault((inbound.chat.channel, inbound.sender_id), []).append(inbound)
            for key, waiting in by_sender.items():
                if (channel := self.channels.get(key[0])) is None:
                    continue
                # pending from here: a restart answers them, nothing twice; of several instances one takes each
                if not (waiting := await self.inbox.release(waiting)):
                    continue
                last = waiting[-1]
                log.info("%s: %s (%s) was approved; answering their waiting message(s)", key[0], last.sender_name, key[1])
                await self._tell(channel, last.chat, Reply(text=APPROVED_TEXT))
                for inbound in waiting:
                    if self.cluster.shared:
                        await self._offer(inbound, channel)
                    elif await self._reattached(inbound, channel):
                        await self._route(inbound, channel)

    def stop(self, chat: ChatRef) -> bool:
        """Cancel the chat's turn in progress, or the one about to begin; ``False`` when there is none."""
        lane = self._lanes.get(chat.session_key)
        if lane is None or not self.busy(chat):
            return False
        if lane.turn and not lane.turn.done():
            _stop_once_begun(lane.turn)
        else:
            lane.stop = True
        return True

    def busy(self, chat: ChatRef) -> bool:
        """Whether the chat has a turn running, or messages waiting in its lane for one."""
        lane = self._lanes.get(chat.session_key)
        return bool(lane and ((lane.turn and not lane.turn.done()) or any(not _is_command(item) for item in lane.items)))

    async def _route(self, inbound: Inbound, channel: Channel) -> None:
        """Decide where an accepted message goes: a command now, the group buffer, the debouncer or the lane."""
        if inbound.moved_from is not None:  # not a message: the chat's conversation moves to its new id
            await self.agent.store.move_chat(inbound.chat.channel, inbound.moved_from, inbound.chat.chat_id)
            log.info("chat moved channel=%s from=%s to=%s", inbound.chat.channel, inbound.moved_from, inbound.chat.chat_id)
            await self.inbox.done([inbound])
            return
        if not (decision := await self.access.check(inbound)).allowed:
            if decision.reply:  # the pairing code or a refusal, sent aside so accepting stays fast
                self._spawn(self._tell(channel, inbound.chat, Reply(text=decision.reply, reply_to=inbound.message_id)))
            owner = owner_of(self.access.settings(inbound.chat.channel))
            if decision.reason == "pairing-new" and owner and decision.code:  # asked in a DM of their own
                self._spawn(self._ask_owner(channel, owner, Reply(
                    text=f"{inbound.sender_name} ({inbound.sender_id}) asks to talk: /approve {decision.code}",
                    buttons=[("Approve", f"/approve {decision.code}"), ("Deny", f"/deny {decision.code}")])))
            await self.inbox.done([inbound])
            if (decision.reason in ("pairing-new", "pairing-pending") and command_name(inbound.text) is None
                    and inbound.message_id is not None):
                await self.inbox.await_approval(inbound, AWAITING_MAX)  # answered once the owner approves
            return
        if inbound.edit_of is not None and not await self._take_edit(inbound):
            return
        command = command_name(inbound.text)
        if command in IMMEDIATE and self.busy(inbound.chat):
            self._spawn(self._command(inbound, channel))  # while a turn runs; otherwise in order
        elif command is not None:
            self._enqueue_after_held(inbound, channel)  # in order with the messages around it
        elif inbound.chat.kind == "group" and not inbound.mentioned:
            await self.inbox.remember_group(inbound, self.messages.group_chat.history_limit)
            await self.inbox.done([inbound])
        elif inbound.album is not None:
            self._hold(inbound, channel, (inbound.chat.session_key, "album:" + inbound.album), ALBUM_QUIET)
        elif self.messages.inbound.debounce_ms > 0 and not inbound.attachments:
            self._hold(inbound, channel, (inbound.chat.session_key, inbound.sender_id),
                       self.messages.inbound.debounce_ms / 1000)
        else:
            self._enqueue_after_held(inbound, channel)

    async def _take_edit(self, inbound: Inbound) -> bool:
        """An edited message: the old version leaves the queue (its turn, if running, is stopped) and the new
        one is answered, marked as a correction; ``False`` when edits are ignored."""
        if self.messages.edits == "ignore":
            await self.inbox.done([inbound])
            return False
        old = inbound.edit_of
        replaced = []
        lane = self._lanes.get(inbound.chat.session_key)
        if lane is not None:
            replaced = [i for item in lane.items for i in item if any(j.message_id == old for j in item)]
            lane.items = [item for item in lane.items if not any(i.message_id == old for i in item)]
            if old in lane.answering and lane.turn is not None and not lane.turn.done():
                _stop_once_begun(lane.turn)
        for key, held in list(self._held.items()):
            replaced += [i for i in held.inbounds if i.message_id == old]
            held.inbounds[:] = [i for i in held.inbounds if i.message_id != old]
            if not held.inbounds:
                if held.timer:
                    held.timer.cancel()
                del self._held[key]
        if replaced:
            await self.inbox.done(replaced)
        if command_name(inbound.text) is None and inbound.text:
            inbound.text = f"{EDITED}\n{inbound.text}"
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _tell(self, channel: Channel, chat: ChatRef, reply: Reply) -> None:
        """Send a notice; a channel that cannot take it now is logged, never raised into the caller."""
        try:
            await channel.send(chat, reply)
        except Exception:
            log.exception("could not send a notice channel=%s chat=%s", chat.channel, chat.chat_id)

    async def _ask_owner(self, channel: Channel, owner: str, reply: Reply) -> None:
        """Send ``reply`` to the owner in a DM: a channel whose DMs have ids of their own (Discord) opens it
        (``direct_chat``); elsewhere the owner's user id is their DM's."""
        opener = getattr(channel, "direct_chat", None)
        try:
            chat = await opener(owner) if opener else ChatRef(channel.name, owner)
        except Exception:
            log.exception("could not open a DM with the owner channel=%s owner=%s", channel.name, owner)
            return
        await self._tell(channel, chat, reply)

    async def _command(self, inbound: Inbound, channel: Channel) -> None:
        reply = await run_command(CommandContext(self.agent, channel, self, self.access), inbound)
        if reply is not None:
            await channel.send(inbound.chat, reply)
        await self.inbox.done([inbound])

    def _hold(self, inbound: Inbound, channel: Channel, key: tuple[str, str], quiet: float) -> None:
        """Fold what comes under one ``key`` into one turn, once ``quiet`` seconds pass without more: quick
        consecutive texts from one sender (debouncing), or the parts of an album."""
        held = self._held.setdefault(key, _Held([]))
        held.inbounds.append(inbound)
        if held.timer:
            held.timer.cancel()
        held.timer = asyncio.get_running_loop().call_later(quiet, self._release, key, channel)

    def _enqueue_after_held(self, inbound: Inbound, channel: Channel) -> None:
        """A message that is not debounced (a command, a file) goes after what its sender wrote just before and
        the debouncer still holds, and after an album still being gathered: those go first, as turns of their
        own (so "thanks" is answered before /new)."""
        session, sender = inbound.chat.session_key, inbound.sender_id
        for key in [k for k in self._held if k[0] == session and (k[1] == sender or k[1].startswith("album:"))]:
            if (timer := self._held[key].timer) is not None:
                timer.cancel()
            self._release(key, channel)
        self._enqueue([inbound], channel)

    def _release(self, key: tuple[str, str], channel: Channel) -> None:
        self._enqueue(self._held.pop(key).inbounds, channel)

    def _enqueue(self, inbounds: list[Inbound] | _Scheduled, channel: Channel) -> None:
        key = (inbounds.inbound if isinstance(inbounds, _Scheduled) else inbounds[0]).chat.session_key
        lane = self._lanes.setdefault(key, _Lane())
        lane.items.append(inbounds)
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(key, lane, channel), name=f"session:{key}")

    async def _work(self, key: str, lane: _Lane, channel: Channel) -> None:
        """Run the session's items in order. A command runs alone; in ``collect`` mode the
        messages waiting up to the next command join one turn."""
        try:
            while lane.items:
                if not (self.cluster.holds(_lease(key)) or await self._take(_lease(key))):
                    if not self._leave_lane(key, lane):  # taken over while this instance was cut off
                        break
                lane.answering = frozenset()  # set below for a turn that answers messages (an edit may stop it)
                if isinstance(first := lane.items[0], _Scheduled):
                    del lane.items[0]
                    await self._scheduled_turn(lane, first, channel)
                    continue
                take = 1
                if self.messages.queue.mode == "collect" and command_name(first[0].text) is None:
                    while take < len(lane.items) and _joins(lane.items[take]):
                        take += 1
                batch = [i for item in lane.items[:take] if isinstance(item, list) for i in item]
                del lane.items[:take]
                try:
                    command = command_name(batch[0].text)
                    if command in TURNS:
                        await self._turn(lane, batch[0], channel, Settlement([marked_answered(batch)]), again=True)
                    elif command is not None:
                        await self._command(batch[0], channel)
                    else:
                        lane.answering = frozenset(i.message_id for i in batch)
                        await self._turn(lane, fold(batch), channel, Settlement([marked_answered(batch)]))
                except DB_ERRORS as exc:
                    # The messages stay pending in the inbox; the lane goes on. Alone, they are answered after a
                    # restart; on a shared database, by whoever pulls the session next (the sweep, here or elsewhere).
                    log.error("storage failed session=%s: %s", key, exc)
                    if routed := self._routed.get(key):
                        routed.difference_update(i.message_id for i in batch)
        finally:
            for item in [i for i in lane.items if isinstance(i, _Scheduled)]:  # left by a shutdown
                lane.items.remove(item)
                item.done.cancel()  # the job gives its firing back for the next start
            if self._lanes.get(key) is lane and not lane.items:
                del self._lanes[key]
                self._let_go_later(key, channel)

    async def _take(self, lease: str) -> bool:
        """Hold ``lease`` (still, or again); ``False`` also when the database cannot say."""
        try:
            return await self.cluster.take(lease)
        except DB_ERRORS:
            return False

    def _leave_lane(self, key: str, lane: _Lane) -> bool:
        """The session's lease went to another instance (this one was cut off from the database for longer than
        the lease): its waiting messages are that instance's to answer now, from the inbox; scheduled runs fire
        again. ``True`` when messages that are in no inbox (no platform id) are left to answer here all the same."""
        def stays(item: list[Inbound] | _Scheduled) -> bool:
            return isinstance(item, list) and any(i.message_id is None for i in item)

        waiting = [i for item in lane.items if not stays(item) and isinstance(item, list) for i in item]
        for item in lane.items:
            if isinstance(item, _Scheduled):
                item.done.cancel()  # the job gives its firing back
        lane.items = [item for item in lane.items if stays(item)]
        if routed := self._routed.get(key):
            routed.difference_update(i.message_id for i in waiting)
        if waiting:
            log.warning("session=%s was taken over by another instance; %d waiting message(s) left to it", key, len(waiting))
        return bool(lane.items)

    async def _scheduled_turn(self, lane: _Lane, item: _Scheduled, channel: Channel) -> None:
        try:
            answered = await self._turn(lane, item.inbound, channel, Settlement())
        except BaseException:
            item.done.cancel()
            raise
        if not item.done.done():
            item.done.set_result(answered)

    def _acked(self, inbound: Inbound, channel: Channel) -> Any:
        """The channel's ``react`` when this message gets the configured reaction while it is answered."""
        react, emoji, scope = getattr(channel, "react", None), self.messages.ack_reaction, self.messages.ack_reaction_scope
        wanted = scope == "all" or (inbound.chat.kind == "group" and (scope == "group-all" or inbound.mentioned))
        return react if react and emoji and wanted and inbound.message_id else None

    async def _turn(self, lane: _Lane, inbound: Inbound, channel: Channel, settlement: Settlement, *,
                    again: bool = False) -> bool:
        """Answer ``inbound``, then commit ``settlement`` (with the answer, or after it); ``True`` when it was
        answered (or stopped by the user's choice)."""
        if react := self._acked(inbound, channel):
            await react(inbound.chat, inbound.message_id, self.messages.ack_reaction)
        try:
            answered = await self._answer(lane, inbound, channel, settlement, again)
        finally:
            if react:
                await react(inbound.chat, inbound.message_id, None)  # the answer is out
        await self.inbox.store.settle(settlement)  # a turn that crashed before its answer settled nothing
        return answered

    async def _answer(self, lane: _Lane, inbound: Inbound, channel: Channel, settlement: Settlement,
                      again: bool) -> bool:
        context = await self.inbox.take_group(inbound.chat) if inbound.chat.kind == "group" and not again else []
        lane.turn = asyncio.create_task(self.agent.turn(inbound, channel, context, again=again, settlement=settlement))
        if lane.stop:
            lane.stop = False
            _stop_once_begun(lane.turn)
        try:
            await asyncio.wait({lane.turn})
        except asyncio.CancelledError:
            lane.turn.cancel()
            raise
        if lane.turn.cancelled():
            return True  # /stop before it began: the user's choice, not a failure
        if (exc := lane.turn.exception()) is not None:
            # The turn could not even end its own stream (the agent closes it on every other way out).
            log.error("turn crashed channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id, exc_info=exc)
            await self._tell(channel, inbound.chat, Reply(
                text=CRASHED,
                reply_to=inbound.message_id,
            ))
            return False
        return bool(lane.turn.result())


def _lease(session_key: str) -> str:
    return "session:" + session_key


def _is_command(item: list[Inbound] | _Scheduled) -> bool:
    return isinstance(item, list) and command_name(item[0].text) is not None


def _joins(item: list[Inbound] | _Scheduled) -> bool:
    """Whether a waiting item may join the turn before it in ``collect`` mode: messages do, commands and
    scheduled runs run alone."""
    return isinstance(item, list) and command_name(item[0].text) is None


def _stop_once_begun(turn: asyncio.Task[object]) -> None:
    """Cancel ``turn`` with STOP after its first step: a task cancelled before it begins ends without running
    a line, so the user would get no "Stopped" and lose their words. Callbacks run in the order they were
    scheduled, and a task's first step was scheduled when it was created."""
    asyncio.get_running_loop().call_soon(turn.cancel, STOP)


def fold(inbounds: list[Inbound]) -> Inbound:
    """Several messages of one chat as one: texts joined in order, attachments together, the latest id."""
    if len(inbounds) == 1:
        return inbounds[0]
    last = inbounds[-1]
    return Inbound(
        chat=last.chat, sender_id=last.sender_id, sender_name=last.sender_name,
        text="\n".join(i.text for i in inbounds if i.text), message_id=last.message_id,
        mentioned=any(i.mentioned for i in inbounds), reply_to=last.reply_to,
        replied=next((i.replied for i in reversed(inbounds) if i.replied), None),
        attachments=[a for i in inbounds for a in i.attachments], received_at=last.received_at,
    )
