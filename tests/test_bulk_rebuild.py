"""The bulk rebuild path gives the incremental path's database, row for row.

``bulk_load`` folds the log in Python and writes rows in bulk with the triggers and
secondary indexes deferred; ``catch_up`` applies it event by event through the triggers.
Over random workloads with every event type, prefixes, and the benchmark workload, the
two databases must have the same ``canonical_hash`` (every row, the counters' floats
included) and the same schema text.
"""

from __future__ import annotations

import importlib
import json
import math
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from projection_helpers import OPS, REPO, open_journal, random_ops, rows, run_workload, write_lines

from journal.events import (
    MessageAppended,
    ModelRegistered,
    SessionCreated,
    SessionDeleted,
    SessionRestored,
    SessionSnapshotted,
    encode_json,
)
from projector import InvariantViolation, canonical_hash, catch_up, connect, rebuild, verify
from projector.db import create_schema
from projector.rules.apply import SnapshotContext, SnapshotMessage, SnapshotMetadata, snapshot_json
from projector.sync.bulk_load import bulk_load
from projector.sync.reading import Until

rebuild_module = importlib.import_module("projector.sync.rebuild")
catchup_module = importlib.import_module("projector.sync.catchup")
SCHEMA_SQL = "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"


def incremental(log: Path, db: Path, until: int | None = None) -> None:
    """Event by event through the triggers: the path the bulk loader must agree with."""
    conn = connect(db)
    try:
        create_schema(conn)
        catch_up(conn, log, until=until, bulk=False)
    finally:
        conn.close()


def bulk(log: Path, db: Path, until: int | None = None) -> Any:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        create_schema(conn)
        return bulk_load(conn, log, until=None if until is None else Until(pos=until))
    finally:
        conn.close()


def assert_same(a: Path, b: Path) -> None:
    assert canonical_hash(a) == canonical_hash(b)
    assert rows(a, SCHEMA_SQL) == rows(b, SCHEMA_SQL)
    assert rows(a, "PRAGMA user_version") == rows(b, "PRAGMA user_version")


ops_strategy = st.lists(
    st.tuples(st.integers(0, len(OPS) - 1), st.integers(0, 999), st.integers(0, 10**6)),
    min_size=1,
    max_size=80,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, cut=st.floats(0.0, 1.0))
def test_bulk_equals_incremental_on_random_workloads(
    ops: list[tuple[int, int, int]], cut: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp, "log.jsonl")
        run_workload(log, ops)
        last = len(log.read_bytes().splitlines())
        for n, until in enumerate((None, int(last * cut))):
            a, b = Path(tmp, f"bulk{n}.db"), Path(tmp, f"incr{n}.db")
            result = bulk(log, a, until)
            incremental(log, b, until)
            assert_same(a, b)
            conn = connect(b)
            try:
                cp = conn.execute("SELECT log_pos, log_offset FROM projector_checkpoint")
                assert cp.fetchone() == (result.checkpoint.log_pos, result.checkpoint.log_offset)
            finally:
                conn.close()


def test_every_event_type_is_covered(tmp_path: Path) -> None:
    """The fixed workload the equality tests start from holds every event type, including
    restores of deleted sessions, archives and warnings (so no branch goes untested)."""
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(7, 400))
    tags = {json.loads(raw)["type"] for raw in log.read_bytes().splitlines()}
    assert tags >= {
        "model_registered", "session_created", "message_appended", "session_metadata_set",
        "session_renamed", "session_paused", "session_resumed", "timeout_warning",
        "session_timed_out", "session_archived", "session_snapshotted", "session_restored",
        "session_deleted",
    }  # fmt: skip
    restored_deleted = [
        json.loads(raw)
        for raw in log.read_bytes().splitlines()
        if b'"session_restored"' in raw and b'"snapshot_pos"' in raw
    ]
    assert restored_deleted
    a, b = tmp_path / "bulk.db", tmp_path / "incr.db"
    bulk(log, a)
    incremental(log, b)
    assert_same(a, b)
    for prefix in range(1, len(log.read_bytes().splitlines()), 37):
        a.unlink()
        b.unlink()
        bulk(log, a, prefix)
        incremental(log, b, prefix)
        assert_same(a, b)


