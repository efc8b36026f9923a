"""verify: prove the projection right, against itself and against the log.

Checks, each problem named with its session or line:

* SQLite: ``integrity_check``, ``foreign_key_check``; FTS5's own ``integrity-check`` and
  the index against the messages it should hold;
* counters against rows, the timeout mirror against sessions, sequence gaps (one
  window-function pass, not the seed's correlated subquery per row);
* the log itself (``projector.checks.verify_log``): checksums, gapless positions, whole groups
  (the reader), unique ids, a torn tail, and whether the checkpoint's line is still in it;
* the projection against the log, up to the checkpoint: the set of live sessions, and per
  session the message count, tokens and a content hash computed from the log alone;
* forgotten sessions: no row left at a position a forgetting lists, and in the log
  nothing but ``redacted`` records there.

Every comparison reads one snapshot of the database (read transactions that see the same
checkpoint), so a live projector committing meanwhile is never taken for a difference.
It records the outcome per session in ``integrity_status``/``integrity_checked_at``, the
only columns written from the wall clock (excluded from determinism and canonical_hash),
and only while the projection is still at the checkpoint it checked.
A rebuild can fold the log for verify as it reads it (``LogWitness``), so that verify of
the database it just built need not read the log a second time.
"""

from __future__ import annotations

import bisect
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, Final, TypeVar

from journal.events import format_ts
from projector.checks.findings import Findings, Problem
from projector.checks.logfold import LogTally, LogWitness, message_digest_input, recount
from projector.checks.tallies import SessionTally, SpillFile, SpillMap, merged, tally_map
from projector.checks.verify_log import check_log, check_log_end, events_upto
from projector.db import (
    Checkpoint,
    check_paths,
    connect,
    is_empty,
    read_checkpoint,
    schema_version,
    user_version,
)
from projector.errors import CheckpointMismatch
from projector.forgetting import rows_at
from projector.sync.catchup import check_checkpoint
from projector.sync.rebuild import counter_mismatches

_event_id = operator.attrgetter("id")
_BUSY_WAIT_SECONDS: Final = 60.0


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verify: ``ok`` when ``problems`` is empty."""

    problems: list[Problem] = field(default_factory=list)
    sessions_checked: int = 0
    log_last_pos: int = 0
    checkpoint_pos: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unprojected(self) -> int:
        """Events of the log after the checkpoint: not in the database yet, so not proven."""
        return max(self.log_last_pos - self.checkpoint_pos, 0)


# Sequence gaps in one pass: the n-th message of a session (by seq) must have seq n.
SEQUENCE_GAPS_SQL: Final = """
SELECT session_id, sequence_number, rn FROM (
    SELECT session_id, sequence_number,
           row_number() OVER (PARTITION BY session_id ORDER BY sequence_number) AS rn
    FROM messages
) WHERE sequence_number != rn
ORDER BY session_id, sequence_number
"""

TIMEOUT_MIRROR_SQL: Final = """
SELECT s.session_id FROM sessions AS s LEFT JOIN session_timeouts AS t
    ON t.session_id = s.session_id
WHERE t.session_id IS NULL
   OR t.idle_timeout_seconds IS NOT s.idle_timeout_seconds
   OR t.hard_timeout_seconds IS NOT s.hard_timeout_seconds
   OR t.expires_at IS NOT s.expires_at
   OR t.last_activity IS NOT s.last_activity
