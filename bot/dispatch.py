"""From the channels to the agent: the durable inbox, commands, mention gating, debounce and one queue per session."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from channels.base import Channel, ChatRef, Inbound, Reply

from .access import AccessPolicy
from .agent import STOP, Agent
from .commands import run_command
from .config import Messages
from .store import Inbox

log = logging.getLogger("chorus.dispatch")


@dataclass(slots=True)
class _Item:
    """Messages that become one turn (several when debounced), and who waits for it."""

    inbounds: list[Inbound]
    done: asyncio.Future[None]


@dataclass(slots=True)
class _Lane:
    """One session's queue: its waiting items, the worker that drains them, and the turn running now."""

    items: list[_Item] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    turn: asyncio.Task[object] | None = None


@dataclass(slots=True)
class _Held:
    """Text messages held back for debouncing."""

    inbounds: list[Inbound]
    done: asyncio.Future[None]
    timer: asyncio.TimerHandle | None = None


class Dispatcher:
    """Every inbound message passes here; ``handle`` returns once the message has been answered."""

    def __init__(self, agent: Agent, inbox: Inbox, channels: dict[str, Channel] | None = None) -> None:
        self.agent = agent
        self.inbox = inbox
        self.channels = dict(channels or {})
        self._lanes: dict[str, _Lane] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self.access = AccessPolicy(inbox.store, agent.config)

    @property
    def messages(self) -> Messages:
        return self.agent.config.messages

    async def handle(self, inbound: Inbound, channel: Channel) -> None:
        """Accept (durably, once) and answer one message from ``channel``."""
        self.channels.setdefault(channel.name, channel)
        if inbound.message_id is not None and not await self.inbox.accept(inbound):
            log.info("redelivered message ignored channel=%s chat=%s id=%s",
                     inbound.chat.channel, inbound.chat.chat_id, inbound.message_id)
            return
        await self._route(inbound, channel)

    async def recover(self) -> list[asyncio.Task[None]]:
        """Answer what a previous run accepted but never answered; returns the tasks doing it."""
        tasks = []
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
                await channel.send(inbound.chat, Reply(
                    text="Sorry, I restarted while handling your last message and its attachment was lost; "
                         "please send it again.", reply_to=inbound.message_id))
                if not inbound.text and not inbound.attachments:
                    await self.inbox.done([inbound])
                    continue
            tasks.append(asyncio.create_task(self._route(inbound, channel)))
        return tasks

    async def drain(self) -> None:
        """Wait for every queued and running turn."""
        while workers := [lane.worker for lane in self._lanes.values() if lane.worker]:
            await asyncio.gather(*workers, return_exceptions=True)

    async def shutdown(self) -> None:
        """Cancel every turn; their messages stay pending in the inbox and are answered after the restart."""
        workers = [lane.worker for lane in self._lanes.values() if lane.worker]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def deliver(self, chat: ChatRef, reply: Reply) -> None:
        """Send a reply that was not asked for just now (a finished video); fails if the channel is not running."""
        channel = self.channels.get(chat.channel)
        if channel is None:
            raise RuntimeError(f"channel {chat.channel} is not running")
        await channel.send(chat, reply)

    def stop(self, chat: ChatRef) -> bool:
        """Cancel the chat's turn in progress; ``False`` when there is none."""
        lane = self._lanes.get(chat.session_key)
        if lane and lane.turn and not lane.turn.done():
            lane.turn.cancel(STOP)
            return True
        return False

    def busy(self, chat: ChatRef) -> bool:
        lane = self._lanes.get(chat.session_key)
        return bool(lane and lane.worker and not lane.worker.done())

    async def _route(self, inbound: Inbound, channel: Channel) -> None:
        if not await self.access.admit(inbound, channel):
            await self.inbox.done([inbound])
            return
        reply = await run_command(self, inbound)
        if reply is not None:
            await channel.send(inbound.chat, reply)
            await self.inbox.done([inbound])
            return
        if inbound.chat.kind == "group" and self._requires_mention(inbound.chat.channel) and not inbound.mentioned:
            await self.inbox.remember_group(inbound, self.messages.group_chat.history_limit)
            await self.inbox.done([inbound])
            return
        if self.messages.inbound.debounce_ms > 0 and not inbound.attachments:
            await self._debounce(inbound, channel)
        else:
            await self._enqueue([inbound], channel)

    def _requires_mention(self, channel: str) -> bool:
        settings = getattr(self.agent.config.channels, channel, None)
        return bool(getattr(settings, "require_mention", False))

    async def _debounce(self, inbound: Inbound, channel: Channel) -> None:
        """Fold quick consecutive texts from one sender into one turn."""
        key = (inbound.chat.session_key, inbound.sender_id)
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Held([], asyncio.get_running_loop().create_future())
        held.inbounds.append(inbound)
        if held.timer:
            held.timer.cancel()
        held.timer = asyncio.get_running_loop().call_later(
            self.messages.inbound.debounce_ms / 1000, self._release, key, channel
        )
        await asyncio.shield(held.done)

    def _release(self, key: tuple[str, str], channel: Channel) -> None:
        held = self._held.pop(key)
        task = asyncio.create_task(self._enqueue(held.inbounds, channel))
        task.add_done_callback(lambda t: held.done.set_result(None) if not t.cancelled() else held.done.cancel())

    async def _enqueue(self, inbounds: list[Inbound], channel: Channel) -> None:
        key = inbounds[0].chat.session_key
        lane = self._lanes.setdefault(key, _Lane())
        item = _Item(inbounds, asyncio.get_running_loop().create_future())
        lane.items.append(item)
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._work(key, lane, channel), name=f"session:{key}")
        await asyncio.shield(item.done)  # a caller that gives up does not cancel the turn

    async def _work(self, key: str, lane: _Lane, channel: Channel) -> None:
        """Run the session's turns one after another; in ``collect`` mode, everything waiting joins the next turn."""
        try:
            while lane.items:
                batch = lane.items[:] if self.messages.queue.mode == "collect" else lane.items[:1]
                del lane.items[: len(batch)]
                inbounds = [i for item in batch for i in item.inbounds]
                await self._turn(lane, fold(inbounds), channel)
                await self.inbox.done(inbounds)
                for item in batch:
                    item.done.set_result(None)
        finally:
            for item in lane.items:
                item.done.cancel()
            if self._lanes.get(key) is lane and not lane.items:
                del self._lanes[key]

    async def _turn(self, lane: _Lane, inbound: Inbound, channel: Channel) -> None:
        context = await self.inbox.take_group(inbound.chat) if inbound.chat.kind == "group" else []
        lane.turn = asyncio.create_task(self.agent.turn(inbound, channel, context))
        try:
            await asyncio.wait({lane.turn})
        except asyncio.CancelledError:
            lane.turn.cancel()
            raise
        if not lane.turn.cancelled() and (exc := lane.turn.exception()) is not None:
            # A bug, not an upstream error (those become replies): say so rather than go silent.
            log.error("turn crashed channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id, exc_info=exc)
            await channel.send(inbound.chat, Reply(
                text="⚠️ Something went wrong on my side while answering; the error is in the service log.",
                reply_to=inbound.message_id,
            ))


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

