-- ============================================================================
-- ENHANCED SESSION MANAGEMENT SCHEMA
-- Addresses data integrity, concurrency, and timeout issues
-- ============================================================================

PRAGMA foreign_keys = ON;  -- MUST be set per connection

-- ============================================================================
-- CORE TABLES (Already exist, with improvements)
-- ============================================================================

-- Sessions table with timeout tracking
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    model_id TEXT NOT NULL,
    model_name TEXT,
    title TEXT,
    message_count INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0,
    total_duration_seconds REAL DEFAULT 0,
    last_activity TIMESTAMP DEFAULT CURRENT_TIMESTAMP,

    -- NEW: Timeout tracking
    status TEXT DEFAULT 'active' CHECK(status IN ('active', 'idle', 'paused', 'archived', 'expired')),
    idle_timeout_seconds INTEGER DEFAULT 3600,
    hard_timeout_seconds INTEGER DEFAULT 86400,
    expires_at TIMESTAMP,

    -- NEW: Integrity tracking
    integrity_checked_at TIMESTAMP,
    integrity_status TEXT DEFAULT 'unknown',

    FOREIGN KEY (model_id) REFERENCES models(model_id) ON DELETE SET NULL
);

-- Messages table (unchanged, but add comments)
CREATE TABLE messages (
    message_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    role TEXT NOT NULL CHECK(role IN ('user', 'assistant', 'system')),
    content TEXT NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    tokens_used INTEGER,
    duration_seconds REAL,
    metadata TEXT,  -- JSON
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE,
    UNIQUE(session_id, sequence_number)
);

-- Session metadata (unchanged)
CREATE TABLE session_metadata (
    metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE,
    UNIQUE(session_id, key)
);

-- NEW: Session timeout configuration
CREATE TABLE session_timeouts (
    session_id TEXT PRIMARY KEY,
    idle_timeout_seconds INTEGER DEFAULT 3600,
    hard_timeout_seconds INTEGER DEFAULT 86400,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    last_activity TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    expires_at TIMESTAMP,
    timeout_warning_sent BOOLEAN DEFAULT 0,
    warning_sent_at TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE
);

-- NEW: Session snapshots for recovery
CREATE TABLE session_snapshots (
    snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    snapshot_type TEXT DEFAULT 'checkpoint' CHECK(snapshot_type IN ('checkpoint', 'timeout_warning', 'pre_archive', 'pre_delete')),
    snapshot_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    message_count INTEGER,
    total_tokens INTEGER,
    context_json TEXT,  -- Full session context for recovery
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE
);

-- NEW: Models reference table
CREATE TABLE models (
    model_id TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    provider TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);

-- ============================================================================
-- INDEXES (Optimized for common queries)
-- ============================================================================

-- Original indexes
CREATE INDEX idx_sessions_created ON sessions(created_at DESC);
CREATE INDEX idx_sessions_updated ON sessions(updated_at DESC);
CREATE INDEX idx_sessions_model ON sessions(model_id);
CREATE INDEX idx_sessions_activity ON sessions(last_activity DESC);
CREATE INDEX idx_messages_session ON messages(session_id, sequence_number);
CREATE INDEX idx_messages_timestamp ON messages(timestamp DESC);
CREATE INDEX idx_messages_role ON messages(role);
CREATE INDEX idx_metadata_session ON session_metadata(session_id);
CREATE INDEX idx_metadata_key ON session_metadata(key);
CREATE INDEX idx_sessions_date ON sessions(DATE(created_at));

-- Enhanced indexes for performance
CREATE INDEX idx_messages_session_count ON messages(session_id);  -- For COUNT queries
CREATE INDEX idx_sessions_status_activity ON sessions(status, last_activity DESC);  -- For status filtering
CREATE INDEX idx_sessions_timeout_expiry ON sessions(expires_at DESC) WHERE status != 'archived';

-- Covering index for common session queries
CREATE INDEX idx_sessions_summary ON sessions(
    last_activity DESC,
    session_id,
    title,
    model_id,
    message_count,
    total_tokens,
    status
);

-- ============================================================================
-- TRIGGERS (Auto-update denormalized fields)
-- ============================================================================

