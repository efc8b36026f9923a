"""Applying events: the rows each event type produces, with the writer's semantics."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from projection_helpers import Clock, open_journal, rows

from projector import replay, verify


def project(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "log.jsonl", tmp_path / "p.db"


def test_every_row_comes_from_the_log(tmp_path: Path) -> None:
    log, db = project(tmp_path)
    clock = Clock()
    with open_journal(log, clock) as j:
        sid = j.create_session(model_id="gpt-4o", title="T", session_id="s",
                               idle_timeout_seconds=60, hard_timeout_seconds=600)  # fmt: skip
        r = j.append_message(sid, role="user", content="hi", tokens_used=3,
                             duration_seconds=0.25, metadata={"lang": "en"})  # fmt: skip
        m = j.set_metadata(sid, "channel", "web")
        j.set_metadata(sid, "channel", "app")
    replay(log, db)
    assert rows(db, "SELECT model_id, model_name, created_at FROM models") == [
        ("gpt-4o", "gpt-4o", "2026-03-01T09:00:01.000000Z")
    ]
    assert rows(db, "SELECT message_id, sequence_number, timestamp, metadata FROM messages") == [
        (r.pos, 1, "2026-03-01T09:00:02.000000Z", '{"lang":"en"}')
    ]
    assert rows(db, "SELECT metadata_id, key, value FROM session_metadata") == [
        (m.pos, "channel", "app")  # the id of the event that first set the key
    ]
    assert rows(
        db,
        "SELECT created_at, updated_at, last_activity, expires_at, message_count, "
        "total_tokens, total_duration_seconds, last_event_pos FROM sessions",
    ) == [
        (
            "2026-03-01T09:00:01.000000Z",  # one write: the model and the session
            "2026-03-01T09:00:04.000000Z",  # the last metadata event
            "2026-03-01T09:00:02.000000Z",  # the message
            "2026-03-01T09:10:01.000000Z",  # created + hard timeout
            1, 3, 0.25, 5,
        )
    ]  # fmt: skip


def test_statuses_follow_the_writer(tmp_path: Path) -> None:
    log, db = project(tmp_path)
    clock = Clock()
    status = "SELECT status FROM sessions WHERE session_id = 's'"
    with open_journal(log, clock) as j:
        j.create_session(model_id="m", session_id="s", idle_timeout_seconds=60,
                         hard_timeout_seconds=3600)  # fmt: skip
        j.pause("s")
        j.append_message("s", role="user", content="wake up")  # paused -> active
        clock.now += timedelta(seconds=120)
        j.expire_due()  # idle
    replay(log, db)
    assert rows(db, status) == [("idle",)]
    assert rows(db, "SELECT timeout_warning_sent FROM session_timeouts") == [(0,)]
    with open_journal(log, clock) as j:
        j.append_message("s", role="user", content="back")  # idle -> active
        clock.now += timedelta(seconds=50)
        j.expire_due(warn_before_seconds=30)  # a warning, with its snapshot
    replay(log, db)
    assert rows(db, status) == [("active",)]
    assert rows(db, "SELECT timeout_warning_sent, warning_sent_at IS NOT NULL "
                    "FROM session_timeouts") == [(1, 1)]  # fmt: skip
    assert rows(db, "SELECT snapshot_type FROM session_snapshots") == [("timeout_warning",)]
    with open_journal(log, clock) as j:
        j.append_message("s", role="user", content="still here")
        clock.now += timedelta(hours=2)
        j.expire_due()  # hard
    replay(log, db)
    assert rows(db, status) == [("expired",)]
    assert rows(db, "SELECT timeout_warning_sent FROM session_timeouts") == [(0,)]
    with open_journal(log, clock) as j:
        restored = j.restore("s")
    replay(log, db)
    assert rows(db, "SELECT status, last_activity, expires_at, updated_at FROM sessions") == [
        ("active", restored_ts := _ts(log, restored.pos), _plus(restored_ts, 3600), restored_ts)
    ]
    assert rows(db, "SELECT expires_at, last_activity FROM session_timeouts") == [
        (_plus(restored_ts, 3600), restored_ts)
    ]
    assert verify(log, db).ok


def _ts(log: Path, pos: int) -> str:
    for raw in log.read_bytes().splitlines():
        event = json.loads(raw)
        if event["pos"] == pos:
            return str(event["ts"])
    raise AssertionError(pos)


def _plus(ts: str, seconds: int) -> str:
    from journal.events import format_ts, parse_ts

    return format_ts(parse_ts(ts) + timedelta(seconds=seconds))


def test_archive_snapshot_and_delete_restore(tmp_path: Path) -> None:
    log, db = project(tmp_path)
    with open_journal(log) as j:
        j.create_session(model_id="m", title="Keep me", session_id="s",
                         first_message="first words")  # fmt: skip
        j.append_message("s", role="assistant", content="second", tokens_used=4,
                         duration_seconds=0.1)  # fmt: skip
        j.set_metadata("s", "k", "v")
        arch = j.archive("s")
        j.restore("s")
        snap = j.snapshot("s", reason="checkpoint", note="before delete")
        deleted = j.delete_session("s")
    replay(log, db)
    before = rows(db, "SELECT * FROM session_snapshots ORDER BY snapshot_id")
    assert [(r[0], r[2]) for r in before] == [
        (arch.pos, "pre_archive"), (snap.pos, "checkpoint"), (deleted.pos - 1, "pre_delete")
    ]  # fmt: skip
    context = json.loads(before[1][6])
    assert [(m["role"], m["content"], m["tokens"]) for m in context["messages"]] == [
        ("user", "first words", None), ("assistant", "second", 4)
    ]  # fmt: skip
    assert context["title"] == "Keep me" and before[1][7] == "before delete"
    assert rows(db, "SELECT count(*) FROM sessions") == [(0,)]
    for table in ("messages", "session_metadata", "session_timeouts", "sessions_fts"):
        assert rows(db, f"SELECT count(*) FROM {table}") == [(0,)]
    messages_before = rows(db, "SELECT count(*) FROM session_snapshots")
    with open_journal(log) as j:
        restored = j.restore("s")
    replay(log, db)
    assert rows(db, "SELECT count(*) FROM session_snapshots") == messages_before
    assert rows(db, "SELECT sequence_number, content FROM messages ORDER BY 1") == [
        (1, "first words"), (2, "second")
    ]  # fmt: skip
    assert rows(db, "SELECT message_count, total_tokens, status, last_event_pos, title "
                    "FROM sessions") == [(2, 4, "active", restored.pos, "Keep me")]  # fmt: skip
    assert rows(db, "SELECT key, value FROM session_metadata") == [("k", "v")]
    assert rows(db, "SELECT rowid FROM sessions_fts WHERE sessions_fts MATCH 'second'") != []
    assert verify(log, db).ok


def test_group_is_applied_whole(tmp_path: Path) -> None:
    log, db = project(tmp_path)
    with open_journal(log) as j:
        j.create_session(model_id="m", session_id="s")
        with j.batch():
            j.append_message("s", role="user", content="one")
            j.append_message("s", role="assistant", content="two")
            j.rename("s", "Renamed")
    result = replay(log, db, batch_events=1)
    assert result.events_applied == 5
    assert rows(db, "SELECT message_count, title FROM sessions") == [(2, "Renamed")]
    # The index holds the messages' own text: a title is not a message's words.
    assert rows(db, "SELECT content FROM sessions_fts") == [("one",), ("two",)]
    assert rows(db, "SELECT rowid FROM sessions_fts WHERE sessions_fts MATCH 'renamed'") == []
