"""import-legacy: old AI-router databases, with every kind of mess, into the journal."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal
from journal.events import encode_json, format_ts
from projector import canonical_hash, replay
from projector.legacy import check as legacy_check
from projector.legacy import importer as legacy
from projector.legacy.ids import NAMESPACE, IdPrefix, event_id, uuid5_hex
from projector.legacy.importer import LegacyImportError, format_report, import_legacy
from projector.legacy.plan import RECORD_KEY
from projector.legacy.values import from_jsonable, normalise_ts, parse_when

# The seed's pre-enhancement tables without their constraints: the old app's files hold
# what those constraints would refuse; content and the numbers are untyped here, as in
# files an ORM created, so they hold any type.
LOOSE = """
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, created_at TIMESTAMP, updated_at TIMESTAMP,
    model_id TEXT, model_name TEXT, title TEXT, message_count INTEGER DEFAULT 0,
    total_tokens INTEGER DEFAULT 0, total_duration_seconds REAL DEFAULT 0,
    last_activity TIMESTAMP);
CREATE TABLE messages (message_id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT,
    sequence_number INTEGER, role TEXT, content, timestamp TIMESTAMP, tokens_used,
    duration_seconds, metadata TEXT);
CREATE TABLE session_metadata (metadata_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT, key TEXT, value TEXT);
CREATE VIRTUAL TABLE sessions_fts USING fts5(session_id UNINDEXED, title, content, model_name);
"""
MIGRATED = """
ALTER TABLE sessions ADD COLUMN status TEXT DEFAULT 'active';
ALTER TABLE sessions ADD COLUMN idle_timeout_seconds INTEGER DEFAULT 3600;
ALTER TABLE sessions ADD COLUMN hard_timeout_seconds INTEGER DEFAULT 86400;
ALTER TABLE sessions ADD COLUMN expires_at TIMESTAMP;
CREATE TABLE session_timeouts (session_id TEXT PRIMARY KEY, idle_timeout_seconds INTEGER,
    hard_timeout_seconds INTEGER, created_at TIMESTAMP, last_activity TIMESTAMP,
    expires_at TIMESTAMP, timeout_warning_sent BOOLEAN DEFAULT 0, warning_sent_at TIMESTAMP);
CREATE TABLE session_snapshots (snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT, snapshot_type TEXT, snapshot_at TIMESTAMP, message_count INTEGER,
    total_tokens INTEGER, context_json TEXT, created_at TIMESTAMP);
