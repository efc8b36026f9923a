"""Rebuilding the projection from the log into a new file, then swapping it in.

The new database is built beside the old one (``<db>.rebuild``), checked (SQLite's
``quick_check``, every counter against its rows, per-session counts and tokens against a
fold of the log), closed in rollback-journal mode with no side files, fsynced, and only
then renamed over the old file. A reader opens either the old database or the whole new
one, never a half-built file. A failed build or check leaves the old database untouched.

The new file is filled by the bulk path (projector/sync/bulk.py: the log folded in Python, rows
written in bulk, triggers and secondary indexes created after the load), which tests prove
equal, row for row, to the incremental path (``catch_up`` through the triggers). A log the
bulk path refuses (an event the projection cannot apply, a bad line), and quarantine mode,
go through the incremental path, which applies or reports each event precisely.

This is also ``recover``: a lost or damaged database comes back from the log.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

import msgspec

from journal.errors import CorruptLog
from journal.events import AnyEvent
from journal.log import fsync_directory
from projector.checks.logfold import LogTally, LogWitness, file_identity
from projector.checks.tallies import merged
from projector.db import (
    check_ours,
    check_paths,
    create_private_file,
    create_schema,
    secure_delete,
)
from projector.errors import RebuildCheckFailed
from projector.rules.session_rows import ApplyError
from projector.sync.bulk_load import Observer, bulk_load
from projector.sync.catchup import CatchUpResult, Progress, catch_up
from projector.sync.reading import Until

REBUILD_BATCH_EVENTS: Final = 2_000
# The new file's page cache, in KiB (negative: a size, not a page count): a fixed cap, so
# a rebuild's memory does not grow with the database it writes. SQLite's default size: on
# 200,000 events a cache of 8 MiB was no faster, within the noise.
REBUILD_CACHE_KIB: Final = 2_000
# What makes the bulk path give up and leave the log to the incremental one, which
# reports the problem precisely (line, offset, session) or applies the log its own way.
_BULK_REFUSALS: Final = (ApplyError, sqlite3.Error, CorruptLog, msgspec.MsgspecError)
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class RebuildResult(CatchUpResult):
    """What ``rebuild`` built: the catch-up figures of the new file and its sessions."""

    sessions: int = 0


def remove_database(path: str) -> None:
    """Remove a database file and its side files, if present."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    _remove_side_files(path)


def _remove_side_files(path: str) -> None:
    for suffix in _SIDE_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)


def rebuild(
    log_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    until: int | str | datetime | None = None,
    progress: Progress | None = None,
    quarantine: bool = False,
    checked: bool = True,
    witness: LogWitness | None = None,
) -> RebuildResult:
    """Project the log (or its prefix up to ``until``, a pos or a recorded time) into a new
    database and atomically replace ``db_path`` with it.

    Raises RebuildCheckFailed (old file kept) if the new database fails its checks, and
    the errors of ``catch_up`` for a log the projection cannot follow. ``checked=False``
    skips those checks, for a caller that runs ``verify`` on the result at once (it makes
    every one of them, and more) and does not depend on the old file being kept.
    ``witness``: verify's fold of the log, made on the events this rebuild reads (see
    ``LogWitness``; only the bulk path, without ``until``, makes it).
    """
    db = os.fspath(db_path)
    tmp = f"{db}.rebuild"
    check_paths(log_path, db)
    check_ours(tmp)
    remove_database(tmp)  # a build that crashed earlier
    stop = Until.of(until)  # a bad ``until`` fails before any work
    result: CatchUpResult | None = None
    if witness is not None and stop is not None:
        witness.discard()  # a prefix is not the log
        witness = None
    if not quarantine and os.path.exists(log_path):
        result = _bulk(tmp, os.fspath(log_path), stop, progress, checked, witness)
    if result is None:
        if witness is not None:
            witness.discard()
        result = _incremental(tmp, log_path, until, progress, quarantine, checked)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        sessions = int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
        conn.execute("PRAGMA journal_mode = DELETE")
    except BaseException:
        conn.close()
        remove_database(tmp)
        raise
    conn.close()
    _fsync_file(tmp)
    _retire(db)
    os.replace(tmp, db)
    # Side files of the old database must not be mistaken for the new one's: a -wal
    # replayed into another file corrupts it. _retire checkpointed and truncated them.
    _remove_side_files(db)
    fsync_directory(os.path.dirname(os.path.abspath(db)))
    return RebuildResult(
        result.events_applied,
        result.last_pos,
        result.end_offset,
        result.torn,
        result.quarantined,
        sessions=sessions,
    )


def _open_new(tmp: str) -> sqlite3.Connection:
    create_private_file(tmp)
    conn = sqlite3.connect(tmp, isolation_level=None)
    # Nothing here is worth a journal on disk: a crash leaves a file that is never used
    # (the next rebuild removes it), so build in memory-journal mode, unsynced.
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(f"PRAGMA cache_size = -{REBUILD_CACHE_KIB}")
    conn.execute("PRAGMA foreign_keys = ON")
    secure_delete(conn)
    return conn


