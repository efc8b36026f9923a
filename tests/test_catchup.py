"""Catch-up and replay: exactly-once from the checkpoint, whole groups, the error paths,
crashes, and determinism over random workloads."""

from __future__ import annotations

import importlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from projection_helpers import (
    OPS,
    T0,
    TESTS,
    line,
    open_journal,
    random_ops,
    rows,
    run_workload,
    write_lines,
)

from journal.errors import CorruptLog
from journal.events import (
    MessageAppended,
    MessagesTruncated,
    ModelRegistered,
    SessionCreated,
    SessionDeleted,
    SessionRenamed,
    SessionRestored,
    SessionSnapshotted,
    TimeoutWarning,
    format_ts,
    parse_ts,
)
from projector import (
    CatchUpResult,
    CheckpointMismatch,
    InvariantViolation,
    canonical_hash,
    catch_up,
    connect,
    rebuild,
    replay,
    verify,
)
from projector.db import create_schema, read_checkpoint


def base_events() -> list:  # type: ignore[type-arg]
    return [
        ModelRegistered(model_id="m", model_name="M"),
        SessionCreated(session_id="s", model_id="m"),
        MessageAppended(session_id="s", seq=1, role="user", content="one"),
        MessageAppended(session_id="s", seq=2, role="user", content="two"),
    ]


def test_replay_twice_is_once_and_catches_up_incrementally(tmp_path: Path) -> None:
    log, db, ref = tmp_path / "log.jsonl", tmp_path / "p.db", tmp_path / "ref.db"
    run_workload(log, random_ops(3, 80))
    first = replay(log, db)
    assert first.events_applied > 0 and not first.rebuilt
    again = replay(log, db)
    assert again.events_applied == 0 and again.last_pos == first.last_pos
    run_workload(log, random_ops(4, 40), start=first_ts_after(log))
    replay(log, db)
    rebuild(log, ref)
    assert canonical_hash(db) == canonical_hash(ref)


def first_ts_after(log: Path) -> datetime:
    last = json.loads(log.read_bytes().splitlines()[-1])
    return parse_ts(last["ts"]) + timedelta(seconds=1)