"""
T0 = "2024-01-01 10:00:00"
IRREGULAR_METADATA = {
    "invalid_metadata_key",
    "reserved_metadata_key",
    "null_metadata_value",
    "non_text_metadata_value",
    "invalid_metadata_value",
}


def make_db(path: Path, ddl: str = LOOSE) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.executescript(ddl)
    return conn


def session(conn: sqlite3.Connection, sid: Any, **cols: Any) -> None:
    row = {"session_id": sid, "created_at": T0, "model_id": "gpt-4o", "model_name": "GPT-4o"}
    row.update(cols)
    names = ", ".join(row)
    conn.execute(
        f"INSERT INTO sessions ({names}) VALUES ({', '.join('?' * len(row))})", [*row.values()]
    )


def message(conn: sqlite3.Connection, sid: Any, seq: Any, content: Any, **cols: Any) -> None:
    row = {"session_id": sid, "sequence_number": seq, "role": "user", "content": content}
    row.setdefault("timestamp", T0)
    row.update(cols)
    names = ", ".join(row)
    conn.execute(
        f"INSERT INTO messages ({names}) VALUES ({', '.join('?' * len(row))})", [*row.values()]
    )


def messy(path: Path) -> int:
    """Every kind of mess the old app left; returns the number of message rows."""
    c = make_db(path)
    session(c, "s1", message_count=5, total_tokens=1, title="Trip ✈ naïve")
    for n, text in enumerate(["Hello", "Bonjour, ça va?", "東京はどうですか"], 1):
        message(c, "s1", n, text, tokens_used=10, role=("user", "assistant")[n % 2 == 0])
    session(c, "gaps", message_count=4)
    for seq, text in [(1, "one"), (3, "three"), (3, "three again"), (7, "seven")]:
        message(c, "gaps", seq, text)
    message(c, "gaps", None, "no number")
    session(c, "bad", created_at="not a date", title="nul\x00title")
    cases: list[tuple[Any, dict[str, Any]]] = [
        ("", {}),
        (None, {}),
        ("function output", {"role": "function"}),
        ("shouting", {"role": " User "}),
        ("a\x00b", {}),
        (b"\x00\x01blob", {}),
        (42, {}),
        (1.5, {}),
        ("tokens", {"tokens_used": -5}),
        ("tokens2", {"tokens_used": 1.5, "duration_seconds": -1}),
        ("tokens3", {"tokens_used": "12", "duration_seconds": "0.5"}),
        ("tokens4", {"tokens_used": 1e300, "duration_seconds": float("inf")}),
        ("meta1", {"metadata": "{oops"}),
        ("meta2", {"metadata": "[1, 2]"}),
        ("meta3", {"metadata": '{"legacy": 1}'}),
        ("meta4", {"metadata": '{"ok": "yes"}'}),
        ("ts1", {"timestamp": "2024-01-01T10:00:00.123456789+02:00"}),
        ("ts2", {"timestamp": 1700000000}),
        ("ts3", {"timestamp": 2460000.5}),
        ("ts4", {"timestamp": "yesterday"}),
        ("ts5", {"timestamp": None}),
    ]
    for n, (content, extra) in enumerate(cases, 1):
        message(c, "bad", n, content, **extra)
    c.execute(
        "INSERT INTO messages (session_id, sequence_number, role, content) "
        "VALUES ('bad', 99, 'user', CAST(x'66ff6f' AS TEXT))"
    )
    session(c, "has space", model_id=None)
    message(c, "has space", 1, "in a session with an invalid id")
    message(c, "ghost", 1, "orphan one")
    message(c, "ghost", 2, "orphan two")
    message(c, None, 1, "orphan without a session id")
    for sid, key, value in [
        ("s1", "channel", "web"),
        ("s1", "channel", "cli"),
        ("s1", "empty", None),
        ("s1", RECORD_KEY, "sneaky"),
        ("ghost", "channel", "lost"),
    ]:
        c.execute(
            "INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)",
            (sid, key, value),
        )
    c.commit()
    n = c.execute("SELECT count(*) FROM messages").fetchone()[0]
    c.close()
    return int(n)


def files(tmp: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}


_opened: list[sqlite3.Connection] = []


def projection(db: Path) -> sqlite3.Connection:
    """A connection to an import's database, closed when the test ends."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    _opened.append(conn)
    return conn


@pytest.fixture(autouse=True)
def _close_projections() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def run(tmp_path: Path, old: Path, **kw: Any) -> legacy.ImportReport:
    return import_legacy(old, tmp_path / "out" / "s.jsonl", tmp_path / "out" / "s.db", **kw)


@pytest.fixture
def out(tmp_path: Path) -> Path:
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


