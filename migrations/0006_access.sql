-- Pairing: a one-time code given to an unknown sender in a direct chat, until the owner
-- approves it (`chorus pairing approve CHANNEL CODE`) or it expires.
CREATE TABLE pairing_requests (
    id               INTEGER PRIMARY KEY,
    channel          TEXT NOT NULL,
    code             TEXT NOT NULL,
    sender_id        TEXT NOT NULL,
    sender_name      TEXT NOT NULL,
    sender_username  TEXT,
    created_at       REAL NOT NULL,          -- unix time
    expires_at       REAL NOT NULL,          -- unix time
    status           TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved')),
    decided_at       REAL
);
CREATE UNIQUE INDEX pairing_requests_code ON pairing_requests (channel, code);
CREATE INDEX pairing_requests_pending ON pairing_requests (channel, sender_id) WHERE status = 'pending';

-- Senders the owner approved; read on every message from a direct chat, so an approval
-- made by the CLI beside the running service counts from the next message on.
CREATE TABLE access_approvals (
    channel          TEXT NOT NULL,
    sender_id        TEXT NOT NULL,
    sender_name      TEXT NOT NULL,
    sender_username  TEXT,
    code             TEXT,
    approved_at      REAL NOT NULL,          -- unix time
    PRIMARY KEY (channel, sender_id)
) WITHOUT ROWID;

-- The sender's handle travels with a message in the inbox, so a message answered after
-- a restart is checked against an @username allowlist like it was the first time.
ALTER TABLE inbox ADD COLUMN sender_username TEXT;
