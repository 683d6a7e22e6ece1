-- What a message replied to (or quoted): JSON {text, author, by_bot, quoted}, so a message answered after a
-- restart keeps its reply context.
ALTER TABLE inbox ADD COLUMN replied TEXT;
-- A stranger's message kept (done, unanswered) until the owner approves them: answered then, even after a
-- restart; cleared when it is handed back to be answered, so it is answered once.
ALTER TABLE inbox ADD COLUMN awaiting INTEGER NOT NULL DEFAULT 0;
CREATE INDEX inbox_awaiting ON inbox (channel, sender_id) WHERE awaiting = 1;
