"""The writer's state checkpoint: what it knows of every session, as of a log position.

A SQLite file beside the log (``<log>.state``), derived from the log and never trusted
blindly. It holds every session's state (the open ones, which a writer keeps in memory,
and the ended ones, which it looks up when one is named), the models, and where in the
log it stands: a byte offset, the position there and the SHA-256 of the line that ends
there. A writer opening the log loads it only if that line is still the one it names
(or its redaction, which keeps the start of that hash) and the format is this version's;
otherwise the log is read whole, as without it, and the file written afresh.

It is written in one transaction, under the log's lock, with the writer's state caught
up to the end of the log, so it always holds the whole state as of its position; a kill
at any moment leaves the old checkpoint or the new one. Rows of a forgotten session are
deleted with ``secure_delete`` on, so no byte of it stays in the file (its rollback
journal is deleted with each commit).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Final

from journal.errors import JournalClosed, LogError
from journal.events import REDACTED_HASH_DIGITS, Redacted, decode_line, line_digest
from journal.lifecycle import OPEN_STATUSES
from journal.log import FILE_MODE
from journal.state import IdRow, SessionState

# Bumped whenever what a row holds, or how the writer folds events, changes: a checkpoint
# of another version is rebuilt from the log.
FORMAT: Final = 2

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    format     INTEGER NOT NULL,
    log_offset INTEGER NOT NULL,  -- the checkpoint covers the log's bytes before this
    line_start INTEGER NOT NULL,  -- where the last line it covers starts
    line_hash  TEXT NOT NULL,     -- the SHA-256 of that line
    log_pos    INTEGER NOT NULL,
    last_ts    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id     TEXT PRIMARY KEY,
    open           INTEGER NOT NULL,
    status         TEXT NOT NULL,
    last_seq       INTEGER NOT NULL,
    model_id       TEXT NOT NULL,
    idle_timeout   INTEGER,
    hard_timeout   INTEGER,
    idle_since     TEXT NOT NULL,
    hard_deadline  REAL,
    warned         INTEGER NOT NULL,
    pre_delete_pos INTEGER,
    created_pos    INTEGER NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions (open) WHERE open = 1;
CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY);
-- The receipts of the last records' event ids (the writer's id window), so that opening
-- does not read them from the log.
CREATE TABLE IF NOT EXISTS recent_ids (
    event_id   TEXT PRIMARY KEY,
    tag        TEXT NOT NULL,
    pos        INTEGER NOT NULL,
    session_id TEXT,
    seq        INTEGER
);
CREATE INDEX IF NOT EXISTS recent_ids_pos ON recent_ids (pos);
"""
_COLUMNS: Final = (
    "status, last_seq, model_id, idle_timeout, hard_timeout, idle_since, hard_deadline, "
    "warned, pre_delete_pos, created_pos"
)


@dataclass(frozen=True)
class Mark:
    """Where in the log a checkpoint stands."""

    log_offset: int
    line_start: int
    line_hash: str
    log_pos: int
    last_ts: str


def mark_of(line_start: int, line: bytes, log_offset: int, log_pos: int, last_ts: str) -> Mark:
    """The mark of a log read up to ``log_offset``, where its last record is ``line``."""
    return Mark(log_offset, line_start, line_digest(line), log_pos, last_ts)


def _row(s: SessionState) -> tuple[object, ...]:
    return (
        int(s.status in OPEN_STATUSES),
        s.status,
        s.last_seq,
        s.model_id,
        s.idle_timeout,
        s.hard_timeout,
        s.idle_since,
        s.hard_deadline,
        int(s.warned),
        s.pre_delete_pos,
        s.created_pos,
    )


def _state(row: tuple[object, ...]) -> SessionState:
    status, last_seq, model, idle, hard, since, deadline, warned, pre_delete, created = row
    return SessionState(
        status=str(status),
        last_seq=int(last_seq),  # type: ignore[call-overload]
        model_id=str(model),
        idle_timeout=idle,  # type: ignore[arg-type]
        hard_timeout=hard,  # type: ignore[arg-type]
        idle_since=str(since),
        hard_deadline=deadline,  # type: ignore[arg-type]
        warned=bool(warned),
        pre_delete_pos=pre_delete,  # type: ignore[arg-type]
        created_pos=int(created),  # type: ignore[call-overload]
    )


