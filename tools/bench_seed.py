"""Baselines of the projection section: the seed as written, and the ideal bulk load.

* **Seed as written**: the seed's enhanced schema and triggers (``tests/seed_schema.sql``,
  the verbatim copy the seed-defect tests use), its connection settings, and the SQL its
  functions run for each change, 5,000 events per transaction. Its defects stay in: the
  ``COUNT(*)`` trigger per message, the self-updating timestamp trigger, no FTS feed, the
  ``pre_delete`` snapshot erased with its session (a deleted session that is restored comes
  back as a bare row).
* **Ideal bulk load**: exactly the rows of a projector-built database, read out of it
  beforehand, written with plain ``executemany`` in one transaction, the session counters
  by one set-based UPDATE. No log to read, no decisions. Two schemas: the seed's own
  tables, indexes and FTS without its triggers (``seed_ideal_load``: the naive bulk load
  of the seed schema, which rebuild is held to), and the project's (``ideal_load``,
  ``schema/*.sql`` without its triggers: fewer indexes, so a stricter floor, also used
  for catch-up).
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from journal.events import (
    AnyEvent,
    MessageAppended,
    MessagesTruncated,
    ModelRegistered,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionMetadataSet,
    SessionPaused,
    SessionRenamed,
    SessionRestored,
    SessionResumed,
    SessionSnapshotted,
    SessionTimedOut,
    TimeoutWarning,
)

SEED_SCHEMA = Path(__file__).resolve().parent.parent / "tests" / "seed_schema.sql"
SEED_BATCH = 5_000
TABLES = ("models", "sessions", "messages", "session_metadata", "session_timeouts")
COUNTERS = ("message_count", "total_tokens", "total_duration_seconds")


# -- the seed as written ---------------------------------------------------------------
def seed_connect(path: Path) -> sqlite3.Connection:
    """The seed's ``init_database_with_fixes`` settings; creates the schema if new."""
    new = not path.exists()
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -64000")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA mmap_size = 268435456")
    if new:
        conn.executescript(SEED_SCHEMA.read_text(encoding="utf-8"))
    return conn


class SeedLoader:
    """Applies events the way the seed's code writes changes."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.models: dict[str, tuple[str, str | None]] = {}  # session -> model, name

    def load(self, events: Iterable[AnyEvent]) -> int:
        n = 0
        self.conn.execute("BEGIN")
        for event in events:
            self.apply(event)
            n += 1
            if n % SEED_BATCH == 0:
                self.conn.execute("COMMIT")
                self.conn.execute("BEGIN")
        self.conn.execute("COMMIT")
        return n

    def apply(self, e: AnyEvent) -> None:
        x = self.conn.execute
        match e:
            case ModelRegistered():
                x(
                    "INSERT OR IGNORE INTO models (model_id, model_name, provider) "
                    "VALUES (?, ?, ?)",
                    (e.model_id, e.model_name, e.provider),
                )
            case SessionCreated():
                self.models[e.session_id] = (e.model_id, e.model_name)
                self._insert_session(
                    e.session_id, e.title, e.idle_timeout_seconds, e.hard_timeout_seconds
                )
            case MessageAppended():
                x(
                    "INSERT INTO messages (session_id, sequence_number, role, content, "
                    "tokens_used, duration_seconds, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.session_id,
                        e.seq,
                        e.role,
                        e.content,
                        e.tokens_used,
                        e.duration_seconds,
                        None if e.metadata is None else json.dumps(e.metadata),
                    ),
                )
            case SessionMetadataSet():
                if e.value is None:
                    x(
                        "DELETE FROM session_metadata WHERE session_id = ? AND key = ?",
                        (e.session_id, e.key),
                    )
                else:
                    x(
                        "INSERT OR REPLACE INTO session_metadata (session_id, key, value) "
                        "VALUES (?, ?, ?)",
                        (e.session_id, e.key, e.value),
                    )
            case SessionRenamed():
                x("UPDATE sessions SET title = ? WHERE session_id = ?", (e.title, e.session_id))
            case SessionPaused():
                self._status(e.session_id, "paused")
            case SessionResumed():
                self._status(e.session_id, "active")
            case TimeoutWarning():
                x(
                    "UPDATE session_timeouts SET timeout_warning_sent = 1, "
                    "warning_sent_at = CURRENT_TIMESTAMP WHERE session_id = ?",
                    (e.session_id,),
                )
            case SessionTimedOut():
                self._status(e.session_id, "idle" if e.kind == "idle" else "expired")
            case SessionArchived():
                self._status(e.session_id, "archived")
            case SessionSnapshotted():
                self._snapshot(e.session_id, e.reason)
            case SessionRestored():
                if x("SELECT 1 FROM sessions WHERE session_id = ?", (e.session_id,)).fetchone():
                    self._status(e.session_id, "active")
                else:  # its pre_delete snapshot went with it: only a bare row comes back
                    self._insert_session(e.session_id, None, None, None)
            case SessionDeleted():
                x("DELETE FROM sessions WHERE session_id = ?", (e.session_id,))
            case MessagesTruncated():  # the seed's triggers keep its counters
                x(
                    "DELETE FROM messages WHERE session_id = ? AND sequence_number > ?",
                    (e.session_id, e.keep_through_seq),
                )
            case _:
                raise AssertionError(f"unhandled event {e!r}")

    def _insert_session(
        self, sid: str, title: str | None, idle: int | None, hard: int | None
    ) -> None:
        model_id, model_name = self.models[sid]
        self.conn.execute(
            "INSERT INTO sessions (session_id, model_id, model_name, title, "
            "idle_timeout_seconds, hard_timeout_seconds) VALUES (?, ?, ?, ?, ?, ?)",
            (sid, model_id, model_name, title, idle, hard),
        )
        self.conn.execute(
            "INSERT OR REPLACE INTO session_timeouts (session_id, idle_timeout_seconds, "
            "hard_timeout_seconds) VALUES (?, ?, ?)",
            (sid, idle, hard),
        )

    def _status(self, sid: str, status: str) -> None:
        self.conn.execute("UPDATE sessions SET status = ? WHERE session_id = ?", (status, sid))

    def _snapshot(self, sid: str, reason: str) -> None:
        """The seed's ``snapshot_session_before_timeout`` (its fixed snapshot_type kept)."""
        session = self.conn.execute("SELECT * FROM sessions WHERE session_id = ?", (sid,))
        row = session.fetchone()
        if row is None:
            return
        messages = [
            dict(m)
            for m in self.conn.execute(
                "SELECT role, content, timestamp, tokens_used FROM messages "
                "WHERE session_id = ? ORDER BY sequence_number",
                (sid,),
            )
        ]
        context = {
            "session_id": row["session_id"],
            "title": row["title"],
            "model_id": row["model_id"],
            "created_at": row["created_at"],
            "messages": messages,
            "snapshot_reason": reason,
            "snapshot_time": datetime.now(UTC).isoformat(),
        }
        self.conn.execute(
            "INSERT INTO session_snapshots (session_id, snapshot_type, message_count, "
            "total_tokens, context_json) VALUES (?, 'timeout_warning', ?, ?, ?)",
            (sid, row["message_count"], row["total_tokens"], json.dumps(context, default=str)),
        )


