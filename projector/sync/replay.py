"""replay: bring a database up to date with its log, rebuilding it when it cannot follow.

The one entry point that chooses between the two ways of projecting: ``catch_up`` in place
from the checkpoint, or ``rebuild`` from the start when the database is of another schema
version, unreadable (but provably a projection), or its checkpoint is not on this log.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass

from projector.db import (
    check_paths,
    connect,
    create_schema,
    is_empty,
    schema_version,
    user_version,
)
from projector.errors import CheckpointMismatch
from projector.sync.catchup import (
    DEFAULT_BATCH_EVENTS,
    CatchUpResult,
    Progress,
    catch_up,
)
from projector.sync.rebuild import rebuild


@dataclass(frozen=True)
class ReplayResult(CatchUpResult):
    """What ``replay`` did; ``rebuilt`` says whether it had to rebuild, and why."""

    rebuilt: bool = False
    rebuild_reason: str | None = None


def replay(
    log_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    quarantine: bool = False,
    batch_events: int = DEFAULT_BATCH_EVENTS,
    progress: Progress | None = None,
) -> ReplayResult:
    """Bring the database at ``db_path`` up to date with the log, creating it if missing.

    A database of another schema version, or whose checkpoint is not on this log, is
    rebuilt from the log instead (``rebuilt=True`` in the result, with the reason).
    """
    check_paths(log_path, db_path)
    outcome = _catch_up_in_place(log_path, db_path, quarantine, batch_events, progress)
    if isinstance(outcome, CatchUpResult):
        r = outcome
        return ReplayResult(
            r.events_applied, r.last_pos, r.end_offset, r.torn, r.quarantined, r.scrub_pending
        )
    built = rebuild(log_path, db_path, progress=progress, quarantine=quarantine)
    return ReplayResult(
        built.events_applied,
        built.last_pos,
        built.end_offset,
        built.torn,
        built.quarantined,
        rebuilt=True,
        rebuild_reason=outcome,
    )


def _catch_up_in_place(
    log_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    quarantine: bool,
    batch_events: int,
    progress: Progress | None,
) -> CatchUpResult | str:
    """Catch the existing database up; or say why it must be rebuilt instead."""
    try:
        conn = connect(db_path)
    except sqlite3.DatabaseError as exc:  # not a database at all: it is disposable
        return f"{os.fspath(db_path)} is not a readable database ({exc})"
    try:
        if is_empty(conn):
            create_schema(conn)
        if user_version(conn) != schema_version():
            return f"schema version {user_version(conn)} is not the projector's {schema_version()}"
        try:
            return catch_up(
                conn, log_path, quarantine=quarantine, batch_events=batch_events, progress=progress
            )
        except CheckpointMismatch as exc:
            return str(exc)
    except sqlite3.DatabaseError as exc:
        return f"{os.fspath(db_path)} is not a readable database ({exc})"
    finally:
        conn.close()
