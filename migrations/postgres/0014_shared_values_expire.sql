-- Shared values kept for a while: when each was kept and, for a short-lived one, when it expires. OpenRouter's
-- model catalog (one row, a few hundred KB of JSON, fresh for a day and kept for outages) and a Discord
-- interaction's token (15 minutes, for whichever instance runs the turn that answers it) live beside the
-- Telegram update offset.
ALTER TABLE shared_values ADD COLUMN kept_at DOUBLE PRECISION NOT NULL DEFAULT 0;  -- unix time, the keeping instance's clock
ALTER TABLE shared_values ADD COLUMN expires_at DOUBLE PRECISION; -- unix time; NULL: until replaced
CREATE INDEX shared_values_expiring ON shared_values (expires_at) WHERE expires_at IS NOT NULL;
