"""What verify and the live projector make of a forgotten session: a clean proof once it is
purged, each leftover (in the log or in the database) named by its position, and a
watcher that purges and scrubs without rebuilding."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from projection_helpers import (
    SECRETS,
    Clock,
    append_event,
    execute,
    forget_in_log,
    known_workload,
    nothing_of,
    open_journal,
    random_ops,
    records_of,
    residue,
    rows,
    run_workload,
    scrub_due,
    write_secret_session,
)

import projector.db
from journal import events as ev
from projector import canonical_hash, rebuild, replay, verify
from projector.checks.logfold import LogWitness
from projector.watch import BatchReport, watch


def kinds(log: Path, db: Path) -> list[tuple[str, str, int | None]]:
    return [(p.kind, p.message, p.line) for p in verify(log, db).problems]


# -- verify ---------------------------------------------------------------------------------
def test_verify_proves_a_purged_projection_and_counts_no_empty_id_twice(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    forget_in_log(log, "b")  # five redacted records, none with an id
    replay(log, db)
    report = verify(log, db)
    assert report.ok and report.sessions_checked == 2
    witness = LogWitness()
    rebuild(log, tmp_path / "r.db", witness=witness)
    assert verify(log, tmp_path / "r.db", witness=witness).ok
    assert canonical_hash(tmp_path / "r.db") == canonical_hash(db)


def test_a_forgetting_whose_records_are_still_there_is_reported(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    mine = records_of(log, "b")
    at, _ = forget_in_log(log, "b", redact=lambda pos: pos in (mine[0], mine[2]))
    replay(log, db)
    expected = [
        (
            "forgetting",
            f"forgetting at pos {at} is incomplete: pos {mine[1]} still holds its record "
            f"(and {len(mine) - 3} more of its positions)",
            mine[1],
        )
    ]
    assert kinds(log, db) == expected
    # The same finding when verify takes the rebuild's reading of the log.
    witness = LogWitness()
    rebuild(log, db, witness=witness)
    assert [(p.kind, p.message, p.line) for p in verify(log, db, witness=witness).problems] == (
        expected
    )


def test_a_forgetting_missing_one_record_names_it_alone(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    mine = records_of(log, "b")
    at, _ = forget_in_log(log, "b", redact=lambda pos: pos != mine[-1])
    replay(log, db)
    message = f"forgetting at pos {at} is incomplete: pos {mine[-1]} still holds its record"
    assert kinds(log, db) == [("forgetting", message, mine[-1])]


def test_a_redaction_no_forgetting_lists_is_reported(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    with open_journal(log) as j:
        j.rename("a", "one")
        j.rename("a", "two")
    lines = log.read_bytes().splitlines(keepends=True)
    lines[-2:] = [ev.redaction_line(line) for line in lines[-2:]]  # blanked, unlisted
    log.write_bytes(b"".join(lines))
    replay(log, db)
    last = len(lines)
    message = f"pos {last - 1}-{last} is redacted, but no forgetting lists it"
    assert kinds(log, db) == [("forgetting", message, last - 1)]


def test_rows_left_at_a_forgotten_position_are_named_without_the_session(
    tmp_path: Path,
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    at_b, of_b = forget_in_log(log, "b")
    at_c, of_c = forget_in_log(log, "c")
    replay(log, db)
    # Rows that no check compares with the log, at positions each forgetting lists.
    execute(
        db,
        "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
        "message_count, total_tokens, context_json, created_at) "
        "SELECT ?, 'b', 'checkpoint', created_at, 0, 0, '{}', created_at FROM sessions "
        "WHERE session_id = 'a'",
        (of_b[1],),
    )
    execute(db, "UPDATE sessions SET last_event_pos = ? WHERE session_id = 'a'", (of_c[-1],))
    problems = verify(log, db).problems
    assert [(p.kind, p.message, p.line, p.session_id) for p in problems] == [
        (
            "forgotten",
            f"forgetting at pos {at_b}: session_snapshots still holds a row of pos {of_b[1]}",
            at_b,
            None,
        ),
        (
            "forgotten",
            f"forgetting at pos {at_c}: sessions still holds a row of pos {of_c[-1]}",
            at_c,
            None,
        ),
    ]


@pytest.mark.parametrize("partly", [False, True])
def test_a_cut_back_session_forgotten_is_not_counted_again(tmp_path: Path, partly: bool) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    with open_journal(log, Clock(datetime(2026, 4, 1, tzinfo=UTC))) as j:
        j.truncate("a", 1)  # a tally verify must count again from the log
    mine = records_of(log, "a")
    # Partly: its creation, first message and truncation are still there.
    kept = [*mine[:2], mine[-1]] if partly else []
    forget_in_log(log, "a", redact=lambda pos: pos not in kept)
    replay(log, db)
    # Only the log's own finding, if any: the session is not expected in the database.
    assert {kind for kind, _, _ in kinds(log, db)} == ({"forgetting"} if kept else set())
    rebuild(log, tmp_path / "r.db")  # its own checks fold the same way


def test_a_session_whose_creation_alone_is_redacted_is_not_expected(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    mine = records_of(log, "b")
    forget_in_log(log, "b", redact=lambda pos: pos == mine[0])
    replay(log, db)
    assert nothing_of(db, "b")
    # The log is incomplete, and says so; the projection is not blamed for it.
    assert {kind for kind, _, _ in kinds(log, db)} == {"forgetting"}


# -- watch ----------------------------------------------------------------------------------
DEADLINE = 120.0  # generous: only a failing test waits this long


class Watcher:
    """``watch`` in a thread, its batches recorded."""

    def __init__(self, log: Path, db: Path) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.batches: list[BatchReport] = []

        def run() -> None:
            try:
                watch(str(log), str(db), stop=self.stop, on_batch=self.batches.append,
                      poll_interval=0.05)  # fmt: skip
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="test-forgetting-watcher")
        self.thread.start()

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        stopped = threading.Event()
        deadline = threading.Timer(DEADLINE, stopped.set)
        deadline.start()
        try:
            while not condition():
                if self.error is not None:
                    raise self.error
                if stopped.wait(0.01):
                    raise AssertionError(f"timed out waiting for {what}")
        finally:
            deadline.cancel()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def at_end(log: Path, db: Path) -> Callable[[], bool]:
    def check() -> bool:
        last = ev.decode_line(log.read_bytes().splitlines()[-1]).pos
        try:
            return rows(db, "SELECT log_pos FROM projector_checkpoint") == [(last,)]
        except sqlite3.OperationalError:  # not made yet
            return False

    return check


def scrubbed(db: Path, sid: str) -> Callable[[], bool]:
    return lambda: nothing_of(db, sid) and scrub_due(db) == []


def test_watch_purges_and_scrubs_a_forgetting_without_rebuilding(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    run_workload(log, random_ops(4, 100))
    watcher = Watcher(log, db)
    try:
        watcher.wait_for(at_end(log, db), "the first pass")
        write_secret_session(log, None)  # the watcher projects it
        watcher.wait_for(at_end(log, db), "the secret session")
        assert set(residue(db)["db"]) | set(residue(db)["-wal"]) == set(SECRETS)
        forget_in_log(log, "u-zqsessionidmark")  # its last line, applied, is redacted too
        watcher.wait_for(scrubbed(db, "u-zqsessionidmark"), "the purge and scrub")
        assert residue(db) == {"db": [], "-wal": [], "-shm": []}
    finally:
        watcher.close()
    assert not any(batch.rebuilt for batch in watcher.batches[1:])
    assert verify(log, db).ok


def test_watch_finishes_a_held_up_scrub_at_its_next_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector.db, "BUSY_TIMEOUT_MS", 50)
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    watcher = Watcher(log, db)
    try:
        watcher.wait_for(at_end(log, db), "the first pass")
        reader = sqlite3.connect(db)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot
            forget_in_log(log, "b")
            watcher.wait_for(lambda: scrub_due(db) == [("checkpoint",)], "a held-up scrub")
            assert nothing_of(db, "b")
            reader.execute("COMMIT")
        finally:
            reader.close()
        append_event(log, ev.SessionRenamed(session_id="a", title="the next batch"))
        watcher.wait_for(lambda: scrub_due(db) == [], "the scrub at the next batch")
    finally:
        watcher.close()