def test_the_incremental_helper_never_takes_the_bulk_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Else the equality tests above would compare the bulk path with itself."""
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(7, 400))
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)  # any stretch may go bulk

    def refuse(*args: object) -> None:
        raise AssertionError("the bulk path was taken")

    monkeypatch.setattr(catchup_module, "_BulkBatch", refuse)
    incremental(log, tmp_path / "incr.db")
    with pytest.raises(AssertionError, match="the bulk path was taken"):
        conn = connect(tmp_path / "default.db")
        try:
            create_schema(conn)
            catch_up(conn, log)  # the default does take it: the guard above can fail
        finally:
            conn.close()


def test_bulk_equals_incremental_when_read_line_by_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the log's chunks are read line by line (a chunk failed a check), group members
    arrive one at a time: a prefix still takes whole groups only, and the checkpoint is
    the same."""
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(11, 300))
    n = len(log.read_bytes().splitlines())
    groups = [json.loads(raw).get("grp") for raw in log.read_bytes().splitlines()]
    assert any(g is not None and g[0] < g[1] for g in groups)
    log_module = importlib.import_module("journal.log.reader")
    monkeypatch.setattr(log_module, "_fast_run", lambda *args: None)
    for until in (None, *range(1, n, 7)):
        a, b = tmp_path / "bulk.db", tmp_path / "incr.db"
        for p in (a, b):
            p.unlink(missing_ok=True)
        result = bulk(log, a, until)
        incremental(log, b, until)
        assert_same(a, b)
        assert rows(b, "SELECT log_pos, log_offset FROM projector_checkpoint")[0] == (
            result.checkpoint.log_pos,
            result.checkpoint.log_offset,
        )


