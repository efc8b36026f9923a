"""Each of the seed's eleven defects (DESIGN.md, "The projection"), shown on the seed's
schema and fixed in ours. Every test runs twice: on the seed's version it is a strict
xfail (it must fail there, or the suite fails), on ours it must pass. The seed's SQL is
the copy in tests/seed_schema.sql; a last test keeps that copy equal to the source."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from projection_helpers import SEED_SCHEMA, SEED_SOURCE, our_conn, seed_conn

from journal.events import SessionSnapshotted, format_ts
from projector.checks.verify import SEQUENCE_GAPS_SQL
from projector.rules.apply import apply_event, fill_fts

SEED = pytest.param("seed", marks=pytest.mark.xfail(strict=True, reason="the seed's defect"))
SCHEMAS = [SEED, "ours"]
TS = "2026-03-01T09:00:00.000000Z"


@pytest.fixture(params=SCHEMAS)
def db(request: pytest.FixtureRequest) -> Iterator[sqlite3.Connection]:
    conn = seed_conn() if request.param == "seed" else our_conn()
    yield conn
    conn.close()


def ts(seconds: float) -> str:
    return format_ts(datetime(2026, 3, 1, 9, tzinfo=UTC) + timedelta(seconds=seconds))


def add_session(conn: sqlite3.Connection, sid: str, model: str = "m", **cols: object) -> None:
    """Insert a session with every time column given (both schemas take these columns)."""
    conn.execute(
        "INSERT OR IGNORE INTO models (model_id, model_name, created_at) VALUES (?, ?, ?)",
        (model, model.upper(), TS),
    )
    values: dict[str, object] = {
        "session_id": sid, "model_id": model, "model_name": model.upper(), "title": "t",
        "created_at": TS, "updated_at": TS, "last_activity": TS, "last_event_pos": 1,
        "idle_timeout_seconds": 3600, "hard_timeout_seconds": 86400,
    }  # fmt: skip
    values.update(cols)
    names = [n for n in values if n != "last_event_pos" or _has(conn, "sessions", n)]
    conn.execute(
        f"INSERT INTO sessions ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
        [values[n] for n in names],
    )


def _has(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


_next_id = iter(range(1_000_000, 10_000_000))


def add_message(
    conn: sqlite3.Connection, sid: str, seq: int, content: str = "hello", tokens: int = 1
) -> None:
    conn.execute(
        "INSERT INTO messages (message_id, session_id, sequence_number, role, content, "
        "timestamp, tokens_used, duration_seconds) VALUES (?, ?, ?, 'user', ?, ?, ?, 0.5)",
        (next(_next_id), sid, seq, content, ts(seq), tokens),
    )


def vm_steps(conn: sqlite3.Connection, action: Callable[[], object]) -> int:
    """SQLite virtual-machine steps an action takes (deterministic work, not time)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        action()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


# 1 --------------------------------------------------------------------------------------
def test_1_message_counter_is_constant_work_per_insert(db: sqlite3.Connection) -> None:
    add_session(db, "s")
    for seq in range(1, 2001):
        add_message(db, "s", seq)
    small = vm_steps(db, lambda: add_message(db, "s", 2001))
    for seq in range(2002, 6001):
        add_message(db, "s", seq)
    large = vm_steps(db, lambda: add_message(db, "s", 6001))
    # COUNT(*) per insert reads every message of the session: 3x the messages, ~3x the work.
    assert large < small * 1.5
    assert db.execute("SELECT message_count FROM sessions").fetchone()[0] == 6001


