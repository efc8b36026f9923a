"""What the writer accepts, the projector can apply: every time the log records lies in
years 1000 to 9989, so a deadline up to ten years later is still on the calendar; an event
from an older log that is not is a precise error naming its line, never a traceback."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_runner import cli_runner

from journal import InvalidValue, Journal
from journal.events import ModelRegistered, SessionCreated, SessionPaused, encode_line
from journal.validation import EARLIEST, LATEST
from projector import connect, replay
from projector.cli import main
from projector.errors import InvariantViolation
from projector.legacy.importer import import_legacy
from projector.sync.rebuild import rebuild

TS = "2026-01-01T00:00:00.000000Z"

OUT_OF_RANGE = [
    "9999-12-31T12:00:00.000000Z",
    "9990-01-01T00:00:00.000000Z",
    "0999-12-31T23:59:59.999999Z",
    datetime.max.replace(tzinfo=UTC),
    datetime.min.replace(tzinfo=timezone(timedelta(hours=5))),
    datetime(9989, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2))),  # 9990 in UTC
]


@pytest.mark.parametrize("at", OUT_OF_RANGE, ids=str)
def test_a_time_off_the_calendar_is_refused_and_writes_nothing(
    tmp_path: Path, at: datetime | str
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("gpt-4o", session_id="s")
        before = log.read_bytes()
        with pytest.raises(InvalidValue, match="outside the years 1000 to 9989"):
            j.create_session("gpt-4o", session_id="late", at=at)
        with pytest.raises(InvalidValue, match="outside the years 1000 to 9989"):
            j.append_message(sid, "user", "hi", at=at)
        with pytest.raises(InvalidValue, match="outside the years 1000 to 9989"):
            j.expire_due(now=at if isinstance(at, datetime) else datetime.max.replace(tzinfo=UTC))
    assert log.read_bytes() == before


@pytest.mark.parametrize("moment", OUT_OF_RANGE[3:], ids=str)
def test_a_clock_off_the_calendar_is_refused(tmp_path: Path, moment: datetime) -> None:
    log = tmp_path / "s.jsonl"
    with (
        Journal.open(log, clock=lambda: moment) as j,
        pytest.raises(InvalidValue, match=r"the clock's reading .* is outside the years"),
    ):
        j.create_session("gpt-4o", session_id="s")
    assert not log.exists() or log.read_bytes() == b""


@pytest.mark.parametrize("edge", [EARLIEST, LATEST], ids=["earliest", "latest"])
def test_the_edges_of_the_range_project_and_expire(tmp_path: Path, edge: datetime) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(log) as j:
        j.create_session(
            "gpt-4o",
            session_id="s",
            idle_timeout_seconds=10 * 365 * 86400,
            hard_timeout_seconds=10 * 365 * 86400,
            at=edge,
        )
        j.append_message("s", "user", "hi", at=edge)
        j.expire_due(now=edge)
    replay(log, db)
    conn = connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (1,)
    finally:
        conn.close()


def test_append_refuses_a_time_off_the_calendar(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", session_id="s")
    before = log.read_bytes()
    line = '{"type":"session_paused","session_id":"s","at":"9999-12-31T12:00:00.000000Z"}\n'
    result = cli_runner().invoke(main, ["--log", str(log), "append", "-"], input=line)
    assert result.exit_code == 2
    assert "outside the years 1000 to 9989" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert log.read_bytes() == before


def _old_log(path: Path) -> None:
    """A log an earlier version could write: a session created at the calendar's end."""
    events = [
        ModelRegistered(pos=1, id="00000000-0000-4000-8000-000000000001", ts=TS,
                        model_id="m", model_name="M"),
        SessionCreated(pos=2, id="00000000-0000-4000-8000-000000000002", ts=TS,
                       session_id="early", model_id="m"),
        SessionCreated(pos=3, id="00000000-0000-4000-8000-000000000003", ts=TS,
                       at="9999-12-31T12:00:00.000000Z", session_id="late", model_id="m",
                       hard_timeout_seconds=86400),
        SessionPaused(pos=4, id="00000000-0000-4000-8000-000000000004", ts=TS,
                      session_id="early"),
    ]  # fmt: skip
    path.write_bytes(b"".join(map(encode_line, events)))


def test_an_old_event_the_projection_cannot_store_is_named_and_what_precedes_it_kept(
    tmp_path: Path,
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    _old_log(log)
    with pytest.raises(InvariantViolation, match=r"line 3 .*'late'.*past the end of the calendar"):
        replay(log, db)
    conn = connect(db)
    try:  # the events before it are projected: the model and the first session
        assert conn.execute("SELECT session_id FROM sessions").fetchall() == [("early",)]
        assert conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone() == (2,)
    finally:
        conn.close()
    with pytest.raises(InvariantViolation, match="line 3"):
        rebuild(log, tmp_path / "other.db")
    result = cli_runner().invoke(main, ["--log", str(log), "--db", str(db), "replay"])
    assert result.exit_code == 1
    assert "line 3" in result.stderr and "Traceback" not in result.output + result.stderr


def test_a_writer_opens_such_an_old_log_and_expires_without_error(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    _old_log(log)
    with Journal.open(log) as j:
        assert j.expire_due(now=datetime(2026, 6, 1, tzinfo=UTC)) is not None


def test_the_importer_flags_a_time_off_the_calendar_and_projects(tmp_path: Path) -> None:
    import sqlite3
    from contextlib import closing

    old = tmp_path / "old.db"
    with closing(sqlite3.connect(old)) as conn:
        conn.executescript(
            "CREATE TABLE sessions (session_id TEXT, created_at TEXT, model_id TEXT);"
            "CREATE TABLE messages (session_id TEXT, sequence_number INTEGER, role TEXT, "
            "content TEXT, timestamp TEXT);"
            "INSERT INTO sessions VALUES ('s', '9999-12-31 23:59:59', 'gpt-4o');"
            "INSERT INTO messages VALUES ('s', 1, 'user', 'hi', '9999-12-31 23:59:59');"
        )
        conn.commit()
    report = import_legacy(old, tmp_path / "s.jsonl", tmp_path / "s.db")
    assert report.ok
    assert "timestamp_out_of_range" in report.anomaly_counts


def test_a_writer_records_nothing_after_a_record_dated_past_the_range(tmp_path: Path) -> None:
    """A crafted (or very old) last record dated 9999: a new record could only be dated
    after it, out of the range; the writer refuses instead of copying that date."""
    log = tmp_path / "s.jsonl"
    events = [
        ModelRegistered(pos=1, id="00000000-0000-4000-8000-000000000001", ts=TS,
                        model_id="m", model_name="M"),
        SessionCreated(pos=2, id="00000000-0000-4000-8000-000000000002",
                       ts="9999-12-31T23:59:59.000000Z", session_id="s", model_id="m"),
    ]  # fmt: skip
    log.write_bytes(b"".join(map(encode_line, events)))
    before = log.read_bytes()
    with Journal.open(log) as j:
        with pytest.raises(InvalidValue, match="last record is dated 9999-12-31"):
            j.append_message("s", "user", "hi")
        with pytest.raises(InvalidValue, match="last record is dated 9999-12-31"):
            j.pause("s")
    assert log.read_bytes() == before
