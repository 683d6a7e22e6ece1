-- What came with an inbox message (kind, mime, filename, size, and a source the channel
-- can fetch again), so a voice note cut off by a crash is still heard after the restart.
ALTER TABLE inbox ADD COLUMN attachments TEXT;
