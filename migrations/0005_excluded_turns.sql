-- A turn the provider refused for a reason that would repeat (moderation, a malformed or
-- unreadable input, a provider crash): its messages are kept, but no later request carries them.
ALTER TABLE messages ADD COLUMN excluded INTEGER NOT NULL DEFAULT 0;
