"""verify finds each kind of damage, and names where it is."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from projection_helpers import execute, known_workload, random_ops, rows, run_workload

from journal import Journal
from journal.events import decode_line, encode_line
from projector import rebuild, replay, verify
from projector.verify import LogAhead


@pytest.fixture
def projected(tmp_path: Path) -> tuple[Path, Path]:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    return log, db


def kinds(log: Path, db: Path) -> set[tuple[str, str | None]]:
    report = verify(log, db)
    assert not report.ok
    return {(p.kind, p.session_id) for p in report.problems}


def test_clean_projection_is_ok_and_status_is_recorded(projected: tuple[Path, Path]) -> None:
    log, db = projected
    report = verify(log, db)
    assert report.ok and report.problems == [] and report.sessions_checked == 3
    assert rows(db, "SELECT DISTINCT integrity_status FROM sessions") == [("ok",)]
    assert rows(db, "SELECT count(*) FROM sessions WHERE integrity_checked_at IS NULL") == [(0,)]


def test_counter_edited(projected: tuple[Path, Path]) -> None:
    log, db = projected
    execute(db, "UPDATE sessions SET total_tokens = total_tokens + 1 WHERE session_id = 'a'")
    assert ("counter", "a") in kinds(log, db)
    assert rows(db, "SELECT session_id, integrity_status FROM sessions ORDER BY 1") == [
        ("a", "problems"), ("b", "ok"), ("c", "ok")
    ]  # fmt: skip


def test_message_deleted(projected: tuple[Path, Path]) -> None:
    log, db = projected
    execute(db, "DROP TRIGGER update_message_count_delete")
    execute(db, "DELETE FROM messages WHERE session_id = 'b' AND sequence_number = 2")
    found = kinds(log, db)
    assert {("counter", "b"), ("sequence", "b"), ("log_mismatch", "b")} <= found


def test_message_edited(projected: tuple[Path, Path]) -> None:
    log, db = projected
    execute(db, "UPDATE messages SET content = 'forged' WHERE session_id = 'a' "
                "AND sequence_number = 2")  # fmt: skip
    found = kinds(log, db)
    assert ("log_mismatch", "a") in found and ("fts", "a") in found


def test_log_line_edited(projected: tuple[Path, Path]) -> None:
    log, db = projected
    data = log.read_bytes()
    at = data.index(b"Leek soup")
    log.write_bytes(data[:at] + b"Leak" + data[at + 4 :])
    report = verify(log, db)
    bad = [p for p in report.problems if p.kind == "log"]
    assert bad and bad[0].line is not None and bad[0].offset is not None
    assert "checksum" in str(bad[0])


def test_log_truncated_below_checkpoint(projected: tuple[Path, Path]) -> None:
    log, db = projected
    data = log.read_bytes()
    log.write_bytes(data[: data.rindex(b"\n", 0, len(data) - 1) + 1])
    found = kinds(log, db)
    assert ("checkpoint", None) in found


def test_fts_row_removed_and_timeouts_desynced(projected: tuple[Path, Path]) -> None:
    log, db = projected
    execute(db, "DELETE FROM sessions_fts WHERE rowid = (SELECT min(message_id) FROM messages)")
    execute(db, "UPDATE session_timeouts SET idle_timeout_seconds = 1 WHERE session_id = 'b'")
    found = kinds(log, db)
    assert ("fts", "a") in found and ("timeouts", "b") in found


def test_missing_database(tmp_path: Path) -> None:
    report = verify(tmp_path / "log.jsonl", tmp_path / "none.db")
    assert not report.ok and "does not exist" in str(report.problems[0])


def test_verify_reports_progress_through_the_log(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    run_workload(log, random_ops(9, 60))
    replay(log, db)
    seen: list[tuple[int, int]] = []
    assert verify(log, db, progress=lambda done, total: seen.append((done, total))).ok
    size = log.stat().st_size
    assert seen and seen[-1] == (size, size)
    assert all(done <= total == size for done, total in seen)


def append_with_id_of(log: Path, index: int) -> int:
    """Append a whole, well-formed line that reuses the id of line ``index``; its pos."""
    lines = log.read_bytes().splitlines()
    earlier, last = decode_line(lines[index]), decode_line(lines[-1])
    again = msgspec.structs.replace(last, pos=last.pos + 1, id=earlier.id, grp=msgspec.UNSET)
    with log.open("ab") as f:
        f.write(encode_line(again))
    return again.pos


def used_twice(log: Path, db: Path) -> list[tuple[str, int | None]]:
    return [(str(p), p.line) for p in verify(log, db).problems if "used twice" in p.message]


def test_event_id_used_twice(projected: tuple[Path, Path]) -> None:
    log, db = projected
    first_id = decode_line(log.read_bytes().splitlines()[0]).id
    pos = append_with_id_of(log, 0)
    assert used_twice(log, db) == [(f"[log] line {pos}: event id {first_id} is used twice", pos)]
    again = append_with_id_of(log, 0)  # a third use is reported too, at its own line
    assert [line for _, line in used_twice(log, db)] == [pos, again]


def test_ids_that_only_share_a_fingerprint_are_not_repeats(
    projected: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every id with the same fingerprint: all suspects, and the ids themselves decide.
    module = importlib.import_module("projector.verify")  # the package exports the function
    monkeypatch.setattr(module, "_fingerprint", lambda event_id: 0)
    log, db = projected
    assert verify(log, db).ok
    pos = append_with_id_of(log, 3)
    assert [line for _, line in used_twice(log, db)] == [pos]


@pytest.mark.parametrize("build", ["replay", "rebuild"])
def test_a_negative_zero_duration_verifies(tmp_path: Path, build: str) -> None:
    """-0.0 passes the writer's check (it is not below 0); SQLite stores it as 0.0."""
    import projector
    from journal import Journal

    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    with Journal.open(log, "none") as j:
        sid = j.create_session("m", session_id="s")
        j.append_message(sid, "assistant", "hi", duration_seconds=-0.0)
    assert b'"duration_seconds":-0.0' in log.read_bytes()
    getattr(projector, build)(log, db)
    report = verify(log, db)
    assert report.ok, report.problems


