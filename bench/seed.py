"""Seed stored sessions before a service starts: ``python bench/seed.py chorus|hermes|nanobot PATH COUNT``.

Each session is a short past Telegram conversation (a question and an answer, twice), stored where and how the
product itself stores it after such a conversation, through the product's own code (the peers' seeds run with
the peer's Python):

- Chorus: its SQLite database, through its own migrations and schema.
- hermes: ``SessionStore``, the gateway's own store: a session row and its messages in ``state.db``, and the
  routing index (chat -> session) in ``state.db`` and ``$HERMES_HOME/sessions/sessions.json``, which the
  gateway loads at start. (Per-session ``session_*.json`` snapshots are off by default in 0.19, so none.)
- nanobot: ``SessionManager``, one JSONL file per session under ``~/.nanobot/sessions/<workspace id>/``.
"""

from __future__ import annotations

import sys

CONVERSATION = (("user", "what is the weather like"),
                ("assistant", "Sunny with a light breeze, around twenty degrees."),
                ("user", "and tomorrow?"), ("assistant", "Clouds in the afternoon."))
FIRST_CHAT = 900000  # seeded chats are never the bench's live ones (those start at 5001)


def seed_chorus(db_path: str, count: int) -> None:
    import asyncio
    from pathlib import Path

    from bot.db.base import Tx
    from bot.store import Store

    async def run() -> None:
        store = await Store.open(Path(db_path))
        async def seed(tx: Tx) -> None:
            await tx.executemany(
                "INSERT INTO sessions (key, channel, chat_id, thread_id) VALUES (?, 'telegram', ?, NULL)",
                [(f"telegram:{FIRST_CHAT + i}", str(FIRST_CHAT + i)) for i in range(count)])
            await tx.executemany(
                "INSERT INTO messages (session_id, role, content) SELECT id, ?, ? FROM sessions"
                " WHERE sessions.channel = 'telegram' ORDER BY id", CONVERSATION)

        await store.db.in_thread(seed)
        await store.close()

    asyncio.run(run())


def seed_hermes(count: int) -> None:
    from datetime import datetime

    from gateway.config import Platform, load_gateway_config  # the peer's own packages
    from gateway.session import SessionSource, SessionStore

    config = load_gateway_config()
    store = SessionStore(config.sessions_dir, config)
    # The store rewrites its whole routing index after every new session, which makes seeding 10,000 of them
    # quadratic; the index it would have ended with is written once at the end, by the same method.
    save, store._save_entries = store._save_entries, lambda: None  # type: ignore[method-assign]
    for i in range(count):
        chat = str(FIRST_CHAT + i)
        entry = store.get_or_create_session(SessionSource(platform=Platform.TELEGRAM, chat_id=chat, chat_type="dm",
                                                          user_id=chat, user_name=f"User{chat}"))
        for role, text in CONVERSATION:
            store.append_to_transcript(entry.session_id, {"role": role, "content": text,
                                                          "timestamp": datetime.now().isoformat()})
    save()


def seed_nanobot(workspace: str, count: int) -> None:
    from pathlib import Path

    from nanobot.session.manager import SessionManager  # the peer's own package

    sessions = SessionManager(Path(workspace))
    for i in range(count):
        session = sessions.get_or_create(f"telegram:{FIRST_CHAT + i}")
        for role, text in CONVERSATION:
            session.add_message(role, text)
        sessions.save(session)


if __name__ == "__main__":
    kind, where, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "chorus":
        seed_chorus(where, n)
    elif kind == "hermes":
        seed_hermes(n)  # HERMES_HOME says where
    else:
        seed_nanobot(where, n)
