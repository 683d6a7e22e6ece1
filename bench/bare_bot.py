"""The least a Telegram bot can do for a streamed turn, as a floor under the side by side's CPU rows.

``python -m bench.bare_bot API_ROOT TOKEN OPENROUTER_ORIGIN KEY MODEL``: long polling, a chat action, the
model's answer streamed, a draft at most every 0.7 s, the final message. No storage, history, formatting,
access rules or retries; Chorus's own HTTP client, JSON codec and event loop, so the difference between the two
columns is what Chorus does beyond moving the bytes.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from net import wirejson
from net.http1 import Origin
from net.loop import run

JSON = "Content-Type: application/json\r\n"
THROTTLE = 0.7  # Chorus's default draft throttle


class BareBot:
    def __init__(self, api_root: str, token: str, openrouter: str, key: str, model: str) -> None:
        self.telegram, self.openrouter = Origin(api_root, limit=None), Origin(openrouter, limit=None)
        self.prefix = f"/bot{token}"
        self.model, self.auth = model, f"Authorization: Bearer {key}\r\n"
        self.turns: set[asyncio.Task[None]] = set()

    async def call(self, method: str, **params: Any) -> Any:
        answer = await self.telegram.request("POST", f"{self.prefix}/{method}", body=wirejson.dumps(params),
                                             headers=JSON, timeout=60)
        return wirejson.loads(answer.body)["result"]

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
        stream = await self.openrouter.stream("POST", "/api/v1/chat/completions", body=wirejson.dumps(request),
                                              headers=JSON + self.auth, timeout=60)
        text, shown_at, rest = "", 0.0, b""
        draft: asyncio.Task[Any] | None = None
        async with stream:
            while piece := await stream.read(None):
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
    run(BareBot(*sys.argv[1:6]).poll())