def test_progress_reports_bytes_and_checkpoints_never_split_groups(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    with open_journal(log) as j:
        j.create_session(model_id="m", session_id="s")
        for i in range(3):
            with j.batch():
                for k in range(3):
                    j.append_message("s", role="user", content=f"{i}.{k}")
    data = log.read_bytes()
    seen: list[tuple[int, int]] = []
    replay(log, db, batch_events=1, progress=lambda done, total: seen.append((done, total)))
    group_ends, offset = set(), 0
    for raw in data.splitlines(keepends=True):
        offset += len(raw)
        grp = json.loads(raw).get("grp")
        if grp is None or grp[0] == grp[1]:
            group_ends.add(offset)
    assert len(group_ends) < len(data.splitlines())  # there are groups
    assert seen and {done for done, _ in seen} <= group_ends
    assert seen[-1] == (len(data), len(data))


def test_stops_before_torn_tail_and_incomplete_group(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    write_lines(log, base_events())
    good = log.stat().st_size
    group = [
        MessageAppended(session_id="s", seq=3, role="user", content="three", grp=(1, 2)),
        MessageAppended(session_id="s", seq=4, role="user", content="four", grp=(2, 2)),
    ]
    with log.open("ab") as f:
        f.write(line(group[0], 5))  # the group's second member is not written yet
    result = replay(log, db)
    assert (result.last_pos, result.end_offset) == (4, good)
    assert result.torn is not None and result.torn.offset == good
    with log.open("ab") as f:
        f.write(line(group[1], 6)[:-10])  # now the last line is unterminated
    assert replay(log, db).torn is not None
    with log.open("ab") as f:
        f.write(line(group[1], 6)[-10:])
    result = replay(log, db)
    assert (result.last_pos, result.events_applied, result.torn) == (6, 2, None)


def test_bad_middle_line_names_line_and_offset(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    offsets = write_lines(log, base_events())
    data = bytearray(log.read_bytes())
    data[offsets[2] + 40] ^= 0x01  # a flipped bit in line 3
    log.write_bytes(bytes(data))
    with pytest.raises(CorruptLog) as err:
        replay(log, db)
    assert err.value.line == 3 and err.value.offset == offsets[2]
    assert f"line 3 (byte offset {offsets[2]})" in str(err.value)
    conn = connect(db)
    try:
        cp = read_checkpoint(conn)  # everything before the bad line is in, nothing after
        assert (cp.log_pos, cp.log_offset) == (2, offsets[2])
    finally:
        conn.close()
    assert rows(db, "SELECT count(*) FROM messages") == [(0,)]


def test_quarantine_mode_records_the_line_and_goes_on(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    events = base_events()
    offsets = write_lines(log, [*events[:2], SessionRenamed(session_id="s", title="x"),
                                *events[2:]])  # fmt: skip
    data = bytearray(log.read_bytes())
    data[offsets[2] + 40] ^= 0x01
    log.write_bytes(bytes(data))
    result = replay(log, db, quarantine=True)
    assert result.quarantined == 1 and result.last_pos == 5
    assert rows(db, "SELECT line_offset, line, reason, data FROM projector_quarantine") == [
        (offsets[2], 3, "checksum mismatch", bytes(data[offsets[2] : offsets[3]]))
    ]
    assert rows(db, "SELECT content FROM messages ORDER BY 1") == [("one",), ("two",)]
    assert rows(db, "SELECT title FROM sessions") == [(None,)]
    assert replay(log, db, quarantine=True).events_applied == 0  # checkpoint past it
    report = verify(log, db)
    assert any(p.kind == "log" and p.line == 3 for p in report.problems)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (MessageAppended(session_id="nobody", seq=1, role="user", content="x"), "unknown"),
        (MessageAppended(session_id="s", seq=2, role="user", content="x"), "seq 2"),
        (MessageAppended(session_id="s", seq=5, role="user", content="x"), "seq 5"),
        (SessionCreated(session_id="s", model_id="m"), "created twice"),
    ],
)
def test_invariant_violation_is_an_error_with_its_line(
    tmp_path: Path, bad: object, needle: str
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    offsets = write_lines(log, [*base_events(), bad])  # type: ignore[list-item]
    with pytest.raises(InvariantViolation) as err:
        replay(log, db, batch_events=2)
    assert err.value.line == 5 and err.value.offset == offsets[4]
    assert needle in str(err.value) and f"line 5 (byte offset {offsets[4]})" in str(err.value)
    conn = connect(db)
    try:
        assert read_checkpoint(conn).log_pos == 4  # the batches before it committed
    finally:
        conn.close()


TS0 = format_ts(T0)


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        (SessionCreated(session_id="t", model_id="nope"), "never registered"),
        (SessionRenamed(session_id="nobody", title="x"), "session_renamed for an unknown"),
        (SessionSnapshotted(session_id="nobody"), "snapshot of an unknown"),
        (SessionDeleted(session_id="nobody"), "delete of an unknown"),
        (
            TimeoutWarning(session_id="nobody", kind="idle", deadline=TS0, as_of=TS0),
            "timeout warning for an unknown",
        ),
        (SessionRestored(session_id="nobody"), "without a snapshot_pos"),
        (SessionRestored(session_id="nobody", snapshot_pos=2), "not a snapshot of this session"),
        (
            MessagesTruncated(session_id="nobody", keep_through_seq=0),
            "messages_truncated for an unknown",
        ),
        (
            MessagesTruncated(session_id="s", keep_through_seq=5),
            "messages withdrawn after seq 5, but the session has 2",
        ),
    ],
)
def test_every_path_refuses_an_event_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: object, needle: str
) -> None:
    """Event by event, in a bulk catch-up batch (rolled back, then applied one by one) and
    in a rebuild (the bulk load gives up, the incremental path reports): the same error."""
    log = tmp_path / "log.jsonl"
    offsets = write_lines(log, [*base_events(), bad])  # type: ignore[list-item]
    catchup_module = importlib.import_module("projector.sync.catchup")
    for n, bulk_min in enumerate((10**12, 0)):
        monkeypatch.setattr(catchup_module, "BULK_MIN_BYTES", bulk_min)
        conn = connect(tmp_path / f"{n}.db")
        try:
            create_schema(conn)
            with pytest.raises(InvariantViolation, match=needle) as err:
                catch_up(conn, log, batch_events=2)  # the batches before it commit
            assert (err.value.line, err.value.offset) == (5, offsets[4])
            assert read_checkpoint(conn).log_pos == 4
        finally:
            conn.close()
    with pytest.raises(InvariantViolation, match=needle) as err:
        rebuild(log, tmp_path / "r.db")
    assert (err.value.line, err.value.offset) == (5, offsets[4])
    assert not (tmp_path / "r.db").exists()


