-- The projection's tables: the seed's enhanced schema with its defects fixed.
--
-- Every row is a pure function of the log. Row ids come from the log (message_id and
-- snapshot_id are the pos of the event that made the row), and every time is an event's
-- time in the log's one format (RFC 3339 UTC, microseconds: 2026-11-26T10:00:00.000001Z),
-- enforced by CHECK so that text comparisons and julianday() agree. No DEFAULT
-- CURRENT_TIMESTAMP anywhere: a default taken from the wall clock would make two rebuilds
-- of the same log differ.

CREATE TABLE models (
    model_id   TEXT PRIMARY KEY,
    model_name TEXT NOT NULL,
    provider   TEXT,
    created_at TEXT NOT NULL CHECK (created_at GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE sessions (
    session_id             TEXT PRIMARY KEY,
    created_at             TEXT NOT NULL CHECK (created_at GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at             TEXT NOT NULL CHECK (updated_at GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    -- Nullable: the seed declared NOT NULL together with ON DELETE SET NULL, so deleting
    -- a model failed instead of detaching its sessions.
    model_id               TEXT REFERENCES models (model_id) ON DELETE SET NULL,
    model_name             TEXT,
    title                  TEXT,
    -- Counters kept by the triggers in 30_triggers.sql (+1/-1, never COUNT(*)).
    message_count          INTEGER NOT NULL DEFAULT 0,
    total_tokens           INTEGER NOT NULL DEFAULT 0,
    total_duration_seconds REAL NOT NULL DEFAULT 0,
    last_activity          TEXT NOT NULL CHECK (last_activity GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    status                 TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'idle', 'paused', 'archived', 'expired')),
    -- The timeout settings are owned here; session_timeouts mirrors them by trigger.
    idle_timeout_seconds   INTEGER,
    hard_timeout_seconds   INTEGER,
    expires_at             TEXT CHECK (expires_at GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    -- pos of the last event that changed this row (its messages included): gives the
    -- archive trigger a snapshot_id taken from the log, and watchers a cheap version.
    last_event_pos         INTEGER NOT NULL,
    -- Written by verify only, from the wall clock: the two columns excluded from the
    -- projection's determinism (and from canonical_hash).
    integrity_checked_at   TEXT,
    integrity_status       TEXT NOT NULL DEFAULT 'unknown'
);

-- message_id is the pos of the message_appended event. No AUTOINCREMENT: ids come from
-- the log, so every path (incremental, chunked, rebuild, restore) yields the same rows.
CREATE TABLE messages (
    message_id       INTEGER PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    sequence_number  INTEGER NOT NULL CHECK (sequence_number >= 1),
    -- The roles of journal/events.py (Role); test_schema holds the two lists equal.
    role             TEXT NOT NULL
        CHECK (role IN ('user', 'assistant', 'system', 'tool', 'developer')),
    content          TEXT NOT NULL,
    timestamp        TEXT NOT NULL CHECK (timestamp GLOB
        '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    tokens_used      INTEGER,
    duration_seconds REAL,
    metadata         TEXT,  -- JSON
    -- An assistant's tool calls (JSON list of {id, name, arguments}); a tool result's
    -- call id; the provider's message item as sent (JSON text, verbatim). Not in the
    -- full-text index: it holds content only.
    tool_calls       TEXT,
    tool_call_id     TEXT,
    raw              TEXT,
    UNIQUE (session_id, sequence_number)
);

-- metadata_id is the pos of the event that first set the key (kept while the key lives).
CREATE TABLE session_metadata (
    metadata_id INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    value       TEXT,
    UNIQUE (session_id, key)
);

-- Mirrors the timeout settings and expires_at of sessions (kept equal by the triggers
-- session_timeouts_ai/_au and session_activity_au; verify checks them) and holds the
-- warning state, which is reset by any activity.
CREATE TABLE session_timeouts (
    session_id           TEXT PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    idle_timeout_seconds INTEGER,
    hard_timeout_seconds INTEGER,
    created_at           TEXT NOT NULL,
    last_activity        TEXT NOT NULL,
    expires_at           TEXT,
    timeout_warning_sent INTEGER NOT NULL DEFAULT 0 CHECK (timeout_warning_sent IN (0, 1)),
    warning_sent_at      TEXT
);

-- No foreign key to sessions: a pre_delete snapshot must outlive the deletion it was
-- taken for (the seed's ON DELETE CASCADE erased it together with the session), and a
-- deleted session is restored from it. snapshot_id is the pos of the event.
CREATE TABLE session_snapshots (
    snapshot_id   INTEGER PRIMARY KEY,
    session_id    TEXT NOT NULL,
    snapshot_type TEXT NOT NULL
        CHECK (snapshot_type IN ('checkpoint', 'timeout_warning', 'pre_archive', 'pre_delete')),
    snapshot_at   TEXT NOT NULL,
    message_count INTEGER NOT NULL,
    total_tokens  INTEGER NOT NULL,
    context_json  TEXT NOT NULL,
    note          TEXT,
    created_at    TEXT NOT NULL
);

-- Full-text search over messages, one row per message (rowid = message_id), holding the
-- message's own text only (the seed never fed it). A session's title and model name are
-- not copied in: a hit is a message that says the words, and a rename does not rewrite
-- a row per message (titles are searched on sessions itself). New messages are added by
-- the projector once per batch; the messages_ad trigger follows deletions; verify checks
-- it against messages.
CREATE VIRTUAL TABLE sessions_fts USING fts5 (
    session_id UNINDEXED,
    content,
    tokenize = 'porter'
);