class StateFile:
    """A writer's checkpoint file; see the module docstring."""

    def __init__(self, path: str) -> None:
        self.path = path
        if not os.path.exists(path):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA secure_delete = ON")
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        # The writer's threads share the connection: one at a time, and none after close.
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise JournalClosed(f"{self.path}: the journal is closed")
            yield self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def mark(self) -> Mark | None:
        """Where the checkpoint stands (None: nothing written, or another format)."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT log_offset, line_start, line_hash, log_pos, last_ts FROM meta "
                "WHERE id = 1 AND format = ?",
                (FORMAT,),
            ).fetchone()
        return Mark(*row) if row is not None else None

    def matches(self, mark: Mark, start: int, line: bytes) -> bool:
        """Whether ``line``, the record the log holds ending where the mark stands
        (``LogBackend.last_line``), beginning at ``start``, is the one the mark names, as
        written or redacted since."""
        if start != mark.line_start or not line.endswith(b"\n") or b"\n" in line[:-1]:
            return False
        if line_digest(line) == mark.line_hash:
            return True
        try:
            event = decode_line(line[:-1])
        except ValueError:
            return False
        return isinstance(event, Redacted) and event.was == mark.line_hash[:REDACTED_HASH_DIGITS]

    def open_sessions(self) -> dict[str, SessionState]:
        with self._connection() as conn:
            rows = conn.execute(f"SELECT session_id, {_COLUMNS} FROM sessions WHERE open = 1")
            return {sid: _state(tuple(row)) for sid, *row in rows}

    def recent_ids(self, after_pos: int) -> set[str]:
        """The event ids of the records after ``after_pos`` whose receipts the checkpoint
        holds (``receipt_row``)."""
        with self._connection() as conn:
            rows = conn.execute("SELECT event_id FROM recent_ids WHERE pos > ?", (after_pos,))
            return {eid for (eid,) in rows}

    def receipt_row(self, event_id: str) -> IdRow | None:
        """The receipt of a record the checkpoint holds, by its event id."""
        row = self._lookup(
            "SELECT event_id, tag, pos, session_id, seq FROM recent_ids WHERE event_id = ?",
            event_id,
        )
        return row  # type: ignore[return-value]

    def models(self) -> set[str]:
        with self._connection() as conn:
            return {m for (m,) in conn.execute("SELECT model_id FROM models")}

    def session(self, session_id: str) -> SessionState | None:
        row = self._lookup(f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?", session_id)
        return _state(row) if row is not None else None

    def created_at(self, pos: int) -> str | None:
        """The session created at ``pos``, if the checkpoint holds it."""
        row = self._lookup("SELECT session_id FROM sessions WHERE created_pos = ?", pos)
        return str(row[0]) if row is not None else None

    def _lookup(self, sql: str, key: object) -> tuple[object, ...] | None:
        """One row; LogError if the file can no longer be read (changed by something else
        while the writer had it open)."""
        try:
            with self._connection() as conn:
                row: tuple[object, ...] | None = conn.execute(sql, (key,)).fetchone()
        except sqlite3.Error as exc:
            raise LogError(
                f"{self.path}: the writer's checkpoint cannot be read ({exc}); close the "
                "journal and open it again, which rebuilds it from the log",
                path=self.path,
            ) from exc
        return row

    def save(
        self,
        mark: Mark,
        sessions: Iterable[tuple[str, SessionState]],
        models: Iterable[str],
        forgotten: Iterable[str],
        ids: Iterable[IdRow],
        *,
        ids_after: int,
        afresh: bool = False,
    ) -> None:
        """Record the sessions given (those changed since the mark the file had, or all of
        them ``afresh``), the models, the sessions forgotten since, and the receipts of
        new event ids, as of ``mark``; receipts of records up to ``ids_after`` go."""
        forgotten = list(forgotten)
        with self._connection() as conn, closing(conn.cursor()) as c:
            c.execute("BEGIN IMMEDIATE")
            try:
                if afresh:
                    c.execute("DELETE FROM sessions")
                    c.execute("DELETE FROM recent_ids")
                self._delete_sessions(c, forgotten)
                c.executemany("INSERT OR IGNORE INTO recent_ids VALUES (?, ?, ?, ?, ?)", ids)
                c.execute("DELETE FROM recent_ids WHERE pos <= ?", (ids_after,))
                c.executemany(
                    f"INSERT OR REPLACE INTO sessions (session_id, open, {_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    ((sid, *_row(s)) for sid, s in sessions),
                )
                c.executemany(
                    "INSERT OR IGNORE INTO models (model_id) VALUES (?)", ((m,) for m in models)
                )
                c.execute(
                    "INSERT OR REPLACE INTO meta VALUES (1, ?, ?, ?, ?, ?, ?)",
                    (
                        FORMAT,
                        mark.log_offset,
                        mark.line_start,
                        mark.line_hash,
                        mark.log_pos,
                        mark.last_ts,
                    ),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @staticmethod
    def _delete_sessions(c: sqlite3.Cursor, session_ids: list[str]) -> None:
        """Forgotten sessions' rows and receipts, zeroed as deleted (``secure_delete``)."""
        c.executemany("DELETE FROM sessions WHERE session_id = ?", ((s,) for s in session_ids))
        c.executemany("DELETE FROM recent_ids WHERE session_id = ?", ((s,) for s in session_ids))
