"""Withdrawing messages (``messages_truncated``): the log keeps them, the session goes on
from the seq it was cut back to, and bad requests are refused with nothing written."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from journal import (
    AsyncJournal,
    InvalidState,
    InvalidValue,
    Journal,
    LogError,
    SequenceConflict,
    UnknownSession,
    read_log,
)
from journal.events import MessageAppended, MessagesTruncated, encode_line


def _session(j: Journal, n: int = 4) -> str:
    sid = j.create_session("m", session_id="s")
    for i in range(1, n + 1):
        j.append_message(sid, "user", f"m{i}")
    return sid


def test_withdrawn_messages_stay_in_the_log_and_their_seqs_are_reused(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = _session(j)
        r = j.truncate(sid, 2, reason="rewind")
        assert r.session_id == sid and r.seq is None
        assert j.last_seq(sid) == 2
        with pytest.raises(SequenceConflict):
            j.append_message(sid, "user", "late", expected_seq=4)
        assert j.append_message(sid, "user", "again", expected_seq=2).seq == 3
    events = [e for e, _ in read_log(str(log))]
    assert [e.content for e in events if isinstance(e, MessageAppended)] == [
        "m1",
        "m2",
        "m3",
        "m4",
        "again",
    ]
    (cut,) = [e for e in events if isinstance(e, MessagesTruncated)]
    assert (cut.keep_through_seq, cut.reason) == (2, "rewind")
    with Journal.open(log) as j:  # the state folded from the log agrees
        assert j.last_seq(sid) == 3
        assert j.truncate(sid, 0).pos == j.last_pos
        assert j.last_seq(sid) == 0
        assert j.append_message(sid, "user", "fresh").seq == 1


@pytest.mark.parametrize("keep", [4, 9, -1, None, True, "1"])
def test_nothing_to_withdraw_or_a_bad_seq_is_refused(tmp_path: Path, keep: object) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = _session(j)
        size = log.stat().st_size
        with pytest.raises(InvalidValue, match=r"keep_through_seq|no messages after seq"):
            j.truncate(sid, keep)  # type: ignore[arg-type]
        assert log.stat().st_size == size


def test_a_closed_or_unknown_session_cannot_be_cut_back(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "s.jsonl") as j:
        sid = _session(j)
        j.archive(sid)
        with pytest.raises(InvalidState, match="withdraw messages"):
            j.truncate(sid, 1)
        with pytest.raises(UnknownSession):
            j.truncate("nobody", 0)


def test_a_retried_truncation_is_answered_not_repeated(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "s.jsonl") as j:
        sid = _session(j)
        eid = str(uuid.uuid4())
        first = j.truncate(sid, 1, event_id=eid)
        j.append_message(sid, "user", "next")
        assert j.truncate(sid, 1, event_id=eid) == first._replace(duplicate=True)
        assert j.last_seq(sid) == 2


def test_the_async_writer_truncates_too(tmp_path: Path) -> None:
    async def main() -> int:
        async with AsyncJournal.open(tmp_path / "s.jsonl") as aj:
            sid = await aj.create_session("m", session_id="s")
            for i in range(3):
                await aj.append_message(sid, "user", f"m{i}")
            await aj.truncate(sid, 1)
            return await aj.last_seq(sid)

    assert asyncio.run(main()) == 1


def test_a_log_withdrawing_past_the_last_seq_is_refused_on_open(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = _session(j, 2)
        last = j.last_pos
    crafted = MessagesTruncated(
        pos=last + 1,
        id=str(uuid.uuid4()),
        ts="2026-01-01T00:00:00.000000Z",
        session_id=sid,
        keep_through_seq=5,
    )
    with open(log, "ab") as f:
        f.write(encode_line(crafted))
    with pytest.raises(LogError, match=f"line {last + 1} .*withdrawn after seq 5"):
        Journal.open(log)


@pytest.mark.parametrize("keep", [0, 2])
def test_verify_checks_what_a_truncation_kept_against_the_log(tmp_path: Path, keep: int) -> None:
    """The log fold of a cut-back session is exact (a second reading for K > 0): a kept
    message changed in the database, or a withdrawn one left there, is reported."""
    import sqlite3

    import projector

    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(log) as j:
        sid = _session(j)
        j.truncate(sid, keep)
        j.append_message(sid, "user", "after the cut", tokens_used=3)
    projector.replay(str(log), str(db))
    assert projector.verify(str(log), str(db)).ok
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(
                "UPDATE messages SET content = 'changed' WHERE session_id = ? "
                "AND sequence_number = ?",
                (sid, keep + 1),
            )
    finally:
        conn.close()
    report = projector.verify(str(log), str(db))
    assert not report.ok
    assert any(sid in str(p) for p in report.problems)
