"""The least a Telegram bot can do for a streamed turn, as a floor under the side by side's CPU rows.

``python -m bench.bare_bot API_ROOT TOKEN OPENROUTER_ORIGIN KEY MODEL``: long polling, a chat action, the
model's answer streamed, a draft at most every 0.7 s, the final message. No storage, history, formatting,
access rules or retries; Chorus's own HTTP client (aiohttp with ``net.http``'s sessions), JSON codec and event
loop, so the difference between the two columns is what Chorus does beyond moving the bytes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from net import http, wirejson
from net.loop import run

JSON = {"Content-Type": "application/json"}
THROTTLE = 0.7  # Chorus's default draft throttle
DEADLINE = http.deadline(60)


class BareBot:
    def __init__(self, api_root: str, token: str, openrouter: str, key: str, model: str) -> None:
        self.roots = api_root, openrouter
        self.prefix = f"{api_root}/bot{token}"
        self.completions = f"{openrouter}/api/v1/chat/completions"
        self.model, self.auth = model, {**JSON, "Authorization": f"Bearer {key}"}
        self.turns: set[asyncio.Task[None]] = set()

    async def call(self, method: str, **params: Any) -> Any:
        async with self.telegram.post(f"{self.prefix}/{method}", data=wirejson.dumps(params), headers=JSON,
                                      timeout=DEADLINE) as answer:
            return wirejson.loads(await answer.read())["result"]

    async def serve(self) -> None:
        async with http.session(self.roots[0], proxy=None) as self.telegram, \
                http.session(self.roots[1], proxy=None) as self.openrouter:
            await self.poll()

    async def poll(self) -> None:
        offset = 0
        while True:
            for update in await self.call("getUpdates", offset=offset, timeout=30):
                offset = update["update_id"] + 1
                if "message" in update:
                    turn = asyncio.create_task(self.turn(update["message"]))
                    self.turns.add(turn)
                    turn.add_done_callback(self.turns.discard)

    async def turn(self, message: dict[str, Any]) -> None:
        chat = message["chat"]["id"]
        typing = asyncio.create_task(self.call("sendChatAction", chat_id=chat, action="typing"))
        request = {"model": self.model, "stream": True, "messages": [{"role": "user", "content": message["text"]}]}
        text, shown_at, rest = "", 0.0, b""
        draft: asyncio.Task[Any] | None = None
        async with self.openrouter.post(self.completions, data=wirejson.dumps(request), headers=self.auth,
                                        timeout=DEADLINE) as stream:
            while piece := await stream.content.readany():
                *events, rest = (rest + piece).split(b"\n\n")
                for line in (line for event in events for line in event.split(b"\n")):
                    if line.startswith(b"data: {"):
                        for choice in wirejson.loads(line[6:]).get("choices") or []:
                            text += (choice.get("delta") or {}).get("content") or ""
                if text and time.monotonic() - shown_at >= THROTTLE and (draft is None or draft.done()):
                    shown_at = time.monotonic()
                    draft = asyncio.create_task(self.call("sendMessageDraft", chat_id=chat, draft_id=1, text=text))
        await asyncio.gather(typing, *([draft] if draft else []))
        await self.call("sendMessage", chat_id=chat, text=text)


if __name__ == "__main__":
    run(BareBot(*sys.argv[1:6]).serve())
