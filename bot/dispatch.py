"""From the channels to the agent: accept durably, then answer in one lane per session.

Accepting (``accept``) writes the message to the durable inbox and returns at once, so a
channel acknowledges messages as fast as they arrive (Telegram moves its offset, a webhook
answers 200). Answering runs afterwards in the session's lane, one turn at a time; ``/stop``
and ``/status`` skip the lane, so they work while a turn runs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from channels.base import Channel, ChatRef, Inbound, NotAccepted, Reply, clean_text

from .access import AccessPolicy
from .agent import CRASHED, STOP, Agent
from .commands import IMMEDIATE, TURNS, command_name, run_command
from .config import Messages
from .store import Inbox

log = logging.getLogger("chorus.dispatch")

NOT_SAVED = ("⚠️ I could not save your message (the disk is full or the database cannot be written), "
             "so I cannot answer it; please send it again in a moment.")


@dataclass(slots=True)
class _Lane:
    """One session's queue: waiting messages (a list per turn-to-be), the worker draining them, the turn running now."""

    items: list[list[Inbound]] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    turn: asyncio.Task[object] | None = None
    stop: bool = False  # /stop came while the next turn was still waiting: it stops as soon as it has begun


@dataclass(slots=True)
class _Held:
    """Text messages held back for debouncing."""

    inbounds: list[Inbound]
    timer: asyncio.TimerHandle | None = None


