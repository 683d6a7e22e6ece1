-- Values every instance on the database reads, each with when it was kept and, for a short-lived one, when it
-- expires: OpenRouter's model catalog (one row, a few hundred KB of JSON, fresh for a day and kept for outages),
-- a Discord interaction's token (15 minutes) for whichever instance runs the turn that answers it.
CREATE TABLE kept_values (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    kept_at     REAL NOT NULL,   -- unix time, the keeping instance's clock
    expires_at  REAL             -- unix time; NULL: until replaced
);
CREATE INDEX kept_values_expiring ON kept_values (expires_at) WHERE expires_at IS NOT NULL;
