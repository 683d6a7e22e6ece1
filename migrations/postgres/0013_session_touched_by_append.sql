-- A session's updated_at follows its messages: set by the insert itself, so an append is one statement
-- (one round trip instead of a transaction of five). Once per statement, for the sessions it added to.
CREATE FUNCTION messages_touch_session() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE sessions SET updated_at = to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    WHERE id IN (SELECT DISTINCT session_id FROM added);
    RETURN NULL;
END;
$$;
CREATE TRIGGER messages_touch_session AFTER INSERT ON messages REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION messages_touch_session();