-- Trigger: Auto-update message_count on INSERT
CREATE TRIGGER update_message_count_insert
AFTER INSERT ON messages
BEGIN
    UPDATE sessions
    SET message_count = (SELECT COUNT(*) FROM messages WHERE session_id = NEW.session_id),
        total_tokens = COALESCE(total_tokens, 0) + COALESCE(NEW.tokens_used, 0),
        total_duration_seconds = COALESCE(total_duration_seconds, 0) + COALESCE(NEW.duration_seconds, 0),
        last_activity = CURRENT_TIMESTAMP,
        updated_at = CURRENT_TIMESTAMP
    WHERE session_id = NEW.session_id;
END;

-- Trigger: Auto-update message_count on DELETE
CREATE TRIGGER update_message_count_delete
AFTER DELETE ON messages
BEGIN
    UPDATE sessions
    SET message_count = (SELECT COUNT(*) FROM messages WHERE session_id = OLD.session_id),
        total_tokens = COALESCE(total_tokens, 0) - COALESCE(OLD.tokens_used, 0),
        total_duration_seconds = COALESCE(total_duration_seconds, 0) - COALESCE(OLD.duration_seconds, 0),
        last_activity = CURRENT_TIMESTAMP,
        updated_at = CURRENT_TIMESTAMP
    WHERE session_id = OLD.session_id;
END;

-- Trigger: Auto-update updated_at timestamp
CREATE TRIGGER update_sessions_timestamp
AFTER UPDATE ON sessions
BEGIN
    UPDATE sessions SET updated_at = CURRENT_TIMESTAMP WHERE session_id = NEW.session_id;
END;

-- Trigger: Create snapshot when session is archived
CREATE TRIGGER create_snapshot_on_archive
AFTER UPDATE ON sessions
WHEN NEW.status = 'archived' AND OLD.status != 'archived'
BEGIN
    INSERT INTO session_snapshots (
        session_id,
        snapshot_type,
        message_count,
        total_tokens,
        context_json
    )
    VALUES (
        NEW.session_id,
        'pre_archive',
        NEW.message_count,
        NEW.total_tokens,
        json_object(
            'session_id', NEW.session_id,
            'title', NEW.title,
            'model_id', NEW.model_id,
            'message_count', NEW.message_count,
            'created_at', NEW.created_at
        )
    );
END;

-- ============================================================================
-- FULL-TEXT SEARCH (Already configured, but included for reference)
-- ============================================================================

-- FTS table for message content search
CREATE VIRTUAL TABLE sessions_fts USING fts5(
    session_id UNINDEXED,
    title,
    content,
    model_name,
    tokenize = 'porter'  -- Stemming for better search
);

-- ============================================================================
-- VIEWS (For convenient querying)
-- ============================================================================

-- View: Recent active sessions
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

-- View: Session statistics
CREATE VIEW session_statistics AS
SELECT
    model_id,
    COUNT(DISTINCT session_id) as session_count,
    COUNT(DISTINCT (SELECT COUNT(*) FROM messages m WHERE m.session_id = s.session_id)) as total_messages,
    AVG(message_count) as avg_messages_per_session,
    SUM(total_tokens) as total_tokens_used,
    AVG(total_tokens) as avg_tokens_per_session,
    AVG(total_duration_seconds) as avg_duration_per_session,
    MIN(created_at) as first_session,
    MAX(last_activity) as last_activity
FROM sessions s
WHERE status != 'archived'
GROUP BY model_id;

-- View: Sessions needing timeout
CREATE VIEW sessions_at_timeout AS
SELECT
    s.session_id,
    s.title,
    s.last_activity,
    t.expires_at,
    CASE
        WHEN datetime(s.last_activity, '+' || t.idle_timeout_seconds || ' seconds') < CURRENT_TIMESTAMP
        THEN 'idle_timeout'
        WHEN t.expires_at < CURRENT_TIMESTAMP
        THEN 'hard_timeout'
        ELSE 'ok'
    END as timeout_status
FROM sessions s
LEFT JOIN session_timeouts t ON s.session_id = t.session_id
WHERE s.status NOT IN ('archived', 'expired');