class Dispatcher:
    """Every inbound message passes here: ``accept`` returns once it is durable, answering follows in its lane."""

    def __init__(self, agent: Agent, inbox: Inbox, channels: dict[str, Channel] | None = None) -> None:
        self.agent = agent
        self.inbox = inbox
        self.channels = dict(channels or {})
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
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
        if inbound.message_id is not None:
            try:
                fresh = await self.inbox.accept(inbound)
            except sqlite3.Error as exc:
                log.error("could not store a message channel=%s chat=%s: %s", inbound.chat.channel, inbound.chat.chat_id, exc)
                self._spawn(self._tell(channel, inbound.chat, Reply(text=NOT_SAVED, reply_to=inbound.message_id)))
                raise NotAccepted(str(exc)) from exc
            if not fresh:
                log.info("redelivered message ignored channel=%s chat=%s id=%s",
                         inbound.chat.channel, inbound.chat.chat_id, inbound.message_id)
                return False
        await self._route(inbound, channel)
        return True

    async def recover(self) -> None:
        """Schedule answers to what a previous run accepted but never answered."""
        for inbound in await self.inbox.pending():
            channel = self.channels.get(inbound.chat.channel)
            if channel is None:
                log.warning("pending message for channel %s, which is not running; kept for later", inbound.chat.channel)
                continue
            log.info("answering a message left pending by the last run channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id)
            reattach = getattr(channel, "reattach", None)
            saved = inbound.attachments
            inbound.attachments = [a for a in (reattach(x) if reattach else None for x in saved) if a is not None]
            if len(inbound.attachments) < len(saved):
                await self._tell(channel, inbound.chat, Reply(
                    text="Sorry, I restarted while handling your last message and its attachment was lost; "
                         "please send it again.", reply_to=inbound.message_id))
                if not inbound.text and not inbound.attachments:
                    await self.inbox.done([inbound])
                    continue
            await self._route(inbound, channel)

    async def drain(self) -> None:
        """Wait until every accepted message has been answered (debounced ones included)."""
        while True:
            busy = [lane.worker for lane in self._lanes.values() if lane.worker] + list(self._tasks)
            if busy:
                await asyncio.gather(*busy, return_exceptions=True)
            elif self._held:
                await asyncio.sleep(self.messages.inbound.debounce_ms / 1000)
            else:
                return

    async def shutdown(self) -> None:
        """Cancel every turn; their messages stay pending in the inbox and are answered after the restart."""
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
        return bool(lane and ((lane.turn and not lane.turn.done())
                              or any(command_name(item[0].text) is None for item in lane.items)))

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
            await self.inbox.done([inbound])
            return
        command = command_name(inbound.text)
        if command in IMMEDIATE and self.busy(inbound.chat):
            self._spawn(self._command(inbound, channel))  # while a turn runs; otherwise in order
        elif command is not None:
            self._enqueue_after_held(inbound, channel)  # in order with the messages around it
        elif inbound.chat.kind == "group" and not inbound.mentioned:
            await self.inbox.remember_group(inbound, self.messages.group_chat.history_limit)
            await self.inbox.done([inbound])
        elif self.messages.inbound.debounce_ms > 0 and not inbound.attachments:
            self._debounce(inbound, channel)
        else:
            self._enqueue_after_held(inbound, channel)

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

    async def _command(self, inbound: Inbound, channel: Channel) -> None:
        reply = await run_command(self, inbound)
        if reply is not None:
            await channel.send(inbound.chat, reply)
        await self.inbox.done([inbound])

    def _debounce(self, inbound: Inbound, channel: Channel) -> None:
        """Fold quick consecutive texts from one sender into one turn."""
        key = (inbound.chat.session_key, inbound.sender_id)
        held = self._held.setdefault(key, _Held([]))
        held.inbounds.append(inbound)
        if held.timer:
            held.timer.cancel()
        held.timer = asyncio.get_running_loop().call_later(
            self.messages.inbound.debounce_ms / 1000, self._release, key, channel
        )

    def _enqueue_after_held(self, inbound: Inbound, channel: Channel) -> None:
        """A message that is not debounced (a command, a file) goes after what its sender wrote just before and
        the debouncer still holds: that goes first, as a turn of its own (so "thanks" is answered before /new)."""
        key = (inbound.chat.session_key, inbound.sender_id)
        if (held := self._held.get(key)) is not None:
            if held.timer:
                held.timer.cancel()
            self._release(key, channel)
        self._enqueue([inbound], channel)

    def _release(self, key: tuple[str, str], channel: Channel) -> None:
        self._enqueue(self._held.pop(key).inbounds, channel)

    def _enqueue(self, inbounds: list[Inbound], channel: Channel) -> None:
        key = inbounds[0].chat.session_key
        lane = self._lanes.setdefault(key, _Lane())
        lane.items.append(inbounds)
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(key, lane, channel), name=f"session:{key}")

    async def _work(self, key: str, lane: _Lane, channel: Channel) -> None:
        """Run the session's items in order. A command runs alone; in ``collect`` mode the
        messages waiting up to the next command join one turn."""
        try:
            while lane.items:
                take = 1
                if self.messages.queue.mode == "collect" and command_name(lane.items[0][0].text) is None:
                    while take < len(lane.items) and command_name(lane.items[take][0].text) is None:
                        take += 1
                batch = [i for item in lane.items[:take] for i in item]
                del lane.items[:take]
                try:
                    command = command_name(batch[0].text)
                    if command in TURNS:
                        await self._turn(lane, batch[0], channel, again=True)
                        await self.inbox.done(batch)
                    elif command is not None:
                        await self._command(batch[0], channel)
                    else:
                        await self._turn(lane, fold(batch), channel)
                        await self.inbox.done(batch)
                except sqlite3.Error as exc:
                    # The messages stay pending in the inbox and are answered after a restart; the lane goes on.
                    log.error("storage failed session=%s: %s", key, exc)
        finally:
            if self._lanes.get(key) is lane and not lane.items:
                del self._lanes[key]

    async def _turn(self, lane: _Lane, inbound: Inbound, channel: Channel, *, again: bool = False) -> None:
        context = await self.inbox.take_group(inbound.chat) if inbound.chat.kind == "group" and not again else []
        lane.turn = asyncio.create_task(self.agent.turn(inbound, channel, context, again=again))
        if lane.stop:
            lane.stop = False
            _stop_once_begun(lane.turn)
        try:
            await asyncio.wait({lane.turn})
        except asyncio.CancelledError:
            lane.turn.cancel()
            raise
        if not lane.turn.cancelled() and (exc := lane.turn.exception()) is not None:
            # The turn could not even end its own stream (the agent closes it on every other way out).
            log.error("turn crashed channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id, exc_info=exc)
            await self._tell(channel, inbound.chat, Reply(
                text=CRASHED,
                reply_to=inbound.message_id,
            ))


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
        attachments=[a for i in inbounds for a in i.attachments], received_at=last.received_at,
    )
