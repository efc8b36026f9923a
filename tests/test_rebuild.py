"""Rebuild: a prefix by pos or time, checks before the swap, an atomic replace."""

from __future__ import annotations

import importlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from projection_helpers import known_workload, random_ops, rows, run_workload

from projector import (
    RebuildCheckFailed,
    canonical_hash,
    catch_up,
    connect,
    rebuild,
    replay,
    verify,
)
from projector.db import create_schema
from projector.errors import ForeignFile

# The package exports the function rebuild under the module's name.
rebuild_module = importlib.import_module("projector.sync.rebuild")


def test_until_pos_and_time_match_a_partial_replay(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(21, 120))
    lines = [json.loads(raw) for raw in log.read_bytes().splitlines()]
    cut = lines[len(lines) // 2]
    for until in (cut["pos"], cut["ts"], str(cut["pos"])):
        db, ref = tmp_path / "p.db", tmp_path / "ref.db"
        result = rebuild(log, db, until=until)
        assert result.last_pos <= cut["pos"]
        conn = connect(ref)
        try:
            create_schema(conn)
            catch_up(conn, log, until=result.last_pos)
        finally:
            conn.close()
        assert canonical_hash(db) == canonical_hash(ref)
        for path in (db, ref):
            rebuild_module.remove_database(str(path))
    # never half a group: a cut inside a group stops before it
    grouped = [e for e in lines if e.get("grp") and e["grp"][0] < e["grp"][1]]
    assert grouped
    inside = grouped[0]["pos"]
    result = rebuild(log, tmp_path / "g.db", until=inside)
    assert result.last_pos == inside - grouped[0]["grp"][0]


def test_rebuild_replaces_atomically_and_cleans_wal(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    reader = sqlite3.connect(db)  # a reader with the old file open keeps its view
    try:
        before = reader.execute("SELECT count(*) FROM messages").fetchone()
        old_hash = canonical_hash(db)
        result = rebuild(log, db)
        assert result.sessions == 3 and result.last_pos > 0
        assert reader.execute("SELECT count(*) FROM messages").fetchone() == before
    finally:
        reader.close()
    assert canonical_hash(db) == old_hash
    assert not (tmp_path / "p.db.rebuild").exists()
    assert not (tmp_path / "p.db-wal").exists() or (tmp_path / "p.db-wal").stat().st_size == 0
    assert rows(db, "PRAGMA journal_mode") == [("delete",)]  # closed without side files


@pytest.mark.parametrize("quarantine", [False, True])  # the bulk path, the incremental one
def test_failed_checks_keep_the_old_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quarantine: bool
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    old = canonical_hash(db)
    monkeypatch.setattr(rebuild_module, "quick_checks", lambda conn, tally: ["planted problem"])
    with pytest.raises(RebuildCheckFailed, match="planted problem"):
        rebuild(log, db, quarantine=quarantine)
    assert canonical_hash(db) == old
    assert not (tmp_path / "p.db.rebuild").exists()


@pytest.mark.parametrize("quarantine", [False, True])
def test_unchecked_rebuild_skips_the_checks_and_builds_the_same_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quarantine: bool
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    rebuild(log, tmp_path / "checked.db", quarantine=quarantine)
    monkeypatch.setattr(rebuild_module, "quick_checks", lambda conn, tally: ["planted problem"])
    rebuild(log, db, quarantine=quarantine, checked=False)
    assert canonical_hash(db) == canonical_hash(tmp_path / "checked.db")


@pytest.mark.parametrize("checked", [True, False])
def test_the_incremental_rebuild_goes_event_by_event_checked_or_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    log = tmp_path / "log.jsonl"
    known_workload(log)
    catchup_module = importlib.import_module("projector.sync.catchup")
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)  # any stretch would go in bulk

    def no_bulk(*args: Any) -> None:
        raise AssertionError("the incremental rebuild took the bulk path")

    monkeypatch.setattr(catchup_module, "_BulkBatch", no_bulk)
    rebuild(log, tmp_path / "p.db", quarantine=True, checked=checked)
    assert verify(log, tmp_path / "p.db").ok


def test_quick_checks_compare_with_the_log(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    tally = rebuild_module.LogTally()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        create_schema(conn)
        catch_up(conn, log, observer=tally.observe)
        assert rebuild_module.quick_checks(conn, tally) == []
        conn.execute("DROP TRIGGER update_message_count_delete")
        conn.execute("DELETE FROM messages WHERE session_id = 'b' AND sequence_number = 3")
        problems = rebuild_module.quick_checks(conn, tally)
    finally:
        conn.close()
    assert any("'b'" in p and "message_count 3 but 2" in p for p in problems)


def test_replay_rebuilds_a_projection_too_damaged_to_read(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    rebuild(log, db)
    header = db.read_bytes()[:100]  # its header says whose it is; the rest is destroyed
    db.write_bytes(header + b"this is not a database any more" * 100)
    result = replay(log, db)
    assert result.rebuilt and "not a readable database" in (result.rebuild_reason or "")
    assert rows(db, "SELECT count(*) FROM sessions") == [(3,)]


def test_replay_leaves_a_file_that_is_not_a_projection_alone(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    text = b"this is not a database, but it is long enough to have a header" * 100
    db.write_bytes(text)
    with pytest.raises(ForeignFile, match="is not a SQLite database"):
        replay(log, db)
    assert db.read_bytes() == text


def test_a_build_left_by_a_crash_is_started_afresh(tmp_path: Path) -> None:
    log, db, ref = tmp_path / "log.jsonl", tmp_path / "p.db", tmp_path / "ref.db"
    known_workload(log)
    rebuild(log, ref)
    half = ref.read_bytes()[:4096]  # a build cut short: the first page of a projection
    Path(f"{db}.rebuild").write_bytes(half)
    for suffix in ("-journal", "-wal"):  # and its side files
        Path(f"{db}.rebuild{suffix}").write_bytes(b"half a journal" * 100)
    result = rebuild(log, db)
    assert result.sessions == 3
    assert canonical_hash(db) == canonical_hash(ref)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "log.jsonl",
        "p.db",
        "ref.db",
    ]


def test_canonical_hash_of_a_database_whose_path_holds_uri_characters(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    known_workload(log)
    odd, plain = tmp_path / "a%41 #1?.db", tmp_path / "plain.db"
    rebuild(log, odd)
    rebuild(log, plain)
    assert canonical_hash(odd) == canonical_hash(plain)
