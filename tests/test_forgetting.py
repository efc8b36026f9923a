"""Forgetting a session: its rows purged on every path (per event, bulk catch-up, rebuild),
whatever part of its records the log still holds, checkpoints that survive the redaction
of their line, and no byte of it left in the database's files."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from projection_helpers import (
    SECRETS,
    Clock,
    forget_in_log,
    known_workload,
    nothing_of,
    open_journal,
    random_ops,
    ranges,
    records_of,
    residue,
    rows,
    rows_of,
    run_workload,
    scrub_due,
    write_lines,
    write_secret_session,
)

import projector.db
from journal import events as ev
from projector import InvariantViolation, canonical_hash, catch_up, connect, rebuild, replay
from projector.db import create_schema
from projector.forgetting import purge_session, rows_at, scrub_database
from projector.sync import catchup
from projector.sync import rebuild as rebuild_module
from projector.sync.reading import same_line


def fresh_hash(log: Path, tmp: Path, name: str = "fresh.db") -> str:
    rebuild(log, tmp / name)
    return canonical_hash(tmp / name)


def deleted_session_log(log: Path) -> None:
    """Session "d" with messages and a snapshot, then deleted (its pre_delete snapshot
    stays); session "k" lives on."""
    with open_journal(log) as j:
        j.create_session(model_id="m", session_id="d", first_message="first words of d")
        j.append_message("d", "assistant", "an answer to d")
        j.snapshot("d", note="kept before deleting")
        j.delete_session("d")
        j.create_session(model_id="m", session_id="k", first_message="k stays")


# -- per event --------------------------------------------------------------------------
def test_a_projected_session_loses_every_row_and_the_rest_equals_a_rebuild(
    tmp_path: Path,
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    before = {sid: rows_of(db, sid) for sid in "ac"}
    assert rows_of(db, "b")["messages"] == 3 and rows_of(db, "b")["sessions_fts"] == 3
    forget_in_log(log, "b")
    result = replay(log, db)
    assert not result.rebuilt and not result.scrub_pending
    assert nothing_of(db, "b")
    assert {sid: rows_of(db, sid) for sid in "ac"} == before
    assert scrub_due(db) == []
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def test_a_deleted_session_is_found_by_its_snapshots(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    deleted_session_log(log)
    replay(log, db)
    assert rows_of(db, "d")["session_snapshots"] == 2  # checkpoint and pre_delete
    forget_in_log(log, "d")
    replay(log, db)
    assert nothing_of(db, "d") and rows_of(db, "k")["messages"] == 1
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def test_a_session_with_no_row_but_its_own_is_found_by_its_last_event(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    with open_journal(log, Clock(datetime(2026, 4, 1, tzinfo=UTC))) as j:
        j.create_session(model_id="m", session_id="bare")
        j.rename("bare", "no messages, no metadata, no snapshot")
        j.pause("bare")
    replay(log, db)
    forget_in_log(log, "bare")
    replay(log, db)
    assert nothing_of(db, "bare") and rows_of(db, "a")["messages"] == 3
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def test_a_log_redacted_before_it_is_read_projects_nothing_and_leaves_no_scrub_due(
    tmp_path: Path,
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    forgotten_at, _ = forget_in_log(log, "b")
    conn = connect(db)
    try:
        create_schema(conn)
        result = catch_up(conn, log, bulk=False)
    finally:
        conn.close()
    # Redacted records count as applied: the checkpoint is the forgetting's line.
    assert (result.events_applied, result.last_pos) == (forgotten_at, forgotten_at)
    assert nothing_of(db, "b") and scrub_due(db) == []
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def test_purge_session_by_id_in_its_own_transaction_or_the_callers(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    conn = connect(db)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert purge_session(conn, "a")
        conn.execute("ROLLBACK")  # the caller's transaction: undone with it
        assert rows_of(db, "a")["sessions"] == 1 and scrub_due(db) == []
        assert purge_session(conn, "a")  # its own transaction: committed
        assert not conn.in_transaction
        assert nothing_of(db, "a") and scrub_due(db) == [("merge",)]
        assert not purge_session(conn, "a")  # nothing left: nothing done
        assert not purge_session(conn, "no-such-session")
        assert scrub_database(conn)
        assert scrub_due(db) == []
        assert scrub_database(conn)  # nothing due: nothing to do
    finally:
        conn.close()
    assert nothing_of(db, "a") and rows_of(db, "b")["messages"] == 3


def test_purge_session_rolls_back_its_own_transaction_on_failure(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    conn = connect(db)
    try:
        # A trigger that refuses the deletion of a snapshot, after the sessions row went.
        conn.execute(
            "CREATE TEMP TRIGGER refuse BEFORE DELETE ON session_snapshots "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        with pytest.raises(sqlite3.IntegrityError):
            purge_session(conn, "c")  # archived: it has a pre_archive snapshot
        assert not conn.in_transaction
    finally:
        conn.close()
    assert rows_of(db, "c")["sessions"] == 1 and scrub_due(db) == []


def test_purge_removes_the_quarantined_lines_that_carry_the_session(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    kept = b'{"type":"session_renamed","session_id":"ab","title":"x"}'
    conn = connect(db)
    try:
        conn.executemany(
            "INSERT INTO projector_quarantine (line_offset, line, reason, data) "
            "VALUES (?, ?, 'bad', ?)",
            [(1, 1, b'{"type":"session_paused","session_id":"a","crc":"0"}'), (2, 2, kept)],
        )
        assert purge_session(conn, "a")
    finally:
        conn.close()
    assert rows(db, "SELECT data FROM projector_quarantine") == [(kept,)]


# -- a forgetting whose records are not all redacted yet ----------------------------------
def gone_history(log: Path) -> None:
    """Appends to ``log`` a session "gone" with every kind of row (messages, metadata, a
    truncation, a snapshot, an archive's snapshot) among others' sessions."""
    run_workload(log, random_ops(7, 120), start=datetime(2026, 8, 1, tzinfo=UTC))
    with open_journal(log, Clock(datetime(2026, 9, 1, tzinfo=UTC))) as j:
        sid = j.create_session(model_id="m", session_id="gone", first_message="one")
        for i in range(4):
            j.append_message(sid, "assistant", f"reply {i}", tokens_used=i)
        j.set_metadata(sid, "k", "v")
        j.truncate(sid, 2)
        j.append_message(sid, "user", "after the cut")
        j.snapshot(sid)
        j.archive(sid)
    run_workload(log, random_ops(8, 60), start=datetime(2026, 10, 1, tzinfo=UTC))


REDACTIONS: dict[str, Callable[[list[int]], Callable[[int], bool]]] = {
    "none": lambda mine: lambda pos: False,
    "creation only": lambda mine: lambda pos: pos == mine[0],
    "all but creation": lambda mine: lambda pos: pos != mine[0],
    "every other": lambda mine: lambda pos: mine.index(pos) % 2 == 1,
    "a suffix": lambda mine: lambda pos: pos >= mine[len(mine) // 2],
}


def forgotten_logs(tmp: Path, how: str) -> tuple[Path, Path, Path]:
    """One history, three logs: as it was (nothing forgotten), forgotten with every
    record redacted, and forgotten with only the records ``how`` picks redacted."""
    before, whole, partial = tmp / "before.jsonl", tmp / "whole.jsonl", tmp / "partial.jsonl"
    gone_history(before)
    whole.write_bytes(before.read_bytes())
    partial.write_bytes(before.read_bytes())
    forget_in_log(whole, "gone")
    forget_in_log(partial, "gone", REDACTIONS[how](records_of(before, "gone")))
    return before, whole, partial


def redacted_positions(log: Path) -> list[int]:
    events = [ev.decode_line(raw) for raw in log.read_bytes().splitlines()]
    return [e.pos for e in events if isinstance(e, ev.Redacted)]


@pytest.mark.parametrize("how", sorted(REDACTIONS))
def test_every_path_drops_a_session_whatever_part_of_it_is_redacted(
    tmp_path: Path, how: str
) -> None:
    _, whole, partial = forgotten_logs(tmp_path, how)
    expected = fresh_hash(whole, tmp_path, "whole.db")
    assert fresh_hash(partial, tmp_path, "partial.db") == expected
    # Event by event from nothing, as replay does in quarantine mode.
    db = tmp_path / "per-event.db"
    conn = connect(db)
    try:
        create_schema(conn)
        catch_up(conn, partial, bulk=False, batch_events=7)
    finally:
        conn.close()
    assert canonical_hash(db) == expected and nothing_of(db, "gone")


@pytest.mark.parametrize("how", sorted(REDACTIONS))
def test_a_prefix_before_the_forgetting_never_projects_a_redacted_record(
    tmp_path: Path, how: str
) -> None:
    _, _, partial = forgotten_logs(tmp_path, how)
    forgotten_at = ev.decode_line(partial.read_bytes().splitlines()[-1]).pos
    db = tmp_path / "prefix.db"
    rebuild(partial, db, until=forgotten_at - 1)  # the forgetting not applied: no refusal
    assert rows(db, "SELECT log_pos FROM projector_checkpoint") == [(forgotten_at - 1,)]
    conn = connect(db)
    try:
        assert rows_at(conn, ranges(redacted_positions(partial))) == []
    finally:
        conn.close()


@pytest.mark.parametrize("how", sorted(REDACTIONS))
def test_a_session_projected_then_partly_redacted_is_purged(tmp_path: Path, how: str) -> None:
    before, whole, partial = forgotten_logs(tmp_path, how)
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    log.write_bytes(before.read_bytes())
    replay(log, db)
    assert rows_of(db, "gone")["sessions"] == 1
    log.write_bytes(partial.read_bytes())
    result = replay(log, db)
    assert not result.rebuilt and nothing_of(db, "gone")
    assert canonical_hash(db) == fresh_hash(whole, tmp_path)


def test_an_event_no_forgetting_lists_is_still_refused(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    write_lines(
        log,
        [
            ev.ModelRegistered(model_id="m", model_name="M"),
            ev.SessionCreated(session_id="a", model_id="m"),
            ev.MessageAppended(session_id="zz", seq=1, role="user", content="who?"),
            ev.SessionForgotten(positions=((2, 2),)),
        ],
    )
    for bulk in (True, False):
        db = tmp_path / f"s-{bulk}.db"
        conn = connect(db)
        try:
            create_schema(conn)
            with pytest.raises(InvariantViolation) as caught:
                catch_up(conn, log, bulk=bulk)
        finally:
            conn.close()
        assert caught.value.line == 3


# -- the bulk paths -----------------------------------------------------------------------
def _no_incremental(*args: object, **kwargs: object) -> None:
    raise AssertionError("the bulk path gave up")


def test_rebuild_of_a_redacted_log_stays_on_the_bulk_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, whole, _ = forgotten_logs(tmp_path, "none")
    monkeypatch.setattr(rebuild_module, "_incremental", _no_incremental)
    rebuild(whole, tmp_path / "s.db")
    assert nothing_of(tmp_path / "s.db", "gone")


def test_rebuild_of_a_partly_redacted_log_goes_event_by_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, whole, partial = forgotten_logs(tmp_path, "creation only")
    calls: list[object] = []
    incremental = rebuild_module._incremental

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return incremental(*args, **kwargs)

    monkeypatch.setattr(rebuild_module, "_incremental", spy)
    assert fresh_hash(partial, tmp_path, "p.db") == fresh_hash(whole, tmp_path, "w.db")
    assert len(calls) == 1  # the partial log only


def _counting_apply(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every catch-up takes the bulk path; the tags of the events the per-event path
    applies are recorded."""
    seen: list[str] = []
    apply_event = catchup.apply_event

    def counted(conn: sqlite3.Connection, event: ev.AnyEvent) -> None:
        seen.append(str(type(event).__struct_config__.tag))
        apply_event(conn, event)

    monkeypatch.setattr(catchup, "apply_event", counted)
    monkeypatch.setattr(catchup, "BULK_MIN_BYTES", 1)
    return seen


def test_bulk_catch_up_over_a_redacted_session_stays_bulk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    run_workload(log, random_ops(3, 40))
    replay(log, db)
    gone_history(log)
    forget_in_log(log, "gone")
    seen = _counting_apply(monkeypatch)
    result = replay(log, db)
    assert seen == [] and not result.rebuilt
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def test_bulk_catch_up_hands_a_projected_session_to_the_per_event_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    gone_history(log)
    replay(log, db)
    run_workload(log, random_ops(9, 40), start=datetime(2026, 11, 1, tzinfo=UTC))
    forget_in_log(log, "gone")
    seen = _counting_apply(monkeypatch)
    result = replay(log, db)
    assert "session_forgotten" in seen and not result.rebuilt
    assert nothing_of(db, "gone")
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


# -- checkpoints --------------------------------------------------------------------------
def test_a_checkpoint_whose_line_was_redacted_still_holds(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    with open_journal(log) as j:
        j.rename("b", "the last line applied")
    first = replay(log, db)
    forget_in_log(log, "b")  # redacts the checkpoint's line, among the others
    again = replay(log, db)
    assert not again.rebuilt
    assert (again.events_applied, again.last_pos) == (1, first.last_pos + 1)
    assert nothing_of(db, "b")
    assert canonical_hash(db) == fresh_hash(log, tmp_path)


def with_was(redacted: bytes, was: str) -> bytes:
    """A redaction line with another ``was``, of the same length, its checksum made right."""
    fields = msgspec.json.decode(redacted[: -1 - ev.CRC_SUFFIX_LEN] + b"}")
    fields["pad"] += " " * (len(fields.get("was", "")) - len(was))
    fields["was"] = was
    body = ev.encode_json(fields)
    return b'%s%s%08x"}\n' % (body[:-1], ev.CRC_PREFIX, ev.checksum(body))


def test_same_line_knows_a_line_and_its_redaction_only(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    known_workload(log)
    lines = log.read_bytes().splitlines(keepends=True)
    line, other = lines[5], lines[6]
    digest = ev.line_digest(line)
    redacted = ev.redaction_line(line)
    assert same_line(line, digest) and same_line(redacted, digest)
    assert not same_line(other, digest)
    assert not same_line(ev.redaction_line(other), digest)
    assert not same_line(with_was(redacted, "0" * 32), digest)
    assert not same_line(with_was(redacted, ""), digest)  # as if too short to hold it
    assert not same_line(with_was(redacted, digest[:31]), digest)
    assert same_line(with_was(redacted, digest[:32]), digest)  # the helper changes only that
    assert not same_line(b"not a record\n", digest)


def test_a_checkpoint_line_replaced_by_another_redaction_rebuilds(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    known_workload(log)
    replay(log, db)
    data = log.read_bytes()
    last = data.splitlines(keepends=True)[-1]
    wrong = with_was(ev.redaction_line(last), "0" * 32)
    assert len(wrong) == len(last)
    log.write_bytes(data[: -len(last)] + wrong)
    assert replay(log, db).rebuilt


# -- no residue in the files ---------------------------------------------------------------
@pytest.fixture
def default_secure_delete_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every connection starts with secure_delete off, as SQLite's own default is (some
    builds, Debian's among them, turn it on): only the projector's pragma turns it on."""
    opened = sqlite3.connect

    def connect_off(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = opened(*args, **kwargs)
        conn.execute("PRAGMA secure_delete = OFF")
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect_off)
    yield


@pytest.mark.usefixtures("default_secure_delete_off")
def test_no_byte_of_a_forgotten_session_is_left_in_the_files(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    run_workload(log, random_ops(1, 400))
    replay(log, db)
    reader = connect(db)  # attached, so that no close checkpoints the WAL for us
    try:
        reader.execute("SELECT count(*) FROM sessions").fetchone()
        write_secret_session(log, db)
        run_workload(log, random_ops(2, 200), start=datetime(2026, 6, 1, tzinfo=UTC))
        replay(log, db)
        assert set(residue(db)["db"]) | set(residue(db)["-wal"]) == set(SECRETS)
        with connect(db) as conn:  # the database file holds them too
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        assert residue(db)["db"] == list(SECRETS)
        forget_in_log(log, "u-zqsessionidmark")
        result = replay(log, db)
        assert not result.scrub_pending
        assert residue(db) == {"db": [], "-wal": [], "-shm": []}
    finally:
        reader.close()


@pytest.mark.usefixtures("default_secure_delete_off")
def test_a_scrub_a_reader_holds_up_is_reported_and_finished_by_the_next_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(projector.db, "BUSY_TIMEOUT_MS", 50)
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    run_workload(log, random_ops(1, 100))
    replay(log, db)
    write_secret_session(log, db)
    reader = connect(db)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # holds its snapshot
        forget_in_log(log, "u-zqsessionidmark")
        held = replay(log, db)
        assert held.scrub_pending and scrub_due(db) == [("checkpoint",)]
        assert nothing_of(db, "u-zqsessionidmark")
        reader.execute("COMMIT")
    finally:
        reader.close()
    again = replay(log, db)
    assert again.events_applied == 0 and not again.scrub_pending
    assert scrub_due(db) == []
    assert residue(db) == {"db": [], "-wal": [], "-shm": []}
