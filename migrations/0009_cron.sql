-- Scheduled jobs made by the `cron` tool: reminders and recurring prompts, each fired as an agent turn
-- in the chat (topic, thread) where it was made.
CREATE TABLE cron_jobs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: "/cron rm 3" cannot hit a later job
    channel       TEXT NOT NULL,
    chat_id       TEXT NOT NULL,
    thread_id     TEXT,
    chat_kind     TEXT NOT NULL,
    creator_id    TEXT NOT NULL,
    creator_name  TEXT NOT NULL,
    name          TEXT,
    message       TEXT NOT NULL,               -- the prompt of each run
    schedule      TEXT NOT NULL,               -- JSON: {kind: at|every|cron, ...} as normalized at creation
    -- Unix time of the next firing. A firing is claimed by one conditional UPDATE that moves it on (or to NULL
    -- for a one-shot while it runs), so only one run, or one instance, ever fires it.
    next_run_at   REAL,
    failures      INTEGER NOT NULL DEFAULT 0,  -- consecutive failed runs: the backoff step
    last_run_at   REAL,
    last_status   TEXT,                        -- ok | failed | skipped
    last_error    TEXT,
    created_at    REAL NOT NULL
);
CREATE INDEX cron_jobs_due ON cron_jobs (next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX cron_jobs_chat ON cron_jobs (channel, chat_id);

-- /tz: the chat's own time zone for reading one-shot times and cron expressions.
ALTER TABLE chat_settings ADD COLUMN tz TEXT;