# 2 --------------------------------------------------------------------------------------
def test_2_no_trigger_rewrites_sessions_or_reads_the_clock(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA recursive_triggers = ON")
    add_session(db, "s")
    db.execute("UPDATE sessions SET title = 'x', updated_at = ? WHERE session_id = 's'", (ts(5),))
    assert db.execute("SELECT updated_at FROM sessions").fetchone()[0] == ts(5)


# 3 --------------------------------------------------------------------------------------
def test_3_deleting_a_model_detaches_its_sessions(db: sqlite3.Connection) -> None:
    add_session(db, "s", model="old")
    db.execute("DELETE FROM models WHERE model_id = 'old'")
    assert db.execute("SELECT model_id FROM sessions").fetchone()[0] is None


# 4 --------------------------------------------------------------------------------------
def test_4_statistics_count_messages(db: sqlite3.Connection) -> None:
    for sid in ("s1", "s2"):
        add_session(db, sid)
        for seq in (1, 2, 3):
            add_message(db, sid, seq)
    row = db.execute("SELECT session_count, total_messages FROM session_statistics").fetchone()
    assert row == (2, 6)


# 5 --------------------------------------------------------------------------------------
def test_5_full_text_index_follows_messages(db: sqlite3.Connection) -> None:
    add_session(db, "s", title="Holidays")
    add_message(db, "s", 1, content="a trip to Lisbon")
    if _has(db, "sessions", "last_event_pos"):  # ours: the projector's per-batch step
        fill_fts(db, 0)
    hits = "SELECT session_id FROM sessions_fts WHERE sessions_fts MATCH ?"
    assert db.execute(hits, ("lisbon",)).fetchall() == [("s",)]
    db.execute("DELETE FROM sessions WHERE session_id = 's'")
    assert db.execute(hits, ("lisbon",)).fetchall() == []


# 6 --------------------------------------------------------------------------------------
def test_6_timeout_settings_stay_equal_in_both_tables(db: sqlite3.Connection) -> None:
    add_session(db, "s", expires_at=ts(86400))
    db.execute(
        "UPDATE sessions SET idle_timeout_seconds = 60, expires_at = ? WHERE session_id = 's'",
        (ts(100),),
    )
    row = db.execute(
        "SELECT t.idle_timeout_seconds, t.hard_timeout_seconds, t.expires_at "
        "FROM session_timeouts t WHERE session_id = 's'"
    ).fetchone()
    assert row == (60, 86400, ts(100))


# 7 --------------------------------------------------------------------------------------
def _indexes(conn: sqlite3.Connection) -> dict[str, tuple[str, list[str]]]:
    out = {}
    for name, table in conn.execute(
        "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'"
    ).fetchall():
        cols = [str(r[2]) for r in conn.execute(f"PRAGMA index_info('{name}')")]
        out[name] = (table, cols)
    return out


def test_7_no_redundant_or_churning_index(db: sqlite3.Connection) -> None:
    indexes = _indexes(db)
    for name, (table, cols) in indexes.items():
        for other, (other_table, other_cols) in indexes.items():
            if other != name and table == other_table:
                # an index that is a prefix of another serves nothing the other does not
                assert other_cols[: len(cols)] != cols, f"{name} duplicates {other}"
        # counters change on every message: an index over them is rewritten every time
        assert not {"message_count", "total_tokens", "total_duration_seconds"} & set(cols), name


def test_7_recent_sessions_uses_its_index() -> None:
    conn = our_conn()
    try:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT * FROM sessions WHERE status IN ('active', 'idle') "
            "ORDER BY last_activity DESC"
        ).fetchall()
    finally:
        conn.close()
    assert any("idx_sessions_status_activity" in str(r[-1]) for r in plan)


# 8 --------------------------------------------------------------------------------------
def test_8_timeout_view_compares_times_not_text(db: sqlite3.Connection) -> None:
    # Deadlines a second ago and an hour ago, written in the log's format.
    now = datetime.now(UTC)
    add_session(db, "hard", expires_at=format_ts(now - timedelta(seconds=1)),
                last_activity=format_ts(now))  # fmt: skip
    add_session(db, "fine", expires_at=format_ts(now + timedelta(hours=1)),
                last_activity=format_ts(now))  # fmt: skip
    if (
        _has(db, "session_timeouts", "expires_at")
        and db.execute("SELECT count(*) FROM session_timeouts").fetchone()[0] == 0
    ):  # the seed keeps no session_timeouts rows of its own
        db.execute(
            "INSERT INTO session_timeouts (session_id, idle_timeout_seconds, expires_at) "
            "SELECT session_id, idle_timeout_seconds, expires_at FROM sessions"
        )
    status = dict(db.execute("SELECT session_id, timeout_status FROM sessions_at_timeout"))
    assert status == {"hard": "hard_timeout", "fine": "ok"}