def test_workload_generator_log(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    try:
        workload = importlib.import_module("workload")
    finally:
        sys.path.remove(str(REPO / "tools"))
    log = tmp_path / "w.jsonl"
    workload.write_log(str(log), 3, 4_000, sessions=40, concurrency=40)
    a, b = tmp_path / "bulk.db", tmp_path / "incr.db"
    bulk(log, a)
    incremental(log, b)
    assert_same(a, b)
    assert rows(a, "SELECT count(*) FROM session_snapshots")[0][0] > 0


def test_durations_are_summed_in_log_order(tmp_path: Path) -> None:
    """Float sums depend on their order: the bulk path adds in the triggers' order, also
    for a session deleted and restored (its messages re-added in seq order from zero)."""
    log = tmp_path / "log.jsonl"
    durations = [1e16, 1.0, 1.0, 0.1, 0.2, 0.3, 3.3e-5, 7.77]
    with open_journal(log) as j:
        j.create_session(model_id="m", session_id="s")
        for d in durations:
            j.append_message("s", role="user", content="x", duration_seconds=d)
        j.delete_session("s")
        j.restore("s")
        j.append_message("s", role="user", content="y", duration_seconds=0.1)
    a, b = tmp_path / "bulk.db", tmp_path / "incr.db"
    bulk(log, a)
    incremental(log, b)
    assert_same(a, b)
    total = 0.0
    for d in [*durations, 0.1]:
        total += d
    assert rows(a, "SELECT total_duration_seconds FROM sessions") == [(total,)]
    assert total != sum(sorted([*durations, 0.1]))  # the order matters for these values
    assert total != math.fsum([*durations, 0.1])


def test_rebuild_takes_the_bulk_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, db, ref = tmp_path / "log.jsonl", tmp_path / "p.db", tmp_path / "ref.db"
    run_workload(log, random_ops(9, 200))

    def no_incremental(*args: object) -> None:
        raise AssertionError("the incremental path ran")

    with monkeypatch.context() as m:
        m.setattr(rebuild_module, "_incremental", no_incremental)
        result = rebuild(log, db)
    incremental(log, ref)
    assert canonical_hash(db) == canonical_hash(ref)
    assert result.last_pos == len(log.read_bytes().splitlines())
    assert verify(log, db).ok


def test_a_log_the_bulk_path_refuses_gets_the_incremental_error(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    offsets = write_lines(
        log,
        [
            ModelRegistered(model_id="m", model_name="M"),
            SessionCreated(session_id="s", model_id="m"),
            MessageAppended(session_id="s", seq=1, role="user", content="one"),
            MessageAppended(session_id="s", seq=3, role="user", content="gap"),
        ],
    )
    with pytest.raises(InvariantViolation) as err:
        rebuild(log, db)
    assert err.value.line == 4 and err.value.offset == offsets[3] and "seq 3" in str(err.value)
    assert not db.exists() and not Path(f"{db}.rebuild").exists()


def sample_context(text: str) -> tuple[list[SnapshotMessage], SnapshotContext[SnapshotMessage]]:
    """Two messages (the second's content ``text``) and a context head (no messages) with
    the markers snapshot_json cuts at inside its strings."""
    messages = [
        SnapshotMessage(7, 1, "user", 'a "quoted" ,"messages":[] text', "t1", 3, 0.5, None),
        SnapshotMessage(9, 2, "assistant", text, "t2", None, None, '{"k":1}'),
    ]
    head = SnapshotContext(
        session_id="s", title=',"messages":[],"snapshot_reason":', model_id="m",
        model_name=None, created_at="t0", status="active", message_count=2, total_tokens=3,
        total_duration_seconds=0.5, idle_timeout_seconds=None, hard_timeout_seconds=60,
        expires_at=None, last_activity="t2", metadata=[SnapshotMetadata(4, "k", "v")],
        messages=[], snapshot_reason="checkpoint", snapshot_time="t3",
    )  # fmt: skip
    return messages, head


def test_snapshot_json_is_the_whole_context_encoded() -> None:
    messages, head = sample_context("é ☃ 𝄞")
    whole = SnapshotContext(**{**_fields(head), "messages": messages})
    rows_ = [tuple(_fields(m).values()) for m in messages]
    assert bytes(snapshot_json(head, rows_)) == encode_json(whole)
    assert bytes(snapshot_json(head, [])) == encode_json(head)


def _fields(struct: Any) -> dict[str, Any]:
    return {name: getattr(struct, name) for name in struct.__struct_fields__}


# -- catch-up batches on the bulk path ------------------------------------------------
catchup_module = importlib.import_module("projector.sync.catchup")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, chunks=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       batch=st.integers(1, 60))  # fmt: skip
def test_bulk_catch_up_in_chunks_equals_incremental(
    ops: list[tuple[int, int, int]], chunks: list[int], batch: int
) -> None:
    """Batches folded in Python onto a database holding part of the log (sessions read on
    first use, triggers dropped inside each batch) give the event-by-event rows."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as m:
        log, a, b = Path(tmp, "log.jsonl"), Path(tmp, "bulk.db"), Path(tmp, "incr.db")
        run_workload(log, ops)
        m.setattr(catchup_module, "BULK_MIN_BYTES", 10**12)
        incremental(log, b)
        m.setattr(catchup_module, "BULK_MIN_BYTES", 0)
        used: list[int] = []
        m.setattr(catchup_module.CatchUpLoader, "finish", _counting(used))
        conn = connect(a)
        try:
            create_schema(conn)
            pos = 0
            for step in chunks:
                pos += step
                catch_up(conn, log, batch_events=batch, until=pos)
            catch_up(conn, log, batch_events=batch)
        finally:
            conn.close()
        assert used  # the bulk path ran
        assert_same(a, b)
        assert verify(log, a).ok


def _counting(used: list[int]) -> Any:
    finish = catchup_module.CatchUpLoader.finish

    def counted(self: Any) -> None:
        used.append(1)
        finish(self)

    return counted


def test_bulk_catch_up_of_a_long_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log, a, b = tmp_path / "log.jsonl", tmp_path / "bulk.db", tmp_path / "incr.db"
    run_workload(log, random_ops(7, 400))
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 10**12)
    incremental(log, b)
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)
    last = len(log.read_bytes().splitlines())
    for cut in (1, last // 3, last // 2):
        a.unlink(missing_ok=True)
        incremental(log, a, until=cut)
        conn = connect(a)
        try:
            catch_up(conn, log, batch_events=97)
        finally:
            conn.close()
        assert_same(a, b)


def test_a_refused_bulk_batch_is_applied_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk batch that meets an event the projection refuses is rolled back; the events
    go one by one from its start, so the batches before it stay committed and the error
    names the event's line, as on the incremental path."""
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    offsets = write_lines(
        log,
        [
            ModelRegistered(model_id="m", model_name="M"),
            SessionCreated(session_id="s", model_id="m"),
            MessageAppended(session_id="s", seq=1, role="user", content="one"),
            MessageAppended(session_id="s", seq=2, role="user", content="two"),
            MessageAppended(session_id="s", seq=2, role="user", content="again"),
        ],
    )
    conn = connect(db)
    try:
        create_schema(conn)
        with pytest.raises(InvariantViolation) as err:
            catch_up(conn, log, batch_events=2)
        assert err.value.line == 5 and err.value.offset == offsets[4]
        assert conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone() == (4,)
        triggers = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'")
        schema = (REPO / "schema" / "30_triggers.sql").read_text(encoding="utf-8")
        assert triggers.fetchone() == (schema.count("CREATE TRIGGER"),)  # all back in place
    finally:
        conn.close()
    assert rows(db, "SELECT message_count FROM sessions") == [(2,)]


def pre_archive_json(*values: Any) -> bytearray:
    """The pre_archive context built in one buffer (no spill)."""
    from projector.sync.bulk_snapshots import pre_archive_into

    out = bytearray()
    pre_archive_into(out, *values, None)
    return out


def test_pre_archive_json_is_the_triggers_json() -> None:
    """The bulk path builds the pre_archive context itself: byte for byte SQLite's
    json_object, for every character a string may hold and for NULLs and no messages."""

    conn = sqlite3.connect(":memory:")
    try:
        trigger = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'create_snapshot_on_archive'"
        ).fetchone()
        assert trigger is None  # (an empty database: the expression is taken from the file)
        sql = (REPO / "schema" / "30_triggers.sql").read_text(encoding="utf-8")
        start = sql.index("json_object(\n            'session_id'")
        end = sql.index("        NEW.updated_at\n    );", start)
        expression = sql[start:end].rstrip().rstrip(",").replace("NEW.", ":")
        conn.execute(
            "CREATE TABLE messages (session_id TEXT, sequence_number INTEGER, role TEXT, "
            "content TEXT, timestamp TEXT, tokens_used INTEGER)"
        )
        chars = "".join(chr(c) for c in range(0x3000) if not 0xD800 <= c <= 0xDFFF)
        texts = [chars, '"\\/\b\f\n\r\t\x00\x1f\x7f', "é ☃ 𝄞 \U0010ffff", ""]
        for seq, text in enumerate(texts, 1):
            tokens = None if seq % 2 else seq
            conn.execute(
                "INSERT INTO messages VALUES ('s', ?, 'user', ?, 't', ?)", (seq, text, tokens)
            )
        for sid, title, name in (("s", chars, None), ("none", None, "N")):
            values = {
                "session_id": sid, "title": title, "model_id": "m", "model_name": name,
                "message_count": 4, "total_tokens": 6, "created_at": "c",
            }  # fmt: skip
            (want,) = conn.execute(f"SELECT {expression}", values).fetchone()
            rows_ = conn.execute(
                "SELECT role, content, timestamp, tokens_used FROM messages "
                "WHERE session_id = ? ORDER BY sequence_number",
                (sid,),
            )
            assert pre_archive_json(*values.values(), rows_).decode() == want
    finally:
        conn.close()


