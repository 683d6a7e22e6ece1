"""Seed stored sessions before a service starts: ``python bench/seed.py chorus|hermes PATH COUNT``.

Each session is a short past conversation (a question and an answer, twice). Chorus's database is written
through its own migrations and schema; hermes's through its own ``SessionDB`` (run with the peer's Python).
"""

from __future__ import annotations

import sys


def seed_chorus(db_path: str, count: int) -> None:
    import asyncio
    from pathlib import Path

    from bot.store import Store

    async def run() -> None:
        store = await Store.open(Path(db_path))
        async with store.transaction() as db:
            await db.executemany(
                "INSERT INTO sessions (key, channel, chat_id, thread_id) VALUES (?, 'telegram', ?, NULL)",
                [(f"telegram:{900000 + i}", str(900000 + i)) for i in range(count)])
            await db.execute(
                "INSERT INTO messages (session_id, role, content) SELECT id, role, content FROM sessions,"
                " (SELECT 'user' AS role, 'what is the weather like' AS content UNION ALL"
                "  SELECT 'assistant', 'Sunny with a light breeze, around twenty degrees.' UNION ALL"
                "  SELECT 'user', 'and tomorrow?' UNION ALL SELECT 'assistant', 'Clouds in the afternoon.')"
                " WHERE sessions.channel = 'telegram'")
        await store.close()

    asyncio.run(run())


def seed_hermes(home: str, count: int) -> None:
    from hermes_state import SessionDB  # the peer's own package

    db = SessionDB()
    for i in range(count):
        sid = db.create_session(f"seed{i}", "telegram")
        for role, text in (("user", "what is the weather like"),
                           ("assistant", "Sunny with a light breeze, around twenty degrees."),
                           ("user", "and tomorrow?"), ("assistant", "Clouds in the afternoon.")):
            db.append_message(sid, role, text)


if __name__ == "__main__":
    kind, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seed_chorus(where, n) if kind == "chorus" else seed_hermes(where, n)