def test_8_one_timestamp_format_is_enforced(db: sqlite3.Connection) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        add_session(db, "s", last_activity="2026-03-01 09:00:00")  # CURRENT_TIMESTAMP's


# 9 --------------------------------------------------------------------------------------
def seed_snapshot(conn: sqlite3.Connection, session_id: str, reason: str) -> None:
    """The seed's snapshot_session_before_timeout, reduced to its INSERT."""
    s = conn.execute(
        "SELECT message_count, total_tokens FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    conn.execute(
        "INSERT INTO session_snapshots (session_id, snapshot_type, message_count, "
        "total_tokens, context_json) VALUES (?, 'timeout_warning', ?, ?, ?)",
        (session_id, s[0], s[1], "{}"),
    )


def our_snapshot(conn: sqlite3.Connection, session_id: str, reason: str) -> None:
    conn.execute("BEGIN")
    apply_event(
        conn,
        SessionSnapshotted(session_id=session_id, reason=reason, pos=99, ts=TS),  # type: ignore[arg-type]
    )
    conn.execute("COMMIT")


@pytest.mark.parametrize("which", SCHEMAS)
def test_9_snapshot_type_is_the_reason(which: str) -> None:
    conn = seed_conn() if which == "seed" else our_conn()
    try:
        add_session(conn, "s")
        (seed_snapshot if which == "seed" else our_snapshot)(conn, "s", "checkpoint")
        assert conn.execute("SELECT snapshot_type FROM session_snapshots").fetchone()[0] == (
            "checkpoint"
        )
    finally:
        conn.close()


# 10 -------------------------------------------------------------------------------------
SEED_SEQUENCE_CHECK = """
SELECT m1.sequence_number,
       (SELECT COUNT(*) FROM messages m2 WHERE m2.session_id = m1.session_id
        AND m2.sequence_number <= m1.sequence_number) AS expected_seq
FROM messages m1 WHERE m1.session_id = ? ORDER BY m1.sequence_number
"""


@pytest.mark.parametrize("which", SCHEMAS)
def test_10_sequence_check_is_linear(which: str) -> None:
    conn = our_conn()
    try:
        conn.execute("DROP TRIGGER messages_seq_check")  # to plant a gap
        add_session(conn, "s")

        def check() -> list[tuple[int, int]]:
            if which == "seed":
                rows = conn.execute(SEED_SEQUENCE_CHECK, ("s",)).fetchall()
                return [(r[0], r[1]) for r in rows if r[0] != r[1]]
            return [(r[1], r[2]) for r in conn.execute(SEQUENCE_GAPS_SQL)]

        for seq in range(1, 301):
            add_message(conn, "s", seq + (seq > 150))  # seq 151 is missing
        small = vm_steps(conn, check)
        assert check()[0] == (152, 151)
        for seq in range(301, 1201):
            add_message(conn, "s", seq + 1)
        large = vm_steps(conn, check)
        # 4x the messages: linear work grows ~4x (plus a sort), quadratic ~16x.
        assert large < small * 6
    finally:
        conn.close()


# 11 -------------------------------------------------------------------------------------
def test_11_pre_delete_snapshot_outlives_the_deletion(db: sqlite3.Connection) -> None:
    add_session(db, "s")
    add_message(db, "s", 1)
    db.execute(
        "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
        "message_count, total_tokens, context_json, created_at) "
        "VALUES (7, 's', 'pre_delete', ?, 1, 1, '{}', ?)",
        (TS, TS),
    )
    db.execute("DELETE FROM sessions WHERE session_id = 's'")
    assert db.execute("SELECT snapshot_type FROM session_snapshots").fetchall() == [("pre_delete",)]


# the copy --------------------------------------------------------------------------------
def test_seed_copy_matches_the_source() -> None:
    if not SEED_SOURCE.exists():
        pytest.skip(f"{SEED_SOURCE} is not beside this checkout")
    source = SEED_SOURCE.read_text(encoding="utf-8")
    assert SEED_SCHEMA.read_text(encoding="utf-8") in source
    assert "CREATE TRIGGER update_sessions_timestamp" in SEED_SCHEMA.read_text(encoding="utf-8")
