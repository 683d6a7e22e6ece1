"""The agent loop: one turn of a conversation, from an ``Inbound`` to a ``Reply``, with tools."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime, timezone
from functools import lru_cache
from typing import Any

from channels.base import AttachmentKind, Channel, ChatRef, FetchError, Inbound, Media, Replied, Reply
from providers.openrouter.client import ChatResult, OpenRouterClient
from providers.openrouter.errors import AuthError, OpenRouterError
from providers.openrouter.refs import ModelRef
from providers.openrouter.request import ChatSpec

from .catalog import Catalog, ModelInfo
from .config import ChorusConfig, state_dir
from .context import fit_context, plain_turns, short_tool_ids, wants_short_tool_ids
from .media.documents import read_documents
from .media.images import (
    ImageError, Images, cannot_see, carries_images, image_attachments, user_content, with_images, without_images,
)
from .store import ChatSettings, Settlement, StoredMessage, Store, appending
from .tools import ToolContext, ToolRegistry
from .media.voice import Preflight, TagFilter, Voice, split_tags

log = logging.getLogger("chorus.agent")
STOP = "stop"  # the cancel message of /stop, told apart from a shutdown
CRASHED = "⚠️ Something went wrong on my side while answering; the error is in the service log."
# Said after an answer the model did not finish on its own; the user would otherwise take it as complete.
CUT_SHORT = {
    "length": "\n\n(The answer reached the model's length limit here. Say \"continue\" for the rest.)",
    "content_filter": "\n\n(The model's provider stopped the answer here with its content filter.)",
}
CANNOT_ANSWER = "I can't answer right now. (The reason is in the service log.)"
NOTHING_TO_RETRY = "There is no unanswered message to ask again; the last one was answered."
LEFT_OUT = "(That message is kept, but I will leave it out of our conversation from now on, so it cannot break the next one.)"


class Agent:
    """Runs turns: one at a time per session, many sessions at once."""

    def __init__(
        self,
        config: ChorusConfig,
        store: Store,
        llm: OpenRouterClient,
        tools: ToolRegistry | None = None,
        *,
        catalog: Catalog | None = None,
        voice: Voice | None = None,
        images: Images | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.config = config
        self.store = store
        self.llm = llm
        self.tools = tools if tools is not None else ToolRegistry()
        self.catalog = catalog
        self.voice = voice
        self.images = images or Images(state_dir() / "media", config.tools.media.image)
        self.now = now

    def context_window(self, info: ModelInfo | None) -> int:
        """The model's context length from the catalog, else ``agents.defaults.contextTokens``."""
        return (info.context_length if info else None) or self.config.agents.defaults.context_tokens

    def _ref(self, settings: ChatSettings) -> ModelRef:
        return ModelRef.parse(settings.model or self.config.agents.defaults.model.primary)

    async def model_for(self, chat: ChatRef) -> ModelRef:
        """The chat's own model, else the configured default."""
        return self._ref(await self.store.chat_settings(chat))

    def system_prompt(self, chat: ChatRef) -> str:
        """The configured prompt plus what the model cannot know by itself: the date and where it is talking."""
        where = "a group chat (several people; each user message starts with the sender's name)" if chat.kind == "group" else "a direct chat"
        return (
            f"{self.config.agents.defaults.system_prompt.strip()}\n\n"
            f"Today is {_spoken(self.now().date())}. You are talking in {where} on {chat.channel}."
        )

    async def turn(self, inbound: Inbound, channel: Channel, group_context: Sequence[tuple[str, str]] = (), *,
                   again: bool = False, settlement: Settlement | None = None) -> bool:
        """Load history, call the model (running tools it asks for), stream the answer, store the turn;
        ``False`` when it ended in an error instead of an answer (a scheduled run then backs off).

        ``group_context`` holds the group messages since the bot last answered (sender, text); ``again``
        (``/retry``) asks the model once more for the last message of the conversation, if none answered it;
        ``settlement`` holds the caller's writes to commit with the answer (its messages marked answered), to
        which the turn adds its history. The reply stream opens first, so the user sees "typing" before
        history, settings or a voice note's transcription are ready; every way out of the turn closes it (its
        typing stops with the last word).
        """
        settlement = settlement if settlement is not None else Settlement()
        stream = _VisibleStream(channel.open_stream(inbound.chat, inbound.message_id), settlement)
        try:
            answered = await self._turn(inbound, channel, stream, group_context, again)
        except asyncio.CancelledError as exc:
            if exc.args != (STOP,):
                raise
            # /stop came before the model was asked (while loading or transcribing): keep the words, say so.
            if inbound.text:
                user = StoredMessage("user", user_text(inbound, group_context), name=inbound.sender_name)
                settlement.statements.append(appending(await self.store.active_session(inbound.chat), [user]))
            await self._end_early(inbound, stream, "⏹ Stopped.")
            answered = True
        except Exception as exc:  # a bug before the answer began: say so on the open stream, once
            log.error("turn crashed channel=%s chat=%s", inbound.chat.channel, inbound.chat.chat_id, exc_info=exc)
            answered = await self._end_early(inbound, stream, CRASHED)
        await self.store.settle(settlement)  # where the channel's outbox did not commit it with the answer
        return answered

    async def _turn(self, inbound: Inbound, channel: Channel, stream: _VisibleStream,
                    group_context: Sequence[tuple[str, str]], again: bool = False) -> bool:
        chat = inbound.chat
        state = await self.store.turn_state(chat)
        session_id, history, settings = state.session_id, state.history, state.settings
        if again and (not history or history[-1].role != "user"):
            return await self._end_early(inbound, stream, NOTHING_TO_RETRY)
        ref = self._ref(settings)
        info = await self.catalog.lookup(ref) if self.catalog else None
        # What the model cannot take, OpenRouter refuses the whole request for (404, "No endpoints found...").
        sees_images = info.sees_images if info else True
        takes_tools = info.supports_tools if info else True
        unseen = cannot_see(ref) if not sees_images and image_attachments(inbound) else None
        if unseen:  # the images are dropped with a note; their caption and the rest go on
            inbound.attachments = [a for a in inbound.attachments if a.kind is not AttachmentKind.IMAGE]
            if not inbound.text.strip() and not inbound.attachments:
                return await self._end_early(inbound, stream, unseen)
        try:
            images = await self.images.accept(inbound)
            heard = await self.voice.preflight(inbound) if self.voice else Preflight(inbound.text)
        except (ImageError, FetchError) as exc:  # too large, not an image, not fetched: say why, store nothing
            return await self._end_early(inbound, stream, str(exc))
        if heard.error:  # the voice note could not become words: say why, store nothing
            return await self._end_early(inbound, stream, heard.error)
        documents = self.config.tools.media.document
        docs = await read_documents(inbound, documents.max_bytes, documents.max_chars)
        said = "\n\n".join(t for t in (heard.text, docs.text) if t)
        if docs.notes and not said and not images:  # nothing left to answer but why the files were not read
            return await self._end_early(inbound, stream, " ".join(docs.notes))
        tts_mode = self.voice.mode(settings.tts) if self.voice else "off"
        note = self.voice.prompt_note(tts_mode, heard.spoken) if self.voice else None
        if again:  # the question is in the history already, unanswered: asked again, not stored again
            user, history = history[-1], history[:-1]
        else:
            user = StoredMessage("user", user_content(user_text(inbound, group_context, said), images),
                                 name=inbound.sender_name)
        pending: list[StoredMessage] = [] if again else [user]
        messages, dropped = fit_context(
            [{"role": "system", "content": self.system_prompt(chat) + (f"\n\n{note}" if note else "")}],
            [m.to_api(for_model=ref.slug) for m in history], [user.to_api()], self.context_window(info),
        )
        if dropped:
            log.info("context trimmed session=%s: %d oldest turns left out", session_id, dropped)
        # Only the images still in the fitted context are read; a model that takes none gets a note for each.
        messages = await self.images.inline(messages) if sees_images else without_images(messages)
        if not takes_tools:
            messages = plain_turns(messages)
        ctx = ToolContext(chat=chat, session_id=session_id, inbound=with_images(inbound, images))
        stream.live = not self._voice_only(tts_mode, heard.spoken)
        # Before the answer: why images were dropped, what a voice note was heard as (messages.stt.echo), and
        # why a file was not read.
        preface = [unseen or "", heard_line(heard.transcript) if heard.transcript and self.config.messages.stt.echo else "",
                   f"⚠️ {' '.join(docs.notes)}" if docs.notes else ""]
        shown: list[str] = ["\n\n".join(p for p in preface if p) + "\n\n"] if any(preface) else []
        if shown:
            await stream.delta(shown[0])
        media: list[Media] = []
        tokens, cost = 0, 0.0  # summed over the turn's rounds, for the log
        log.debug("turn start channel=%s chat=%s session=%s model=%s", chat.channel, chat.chat_id, session_id, ref)
        try:
            for _ in range(self.config.agents.defaults.max_tool_iterations):
                result = await self._complete(ChatSpec(
                    ref=ref, messages=messages, tools=(self.tools.definitions() or None) if takes_tools else None,
                    thinking=settings.thinking or self.config.agents.defaults.thinking_default,
                    supports_reasoning=info.supports_reasoning if info else None,
                ), stream, shown)
                tokens, cost = tokens + result.usage.total_tokens, cost + (result.usage.cost or 0.0)
                answer = StoredMessage(
                    "assistant", result.text or None, tool_calls=[c.to_api() for c in result.tool_calls] or None,
                    model=result.model, prompt_tokens=result.usage.prompt_tokens,
                    completion_tokens=result.usage.completion_tokens, cost=result.usage.cost,
                    reasoning=result.reasoning, reasoning_details=result.reasoning_details,
                )
                pending.append(answer)
                messages.append(answer.to_api())
                if not result.tool_calls:
                    if cut := CUT_SHORT.get(result.finish_reason or ""):
                        await stream.delta(cut)
                        shown.append(cut)
                    break
                outputs = await asyncio.gather(*(self.tools.call(c.name, c.arguments, ctx) for c in result.tool_calls))
                for call, out in zip(result.tool_calls, outputs, strict=True):
                    media += out.media
                    done = StoredMessage("tool", out.content, tool_call_id=call.id)
                    pending.append(done)
                    messages.append(done.to_api())
            else:
                limit = self.config.agents.defaults.max_tool_iterations
                note = f"\n\n(I stopped after {limit} rounds of tool use without a final answer; ask me to continue if needed.)"
                await stream.delta(note)
                shown.append(note)
        except (asyncio.CancelledError, Exception) as exc:
            stopped = isinstance(exc, asyncio.CancelledError)
            if stopped and exc.args != (STOP,):
                raise  # shutdown: the inbox still holds the message, it is answered after the restart
            failed = exc if isinstance(exc, OpenRouterError) else None
            if failed:
                log.warning("turn failed channel=%s chat=%s session=%s: %s", chat.channel, chat.chat_id, session_id, exc)
            elif not stopped:  # a bug, not an upstream error: say so, and still end the stream (its typing stops)
                log.error("turn crashed channel=%s chat=%s session=%s", chat.channel, chat.chat_id, session_id, exc_info=exc)
            # Keep what the user said (and any finished tool rounds): nothing is lost. The next turn sees it,
            # unless it would fail again: then it is kept out of later requests, so rephrasing can work.
            left_out = bool(failed and failed.repeats and pending)
            if pending:
                stream.settlement.statements.append(appending(session_id, _complete_prefix(pending), excluded=left_out))
            text = split_tags("".join(shown))[0]
            ending = self._failure_sentence(failed, chat) if failed else "⏹ Stopped." if stopped else CRASHED
            if left_out:
                ending += f"\n\n{LEFT_OUT}"
            reply = Reply(text=(text + "\n\n" if text else "") + ending, media=media, reply_to=inbound.message_id)
            await stream.close(reply)
            return stopped
        stream.settlement.statements.append(appending(session_id, pending))
        reply = Reply(text="".join(shown), media=media, reply_to=inbound.message_id)
        if self.voice:
            reply = await self.voice.speak(reply, mode=tts_mode, spoken=heard.spoken,
                                           capabilities=channel.capabilities, model=ref, on_start=stream.speaking)
        await stream.close(reply)
        log.debug("turn done channel=%s chat=%s session=%s tokens=%d cost=%.6g", chat.channel, chat.chat_id, session_id,
                 tokens, cost)
        return True

    def _failure_sentence(self, failed: OpenRouterError, chat: ChatRef) -> str:
        """What the user reads of a failed model call. Advice meant for the operator (a key, credits) is for the
        log and direct chats; a group's members read only that the bot cannot answer now."""
        if failed.for_operator and chat.kind == "group":
            return f"⚠️ {CANNOT_ANSWER}"
        return f"⚠️ {failed}"

    async def _end_early(self, inbound: Inbound, stream: _VisibleStream, text: str) -> bool:
        """End the turn before the model is asked (a refusal, /stop, a crash): the reason closes the open
        stream, so its typing stops with it; nothing of the answer is stored. ``False``: no answer."""
        await stream.close(Reply(text=text, reply_to=inbound.message_id))
        return False

    def _voice_only(self, mode: str, spoken: bool) -> bool:
        """Whether the text will surely be replaced by a voice note, so it must not be streamed first."""
        surely_spoken = mode == "always" or (mode == "inbound" and spoken)
        return surely_spoken and self.config.messages.tts.text_delivery != "normal"

    async def _complete(self, spec: ChatSpec, stream: _VisibleStream, shown: list[str]) -> ChatResult:
        """One model call, streamed to the channel; if the model fails before saying anything,
        the configured fallbacks are tried in order (a bad key is the same for all, so it is not)."""
        if shown and shown[-1] and not shown[-1].endswith("\n"):
            shown.append("\n\n")
            await stream.delta("\n\n")
        fallbacks = [ModelRef.parse(r) for r in self.config.agents.defaults.model.fallbacks]
        chain = [spec, *(dataclasses.replace(spec, ref=ref, supports_reasoning=None) for ref in fallbacks)]
        for attempt, current in enumerate(chain):
            before = len(shown)
            try:
                return await self._stream_once(current, stream, shown)
            except OpenRouterError as exc:
                if len(shown) > before or isinstance(exc, AuthError) or attempt + 1 == len(chain):
                    raise
                log.warning("model %s failed (%s); trying %s", current.ref, exc.headline(), chain[attempt + 1].ref)
        raise AssertionError("unreachable: the chain returns or raises")

    async def _stream_once(self, spec: ChatSpec, stream: _VisibleStream, shown: list[str]) -> ChatResult:
        """One call; a model the catalog does not describe that refuses images or tools is asked again without,
        and one that refuses another family's tool-call ids is asked again with short ones."""
        if wants_short_tool_ids(spec.ref.model_id):
            spec.messages[:] = short_tool_ids(spec.messages)
        try:
            return await self._stream(spec, stream, shown)
        except OpenRouterError as exc:
            if exc.refuses_images and carries_images(spec.messages):
                # A note stands for each image, in this call and the turn's later ones (they share the list);
                # history keeps the images for a model that can see them.
                log.warning("model %s takes no images; asked again with a note for each", spec.ref)
                spec.messages[:] = without_images(spec.messages)
            elif exc.refuses_tools and spec.tools:
                log.warning("model %s takes no tools; asked again without them", spec.ref)
                spec.messages[:] = plain_turns(spec.messages)
                spec = dataclasses.replace(spec, tools=None)
            elif exc.refuses_tool_ids:  # a host of Mistral's weights under a name that does not say so
                log.warning("model %s takes only short tool-call ids; asked again with them", spec.ref)
                spec.messages[:] = short_tool_ids(spec.messages)
            else:
                raise
            return await self._stream(spec, stream, shown)

    def _stream(self, spec: ChatSpec, stream: _VisibleStream, shown: list[str]) -> Awaitable[ChatResult]:
        """The model's answer streamed to ``stream`` and kept in ``shown``. Not a coroutine itself: the stream's
        coroutine is handed back, so each wake-up of the turn (one per read of the answer) passes one frame fewer."""
        async def show(text: str) -> None:
            shown.append(text)
            await stream.delta(text)

        return self.llm.stream(spec, on_text=show, on_wait=stream.notice)


