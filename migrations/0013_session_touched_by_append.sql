-- A session's updated_at follows its messages: set by the insert itself, so an append is one statement
-- (on PostgreSQL one round trip instead of a transaction of five).
CREATE TRIGGER messages_touch_session AFTER INSERT ON messages FOR EACH ROW
BEGIN
    UPDATE sessions SET updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.session_id;
END;