ORDER BY s.session_id
"""

# Every message in the index with its current text, and nothing else in it. The text is
# read from the index's content table, sessions_fts_content (FTS5's shadow table of a
# table with content of its own: id = rowid, c0, c1 = session_id, content, part of the
# FTS5 file format), three times faster than through the virtual table; FTS5's
# integrity-check proves the index matches that table.
FTS_MISMATCH_SQL: Final = """
SELECT m.session_id, m.message_id FROM messages AS m
LEFT JOIN sessions_fts_content AS f ON f.id = m.message_id
WHERE f.id IS NULL OR f.c1 IS NOT m.content OR f.c0 IS NOT m.session_id
UNION ALL
SELECT f.c0, f.id FROM sessions_fts_content AS f
WHERE NOT EXISTS (SELECT 1 FROM messages WHERE message_id = f.id)
"""


def verify(
    log_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    witness: LogWitness | None = None,
) -> VerifyReport:
    """Check the database at ``db_path`` against itself and the log at ``log_path``.

    ``progress(done, total)`` is told, in bytes of the log, how far the log check got.
    ``witness``: the fold of the log a rebuild made as it built ``db_path`` (see
    ``rebuild``); used instead of reading the log if it still stands for it.
    """
    log, db = os.fspath(log_path), os.fspath(db_path)
    check_paths(log, db)
    found = Findings()
    if not os.path.exists(db):
        found.add("database", f"{db} does not exist: run replay or rebuild")
        return VerifyReport(found.problems)
    try:
        conn = connect(db)  # a file that is not a database fails here already
        try:
            # Every comparison reads one snapshot: the read transaction opened here, which
            # the other connections join (see _at), so a live projector committing
            # meanwhile is never taken for a difference.
            conn.execute("BEGIN")
            version = user_version(conn)
            nothing_yet = version == 0 and is_empty(conn)
        except BaseException:
            conn.close()
            raise
    except sqlite3.DatabaseError as exc:
        found.add("database", f"{db} is not a readable database: {exc}")
        return VerifyReport(found.problems)
    own: list[LogTally | SpillFile] = []
    try:
        if nothing_yet:  # made, nothing projected yet (a first replay or watch is starting)
            tally, last_pos = check_log(log, 0, found, progress)
            tally.close()
            return VerifyReport(found.problems, 0, last_pos, 0)
        if version != schema_version():
            found.add(
                "schema",
                f"schema version {version} is not the projector's {schema_version()}: rebuild",
            )
            return VerifyReport(found.problems)
        cp = read_checkpoint(conn)
        # The database's own checks run inside SQLite, which lets go of the GIL: on other
        # cores they overlap the two folds, of the log and of the messages, which are Python.
        # The full-text checks, the longest, run apart from the others. Each side notes its
        # problems apart; they are reported in one order.
        with ThreadPoolExecutor(3, thread_name_prefix="verify") as pool:
            tables = pool.submit(_in_snapshot, db, cp, _checked_by(_check_tables))
            fts = pool.submit(_check_fts, db, cp)
            messages = pool.submit(_in_snapshot, db, cp, _fold_messages)
            against_log = Findings()
            try:
                check_checkpoint(log, cp)
            except CheckpointMismatch as exc:
                against_log.add("checkpoint", str(exc), line=cp.log_pos, offset=cp.log_offset)
            if witness is not None and witness.stands_for(log, cp.log_pos):
                tally, last_pos = witness.tally, witness.last_pos
                check_log_end(log, witness.torn, witness.ids, witness.forgets, against_log)
            else:
                tally, last_pos = check_log(log, cp.log_pos, against_log, progress)
                own.append(tally)
            recount(events_upto(log, cp.log_pos), tally)  # sessions with withdrawn messages
            # A check that could not join the snapshot (the projector moved on before its
            # connection looked) runs here, on the connection that holds it.
            found = _or_here(tables.result(), conn, _checked_by(_check_tables))
            fts_found, fts_joined = fts.result()
            if not fts_joined:
                _check_fts_content(conn, fts_found)
            found.extend(fts_found)
            folded, checked = _or_here(messages.result(), conn, _fold_messages)
            own.append(folded.file)
        _check_forgotten(conn, tally, found)
        conn.execute("COMMIT")  # the end of the snapshot's read transaction
        found.extend(against_log)
        _check_against_log(folded, tally, found)
        _record_outcome(conn, cp, found)
    finally:
        conn.close()
        for fold in own:  # their temporary files (a witness's tally is its owner's)
            fold.close()
    return VerifyReport(found.problems, checked, last_pos, cp.log_pos)


T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]  # a reading of the database, in some transaction
Check = Callable[[sqlite3.Connection, Findings], None]


def _at(
    conn: sqlite3.Connection, cp: Checkpoint, work: Callable[[sqlite3.Connection], T]
) -> T | None:
    """``work`` in a read transaction that sees the projection as of checkpoint ``cp``;
    None if the database has moved on from it."""
    conn.execute("BEGIN")
    try:
        # Every commit of the projection moves its checkpoint, in the same transaction: a
        # read transaction that sees ``cp`` sees the very rows the caller's snapshot does.
        if read_checkpoint(conn) != cp:
            return None
        return work(conn)
    finally:
        conn.execute("COMMIT")


def _in_snapshot(db: str, cp: Checkpoint, work: Work[T]) -> T | None:
    """``_at`` on a connection of its own (made in the thread that runs it)."""
    conn = connect(db)
    try:
        return _at(conn, cp, work)
    finally:
        conn.close()


def _or_here(
    result: T | None, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
) -> T:
    """The result a thread got in the snapshot, else ``work`` run on its own connection."""
    return work(conn) if result is None else result


def _checked_by(check: Check) -> Work[Findings]:
    def run(conn: sqlite3.Connection) -> Findings:
        found = Findings()
        check(conn, found)
        return found

    return run


def _check_tables(conn: sqlite3.Connection, found: Findings) -> None:
    for (msg,) in conn.execute("PRAGMA integrity_check").fetchall():
        if msg != "ok":
            found.add("integrity_check", str(msg))
    for table, rowid, parent, _fk in conn.execute("PRAGMA foreign_key_check").fetchall():
        found.add("foreign_key", f"{table} row {rowid} refers to a missing {parent} row")
    for sid, what in counter_mismatches(conn):
        found.add("counter", what, session_id=sid)
    for (sid,) in conn.execute(TIMEOUT_MIRROR_SQL):
        found.add("timeouts", "session_timeouts does not mirror sessions", session_id=sid)
    for sid, seq, rn in conn.execute(SEQUENCE_GAPS_SQL):
        found.add("sequence", f"message #{rn} has seq {seq} (a gap or a duplicate)", session_id=sid)


def _check_fts(db: str, cp: Checkpoint) -> tuple[Findings, bool]:
    """The full-text checks on a connection of their own: (what they found, whether the
    index was compared with the messages in the snapshot at ``cp``)."""
    found = Findings()
    conn = connect(db)
    try:
        # FTS5's own check is a command (a write statement), so it runs before and apart
        # from the snapshot; it holds of every committed state alike.
        _check_fts_index(conn, found)

        def compare(snapshot: sqlite3.Connection) -> bool:
            _check_fts_content(snapshot, found)
            return True

        joined = _at(conn, cp, compare)
    finally:
        conn.close()
    return found, joined is not None


def _check_fts_index(conn: sqlite3.Connection, found: Findings) -> None:
    """FTS5's own integrity-check. It takes the write lock, which a live projector holds
    while it commits a batch: a busy database is waited for, never taken for damage."""
    deadline = time.monotonic() + _BUSY_WAIT_SECONDS
    while True:
        try:
            conn.execute("INSERT INTO sessions_fts (sessions_fts) VALUES ('integrity-check')")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                found.add("fts", f"full-text index is damaged: {exc}")
                return
            if time.monotonic() > deadline:  # each try already waited the busy timeout
                found.add(
                    "fts",
                    "the full-text index's own check could not run: a writer kept the "
                    f"database locked for {_BUSY_WAIT_SECONDS:g} s; run verify again",
                )
                return
        except sqlite3.DatabaseError as exc:
            found.add("fts", f"full-text index is damaged: {exc}")
            return


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock (not damage)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _check_fts_content(conn: sqlite3.Connection, found: Findings) -> None:
    """The full-text index against the messages it should hold."""
    try:
        mismatches = conn.execute(FTS_MISMATCH_SQL).fetchall()
    except sqlite3.DatabaseError as exc:
        found.add("fts", f"the full-text index's content cannot be read: {exc}")
        return
    for sid, message_id in mismatches:
        found.add(
            "fts",
            f"message {message_id} is missing, stale or extra in sessions_fts",
            session_id=sid,
        )


Folded = SpillMap[str, SessionTally]
_SESSIONS_SQL: Final = "SELECT session_id FROM sessions ORDER BY session_id"
_MESSAGES_SQL: Final = (
    "SELECT session_id, message_id, sequence_number, role, content, timestamp, "
    "tokens_used, duration_seconds, metadata, tool_calls, tool_call_id, raw FROM messages "
    "ORDER BY session_id, sequence_number"
)


def _fold_messages(conn: sqlite3.Connection) -> tuple[Folded, int]:
    """Per-session count, tokens and content hash of the database's messages, every
    session included, kept in a SpillMap (memory bounded by its cap, not the sessions);
    and how many sessions there are."""
    folded = tally_map(SpillFile(), "database")
    sessions = ((str(sid), None) for (sid,) in conn.execute(_SESSIONS_SQL))
    n = 0
    for sid, counted, _ in merged(_by_session(conn.execute(_MESSAGES_SQL)), sessions):
        folded.put(sid, counted or SessionTally())  # a session without messages: empty
        n += 1
    return folded, n


def _by_session(rows: Iterable[Sequence[Any]]) -> Iterator[tuple[str, SessionTally]]:
    """The tally of each session's messages; ``rows`` come session by session."""
    for sid, messages in groupby(rows, key=_session_of):
        t = SessionTally()
        for row in messages:
            t.add(row[6], message_digest_input(*row[1:]))
        yield str(sid), t


