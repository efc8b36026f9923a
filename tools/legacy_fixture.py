"""A deterministic old-style AI-router sessions database, for ``import-legacy`` benchmarks.

``build_legacy_db(path, sessions, messages_per_session, seed)`` writes the seed's
pre-enhancement schema (``sessions``, ``messages``, ``session_metadata``, ``sessions_fts``)
the way the old app did: rows inserted, counters updated by hand, so some counters drift.
With ``schema="migrated"`` it adds what the seed's migration script added (status and
timeout columns, ``session_timeouts``, ``session_snapshots``). The same arguments always
give the same rows.

Run as a script: ``python tools/legacy_fixture.py OLD.db --sessions 1000 --messages 100``.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
from datetime import UTC, datetime, timedelta

PRE_ENHANCEMENT = """
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
    last_activity TIMESTAMP DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE messages (
    message_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    tokens_used INTEGER,
    duration_seconds REAL,
    metadata TEXT,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE,
    UNIQUE(session_id, sequence_number)
);
CREATE TABLE session_metadata (
    metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE,
    UNIQUE(session_id, key)
);
CREATE VIRTUAL TABLE sessions_fts USING fts5(
    session_id UNINDEXED, title, content, model_name, tokenize = 'porter'
);
"""

MIGRATED = """
ALTER TABLE sessions ADD COLUMN status TEXT DEFAULT 'active';
ALTER TABLE sessions ADD COLUMN idle_timeout_seconds INTEGER DEFAULT 3600;
ALTER TABLE sessions ADD COLUMN hard_timeout_seconds INTEGER DEFAULT 86400;
ALTER TABLE sessions ADD COLUMN expires_at TIMESTAMP;
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
CREATE TABLE session_snapshots (
    snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL,
    snapshot_type TEXT DEFAULT 'checkpoint',
    snapshot_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    message_count INTEGER,
    total_tokens INTEGER,
    context_json TEXT,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    FOREIGN KEY (session_id) REFERENCES sessions(session_id) ON DELETE CASCADE
);
"""

MODELS = (("gpt-4o", "GPT-4o"), ("claude-3.5-sonnet", "Claude 3.5 Sonnet"), ("llama3:8b", None))
WORDS = tuple(
    [
        "the",
        "a",
        "plan",
        "trip",
        "Paris",
        "hotel",
        "café",
        "naïve",
        "résumé",
        "東京",
        "data",
        "code",
        "test",
        "why",
        "how",
    ]
)


def build_legacy_db(
    path: str | os.PathLike[str],
    sessions: int,
    messages_per_session: int,
    seed: int,
    *,
    schema: str = "pre-enhancement",
    drift: float = 0.05,
) -> int:
    """Write a new old-style database at ``path``; returns the number of messages.

    ``drift`` is the share of sessions whose counters disagree with their rows (the old
    app's INSERT-then-UPDATE pattern losing an update).
    """
    if schema not in ("pre-enhancement", "migrated"):
        raise ValueError(f"schema must be 'pre-enhancement' or 'migrated', not {schema!r}")
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    conn = sqlite3.connect(os.fspath(path))
    try:
        conn.executescript(PRE_ENHANCEMENT + (MIGRATED if schema == "migrated" else ""))
        msg_rows: list[tuple[object, ...]] = []
        sess_rows: list[tuple[object, ...]] = []
        meta_rows: list[tuple[object, ...]] = []
        for s in range(sessions):
            sid = f"sess-{seed}-{s:06d}"
            model_id, model_name = MODELS[s % len(MODELS)]
            t = start + timedelta(minutes=rng.randrange(500_000))
            created = t.strftime("%Y-%m-%d %H:%M:%S")
            tokens, duration = 0, 0.0
            for n in range(1, messages_per_session + 1):
                t += timedelta(seconds=rng.randrange(1, 600))
                words = rng.choices(WORDS, k=rng.randrange(3, 60))
                tok = rng.randrange(1, 2000)
                dur = round(rng.random() * 5, 3)
                tokens += tok
                duration += dur
                msg_rows.append(
                    (
                        sid,
                        n,
                        ("user", "assistant")[n % 2 == 0],
                        " ".join(words),
                        t.strftime("%Y-%m-%d %H:%M:%S"),
                        tok,
                        dur,
                        None if n % 3 else '{"client": "web"}',
                    )
                )
            count = messages_per_session
            if rng.random() < drift:
                count -= 1
                tokens -= 7
            last = t.strftime("%Y-%m-%d %H:%M:%S")
            sess_rows.append(
                (
                    sid,
                    created,
                    last,
                    model_id,
                    model_name,
                    f"Chat {s}",
                    count,
                    tokens,
                    duration,
                    last,
                )
            )
            meta_rows.append((sid, "channel", ("web", "cli", "api")[s % 3]))
        conn.executemany(
            "INSERT INTO sessions (session_id, created_at, updated_at, model_id, model_name, "
            "title, message_count, total_tokens, total_duration_seconds, last_activity) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            sess_rows,
        )
        conn.executemany(
            "INSERT INTO messages (session_id, sequence_number, role, content, timestamp, "
            "tokens_used, duration_seconds, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            msg_rows,
        )
        conn.executemany(
            "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)", meta_rows
        )
        if schema == "migrated":
            conn.execute(
                "INSERT INTO session_timeouts (session_id, idle_timeout_seconds, "
                "hard_timeout_seconds, created_at, last_activity) SELECT session_id, 3600, "
                "86400, created_at, last_activity FROM sessions"
            )
            conn.execute("UPDATE sessions SET status = 'archived' WHERE rowid % 10 = 0")
        conn.commit()
    finally:
        conn.close()
    return len(msg_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100, help="messages per session")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--schema", default="pre-enhancement", choices=["pre-enhancement", "migrated"]
    )
    args = parser.parse_args()
    n = build_legacy_db(args.path, args.sessions, args.messages, args.seed, schema=args.schema)
    print(f"{args.path}: {args.sessions} sessions, {n} messages")


if __name__ == "__main__":
    main()