def test_checkpoint_ahead_of_log_is_detected_and_rebuilt(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    offsets = write_lines(log, base_events())
    replay(log, db)
    log.write_bytes(log.read_bytes()[: offsets[3]])  # truncated below the checkpoint
    conn = connect(db)
    try:
        with pytest.raises(CheckpointMismatch, match="only"):
            catch_up(conn, log)
    finally:
        conn.close()
    result = replay(log, db)
    assert result.rebuilt and result.last_pos == 3
    assert rows(db, "SELECT count(*) FROM messages") == [(1,)]
    # the same length, other bytes: a replaced log
    other = MessageAppended(session_id="s", seq=2, role="user", content="other")
    write_lines(log, [*base_events()[:3], other])
    replay(log, db)
    write_lines(log, [*base_events()[:3], msgspec.structs.replace(other, content="OTHER")])
    result = replay(log, db)
    assert result.rebuilt and "different bytes" in (result.rebuild_reason or "")
    assert rows(db, "SELECT content FROM messages ORDER BY 1") == [("OTHER",), ("one",)]


# -- crashes ---------------------------------------------------------------------------
CHILD = """
import os, sys, time
sys.path.insert(0, {tests!r})
from projector import catch_up, connect
from projector.db import create_schema, is_empty
log, db, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = 0
def observer(event):
    global seen
    seen += 1
    if seen == stop_after:  # mid-batch: rows applied, not committed
        os.write(1, b"ready\\n")
        time.sleep(600)
conn = connect(db)
if is_empty(conn):
    create_schema(conn)
catch_up(conn, log, batch_events=7, observer=observer)
conn.close()
"""


@pytest.mark.slow
def test_sigkill_mid_batch_then_resume_equals_rebuild(tmp_path: Path) -> None:
    log, db, ref = tmp_path / "log.jsonl", tmp_path / "p.db", tmp_path / "ref.db"
    run_workload(log, random_ops(11, 150))
    script = CHILD.format(tests=str(TESTS))
    rng = random.Random(5)
    kills = 0
    while kills < 12:
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(log), str(db), str(rng.randrange(1, 12))],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        ready = child.stdout.readline()
        if ready != b"ready\n":  # nothing left to apply
            child.wait()
            child.stdout.close()
            break
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        kills += 1
    assert kills >= 10
    replay(log, db)
    rebuild(log, ref)
    assert canonical_hash(db) == canonical_hash(ref)
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    assert verify(log, db).ok


# -- determinism -----------------------------------------------------------------------
ops_strategy = st.lists(
    st.tuples(st.integers(0, len(OPS) - 1), st.integers(0, 999), st.integers(0, 10**6)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_strategy, chunks=st.lists(st.integers(1, 40), min_size=1, max_size=8),
       batch=st.integers(1, 50))  # fmt: skip
def test_chunked_replay_equals_rebuild(ops: list[tuple[int, int, int]], chunks: list[int],
                                       batch: int) -> None:  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        log, db, ref = Path(tmp, "log.jsonl"), Path(tmp, "p.db"), Path(tmp, "ref.db")
        run_workload(log, ops)
        rebuild(log, ref)
        conn = connect(db)
        try:
            create_schema(conn)
            pos = 0
            for step in chunks:
                pos += step
                catch_up(conn, log, batch_events=batch, until=pos)
            catch_up(conn, log, batch_events=batch)
            catch_up(conn, log)  # twice = once
        finally:
            conn.close()
        assert canonical_hash(db) == canonical_hash(ref)
        assert verify(log, db).ok
        os.unlink(ref)
        rebuild(log, ref)  # rebuilt again (later, by the wall clock): the same rows
        assert canonical_hash(ref) == canonical_hash(db)


def test_two_projectors_at_once_apply_every_event_exactly_once(tmp_path: Path) -> None:
    """Two catch-ups racing on one database (two `replay` calls, say): the second one to
    take the write lock sees the checkpoint moved and goes on from there."""
    import threading

    log, db, ref = tmp_path / "log.jsonl", tmp_path / "p.db", tmp_path / "ref.db"
    run_workload(log, random_ops(3, 5))
    first = replay(log, db).last_pos  # the database exists; now the log runs far ahead
    run_workload(log, random_ops(4, 400), start=T0 + timedelta(days=1))
    results: list[object] = []

    def project() -> None:
        conn = connect(db)
        try:
            # The incremental path, in small batches, so the two interleave often.
            results.append(catch_up(conn, log, batch_events=5, observer=lambda e: None))
        except BaseException as exc:
            results.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=project) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(isinstance(r, CatchUpResult) for r in results), results
    done = [r for r in results if isinstance(r, CatchUpResult)]
    last = max(r.last_pos for r in done)
    assert sum(r.events_applied for r in done) == last - first  # none twice, none lost
    rebuild(log, ref)
    assert canonical_hash(db) == canonical_hash(ref)


