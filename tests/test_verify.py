"""verify finds each kind of damage, and names where it is."""

from __future__ import annotations

import importlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from projection_helpers import execute, known_workload, random_ops, rows, run_workload

from journal import Journal
from journal.events import decode_line, encode_line
from projector import connect, rebuild, replay, verify
from projector.checks.findings import Findings
from projector.checks.logfold import LogWitness
from projector.checks.verify_log import check_log
from projector.errors import ForeignFile


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
    module = importlib.import_module("projector.checks.idcheck")
    monkeypatch.setattr(module, "fingerprint", lambda event_id: 0)
    log, db = projected
    assert verify(log, db).ok
    pos = append_with_id_of(log, 3)
    assert [line for _, line in used_twice(log, db)] == [pos]


@pytest.mark.parametrize("build", ["replay", "rebuild"])
def test_a_negative_zero_duration_verifies(tmp_path: Path, build: str) -> None:
    """-0.0 passes the writer's check (it is not below 0); SQLite stores it as 0.0."""
    import projector

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
    execute(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    header = db.read_bytes()[:100]  # a projection's header, the rest destroyed
    db.unlink()
    db.write_bytes(header + b"this is not a database any more" * 100)
    report = verify(log, db)
    assert [p.kind for p in report.problems] == ["database"]
    assert "not a readable database" in str(report.problems[0])
    db.write_bytes(b"this is not a database, but it is long enough to have a header" * 100)
    with pytest.raises(ForeignFile, match="is not a SQLite database"):
        verify(log, db)  # not a projection at all: a wrong path, not a damaged projection


@pytest.fixture
def log_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every reading of the log by verify's log check."""
    module = importlib.import_module("projector.checks.verify")
    real, reads = module.check_log, []

    def counted(log: str, *args: Any) -> Any:
        reads.append(log)
        return real(log, *args)

    monkeypatch.setattr(module, "check_log", counted)
    return reads


def test_a_rebuilds_witness_stands_for_reading_the_log(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    append_with_id_of(log, 2)  # an id used twice: reported from the witness too
    with log.open("ab") as f:
        f.write(b'{"pos":')  # and a torn tail
    witness = LogWitness()
    rebuild(log, db, checked=False, witness=witness)
    plain = verify(log, db)
    assert len(log_reads) == 1
    witnessed = verify(log, db, witness=witness)
    assert len(log_reads) == 1  # the witness was used: no second reading
    assert [str(p) for p in witnessed.problems] == [str(p) for p in plain.problems]
    assert {p.kind for p in plain.problems} == {"log"} and len(plain.problems) == 2
    folded = {sid: (t.count, t.tokens, t.content_hash) for sid, t in witness.tally.sessions.items()}
    tally = check_log(str(log), 10**9, Findings(), None)[0]
    assert folded == {sid: (t.count, t.tokens, t.content_hash) for sid, t in tally.sessions.items()}


def built_with_witness(tmp_path: Path) -> tuple[Path, Path, LogWitness]:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    witness = LogWitness()
    rebuild(log, db, checked=False, witness=witness)
    return log, db, witness


def test_a_witness_of_another_log_than_the_one_verified_is_not_used(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db, witness = built_with_witness(tmp_path)
    with log.open("ab") as f:
        f.write(b'{"pos":')  # the log grew after the rebuild read it
    report = verify(log, db, witness=witness)
    assert len(log_reads) == 1  # read again, so the tail is seen
    assert [p.kind for p in report.problems] == ["log"] and "torn tail" in str(report.problems[0])


def test_a_witness_of_the_log_before_an_edit_in_place_is_not_used(
    tmp_path: Path, log_reads: list[str]
) -> None:
    log, db, witness = built_with_witness(tmp_path)
    time.sleep(0.05)  # past the file system's clock tick: the edit gets a new mtime
    data = log.read_bytes()
    at = data.index(b"Leek soup")
    log.write_bytes(data[:at] + b"Leak" + data[at + 4 :])  # same size, one byte changed
    report = verify(log, db, witness=witness)
    assert len(log_reads) == 1 and any("checksum" in str(p) for p in report.problems)


def test_a_witness_of_a_log_edited_while_the_rebuild_read_it_is_not_used(
    tmp_path: Path, log_reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    rebuild_module = importlib.import_module("projector.sync.rebuild")
    real_load = rebuild_module.bulk_load

    def edited_as_it_is_read(*args: Any, **kwargs: Any) -> Any:
        loaded = real_load(*args, **kwargs)
        time.sleep(0.05)  # past the file system's clock tick: the edit gets a new mtime
        data = log.read_bytes()
        at = data.index(b"Leek soup")
        log.write_bytes(data[:at] + b"Leak" + data[at + 4 :])  # same size
        return loaded

    monkeypatch.setattr(rebuild_module, "bulk_load", edited_as_it_is_read)
    witness = LogWitness()
    rebuild(log, db, checked=False, witness=witness)
    report = verify(log, db, witness=witness)
    assert len(log_reads) == 1 and any("checksum" in str(p) for p in report.problems)


@pytest.mark.parametrize("option", ["until", "quarantine"])
def test_a_rebuild_that_did_not_read_the_whole_log_in_bulk_has_no_witness(
    tmp_path: Path, log_reads: list[str], option: str
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    witness = LogWitness()
    options: dict[str, Any] = {"until": 4} if option == "until" else {"quarantine": True}
    rebuild(log, db, witness=witness, **options)
    verify(log, db, witness=witness)
    assert len(log_reads) == 1


def test_a_full_text_index_without_its_content_is_reported_not_raised(
    projected: tuple[Path, Path],
) -> None:
    log, db = projected
    execute(db, "DROP TABLE sessions_fts_content")
    problems = [str(p) for p in verify(log, db).problems if p.kind == "fts"]
    assert any("full-text index is damaged" in p for p in problems)
    assert any("content cannot be read" in p and "sessions_fts_content" in p for p in problems)


def test_a_stale_text_in_the_full_text_index_is_found(projected: tuple[Path, Path]) -> None:
    log, db = projected
    execute(
        db,
        "UPDATE sessions_fts SET content = 'edited' WHERE rowid = "
        "(SELECT max(message_id) FROM messages WHERE session_id = 'b')",
    )
    assert ("fts", "b") in kinds(log, db)


def test_a_database_made_but_not_yet_projected_is_behind_not_wrong(tmp_path: Path) -> None:
    """What verify sees while a first replay or watch has made the file and not yet
    committed its schema: nothing projected, every event of the log still to come."""
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    connect(db).close()  # the empty file a first catch-up starts from
    report = verify(log, db)
    assert report.ok, report.problems
    assert (report.checkpoint_pos, report.sessions_checked) == (0, 0)
    assert report.log_last_pos == len(log.read_bytes().splitlines())
    with log.open("ab") as f:
        f.write(b"garbage in the middle\n")
    known_workload(tmp_path / "more.jsonl")
    with log.open("ab") as f:
        f.write((tmp_path / "more.jsonl").read_bytes())
    assert not verify(log, db).ok  # the log itself is still checked


def test_fts_check_waits_for_a_busy_writer_and_says_when_it_could_not_run(
    projected: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTS5's own check needs the write lock, which a live projector holds while it
    commits: a busy database is waited for, and never reported as damage."""
    log, db = projected
    db_module = importlib.import_module("projector.db")
    verify_module = importlib.import_module("projector.checks.verify")
    monkeypatch.setattr(db_module, "BUSY_TIMEOUT_MS", 20)  # each try gives up quickly
    monkeypatch.setattr(verify_module, "_BUSY_WAIT_SECONDS", 5.0)
    writer = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a batch being committed
        release = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
        release.start()
        report = verify(log, db)
        release.join()
        assert report.ok, report.problems  # waited across several busy tries
        monkeypatch.setattr(verify_module, "_BUSY_WAIT_SECONDS", 0.2)
        writer.execute("BEGIN IMMEDIATE")  # and one that outlasts the wait
        report = verify(log, db)
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert [str(p) for p in report.problems] == [
        "[fts] the full-text index's own check could not run: a writer kept the database "
        "locked for 0.2 s; run verify again"
    ]


def test_a_torn_end_while_a_writer_holds_the_log_is_a_write_in_progress(
    projected: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer appends under an exclusive flock of the log: what looks torn while it holds
    the lock is its write in progress, not a problem; once it lets go, a torn end is."""
    import fcntl
    import os

    log, db = projected
    with log.open("ab") as f:
        f.write(b'{"type":"session_paused","pos":')  # the first bytes of a record
    monkeypatch.setattr(
        importlib.import_module("projector.checks.verify_log"), "_WRITER_WAIT_SECONDS", 0.2
    )
    fd = os.open(log, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a writer in the middle of its append
        assert verify(log, db).ok
    finally:
        os.close(fd)
    assert [p.kind for p in verify(log, db).problems] == ["log"]  # no writer: torn