@lru_cache(maxsize=4)
def _spoken(day: date) -> str:
    """``Sunday, 06 December 2026``: formatted once a day, not in every turn's prompt."""
    return f"{day:%A, %d %B %Y}"


def user_text(inbound: Inbound, group_context: Sequence[tuple[str, str]] = (), said: str | None = None) -> str:
    """The user's words as the model sees them (``said``: a voice note's transcript); in groups, prefixed by
    who said them and preceded by what the group said since the bot last answered."""
    said = inbound.text if said is None else said
    context = replied_context(inbound.replied)
    if inbound.chat.kind != "group":
        return f"{context}\n{said}" if context else said
    text = f"{context}\n[{inbound.sender_name}]: {said}" if context else f"[{inbound.sender_name}]: {said}"
    if group_context:
        since = "\n".join(f"[{sender}]: {said}" for sender, said in group_context)
        text = f"[Chat messages since your last reply - for context]\n{since}\n\n[Current message - respond to this]\n{text}"
    return text


HEARD_MAX = 300  # characters of a transcript echoed back: enough to notice a mishearing


def heard_line(transcript: str) -> str:
    """``🎤 "what was heard"``, capped: the user sees what the bot understood of their voice note."""
    text = " ".join(transcript.split())
    return f'🎤 "{text[:HEARD_MAX].rstrip() + "…" if len(text) > HEARD_MAX else text}"'