def test_streamed_contexts_are_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot texts built piece by piece (spilled every few bytes) equal the ones
    built in one buffer."""
    from projector.sync import bulk_snapshots as bulk_module

    monkeypatch.setattr(bulk_module, "SPILL_BYTES", 5)
    messages, head = sample_context("é ☃ 𝄞" * 50)
    rows_ = [tuple(_fields(m).values()) for m in messages]
    pieces: list[bytes] = []

    def spill(out: bytearray) -> None:
        pieces.append(bytes(out))
        del out[:]

    for given_rows in (rows_, []):
        pieces.clear()
        out = bytearray()
        bulk_module.snapshot_into(out, head, given_rows, spill)
        assert len(pieces) > 1 or not given_rows
        assert b"".join(pieces) + out == bytes(snapshot_json(head, given_rows))
    archive_rows = [("user", "x" * 20, "t1", 3), ("assistant", 'é\n"', "t2", None)]
    head_values = ("s", None, "m", "M", 2, 3, "t0")
    pieces.clear()
    out = bytearray()
    bulk_module.pre_archive_into(out, *head_values, archive_rows, spill)
    assert len(pieces) > 1
    assert b"".join(pieces) + out == bytes(pre_archive_json(*head_values, archive_rows))


@pytest.mark.parametrize("spill_bytes", [64, 2**20])
def test_snapshot_contexts_stay_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_bytes: int
) -> None:
    """Contexts written through blob I/O (all of them with a small spill size), or bound
    whole, are stored as TEXT, byte for byte the same as the incremental path's."""
    from projector.sync import bulk_snapshots as bulk_module

    monkeypatch.setattr(bulk_module, "SPILL_BYTES", spill_bytes)
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(7, 400))
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    incremental(log, a)
    bulk(log, b)
    assert_same(a, b)
    sql = "SELECT snapshot_id, typeof(context_json), context_json FROM session_snapshots"
    got = rows(b, sql)
    assert got == rows(a, sql)
    assert got and all(t == "text" for _, t, _ in got)