def test_an_unreadable_or_stale_database_is_reported_not_checked(
    projected: tuple[Path, Path],
) -> None:
    log, db = projected
    execute(db, "PRAGMA user_version = 12345")
    report = verify(log, db)
    assert [p.kind for p in report.problems] == ["schema"]
    assert "schema version 12345" in str(report.problems[0])
    db.unlink()
    db.write_bytes(b"this is not a database, but it is long enough to have a header" * 100)
    report = verify(log, db)
    assert [p.kind for p in report.problems] == ["database"]
    assert "not a readable database" in str(report.problems[0])


@pytest.fixture
def log_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reading of the log by verify's log check."""
    module = importlib.import_module("projector.verify")
    real, reads = module._check_log, []

    def counted(log: str, *args: Any) -> Any:
        reads.append(log)
        return real(log, *args)

    monkeypatch.setattr(module, "_check_log", counted)
    return reads


def test_a_log_check_started_ahead_of_the_build_is_used(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    ahead = LogAhead(log)
    rebuild(log, db, checked=False)
    report = verify(log, db, ahead=ahead)
    assert report.ok and report.sessions_checked == 3 and len(log_reads) == 1


def test_a_log_check_ahead_reports_what_verify_reports(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    data = log.read_bytes()
    at = data.index(b"Leek soup")
    log.write_bytes(data[:at] + b"Leak" + data[at + 4 :])  # a line below the checkpoint
    plain = verify(log, db)
    early = verify(log, db, ahead=LogAhead(log))
    assert len(log_reads) == 2  # one each: the early one was used
    assert [str(p) for p in early.problems] == [str(p) for p in plain.problems]
    assert any("checksum" in str(p) for p in early.problems)


def test_a_log_that_grew_after_the_check_ahead_is_read_again(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    ahead = LogAhead(log)
    ahead.close()  # it has read the log as it was
    with Journal.open(log, "none") as j:
        j.append_message("a", "user", "one more")
    rebuild(log, db, checked=False)  # the checkpoint is past what the check read
    assert verify(log, db, ahead=ahead).ok and len(log_reads) == 2

    ahead = LogAhead(log)
    ahead.close()
    with log.open("ab") as f:
        f.write(b'{"pos":')  # a torn tail after both the check and the build
    report = verify(log, db, ahead=ahead)
    assert len(log_reads) == 4  # read again, so the tail is seen
    assert [p.kind for p in report.problems] == ["log"] and "torn tail" in str(report.problems[0])