# -- the ideal bulk load ---------------------------------------------------------------
Rows = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


def read_rows(db: Path) -> Rows:
    """Every row of the projection's tables (and the FTS index), keyed by table."""
    conn = sqlite3.connect(str(db))
    try:
        out: Rows = {}
        for table in (*TABLES, "session_snapshots"):
            cur = conn.execute(f"SELECT * FROM {table} ORDER BY 1")
            out[table] = ([d[0] for d in cur.description], cur.fetchall())
        cur = conn.execute("SELECT rowid, session_id, content FROM sessions_fts ORDER BY rowid")
        out["sessions_fts"] = ([d[0] for d in cur.description], cur.fetchall())
    finally:
        conn.close()
    return out


def schema_without_triggers() -> str:
    from projector.db import schema_files

    return _without_triggers("\n".join(text for _name, text in schema_files()))


def ideal_connect(path: Path, bulk: bool = False) -> sqlite3.Connection:
    """The projector's connection settings, so only the way rows arrive differs.

    ``bulk``: those of ``projector.rebuild`` for its new file (memory journal, unsynced).
    """
    from projector.db import connect

    if not bulk:
        return connect(path)
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _insert(
    conn: sqlite3.Connection, table: str, cols: list[str], rows: list[tuple[Any, ...]]
) -> None:
    if rows:
        marks = ", ".join("?" * len(cols))
        conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)


