-- The seed's views, with total_messages and the timeout comparison fixed.

CREATE VIEW recent_sessions AS
SELECT
    session_id,
    title,
    model_id,
    model_name,
    message_count,
    total_tokens,
    total_duration_seconds,
    created_at,
    last_activity,
    status
FROM sessions
WHERE status IN ('active', 'idle')
ORDER BY last_activity DESC;

-- total_messages sums the per-session counters (the seed counted DISTINCT counts: two
-- sessions of 3 messages each gave 1).
CREATE VIEW session_statistics AS
SELECT
    model_id,
    COUNT(*) AS session_count,
    SUM(message_count) AS total_messages,
    AVG(message_count) AS avg_messages_per_session,
    SUM(total_tokens) AS total_tokens_used,
    AVG(total_tokens) AS avg_tokens_per_session,
    AVG(total_duration_seconds) AS avg_duration_per_session,
    MIN(created_at) AS first_session,
    MAX(last_activity) AS last_activity
FROM sessions
WHERE status != 'archived'
GROUP BY model_id;

-- Times are compared as julianday numbers: the seed compared the text of two formats
-- ('2026-11-26T…Z' against CURRENT_TIMESTAMP's '2026-11-26 10:00:00'), so a deadline
-- earlier the same day never looked past. The rules are the writer's (expire_due): the
-- hard deadline first, the idle timeout only for an active session, paused sessions wait.
-- Comparing with the clock at query time is what this view is for; nothing stored
-- depends on it.
CREATE VIEW sessions_at_timeout AS
SELECT
    s.session_id,
    s.title,
    s.last_activity,
    t.expires_at,
    CASE
        WHEN s.status IN ('active', 'idle') AND julianday(t.expires_at) <= julianday('now')
        THEN 'hard_timeout'
        WHEN s.status = 'active'
            AND julianday(s.last_activity) + t.idle_timeout_seconds / 86400.0
                <= julianday('now')
        THEN 'idle_timeout'
        ELSE 'ok'
    END AS timeout_status
FROM sessions AS s
LEFT JOIN session_timeouts AS t ON s.session_id = t.session_id
WHERE s.status NOT IN ('archived', 'expired');
