-- Several instances on one database (PostgreSQL). On SQLite, with its single instance, these stay empty.
-- Each running instance, and when it last showed it is alive; one silent past storage.leaseMs is dead.
CREATE TABLE instances (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,   -- unix time, the database's clock
    heartbeat_at  REAL NOT NULL
);
-- What one live instance at a time may hold: a session's lane (`session:KEY`), the Telegram poller, a Discord shard.
-- A lease lasts while its holder's heartbeat does: one heartbeat renews all of an instance's leases.
CREATE TABLE leases (
    name      TEXT PRIMARY KEY,
    instance  TEXT NOT NULL,
    taken_at  REAL NOT NULL
);
CREATE INDEX leases_by_instance ON leases (instance);
-- Small shared values, such as the Telegram poller's update offset.
CREATE TABLE shared_values (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
-- A part's file in the database, where every instance can read it (PostgreSQL); SQLite keeps it beside the database.
ALTER TABLE outbox ADD COLUMN data BLOB;
