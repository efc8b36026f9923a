"""The sessions of the bulk fold (``projector.sync.bulk``): each one's state while it is
folded, its rows, and how they are written to the database and read back from it.

A rebuild folds every session the log ever held. Kept in memory until the end, they would
make its memory grow with the years the log covers, so the fold keeps at most
SESSIONS_IN_MEMORY of them: past that, the half least recently changed (by
``last_event_pos``) have their rows written (``write_sessions``) and are dropped; an event
about one of them reads it back (``load_session``). What only speeds a session's next
snapshot or withdrawal up (``FoldSession.snap`` and ``recent``) is not written: a session
read back goes the longer way once, to the same rows.
"""

from __future__ import annotations

import operator
import sqlite3
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from projector.rules import session_rows as rules
from projector.rules.apply import INSERT_METADATA_SQL, INSERT_SESSION_SQL
from projector.rules.session_rows import SESSION_COLUMNS

# Sessions a rebuild's fold keeps in memory: far more than a router keeps open at once, so
# an evicted session is seldom read back.
SESSIONS_IN_MEMORY: Final = 4_096
RECENT: Final = 16  # see FoldSession.recent

TIMEOUT_COLUMNS: Final = (
    "session_id", "idle_timeout_seconds", "hard_timeout_seconds", "created_at",
    "last_activity", "expires_at", "timeout_warning_sent", "warning_sent_at",
)  # fmt: skip
INSERT_TIMEOUTS_SQL: Final = (
    f"INSERT INTO session_timeouts ({', '.join(TIMEOUT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(TIMEOUT_COLUMNS))})"
)


def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    """An UPDATE of every column but the first, the key, given last."""
    sets = ", ".join(f"{name} = ?" for name in columns[1:])
    return f"UPDATE {table} SET {sets} WHERE {columns[0]} = ?"


UPDATE_SESSION_SQL: Final = _update_sql("sessions", SESSION_COLUMNS)
UPDATE_TIMEOUTS_SQL: Final = _update_sql("session_timeouts", TIMEOUT_COLUMNS)


@dataclass(slots=True, eq=False)
class FoldSession:
    """A live session: its ``sessions`` row (``rules.SESSION_COLUMNS``, in that order),
    its ``session_timeouts`` warning state and its metadata (key -> [metadata_id, value]).
    Each field has its column's name."""

    session_id: str
    created_at: str
    updated_at: str
    model_id: str | None
    model_name: str | None
    title: str | None
    message_count: int
    total_tokens: int
    total_duration_seconds: float
    last_activity: str
    status: str
    idle_timeout_seconds: int | None
    hard_timeout_seconds: int | None
    expires_at: str | None
    last_event_pos: int
    timeout_warning_sent: int = 0
    warning_sent_at: str | None = None
    metadata: dict[str, list[Any]] = field(default_factory=dict)
    # The last snapshot this fold wrote of the session: (snapshot_id, message_count,
    # start, end of its messages in context_json). Messages are only ever appended
    # while this object lives (a deletion ends it, a restore makes a new one), so the
    # next snapshot copies those bytes and encodes only the messages after them.
    snap: tuple[int, int, int, int] | None = None
    # The counters after each of the last RECENT messages: a truncation that keeps one of
    # them takes its counters from here instead of summing the messages kept again.
    recent: deque[rules.Totals] = field(default_factory=lambda: deque(maxlen=RECENT))
    # Whether the database holds rows of the session (written earlier, read back since).
    stored: bool = False

    def totals_at(self, count: int) -> rules.Totals | None:
        """The counters as they were with ``count`` messages, if still known."""
        if count == 0:
            return (0, 0, 0.0)
        for totals in reversed(self.recent):
            if totals[0] == count:
                return totals
        return None


# A FoldSession's sessions row, its session_timeouts row.
session_row: Final = operator.attrgetter(*SESSION_COLUMNS)
timeouts_row: Final = operator.attrgetter(*TIMEOUT_COLUMNS)
last_change: Final = operator.attrgetter("last_event_pos")


def load_session(conn: sqlite3.Connection, session_id: str) -> FoldSession | None:
    """The session as its rows hold it (``stored``), None if there are none."""
    row = conn.execute(
        f"SELECT {', '.join(SESSION_COLUMNS)} FROM sessions WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        return None
    s = FoldSession(*row)
    s.stored = True
    warning = conn.execute(
        "SELECT timeout_warning_sent, warning_sent_at FROM session_timeouts WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if warning is not None:
        s.timeout_warning_sent, s.warning_sent_at = warning
    for metadata_id, key, value in conn.execute(
        "SELECT metadata_id, key, value FROM session_metadata WHERE session_id = ?",
        (session_id,),
    ):
        s.metadata[key] = [metadata_id, value]
    return s


def write_sessions(conn: sqlite3.Connection, sessions: Sequence[FoldSession]) -> None:
    """The rows of ``sessions`` as they are now: inserted, or for those the database
    already holds, updated (their metadata written again)."""
    new = [s for s in sessions if not s.stored]
    conn.executemany(INSERT_SESSION_SQL, map(session_row, new))
    conn.executemany(INSERT_TIMEOUTS_SQL, map(timeouts_row, new))
    old = [s for s in sessions if s.stored]
    conn.executemany(UPDATE_SESSION_SQL, [(*r[1:], r[0]) for r in map(session_row, old)])
    conn.executemany(UPDATE_TIMEOUTS_SQL, [(*r[1:], r[0]) for r in map(timeouts_row, old)])
    conn.executemany(
        "DELETE FROM session_metadata WHERE session_id = ?", [(s.session_id,) for s in old]
    )
    conn.executemany(
        INSERT_METADATA_SQL,
        [(m[0], s.session_id, key, m[1]) for s in sessions for key, m in s.metadata.items()],
    )


def delete_rows(conn: sqlite3.Connection, session_id: str) -> None:
    """A stored session's own rows (not its messages or snapshots), foreign keys being off
    in the bulk load: no cascade."""
    for table in ("session_metadata", "session_timeouts", "sessions"):
        conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
