-- Long media jobs (video): submitted during a turn, polled in the background,
-- delivered to the chat that asked, across restarts.
CREATE TABLE media_jobs (
    id            INTEGER PRIMARY KEY,
    kind          TEXT NOT NULL DEFAULT 'video',
    channel       TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    thread_id     TEXT,
    chat_kind     TEXT NOT NULL DEFAULT 'direct',
    reply_to      TEXT,
    job_id        TEXT NOT NULL,
    polling_url   TEXT,
    model         TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_poll_at  REAL NOT NULL,            -- unix time
    deadline      REAL NOT NULL,            -- unix time; past it the job is given up
    error         TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at   TEXT
);
CREATE INDEX media_jobs_pending ON media_jobs (next_poll_at) WHERE status = 'pending';
