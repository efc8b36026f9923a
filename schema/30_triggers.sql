-- Triggers: the denormalised fields follow the facts the projector inserts.
--
-- Counters move by +1/-1 (the seed recounted every message with COUNT(*): quadratic
-- per session). Times come from the rows (a message's timestamp), never from the clock.
-- No trigger updates the table it fires on (the seed's update_sessions_timestamp did,
-- recursing without end under PRAGMA recursive_triggers): the projector sets updated_at
-- in the same UPDATE that changes a session, from the event's time.

-- Seqs are gapless per session: the next one is message_count + 1. A duplicate or a gap
-- aborts the insert (the projector reports the event's line). An unknown session is
-- left to the foreign key.
CREATE TRIGGER messages_seq_check
BEFORE INSERT ON messages
WHEN NEW.sequence_number != (
    SELECT message_count + 1 FROM sessions WHERE session_id = NEW.session_id
)
BEGIN
    SELECT RAISE(ABORT, 'sequence_number is not the next seq of its session');
END;

CREATE TRIGGER update_message_count_insert
AFTER INSERT ON messages
BEGIN
    UPDATE sessions
    SET message_count = message_count + 1,
        total_tokens = total_tokens + COALESCE(NEW.tokens_used, 0),
        total_duration_seconds = total_duration_seconds + COALESCE(NEW.duration_seconds, 0),
        last_activity = NEW.timestamp,
        updated_at = NEW.timestamp,
        last_event_pos = NEW.message_id,
        -- as journal/state.py: a message wakes an idle or paused session
        status = CASE WHEN status IN ('idle', 'paused') THEN 'active' ELSE status END
    WHERE session_id = NEW.session_id;
END;

CREATE TRIGGER update_message_count_delete
AFTER DELETE ON messages
BEGIN
    UPDATE sessions
    SET message_count = message_count - 1,
        total_tokens = total_tokens - COALESCE(OLD.tokens_used, 0),
        total_duration_seconds = total_duration_seconds - COALESCE(OLD.duration_seconds, 0)
    WHERE session_id = OLD.session_id;
END;

-- session_timeouts mirrors the settings of sessions: created with it, updated with it.
CREATE TRIGGER session_timeouts_ai
AFTER INSERT ON sessions
BEGIN
    INSERT INTO session_timeouts (
        session_id, idle_timeout_seconds, hard_timeout_seconds, created_at, last_activity,
        expires_at
    )
    VALUES (
        NEW.session_id, NEW.idle_timeout_seconds, NEW.hard_timeout_seconds, NEW.created_at,
        NEW.last_activity, NEW.expires_at
    );
END;

CREATE TRIGGER session_timeouts_au
AFTER UPDATE OF idle_timeout_seconds, hard_timeout_seconds, expires_at ON sessions
BEGIN
    UPDATE session_timeouts
    SET idle_timeout_seconds = NEW.idle_timeout_seconds,
        hard_timeout_seconds = NEW.hard_timeout_seconds,
        expires_at = NEW.expires_at
    WHERE session_id = NEW.session_id;
END;

-- Activity (a message, resume, restore) restarts the idle clock and clears a warning,
-- as journal/state.py does.
CREATE TRIGGER session_activity_au
AFTER UPDATE OF last_activity ON sessions
BEGIN
    UPDATE session_timeouts
    SET last_activity = NEW.last_activity,
        timeout_warning_sent = 0,
        warning_sent_at = NULL
    WHERE session_id = NEW.session_id;
END;

-- The seed's pre_archive snapshot, with an id and times from the log: snapshot_id is the
-- archive event's pos (the projector sets last_event_pos in the same UPDATE).
CREATE TRIGGER create_snapshot_on_archive
AFTER UPDATE OF status ON sessions
WHEN NEW.status = 'archived' AND OLD.status != 'archived'
BEGIN
    INSERT INTO session_snapshots (
        snapshot_id, session_id, snapshot_type, snapshot_at, message_count, total_tokens,
        context_json, created_at
    )
    VALUES (
        NEW.last_event_pos,
        NEW.session_id,
        'pre_archive',
        NEW.updated_at,
        NEW.message_count,
        NEW.total_tokens,
        json_object(
            'session_id', NEW.session_id,
            'title', NEW.title,
            'model_id', NEW.model_id,
            'model_name', NEW.model_name,
            'message_count', NEW.message_count,
            'total_tokens', NEW.total_tokens,
            'created_at', NEW.created_at,
            'messages', json((
                SELECT json_group_array(json_object(
                    'role', role, 'content', content, 'timestamp', timestamp,
                    'tokens', tokens_used
                ))
                FROM (
                    SELECT role, content, timestamp, tokens_used
                    FROM messages
                    WHERE session_id = NEW.session_id
                    ORDER BY sequence_number
                )
            ))
        ),
        NEW.updated_at
    );
END;

-- Full-text search: the projector adds new messages' rows once per batch (fill_fts in
-- projector/apply.py: measured faster than a per-row insert trigger); this trigger
-- follows the rarer change, a deleted message. The index holds a message's text only, so
-- a renamed session leaves it as it is.
CREATE TRIGGER messages_ad
AFTER DELETE ON messages
BEGIN
    DELETE FROM sessions_fts WHERE rowid = OLD.message_id;
END;