def test_messy_database_imports_everything(tmp_path: Path, out: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    old = src / "old.db"
    n = messy(old)
    before = files(src)
    report = run(tmp_path, old)
    assert files(src) == before  # bytes unchanged, no -wal/-shm/-journal left behind
    assert report.source_unchanged and report.ok, format_report(report)
    assert report.verify_ok and not report.check_problems
    assert report.messages_checked == n == report.counts["messages"]
    kinds = set(report.anomaly_counts)
    expected = {
        "orphaned_rows", "sequence_gap", "renumbered", "duplicate_sequence", "missing_sequence",
        "empty_content", "null_content", "invalid_role", "role_normalised", "nul_in_content",
        "blob_content", "non_text_content", "invalid_tokens", "tokens_converted",
        "invalid_duration", "duration_converted", "metadata_not_json", "metadata_not_object",
        "metadata_reserved_key", "unparseable_timestamp", "missing_timestamp", "invalid_utf8",
        "session_id_changed", "invalid_model_id", "invalid_title", "invalid_created_at",
        "null_metadata_value", "reserved_metadata_key", "duplicate_metadata_key",
        "null_session_id",
    }  # fmt: skip
    assert expected <= kinds, expected - kinds
    assert {(m.session_id, m.field) for m in report.counter_mismatches} >= {
        ("s1", "message_count"), ("s1", "total_tokens"), ("gaps", "message_count")
    }  # fmt: skip
    conn = projection(out / "s.db")
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == n
    for row in conn.execute("SELECT session_id, message_count, total_tokens FROM sessions"):
        count, tokens = conn.execute(
            "SELECT count(*), coalesce(sum(tokens_used), 0) FROM messages WHERE session_id = ?",
            (row["session_id"],),
        ).fetchone()
        assert (row["message_count"], row["total_tokens"]) == (count, tokens)
    s1 = conn.execute("SELECT * FROM sessions WHERE session_id = 's1'").fetchone()
    assert (s1["message_count"], s1["total_tokens"], s1["title"]) == (3, 30, "Trip ✈ naïve")
    seqs = conn.execute(
        "SELECT sequence_number, content, metadata FROM messages WHERE session_id = 'gaps' "
        "ORDER BY sequence_number"
    ).fetchall()
    assert [r[0] for r in seqs] == [1, 2, 3, 4, 5]
    assert [r[1] for r in seqs] == ["one", "three", "three again", "seven", "no number"]
    old_numbers = [msgspec.json.decode(r[2])["legacy"]["sequence_number"] for r in seqs[1:]]
    assert old_numbers == [3, 3, 7, None]
    # Orphans: a recovered session per missing id, every row flagged and findable.
    recovered = conn.execute(
        "SELECT s.session_id, s.title FROM sessions s JOIN session_metadata m USING (session_id)"
        " WHERE m.key = ? AND m.value LIKE '%recovered_orphans%'",
        (RECORD_KEY,),
    ).fetchall()
    assert len(recovered) == 2 and "recovered-ghost" in {r[0] for r in recovered}
    ghost = conn.execute(
        "SELECT content, metadata FROM messages WHERE session_id = 'recovered-ghost'"
    ).fetchall()
    assert [r[0] for r in ghost] == ["orphan one", "orphan two"]
    assert all("orphan" in msgspec.json.decode(r[1])["import_flags"] for r in ghost)
    meta = dict(
        conn.execute(
            "SELECT key, value FROM session_metadata WHERE session_id = 'recovered-ghost'"
        ).fetchall()
    )
    assert meta["channel"] == "lost"
    # Empty content: a marker, the original in metadata.legacy; clean metadata kept as is.
    by_content = {
        r["content"]: r for r in conn.execute("SELECT * FROM messages WHERE session_id = 'bad'")
    }
    empty = next(r for c, r in by_content.items() if "content was empty" in c)
    assert msgspec.json.decode(empty["metadata"])["legacy"]["content"] == ""
    tool = next(r for c, r in by_content.items() if "invalid role" in c)
    assert tool["role"] == "system"
    assert msgspec.json.decode(tool["metadata"])["legacy"]["content"] == "function output"
    assert msgspec.json.decode(by_content["meta4"]["metadata"]) == {"ok": "yes"}
    assert by_content["ts1"]["timestamp"] == "2024-01-01T08:00:00.123456Z"
    assert by_content["ts2"]["timestamp"] == "2023-11-14T22:13:20.000000Z"
    ts4 = msgspec.json.decode(by_content["ts4"]["metadata"])
    assert ts4["legacy"]["timestamp"] == "yesterday"
    assert "unparseable_timestamp" in ts4["import_flags"]
    blob = next(r for c, r in by_content.items() if "BLOB" in c)
    legacy_blob = msgspec.json.decode(blob["metadata"])["legacy"]["content"]
    assert from_jsonable(legacy_blob) == b"\x00\x01blob"
    # The session with an invalid id got a new one; its original is in the record.
    changed = [a for a in report.anomalies if a.kind == "session_id_changed"]
    assert any(a.old_session_id == "has space" for a in changed)
    # Text and JSON forms of the report.
    text = format_report(report)
    assert "counter mismatches" in text and "orphaned_rows" in text
    msgspec.json.encode(report.to_builtins())


def test_second_import_appends_nothing(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    messy(old)
    first = run(tmp_path, old)
    log_bytes = (out / "s.jsonl").read_bytes()
    second = run(tmp_path, old)
    assert (out / "s.jsonl").read_bytes() == log_bytes
    assert second.events_written == 0 and second.sessions_written == 0
    assert second.events_already_present == first.events_written - 2  # models: not ours to skip
    assert second.ok and second.messages_checked == first.messages_checked


def test_idempotent_beyond_the_writer_id_window(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    messy(old)

    class TinyWindow(Journal):
        @classmethod
        def open(cls, path: Any, durability: Any = "always", **kw: Any) -> Journal:
            return Journal(path, durability, id_window=4)

    monkeypatch.setattr(legacy, "Journal", TinyWindow)
    run(tmp_path, old)
    log_bytes = (out / "s.jsonl").read_bytes()
    assert run(tmp_path, old).events_written == 0
    assert (out / "s.jsonl").read_bytes() == log_bytes


def test_new_database_is_the_projection_a_replay_gives(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    messy(old)
    assert run(tmp_path, old).ok
    replay(out / "s.jsonl", tmp_path / "replayed.db")
    assert canonical_hash(out / "s.db") == canonical_hash(tmp_path / "replayed.db")


def test_a_wrong_bulk_projection_is_caught_by_verify_and_replayed(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    n = messy(old)
    built: list[tuple[str, bool]] = []
    real_rebuild = legacy_check.rebuild

    def wrong(log: str, db: str, **options: Any) -> None:
        built.append((db, options["checked"]))
        real_rebuild(log, db, **options)
        with closing(sqlite3.connect(db)) as conn, conn:  # a bulk path gone wrong
            conn.execute("UPDATE messages SET content = 'wrong' WHERE message_id = "
                          "(SELECT min(message_id) FROM messages)")  # fmt: skip

    monkeypatch.setattr(legacy_check, "rebuild", wrong)
    report = run(tmp_path, old)
    assert built == [(str(out / "s.db"), False)]  # verify makes the checks rebuild skips
    assert report.ok and report.verify_ok and report.messages_checked == n
    replay(out / "s.jsonl", tmp_path / "replayed.db")
    assert canonical_hash(out / "s.db") == canonical_hash(tmp_path / "replayed.db")


def test_a_message_check_problem_does_not_project_again(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    messy(old)
    replays: list[str] = []
    monkeypatch.setattr(legacy_check, "check_messages", lambda *args: (0, ["planted problem"]))
    monkeypatch.setattr(legacy_check, "replay", lambda log, db: replays.append(db))
    report = run(tmp_path, old)
    assert report.verify_ok and report.check_problems == ["planted problem"] and not report.ok
    assert replays == []  # verify passed: a replay would build the same database


def test_log_is_on_disk_before_it_is_projected(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    messy(old)
    seen: list[tuple[str, int]] = []
    real_fsync, real_project = os.fsync, legacy.project

    def fsync(fd: int) -> None:
        seen.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def project(*args: Any) -> None:
        seen.append(("project", 0))
        real_project(*args)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(legacy, "project", project)
    assert run(tmp_path, old).ok
    log_synced = ("fsync", (out / "s.jsonl").stat().st_ino)
    assert log_synced in seen[: seen.index(("project", 0))]


def test_dry_run_writes_nothing(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    messy(old)
    before = files(tmp_path)
    report = run(tmp_path, old, dry_run=True)
    assert files(tmp_path) == before and not any(out.iterdir())
    assert report.dry_run and report.ok and report.events_written == 0
    assert "orphaned_rows" in report.anomaly_counts
    assert "dry run: nothing written" in format_report(report)


def test_interrupted_import_is_finished_by_running_again(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    n = messy(old)

    def stop(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, old, progress=stop)
    assert (out / "s.jsonl").stat().st_size > 0
    report = run(tmp_path, old)
    assert report.ok and report.messages_checked == n
    assert report.sessions_already_present == 1


def test_large_session_is_split_into_groups(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    c = make_db(old)
    session(c, "long")
    for n in range(1, 26):
        message(c, "long", n, f"message {n}")
    for k in range(12):
        c.execute(
            "INSERT INTO session_metadata (session_id, key, value) VALUES ('long', ?, 'v')",
            (f"k{k}",),
        )
    c.commit()
    c.close()
    monkeypatch.setattr(legacy, "MAX_GROUP_EVENTS", 6)
    report = run(tmp_path, old)
    assert report.ok and report.messages_checked == 25
    sizes = [
        e["grp"][1]
        for e in map(msgspec.json.decode, (out / "s.jsonl").read_bytes().splitlines())
        if "grp" in e
    ]
    assert sizes and max(sizes) <= 6
    assert run(tmp_path, old).events_written == 0


def test_oversized_values_are_split_or_moved(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    c = make_db(old)
    session(c, "big")
    huge = "é" * (2 * 1024 * 1024 + 10)  # 4 MiB + 20 bytes of UTF-8
    message(c, "big", 1, huge)
    message(c, "big", 2, "x\x00" * 60_000, metadata="not json " * 10_000)
    c.commit()
    c.close()
    report = run(tmp_path, old)
    assert report.ok, format_report(report)
    assert report.messages_checked == 2
    conn = projection(out / "s.db")
    parts = conn.execute(
        "SELECT content FROM messages WHERE session_id = 'big' ORDER BY sequence_number"
    ).fetchall()
    assert len(parts) == 3 and parts[0][0] + parts[1][0] == huge
    assert {"content_split", "nul_in_content"} <= set(report.anomaly_counts)


def test_session_id_taken_in_the_log_gets_a_suffix(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    c = make_db(old)
    session(c, "s1")
    message(c, "s1", 1, "old")
    c.commit()
    c.close()
    with Journal.open(out / "s.jsonl") as j:
        j.create_session("gpt-4o", session_id="s1", first_message="live")
    report = run(tmp_path, old)
    assert report.ok
    ids = [a.session_id for a in report.anomalies if a.kind == "session_id_changed"]
    assert len(ids) == 1 and (ids[0] or "").startswith("s1.legacy-")
    assert run(tmp_path, old).events_written == 0


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE sessions (session_id TEXT, model_id TEXT);"
        "CREATE TABLE messages (session_id TEXT, sequence_number INT, role TEXT, content TEXT);",
        "CREATE TABLE sessions (session_id TEXT PRIMARY KEY);",
        "CREATE TABLE sessions (session_id TEXT, title TEXT) ;"
        "CREATE TABLE messages (message_id INTEGER PRIMARY KEY, session_id TEXT, role TEXT, "
        "content TEXT, timestamp TEXT);"
        "CREATE TABLE session_metadata (session_id TEXT, key TEXT, value TEXT);"
        "CREATE TABLE audit (x);",
    ],
)
def test_partial_schemas(tmp_path: Path, out: Path, ddl: str) -> None:
    old = tmp_path / "old.db"
    c = make_db(old, ddl)
    c.execute("INSERT INTO sessions (session_id) VALUES ('p1')")
    has_messages = "messages" in ddl
    if has_messages:
        c.execute("INSERT INTO messages (session_id, role, content) VALUES ('p1', 'user', 'hi')")
        c.execute(
            "INSERT INTO messages (session_id, role, content) VALUES ('p1', 'assistant', 'yo')"
        )
    if "session_metadata" in ddl:
        c.execute("INSERT INTO session_metadata VALUES ('p1', 'k', 'v')")
    c.commit()
    c.close()
    report = run(tmp_path, old)
    assert report.ok, format_report(report)
    assert report.messages_checked == (2 if has_messages else 0)
    assert report.schema_variant.startswith("partial")
    assert not report.has_fts
    if "audit" in ddl:
        assert report.not_imported_tables == {"audit": 0}
    conn = projection(out / "s.db")
    assert conn.execute("SELECT message_count FROM sessions WHERE session_id = 'p1'").fetchone()[
        0
    ] == (2 if has_messages else 0)


def test_migrated_schema_statuses_timeouts_snapshots(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    c = make_db(old, LOOSE + MIGRATED)
    for sid, status in [
        ("a", "active"),
        ("p", "paused"),
        ("r", "archived"),
        ("i", "idle"),
        ("e", "expired"),
        ("x", "bogus"),
    ]:
        session(c, sid, status=status, updated_at="2024-01-02 00:00:00")
        message(c, sid, 1, f"in {sid}")
    c.execute(
        "INSERT INTO session_timeouts (session_id, idle_timeout_seconds, "
        "hard_timeout_seconds) VALUES ('a', 600, 7200), ('p', -1, 7200)"
    )
    c.execute(
        "INSERT INTO session_snapshots (session_id, snapshot_type, context_json) "
        "VALUES ('a', 'checkpoint', '{\"messages\": []}')"
    )
    c.commit()
    c.close()
    report = run(tmp_path, old)
    assert report.ok, format_report(report)
    assert report.schema_variant == "migrated"
    conn = projection(out / "s.db")
    statuses = dict(conn.execute("SELECT session_id, status FROM sessions").fetchall())
    assert statuses == {"a": "active", "p": "paused", "r": "archived", "i": "idle",
                        "e": "expired", "x": "active"}  # fmt: skip
    a = conn.execute(
        "SELECT idle_timeout_seconds, hard_timeout_seconds FROM sessions WHERE session_id = 'a'"
    ).fetchone()
    assert tuple(a) == (600, 7200)
    p = conn.execute("SELECT idle_timeout_seconds FROM sessions WHERE session_id = 'p'").fetchone()
    assert p[0] is None
    kinds = report.anomaly_counts
    assert kinds["timeout_mismatch"] >= 2 and kinds["invalid_status"] == 1
    assert kinds["invalid_idle_timeout_seconds"] == 1
    record = msgspec.json.decode(
        conn.execute(
            "SELECT value FROM session_metadata WHERE session_id = 'a' AND key = ?", (RECORD_KEY,)
        ).fetchone()[0]
    )
    assert record["snapshots"][0]["snapshot_type"] == "checkpoint"
    assert record["timeouts_rows"][0]["idle_timeout_seconds"] == 600
    assert run(tmp_path, old).events_written == 0


# -- error paths: a clear error naming the file, and nothing written ----------------------
def _not_sqlite(p: Path) -> None:
    p.write_text("id,name\n1,x\n")


def _no_sessions(p: Path) -> None:
    with closing(sqlite3.connect(p)) as conn:
        conn.executescript("CREATE TABLE other (x); INSERT INTO other VALUES (1);")


def _corrupt(p: Path) -> None:
    p.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)


def _directory(p: Path) -> None:
    p.mkdir()


def _messages_without_session_id(p: Path) -> None:
    with closing(sqlite3.connect(p)) as conn:
        conn.executescript("CREATE TABLE sessions (session_id); CREATE TABLE messages (content);")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (None, "no such file"),
        (_not_sqlite, "not a SQLite database"),
        (_no_sessions, "no sessions table"),
        (_corrupt, "SQLite"),
        (_directory, "directory"),
        (_messages_without_session_id, "no session_id column"),
    ],
)
def test_errors_name_the_file_and_write_nothing(
    tmp_path: Path, out: Path, make: Any, words: str
) -> None:
    old = tmp_path / "old.db"
    if make is not None:
        make(old)
    with pytest.raises(LegacyImportError) as info:
        run(tmp_path, old)
    assert str(old) in str(info.value) and words in str(info.value)
    assert "nothing was written" in str(info.value)
    assert not any(out.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    messy(old)
    old.chmod(0)
    try:
        with pytest.raises(LegacyImportError, match="permission denied"):
            run(tmp_path, old)
    finally:
        old.chmod(0o600)
    assert not any(out.iterdir())


def test_output_same_as_input_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    messy(old)
    before = old.read_bytes()
    with pytest.raises(LegacyImportError, match="also the output"):
        import_legacy(old, tmp_path / "s.jsonl", old)
    assert old.read_bytes() == before and not (tmp_path / "s.jsonl").exists()


@pytest.mark.parametrize(
    ("raw", "expected", "flag"),
    [
        ("2024-05-01 10:00:00", "2024-05-01T10:00:00.000000Z", None),
        ("2024-05-01T10:00:00.5Z", "2024-05-01T10:00:00.500000Z", None),
        ("2024/05/01 10:00", "2024-05-01T10:00:00.000000Z", None),
        ("2024-05-01T12:00:00+0200", "2024-05-01T10:00:00.000000Z", None),
        ("2024-05-01", "2024-05-01T00:00:00.000000Z", None),
        ("Wed, 01 May 2024 10:00:00 GMT", "2024-05-01T10:00:00.000000Z", None),
        (1714557600, "2024-05-01T10:00:00.000000Z", None),
        (1714557600123, "2024-05-01T10:00:00.123000Z", None),
        ("1714557600", "2024-05-01T10:00:00.000000Z", None),
        (None, None, "missing_timestamp"),
        ("0001-01-01 00:00:00", None, "unparseable_timestamp"),
        ("2024-13-45", None, "unparseable_timestamp"),
        (float("nan"), None, "unparseable_timestamp"),
        (1e300, None, "unparseable_timestamp"),
        (b"2024", None, "unparseable_timestamp"),
        ("9999-12-31 23:59:59", None, "timestamp_out_of_range"),
        ("9990-01-01T00:00:00Z", None, "timestamp_out_of_range"),
        ("9989-12-31T23:59:59.999999Z", "9989-12-31T23:59:59.999999Z", None),
    ],
)
def test_timestamp_formats(raw: Any, expected: str | None, flag: str | None) -> None:
    assert normalise_ts(raw) == (expected, flag)


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1000, 1, 2), max_value=datetime(9989, 12, 30), timezones=st.none()
    ),
    offset_minutes=st.one_of(st.none(), st.integers(-23 * 60, 23 * 60)),
    sep=st.sampled_from([" ", "T"]),
    timespec=st.sampled_from(["seconds", "milliseconds", "microseconds", "auto"]),
)
def test_timestamps_in_the_log_form_are_format_ts(
    moment: datetime, offset_minutes: int | None, sep: str, timespec: str
) -> None:
    if offset_minutes is not None:
        moment = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = moment.isoformat(sep=sep, timespec=timespec)
    when = parse_when(text)
    assert when is not None
    assert normalise_ts(text) == (format_ts(when.astimezone(UTC)), None)


# -- fuzz: whatever SQLite can store, only documented outcomes, nothing lost --------------
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
numbers = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
values = st.one_of(st.none(), texts, numbers, st.binary(max_size=8))
COLUMNS = ("session_id", "sequence_number", "role", "content", "timestamp", "tokens_used",
           "duration_seconds", "metadata")  # fmt: skip
message_rows = st.fixed_dictionaries(
    {
        "session_id": st.sampled_from(["s1", "s2", "ghost", None, ""]),
        "sequence_number": st.one_of(st.integers(-3, 6), values),
        "role": st.one_of(st.sampled_from(["user", "assistant", "system", "USER"]), values),
        "content": values,
        "timestamp": st.one_of(st.just(T0), values),
        "tokens_used": st.one_of(st.integers(0, 100), values),
        "duration_seconds": values,
        "metadata": st.one_of(st.just('{"a": [1, "é"]}'), values),
    }
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(message_rows, max_size=12),
    orphan_id=st.one_of(texts, numbers),
    title=values,
    meta=st.lists(st.tuples(st.sampled_from(["s1", "ghost"]), values, values), max_size=4),
)
def test_fuzz_messy_rows(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    orphan_id: Any,
    title: Any,
    meta: list[tuple[Any, Any, Any]],
) -> None:
    tmp = tmp_path_factory.mktemp("fuzz")
    old = tmp / "old.db"
    c = make_db(old)
    session(c, "s1", title=title, message_count=title if isinstance(title, int) else 0)
    session(c, "s2", created_at=title)
    message(c, orphan_id, 1, "orphan")
    for row in rows:
        c.execute(
            "INSERT INTO messages (session_id, sequence_number, role, content, timestamp, "
            "tokens_used, duration_seconds, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [row[k] for k in COLUMNS],
        )
    c.executemany("INSERT INTO session_metadata (session_id, key, value) VALUES (?, ?, ?)", meta)
    c.commit()
    c.close()
    before = old.read_bytes()
    report = import_legacy(old, tmp / "s.jsonl", tmp / "s.db")
    assert old.read_bytes() == before
    assert report.ok, format_report(report)
    assert report.messages_checked == len(rows) + 1
    conn = projection(tmp / "s.db")
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] >= len(rows)
    # Every metadata row is either set in the log or kept in an import record.
    events = [msgspec.json.decode(line) for line in (tmp / "s.jsonl").read_bytes().splitlines()]
    set_rows = [
        e for e in events
        if e["type"] == "session_metadata_set" and not e["key"].startswith(RECORD_KEY)
    ]  # fmt: skip
    irregular = [a for a in report.anomalies if a.kind in IRREGULAR_METADATA]
    assert len(set_rows) + len(irregular) == len(meta)


def test_unreadable_file_as_any_user(
    tmp_path: Path, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    messy(old)
    monkeypatch.setattr("projector.legacy.source.os.access", lambda path, mode: False)
    with pytest.raises(LegacyImportError, match=r"old\.db: cannot be read \(permission denied\)"):
        run(tmp_path, old)
    assert not any(out.iterdir())


def test_metadata_nested_too_deeply_is_kept_as_text(tmp_path: Path, out: Path) -> None:
    old = tmp_path / "old.db"
    c = make_db(old)
    session(c, "deep")
    deep = "[" * 5000 + "]" * 5000
    message(c, "deep", 1, "hello", metadata=deep)
    c.commit()
    c.close()
    report = run(tmp_path, old)
    assert report.ok, format_report(report)
    assert "metadata_not_json" in report.anomaly_counts
    conn = projection(out / "s.db")
    (meta,) = conn.execute("SELECT metadata FROM messages WHERE session_id = 'deep'").fetchone()
    assert deep in meta  # the raw text survives in the message's legacy record


# -- event ids: computed with hashlib, the very ids uuid.uuid5 gives ----------------------
identity_parts = st.recursive(
    st.one_of(
        st.none(),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.text(st.characters(exclude_categories=["Cs"]), max_size=8), inner, max_size=3
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(identity=st.lists(identity_parts, min_size=1, max_size=6))
def test_event_ids_are_uuid5_of_the_identity(identity: list[Any]) -> None:
    # The definition the import's ids have always had (ids in existing logs depend on it).
    name = encode_json(identity).decode()
    expected = uuid.uuid5(NAMESPACE, name)
    assert event_id(*identity) == str(expected)
    assert uuid5_hex(identity) == uuid5_hex(tuple(identity)) == expected.hex
    assert uuid.UUID(event_id(*identity)).version == 5
    for cut in range(len(identity)):  # the same id, the prefix's hash taken once
        assert IdPrefix(*identity[:cut])(*identity[cut:]) == str(expected)


def test_event_ids_of_earlier_imports_are_unchanged() -> None:
    # Ids an earlier version wrote: a re-import must recognise them and append nothing.
    assert event_id("model", "gpt-4o") == "b1c7dfca-7655-5314-b5d4-b2e6604cd028"
    assert event_id("session", "s1", T0, "message", 7) == "f0a6e159-29b1-58b7-870b-11d49c8dfeb9"


def test_negative_zero_duration_is_imported_as_zero(tmp_path: Path, out: Path) -> None:
    # SQLite keeps no sign on a zero: a -0.0 in the log would never match its projection.
    old = tmp_path / "old.db"
    c = make_db(old)
    session(c, "s")
    message(c, "s", 1, "hello", duration_seconds=-0.0)
    message(c, "s", 2, "again", duration_seconds="-0")
    c.commit()
    c.close()
    report = run(tmp_path, old)
    assert report.ok, format_report(report)
    durations = [
        msgspec.json.decode(line).get("duration_seconds")
        for line in (out / "s.jsonl").read_bytes().splitlines()
    ]
    assert [d for d in durations if d is not None] == [0.0, 0.0]
    assert not any(math.copysign(1, d) < 0 for d in durations if d is not None)


def test_paths_with_uri_characters(tmp_path: Path) -> None:
    # '%41' would read as 'A', '?' and '#' would end the path, in an unescaped SQLite URI.
    where = tmp_path / "100%41 ?#"
    where.mkdir()
    old = where / "old.db"
    n = messy(old)
    report = import_legacy(old, where / "s.jsonl", where / "s.db")
    assert report.ok, report.check_problems
    assert report.messages_checked == n


def _stage_reached(stage: str, log: Path, db: Path) -> bool:
    if stage == "writing":
        return log.exists() and log.stat().st_size > 0
    if stage == "projecting":  # well into the load: pages of the new file are written
        building = Path(f"{db}.rebuild")
        return building.exists() and building.stat().st_size > 1 << 20
    return db.exists()  # verifying: the rebuilt file is in place


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["writing", "projecting", "verifying"])
def test_an_import_killed_at_any_stage_is_finished_by_running_it_again(
    tmp_path: Path, out: Path, stage: str
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        from legacy_fixture import build_legacy_db
    finally:
        sys.path.pop(0)
    old, log, db = tmp_path / "old.db", out / "s.jsonl", out / "s.db"
    n = build_legacy_db(old, 60, 50, seed=3, schema="migrated")
    code = (
        "import sys; from projector.legacy.importer import import_legacy; "
        "import_legacy(*sys.argv[1:])"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(old), str(log), str(db)])
    try:
        while child.poll() is None and not _stage_reached(stage, log, db):
            time.sleep(0.0005)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, f"the import ended before {stage}"

    report = run(tmp_path, old)
    assert report.ok, (report.verify_problems, report.check_problems)
    assert report.messages_checked == n and report.source_unchanged
    assert not Path(f"{db}.rebuild").exists()
    again = run(tmp_path, old)
    assert again.ok and again.events_written == 0 and again.messages_checked == n
