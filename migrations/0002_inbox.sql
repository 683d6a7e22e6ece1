-- The durable inbox: every inbound message is written here before the platform is
-- acknowledged, and marked done once its reply is sent; pending rows are answered at start.
CREATE TABLE inbox (
    id           INTEGER PRIMARY KEY,
    channel      TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    chat_id      TEXT NOT NULL,
    thread_id    TEXT,
    chat_kind    TEXT NOT NULL DEFAULT 'direct',
    sender_id    TEXT NOT NULL,
    sender_name  TEXT NOT NULL,
    text         TEXT NOT NULL DEFAULT '',
    mentioned    INTEGER NOT NULL DEFAULT 0,
    reply_to     TEXT,
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done')),
    received_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    done_at      TEXT,
    UNIQUE (channel, message_id)  -- a redelivered message is recognised, never answered twice
);
CREATE INDEX inbox_pending ON inbox (status) WHERE status = 'pending';

-- Group messages the bot was not addressed in, given to the model as context when it is.
CREATE TABLE group_history (
    id           INTEGER PRIMARY KEY,
    session_key  TEXT NOT NULL,
    sender_name  TEXT NOT NULL,
    text         TEXT NOT NULL,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX group_history_by_key ON group_history (session_key, id);