REPLIED_MAX = 600  # characters of the replied-to message the model is shown: context, not a second message


def replied_context(replied: Replied | None) -> str:
    """The message the user replied to (or quoted), marked as context: whose it was, and its text, capped."""
    if replied is None or not replied.text.strip():
        return ""
    text = replied.text.strip()
    if len(text) > REPLIED_MAX:
        text = text[:REPLIED_MAX].rstrip() + "…"
    whose = "your own earlier answer" if replied.by_bot else f"a message from {replied.author}"
    how = "Quoting part of" if replied.quoted else "Replying to"
    return f"[{how} {whose} - for context]\n> " + text.replace("\n", "\n> ") + "\n[The user's message]"


class _VisibleStream:
    """The channel's stream minus TTS tags; with ``live`` off, nothing is shown until the reply is whole. The
    reply that closes it carries the turn's ``settlement`` to the channel's outbox."""

    def __init__(self, inner: Any, settlement: Settlement, *, live: bool = True) -> None:
        self.inner = inner
        self.settlement = settlement
        self.live = live  # set once the turn knows whether its answer will only be spoken
        self.tags = TagFilter()

    async def delta(self, text: str) -> None:
        visible = self.tags.feed(text)
        if visible and self.live:
            await self.inner.delta(visible)

    async def notice(self, wait: float, error: OpenRouterError) -> None:
        """Tell the user why nothing comes yet, on channels whose streams can show a passing status."""
        notice = getattr(self.inner, "notice", None)
        if notice is not None:
            await notice(f"⏳ {error.headline()}; trying again in {wait:.0f} s…")

    async def speaking(self) -> None:
        """The answer is being turned into speech, on channels whose streams can show that."""
        speaking = getattr(self.inner, "speaking", None)
        if speaking is not None:
            await speaking()

    async def close(self, reply: Reply) -> None:
        reply.settles = self.settlement
        await self.inner.close(reply)


def _complete_prefix(pending: list[StoredMessage]) -> list[StoredMessage]:
    """The turn up to its last finished tool round: never an assistant tool call without its results."""
    keep = list(pending)
    while len(keep) > 1 and keep[-1].role == "assistant" and keep[-1].tool_calls:
        keep.pop()
    return keep