def _zero_counters(cols: list[str], rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    idx = [cols.index(c) for c in COUNTERS]
    out = []
    for row in rows:
        r = list(row)
        for i in idx:
            r[i] = 0
        out.append(tuple(r))
    return out


_COUNT_UPDATE = """
UPDATE sessions SET message_count = m.n, total_tokens = m.tokens,
       total_duration_seconds = m.duration
FROM (SELECT session_id, COUNT(*) AS n, COALESCE(SUM(tokens_used), 0) AS tokens,
             COALESCE(SUM(duration_seconds), 0.0) AS duration
      FROM messages {where} GROUP BY session_id) AS m
WHERE sessions.session_id = m.session_id
"""


def ideal_load(rows: Rows, db: Path) -> None:
    """All rows into a new database in one transaction; counters by one UPDATE."""
    conn = ideal_connect(db, bulk=True)
    try:
        conn.executescript(schema_without_triggers())
        conn.execute("BEGIN IMMEDIATE")
        for table in (*TABLES, "session_snapshots", "sessions_fts"):
            cols, data = rows[table]
            if table == "sessions":
                data = _zero_counters(cols, data)
            _insert(conn, table, cols, data)
        conn.execute(_COUNT_UPDATE.format(where=""))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _without_triggers(sql: str) -> str:
    return re.sub(r"CREATE\s+TRIGGER\b.*?\bEND\s*;", "", sql, flags=re.S | re.I)


def seed_ideal_load(rows: Rows, db: Path) -> Rows:
    """The same rows, loaded the same way, into the seed's own tables, indexes and FTS.

    The "naive bulk load of the seed schema": ``tests/seed_schema.sql`` without its
    triggers (its redundant and write-amplifying indexes stay). Columns the seed lacks
    (``last_event_pos``, a snapshot's ``note``) are left out, and so are the snapshots of
    deleted sessions, which the seed's foreign key cannot hold. Returns the rows loaded.
    """
    conn = ideal_connect(db, bulk=True)
    loaded: Rows = {}
    try:
        conn.executescript(_without_triggers(SEED_SCHEMA.read_text(encoding="utf-8")))
        live = {r[0] for r in rows["sessions"][1]}
        conn.execute("BEGIN IMMEDIATE")
        for table in (*TABLES, "session_snapshots", "sessions_fts"):
            cols, data = rows[table]
            if table != "sessions_fts":
                seed_cols = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
                keep = [i for i, c in enumerate(cols) if c in seed_cols]
                cols = [cols[i] for i in keep]
                data = [tuple(r[i] for i in keep) for r in data]
            if table == "session_snapshots":
                sid = cols.index("session_id")
                data = [r for r in data if r[sid] in live]
            loaded[table] = (cols, data)
            _insert(conn, table, cols, _zero_counters(cols, data) if table == "sessions" else data)
        conn.execute(_COUNT_UPDATE.format(where=""))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return loaded


def read_columns(db: Path, loaded: Rows) -> Rows:
    """The rows of ``db`` in the tables and columns of ``loaded``, in the same order."""
    conn = sqlite3.connect(str(db))
    try:
        out: Rows = {}
        for table, (cols, _data) in loaded.items():
            key = "rowid" if table == "sessions_fts" else cols[0]
            cur = conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {key}")
            out[table] = (cols, cur.fetchall())
    finally:
        conn.close()
    return out


def ideal_catch_up(before: Rows, after: Rows, db: Path) -> None:
    """Bring an ideal-loaded ``before`` database to ``after``: the rows that differ only.

    New and changed rows by ``executemany`` (sessions that exist are updated in place,
    so no cascade fires), removed sessions deleted, FTS rows replaced, and the counters of
    the sessions that got messages recomputed by one set-based UPDATE; one transaction.
    """
    conn = ideal_connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        cols, rows = after["sessions"]
        old = {r[0]: r for r in before["sessions"][1]}
        new = {r[0]: r for r in rows}
        gone = [(sid,) for sid in old if sid not in new]
        conn.executemany("DELETE FROM sessions WHERE session_id = ?", gone)
        changed = [r for sid, r in new.items() if sid in old and old[sid] != r]
        sets = ", ".join(f"{c} = ?" for c in cols[1:])
        conn.executemany(
            f"UPDATE sessions SET {sets} WHERE session_id = ?", [(*r[1:], r[0]) for r in changed]
        )
        added = [r for sid, r in new.items() if sid not in old]
        _insert(conn, "sessions", cols, _zero_counters(cols, added))
        for table in TABLES[:1] + TABLES[2:] + ("session_snapshots",):
            cols, rows = after[table]
            seen = set(before[table][1])
            fresh = [r for r in rows if r not in seen]
            keys = {r[0] for r in rows}
            removed = [(r[0],) for r in before[table][1] if r[0] not in keys]
            if removed and table != "session_timeouts":  # timeouts go with their session
                conn.executemany(f"DELETE FROM {table} WHERE {cols[0]} = ?", removed)
            if fresh:
                marks = ", ".join("?" * len(cols))
                conn.executemany(
                    f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({marks})", fresh
                )
        cols, rows = after["sessions_fts"]
        seen = set(before["sessions_fts"][1])
        fresh = [r for r in rows if r not in seen]
        keys = {r[0] for r in rows}
        stale = [(r[0],) for r in before["sessions_fts"][1] if r[0] not in keys]
        conn.executemany(
            "DELETE FROM sessions_fts WHERE rowid = ?", stale + [(r[0],) for r in fresh]
        )
        _insert(conn, "sessions_fts", cols, fresh)
        first_new = max((r[0] for r in before["messages"][1]), default=0)
        conn.execute(
            _COUNT_UPDATE.format(
                where=f"WHERE session_id IN (SELECT DISTINCT session_id FROM messages "
                f"WHERE message_id > {int(first_new)})"
            )
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
