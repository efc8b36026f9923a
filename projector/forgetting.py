"""Forgetting a session: its rows purged from the projection, and no trace left in the files.

A ``session_forgotten`` event lists the positions of a session's records, each of which
the writer overwrites in place with a ``redacted`` record (which projects to nothing). It
names no session: the session is the one whose rows those positions made, since every
row id of the projection is the position of one of its session's own events (a message's
``message_id``, a snapshot's ``snapshot_id``, a metadata key's ``metadata_id``) and so is
``sessions.last_event_pos``. A session deleted before it was forgotten has no row left
but its snapshots; one projected from a log already redacted has none at all, and then
there is nothing to do.

Deleting rows is not erasing their bytes, so a purge is followed by a scrub
(``scrub_database``): every connection of the projector writes with ``secure_delete``
(deleted rows and freed pages are zeroed: ``projector.db.connect``); FTS5 (SQLite 3.40 has
no secure-delete option for it) keeps a deleted row's tokens in its older segments until
they are merged, so the index is merged whole ('optimize'); the WAL keeps the old images
of every page it changed until a checkpoint copies it into the database and truncates it.
The steps still due are kept in ``projector_scrub`` (schema/50_projector.sql), committed
with the purge: a checkpoint a reader holds up is tried again by the next catch-up.
"""

from __future__ import annotations

import bisect
import operator
import sqlite3
from collections.abc import Sequence
from typing import Final, NamedTuple

from journal.events import encode_json

Positions = Sequence[tuple[int, int]]  # ascending inclusive ranges, as SessionForgotten's
_first = operator.itemgetter(0)


class Row(NamedTuple):
    """A row of the projection made by a position: its table, that position, its session."""

    table: str
    pos: int
    session_id: str


# The rows whose id is a position, in a range of positions (the primary keys' own order).
_ROWS_IN_RANGE_SQL: Final = """
SELECT 'messages', message_id, session_id FROM messages WHERE message_id BETWEEN ?1 AND ?2
UNION ALL
SELECT 'session_snapshots', snapshot_id, session_id FROM session_snapshots
WHERE snapshot_id BETWEEN ?1 AND ?2
UNION ALL
SELECT 'session_metadata', metadata_id, session_id FROM session_metadata
WHERE metadata_id BETWEEN ?1 AND ?2
"""
_MARK_SQL: Final = (
    "INSERT INTO projector_scrub (id, step) VALUES (1, 'merge') "
    "ON CONFLICT (id) DO UPDATE SET step = 'merge'"
)


def listed(positions: Positions, pos: int) -> bool:
    """Whether ``pos`` lies in one of the ranges."""
    i = bisect.bisect_right(positions, pos, key=_first) - 1
    return i >= 0 and pos <= positions[i][1]


def rows_at(conn: sqlite3.Connection, positions: Positions) -> list[Row]:
    """Every row of the projection that a listed position made (``positions`` may join
    the ranges of many forgettings: they never overlap)."""
    return _keyed_rows(conn, positions) + _session_rows(conn, positions)


def _keyed_rows(conn: sqlite3.Connection, positions: Positions) -> list[Row]:
    """The rows whose id is a listed position: one lookup by primary key per range."""
    found: list[Row] = []
    for first, last in positions:
        found.extend(Row(*r) for r in conn.execute(_ROWS_IN_RANGE_SQL, (first, last)))
    return found


def _session_rows(conn: sqlite3.Connection, positions: Positions) -> list[Row]:
    """The sessions whose last event is at a listed position. last_event_pos has no index
    (nothing else looks a session up by it, and every message would update one): a pass
    over the sessions of the whole span, each tested against the ranges."""
    if not positions:
        return []
    return [
        Row("sessions", pos, sid)
        for sid, pos in conn.execute(
            "SELECT session_id, last_event_pos FROM sessions "
            "WHERE last_event_pos BETWEEN ? AND ? ORDER BY session_id",
            (positions[0][0], positions[-1][1]),
        )
        if listed(positions, pos)
    ]


def forget(conn: sqlite3.Connection, positions: Positions) -> None:
    """Purge the session whose rows the positions made (if any: a session projected from
    records already redacted left none), inside the caller's transaction. The positions
    are one session's, so a row found by its key names it, and the pass over the sessions
    is needed only when none is (a session with no messages, metadata or snapshots, or
    nothing at all)."""
    found = _keyed_rows(conn, positions) or _session_rows(conn, positions)
    for sid in sorted({row.session_id for row in found}):
        purge_session(conn, sid)


def purge_session(conn: sqlite3.Connection, session_id: str) -> bool:
    """Delete every row of the session: its ``sessions`` row (the cascade takes its
    messages, metadata and timeouts, and the messages_ad trigger their full-text rows),
    its snapshots, and the quarantined lines that carry its id. Returns whether there was
    any; if so, ``scrub_database`` is due (and marked so in the same transaction).

    Runs inside the caller's transaction if one is open, else in one of its own. ``conn``
    comes from ``projector.db.connect`` (foreign keys and secure_delete on).
    """
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,)).rowcount
        deleted += conn.execute(
            "DELETE FROM session_snapshots WHERE session_id = ?", (session_id,)
        ).rowcount
        # A quarantined line is bytes, not rows: any that holds the id (as the log writes
        # it, a JSON string) may be one of the session's records.
        deleted += conn.execute(
            "DELETE FROM projector_quarantine WHERE instr(data, ?) > 0",
            (encode_json(session_id),),
        ).rowcount
        if deleted:
            conn.execute(_MARK_SQL)
        if own:
            conn.execute("COMMIT")
    except BaseException:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted > 0


def scrub_database(conn: sqlite3.Connection) -> bool:
    """Take the steps a purge left due (``projector_scrub``), outside any transaction:
    merge the full-text index, then checkpoint the WAL into the database and truncate it.
    Returns True when nothing is left due; False when a reader kept the WAL in use (the
    next call tries again). Cheap when nothing is due: one read of an empty table."""
    assert not conn.in_transaction
    row = conn.execute("SELECT step FROM projector_scrub").fetchone()
    if row is None:
        return True
    if row[0] == "merge":
        conn.execute("BEGIN IMMEDIATE")
        try:
            # One segment made from all of them, without the deleted rows' tokens; the old
            # segments' pages are zeroed as they are freed (secure_delete).
            conn.execute("INSERT INTO sessions_fts (sessions_fts) VALUES ('optimize')")
            conn.execute("UPDATE projector_scrub SET step = 'checkpoint'")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    if busy:
        return False
    # A purge committed meanwhile set 'merge' again: that scrub is still due.
    conn.execute("DELETE FROM projector_scrub WHERE step = 'checkpoint'")
    return conn.execute("SELECT 1 FROM projector_scrub").fetchone() is None