_session_of = operator.itemgetter(0)


def _check_forgotten(conn: sqlite3.Connection, tally: LogTally, found: Findings) -> None:
    """No row left at a position a forgetting (up to the checkpoint) lists: the ranges of
    all of them at once (one pass over the sessions, however many there are). A finding
    names the table and the position, not the session: its id is what was forgotten."""
    spans = sorted(
        (first, last, pos) for pos, ranges in tally.forgettings for first, last in ranges
    )
    for row in rows_at(conn, [(first, last) for first, last, _ in spans]):
        pos = spans[bisect.bisect_right(spans, row.pos, key=operator.itemgetter(0)) - 1][2]
        found.add(
            "forgotten",
            f"forgetting at pos {pos}: {row.table} still holds a row of pos {row.pos}",
            line=pos,
        )


def _check_against_log(db: Folded, tally: LogTally, found: Findings) -> None:
    """Per-session count, tokens and content hash of the database against the log's.

    A difference that a problem of the log itself may explain says so: the fold leaves
    out the lines it could not read, and a checkpoint not on the log means the database
    was projected from another log (or a longer one)."""
    kinds = {p.kind for p in found.problems if p.line is not None}
    why = (
        " (perhaps the checkpoint problem above)"
        if "checkpoint" in kinds
        else " (perhaps the unreadable log lines above)"
        if "log" in kinds
        else ""
    )
    for sid, got, want in merged(db.items(), tally.sessions.items()):
        if want is None:
            what = "in the database but not live in the log"
        elif got is None:
            what = "live in the log but missing from the database"
        elif (got.count, got.tokens) != (want.count, want.tokens):
            what = (
                f"{got.count} messages / {got.tokens} tokens in the database, "
                f"{want.count} / {want.tokens} in the log"
            )
        elif got.content_hash != want.content_hash:
            what = "message contents differ from the log"
        else:
            continue
        found.add("log_mismatch", what + why, session_id=sid)


def _record_outcome(conn: sqlite3.Connection, cp: Checkpoint, found: Findings) -> None:
    """integrity_status per session: 'ok', or 'problems' for a session named in one.

    Recorded only while the projection is still at ``cp``, the snapshot that was checked:
    after a live projector moved it on, the outcome would stamp sessions never checked. A
    database kept busy past the busy timeout is left unstamped: it is bookkeeping, and the
    report stands without it.
    """
    now = format_ts(datetime.now(UTC))  # the wall clock: bookkeeping, not projection
    bad = sorted({p.session_id for p in found.problems if p.session_id is not None})
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if not _busy(exc):
            raise
        return
    try:
        if read_checkpoint(conn) != cp:
            conn.execute("ROLLBACK")
            return
        conn.execute(
            "UPDATE sessions SET integrity_checked_at = ?, integrity_status = 'ok'", (now,)
        )
        conn.executemany(
            "UPDATE sessions SET integrity_status = 'problems' WHERE session_id = ?",
            [(sid,) for sid in bad],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