def _bulk(
    tmp: str,
    log_path: str,
    stop: Until | None,
    progress: Progress | None,
    checked: bool,
    witness: LogWitness | None,
) -> CatchUpResult | None:
    """The bulk path into ``tmp``; None when it gives up (``tmp`` removed)."""

    def load(conn: sqlite3.Connection, observer: Observer | None) -> CatchUpResult | None:
        if witness is not None:
            observer = _both(observer, witness.observe) if observer else witness.observe
        before = file_identity(log_path)
        try:
            loaded = bulk_load(conn, log_path, until=stop, progress=progress,
                               observer=observer)  # fmt: skip
        except _BULK_REFUSALS:
            return None
        cp = loaded.checkpoint
        if witness is not None and loaded.examined is not None:
            witness.read_whole(log_path, before, cp.log_pos, loaded.torn, loaded.examined)
        return CatchUpResult(loaded.events_applied, cp.log_pos, cp.log_offset, loaded.torn, 0)

    return _build(tmp, load, checked)


def _both(first: Observer, second: Observer) -> Observer:
    def observe(event: AnyEvent) -> None:
        first(event)
        second(event)

    return observe


def _incremental(
    tmp: str,
    log_path: str | os.PathLike[str],
    until: int | str | datetime | None,
    progress: Progress | None,
    quarantine: bool,
    checked: bool,
) -> CatchUpResult:
    """The incremental path (catch_up through the triggers) into ``tmp``."""
    return _build(
        tmp,
        lambda conn, observer: catch_up(
            conn,
            log_path,
            quarantine=quarantine,
            batch_events=REBUILD_BATCH_EVENTS,
            progress=progress,
            until=until,
            observer=observer,
            bulk=False,  # the path that applies or reports each event, checked or not
        ),
        checked,
    )


_Built = TypeVar("_Built", CatchUpResult, CatchUpResult | None)


def _build(
    tmp: str, load: Callable[[sqlite3.Connection, Observer | None], _Built], checked: bool
) -> _Built:
    """A new database at ``tmp`` with the schema, filled by ``load`` and, if ``checked``,
    checked against a tally of the events ``load`` tells its observer of. Whatever fails,
    or a ``load`` that returns None (gives up), leaves no file behind."""
    tally = LogTally(hashes=False)
    conn = _open_new(tmp)
    try:
        create_schema(conn)
        result = load(conn, tally.observe if checked else None)
        if result is not None and checked:
            problems = quick_checks(conn, tally)
            if problems:
                raise RebuildCheckFailed(problems)
    except BaseException:
        conn.close()
        remove_database(tmp)
        raise
    finally:
        tally.close()
    conn.close()
    if result is None:
        remove_database(tmp)
    return result


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _retire(db: str) -> None:
    """Fold the old database's WAL into it and empty the -wal file before the swap.

    Readers that still have the old file open keep reading it (they hold its inode); new
    readers open the new one. A damaged old file is simply replaced.
    """
    if not os.path.exists(db):
        return
    try:
        old = sqlite3.connect(db, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error:
        pass
    finally:
        old.close()


def quick_checks(conn: sqlite3.Connection, tally: LogTally | None = None) -> list[str]:
    """The checks a new database passes before it replaces the old one."""
    problems = [
        f"quick_check: {row[0]}"
        for row in conn.execute("PRAGMA quick_check").fetchall()
        if row[0] != "ok"
    ]
    problems.extend(f"session {sid!r}: {what}" for sid, what in counter_mismatches(conn, limit=20))
    if tally is not None:
        rows = conn.execute(
            "SELECT session_id, message_count, total_tokens FROM sessions ORDER BY session_id"
        )
        db_counts = ((str(sid), (int(n), int(t))) for sid, n, t in rows)
        expected = ((sid, (t.count, t.tokens)) for sid, t in tally.sessions.items())
        for sid, got, want in merged(db_counts, expected):
            if sid in tally.stale and got is not None and want is not None:
                # Messages withdrawn: the count is known, the tokens are verify's to check.
                got, want = (got[0], 0), (want[0], 0)
            if got != want:
                problems.append(
                    f"session {sid!r}: (messages, tokens) {got} in the database, {want} in the log"
                )
    return problems


# Counters against the rows they count, set-based: one pass over messages.
COUNTER_MISMATCH_SQL: Final = """
SELECT s.session_id, s.message_count, COALESCE(m.n, 0), s.total_tokens, COALESCE(m.t, 0),
       s.total_duration_seconds, COALESCE(m.d, 0.0)
FROM sessions AS s
LEFT JOIN (
    SELECT session_id, count(*) AS n, sum(COALESCE(tokens_used, 0)) AS t,
           total(duration_seconds) AS d
    FROM messages GROUP BY session_id
) AS m ON m.session_id = s.session_id
WHERE s.message_count != COALESCE(m.n, 0)
   OR s.total_tokens != COALESCE(m.t, 0)
   OR abs(s.total_duration_seconds - COALESCE(m.d, 0.0))
      > 1e-9 * max(1.0, abs(COALESCE(m.d, 0.0)))
ORDER BY s.session_id
"""


def counter_mismatches(conn: sqlite3.Connection, limit: int | None = None) -> list[tuple[str, str]]:
    """``(session_id, description)`` for every session whose counters disagree with rows."""
    out: list[tuple[str, str]] = []
    for sid, n, real_n, t, real_t, d, real_d in conn.execute(COUNTER_MISMATCH_SQL):
        parts = []
        if n != real_n:
            parts.append(f"message_count {n} but {real_n} messages")
        if t != real_t:
            parts.append(f"total_tokens {t} but messages hold {real_t}")
        if not parts:
            parts.append(f"total_duration_seconds {d} but messages hold {real_d}")
        out.append((str(sid), ", ".join(parts)))
        if limit is not None and len(out) >= limit:
            break
    return out