@pytest.mark.parametrize("line_by_line", [False, True])
def test_units_are_whole_groups_with_their_lines_byte_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line_by_line: bool
) -> None:
    """Read in C-checked chunks or line by line (a chunk that failed a check), the log
    comes in the same units: every event with the exact bytes of its line, a group's
    members together."""
    import importlib

    from journal.log import LogReader
    from projector.sync.reading import units

    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(11, 300))
    data = log.read_bytes()
    starts = [0]
    for raw in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(raw))
    if line_by_line:
        monkeypatch.setattr(
            importlib.import_module("journal.log.reader"), "_fast_run", lambda *a: None
        )
    got = list(units(LogReader(str(log))))
    assert [(r.event.pos, r.start, r.end) for u in got for r in u] == [
        (n, starts[n - 1], starts[n]) for n in range(1, len(starts))
    ]
    assert any(len(u) > 1 for u in got)
    for u in got:
        grps = [r.event.grp for r in u]
        if len(u) == 1:
            assert grps[0] is msgspec.UNSET
        else:
            assert grps == [(i, len(u)) for i in range(1, len(u) + 1)]


def test_catch_up_refuses_batches_of_no_events_before_any_work(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    write_lines(log, base_events())
    conn = connect(db)
    try:
        create_schema(conn)
        with pytest.raises(ValueError, match="batch_events"):
            catch_up(conn, log, batch_events=0)
        assert read_checkpoint(conn).log_pos == 0
    finally:
        conn.close()


def test_a_missing_log_is_nothing_to_apply_until_the_checkpoint_covers_some_of_it(
    tmp_path: Path,
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    conn = connect(db)
    try:
        create_schema(conn)
        assert catch_up(conn, log) == CatchUpResult(0, 0, 0, None, 0)
        write_lines(log, base_events())
        assert catch_up(conn, log).last_pos == 4
        log.unlink()
        with pytest.raises(CheckpointMismatch, match="does not exist"):
            catch_up(conn, log)
        assert read_checkpoint(conn).log_pos == 4
    finally:
        conn.close()
    result = replay(log, db)  # the projection of no log at all
    assert result.rebuilt and "does not exist" in (result.rebuild_reason or "")
    assert rows(db, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize(
    ("until", "needle"),
    [
        (True, "not a bool"),
        (datetime(2026, 3, 1, 9), "timezone-aware"),
        ("yesterday", "neither a position nor an RFC 3339 time"),
    ],
)
def test_a_bad_until_fails_before_any_work(tmp_path: Path, until: object, needle: str) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    write_lines(log, base_events())
    conn = connect(db)
    try:
        create_schema(conn)
        with pytest.raises(ValueError, match=needle):
            catch_up(conn, log, until=until)  # type: ignore[arg-type]
        assert read_checkpoint(conn).log_pos == 0
    finally:
        conn.close()
    with pytest.raises(ValueError, match=needle):
        rebuild(log, tmp_path / "r.db", until=until)  # type: ignore[arg-type]
    assert not (tmp_path / "r.db").exists()
