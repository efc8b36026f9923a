"""The rules the per-event path leaves to triggers are the ones projector.rules states.

The bulk fold follows ``rules.status_after_message``, ``rules.NOT_WARNED`` and
``rules.takes_pre_archive``; schema/30_triggers.sql carries out the same rules on the
per-event path. Here each trigger is run from every status and compared with its rule.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from itertools import product

import pytest
from projection_helpers import REPO

from projector.db import create_schema
from projector.rules import session_rows as rules
from projector.rules.message_rows import INSERT_MESSAGE_SQL

TS = "2026-03-01T09:00:00.000000Z"
LATER = "2026-03-01T09:05:00.000000Z"


def statuses() -> list[str]:
    """The statuses the sessions table allows, read from its CHECK."""
    tables = (REPO / "schema" / "10_tables.sql").read_text(encoding="utf-8")
    found = re.search(r"CHECK \(status IN \(([^)]*)\)\)", tables)
    assert found is not None
    return re.findall(r"'(\w+)'", found.group(1))


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    create_schema(conn)
    conn.execute(
        "INSERT INTO models (model_id, model_name, created_at) VALUES ('m', 'M', ?)", (TS,)
    )
    yield conn
    conn.close()


def session(conn: sqlite3.Connection, sid: str, status: str) -> None:
    """A session in ``status``, warned."""
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, updated_at, model_id, last_activity, "
        "status, last_event_pos) VALUES (?, ?, ?, 'm', ?, ?, 1)",
        (sid, TS, TS, TS, status),
    )
    conn.execute(
        "UPDATE session_timeouts SET timeout_warning_sent = ?, warning_sent_at = ? "
        "WHERE session_id = ?",
        (*rules.warned(TS), sid),
    )


def warning(conn: sqlite3.Connection, sid: str) -> tuple[object, ...]:
    return tuple(
        conn.execute(
            "SELECT timeout_warning_sent, warning_sent_at FROM session_timeouts "
            "WHERE session_id = ?",
            (sid,),
        ).fetchone()
    )


def test_the_statuses_are_known() -> None:
    assert set(statuses()) == {"active", "idle", "paused", "archived", "expired"}


def test_a_message_wakes_and_clears_as_the_rules_say(db: sqlite3.Connection) -> None:
    for n, status in enumerate(statuses()):
        sid = f"s{n}"
        session(db, sid, status)
        row = (10 + n, sid, 1, "user", "hi", LATER, None, None, None, None, None, None)
        db.execute(INSERT_MESSAGE_SQL, row)
        got = db.execute("SELECT status FROM sessions WHERE session_id = ?", (sid,)).fetchone()
        assert got[0] == rules.status_after_message(status), status
        assert warning(db, sid) == rules.NOT_WARNED


def test_new_activity_clears_the_warning(db: sqlite3.Connection) -> None:
    session(db, "s", "active")
    db.execute("UPDATE sessions SET title = 't' WHERE session_id = 's'")
    assert warning(db, "s") == rules.warned(TS)  # other columns leave it
    db.execute("UPDATE sessions SET last_activity = ? WHERE session_id = 's'", (LATER,))
    assert warning(db, "s") == rules.NOT_WARNED


def test_the_pre_archive_snapshot_is_taken_as_the_rules_say(db: sqlite3.Connection) -> None:
    for n, (old, new) in enumerate(product(statuses(), repeat=2)):
        sid = f"s{n}"
        session(db, sid, old)
        db.execute(
            "UPDATE sessions SET status = ?, updated_at = ?, last_event_pos = ? "
            "WHERE session_id = ?",
            (new, LATER, 100 + n, sid),
        )
        taken = db.execute(
            "SELECT count(*) FROM session_snapshots WHERE session_id = ?", (sid,)
        ).fetchone()[0]
        assert taken == rules.takes_pre_archive(old, new), (old, new)
