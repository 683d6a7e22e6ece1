-- The outbox is a queue whose rows live for the milliseconds between an answer's commit and the platform's
-- confirmation: it is nearly always empty, and read by channel only at a start or a takeover, where a scan is
-- as quick. Its index made every answer write and delete one more page (two of a turn's ~13 WAL pages).
DROP INDEX outbox_by_channel;
