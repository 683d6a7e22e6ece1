-- The durable outbox: each final part of an answer (a text message, a file, a notice) is written here before
-- its first send and deleted once the platform confirmed it; what is left is sent first at the next start.
-- A file's bytes live under the state directory's media/outbox/, named in `file`, never in the database.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    channel     TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    thread_id   TEXT,
    chat_kind   TEXT NOT NULL DEFAULT 'direct',
    body        TEXT NOT NULL,  -- JSON: what the channel sends, in its own terms
    file        TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX outbox_by_channel ON outbox (channel, id);
