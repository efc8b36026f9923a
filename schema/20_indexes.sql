-- Secondary indexes: only those a query of the host app (the seed's views) needs.
--
-- Dropped from the seed: idx_messages_session and idx_messages_session_count (the
-- UNIQUE (session_id, sequence_number) index already serves both), idx_sessions_summary
-- (a covering index over message_count/total_tokens, rewritten on every message), the
-- timestamp/role/date/key indexes no query reads, and idx_sessions_timeout_expiry
-- (sessions_at_timeout scans the open sessions anyway).

-- session_statistics groups by model, and deleting a model (ON DELETE SET NULL) looks
-- its sessions up by model_id.
CREATE INDEX idx_sessions_model ON sessions (model_id);

-- recent_sessions: WHERE status IN ('active', 'idle') ORDER BY last_activity DESC.
CREATE INDEX idx_sessions_status_activity ON sessions (status, last_activity DESC);

-- A session's snapshots, newest first (restore, the show command).
CREATE INDEX idx_snapshots_session ON session_snapshots (session_id, snapshot_id);