@pytest.mark.parametrize("spill_bytes", [64, 2**20])
def test_repeated_snapshots_across_a_deletion_and_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_bytes: int
) -> None:
    """A later snapshot of a session copies the messages of its earlier one, but only while
    the session lives on: after a deletion and restore it starts over."""
    from projector.sync import bulk_snapshots as bulk_module

    monkeypatch.setattr(bulk_module, "SPILL_BYTES", spill_bytes)
    log = tmp_path / "log.jsonl"
    ops = [OPS.index("create")] + [OPS.index("message")] * 3 + [OPS.index("snapshot")]
    ops += [OPS.index("message")] * 2 + [OPS.index("snapshot"), OPS.index("snapshot")]
    ops += [OPS.index("delete"), OPS.index("restore")] + [OPS.index("message")] * 2
    ops += [OPS.index("snapshot"), OPS.index("message"), OPS.index("snapshot")]
    assert run_workload(log, [(op, 0, n) for n, op in enumerate(ops)]) == len(ops)
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    incremental(log, a)
    bulk(log, b)
    assert_same(a, b)
    assert len(rows(b, "SELECT 1 FROM session_snapshots")) >= 6


@pytest.mark.parametrize("spill_bytes", [64, 2**20])
def test_catch_up_copies_a_stored_snapshot_only_while_the_session_begins_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spill_bytes: int
) -> None:
    """A bulk catch-up batch's first snapshot of a session copies the messages of the
    session's latest stored snapshot, unless a restore from an older one replaced them
    (the same seq, another message): then it reads them all from the database."""
    from projector.sync import bulk_snapshots

    monkeypatch.setattr(bulk_snapshots, "SPILL_BYTES", spill_bytes)

    def msg(seq: int) -> MessageAppended:
        return MessageAppended(session_id="s", seq=seq, role="user", content=f'm{seq} "q"')

    events = [
        ModelRegistered(model_id="m", model_name="M"),
        SessionCreated(session_id="s", model_id="m"),
        *[msg(n) for n in (1, 2, 3)],
        SessionSnapshotted(session_id="s"),  # pos 6: three messages
        *[msg(n) for n in (4, 5)],
        SessionSnapshotted(session_id="s"),  # pos 9: five messages
        SessionDeleted(session_id="s"),
        SessionRestored(session_id="s", snapshot_pos=6),  # back to three
        *[msg(n) for n in (4, 5, 6)],  # seq 5 is another message now
        SessionSnapshotted(session_id="s"),
        msg(7),
        SessionSnapshotted(session_id="s"),
    ]
    log = tmp_path / "log.jsonl"
    write_lines(log, events)
    want = tmp_path / "want.db"
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 10**12)
    incremental(log, want)
    monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)
    for cut in range(1, len(events)):
        db = tmp_path / f"cut{cut}.db"
        monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 10**12)
        incremental(log, db, until=cut)
        monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", 0)
        conn = connect(db)
        try:
            catch_up(conn, log)
        finally:
            conn.close()
        assert_same(db, want)


@pytest.mark.parametrize("keep", [0, 3, 30, 39])
def test_withdrawals_far_back_or_near_agree_on_every_path(tmp_path: Path, keep: int) -> None:
    """A truncation keeping one of the last messages takes the counters the bulk fold
    remembers; one further back sums the messages kept again: both must give the
    per-event path's rows, float totals included, and catch-up in bulk too."""
    log = tmp_path / "log.jsonl"
    with open_journal(log) as j:
        sid = j.create_session("m", session_id="s")
        other = j.create_session("m", session_id="o")
        for n in range(40):
            j.append_message(sid, "user", f"m{n}", tokens_used=n, duration_seconds=n / 7.0)
            j.append_message(other, "user", f"o{n}", duration_seconds=0.1)
        j.truncate(sid, keep)
        for n in range(3):
            j.append_message(sid, "assistant", f"again {n}", duration_seconds=n / 3.0)
        j.truncate(sid, keep + 1)
    a, b, c = tmp_path / "bulk.db", tmp_path / "incr.db", tmp_path / "halves.db"
    bulk(log, a)
    incremental(log, b)
    assert_same(a, b)
    conn = connect(c)
    try:
        create_schema(conn)
        catch_up(conn, log, until=90, bulk=False)
        catch_up(conn, log, bulk=True)
    finally:
        conn.close()
    assert_same(a, c)
    assert rows(a, "SELECT message_count FROM sessions WHERE session_id = 's'") == [(keep + 1,)]
    assert verify(log, a).ok
