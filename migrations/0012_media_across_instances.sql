-- Several instances on one database (PostgreSQL); on SQLite, with its single instance, the new columns are
-- written but never decide anything.
-- The instance sending a part: another takes the part over only once that instance is dead.
ALTER TABLE outbox ADD COLUMN owner TEXT;
-- The instance checking a video job right now (one poll and its delivery); free again when it is dead.
ALTER TABLE media_jobs ADD COLUMN claimed_by TEXT;
-- Images users sent, which history refers to (`chorus-media:in/<name>`), readable from every instance
-- (PostgreSQL; SQLite keeps them as files under media/in/ only). `used_at`: unix time of the last use.
CREATE TABLE media_blobs (
    name     TEXT PRIMARY KEY,
    data     BLOB NOT NULL,
    used_at  REAL NOT NULL
);
