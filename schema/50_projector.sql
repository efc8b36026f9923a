-- The projector's own bookkeeping.

-- How far the projection has read the log. Written in the same transaction as the rows
-- it covers, so a crash leaves rows and checkpoint in step. line_start/line_hash locate
-- and fingerprint the last applied line: if the bytes there no longer hash the same, the
-- log was truncated or replaced and the projection is rebuilt.
CREATE TABLE projector_checkpoint (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    log_offset  INTEGER NOT NULL,  -- byte offset just after the last applied line
    log_pos     INTEGER NOT NULL,  -- pos of that line (0: nothing applied)
    line_start  INTEGER NOT NULL,  -- byte offset where that line starts
    line_hash   TEXT NOT NULL      -- SHA-256 of that line, newline included ('' if none)
);
INSERT INTO projector_checkpoint (id, log_offset, log_pos, line_start, line_hash)
VALUES (1, 0, 0, 0, '');

-- Bad lines skipped by replay in quarantine mode (never silently: each is kept here).
CREATE TABLE projector_quarantine (
    line_offset INTEGER PRIMARY KEY,  -- byte offset of the bad line
    line        INTEGER NOT NULL,     -- its line number (the pos it should have had)
    reason      TEXT NOT NULL,
    data        BLOB NOT NULL         -- the line's bytes, as found
);

-- A forgotten session's rows were purged, and old pages may still hold them: 'merge' until
-- the full-text index is merged, then 'checkpoint' until the WAL is emptied; the row goes
-- once both are done (projector/forgetting.py, scrub_database). Kept here, not in memory,
-- so that a scrub a reader held up is finished by the next replay or watch pass.
CREATE TABLE projector_scrub (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    step TEXT NOT NULL CHECK (step IN ('merge', 'checkpoint'))
);
