-- Conversations: one active session per chat (or topic/thread); /new retires it and opens another.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL,               -- channel:chat[:thread]
    channel     TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    thread_id   TEXT,
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE UNIQUE INDEX sessions_one_active ON sessions (key) WHERE active = 1;

-- Per-chat settings that outlive /new: /model, /think, /tts.
CREATE TABLE chat_settings (
    key         TEXT PRIMARY KEY,
    model       TEXT,
    thinking    TEXT,
    tts         TEXT
);

-- History in OpenAI chat shape: role, content (text or JSON parts), tool calls, tool results.
CREATE TABLE messages (
    id            INTEGER PRIMARY KEY,
    session_id    INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content       TEXT,                      -- plain text, or JSON when content_json = 1
    content_json  INTEGER NOT NULL DEFAULT 0,
    name          TEXT,                      -- sender name in groups
    tool_calls    TEXT,                      -- JSON list, assistant only
    tool_call_id  TEXT,                      -- tool only
    model         TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    cost          REAL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX messages_by_session ON messages (session_id, id);
