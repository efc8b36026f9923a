"""Atomic groups: all of a group or none of it, in the log and in the writer's state."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import (
    CorruptLog,
    GroupTooLarge,
    InvalidValue,
    Journal,
    JournalError,
    SequenceConflict,
    UnknownSession,
    read_log,
)
from journal import writer as writer_module


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_create_session_with_first_message_is_one_group(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session(
            "m",
            first_message={"role": "system", "content": "be brief", "tokens_used": 3},
        )
        j.create_session("m", first_message="hello")  # model known: a group of 2
    evs = [e for e, _ in read_log(str(log))]
    assert [e.grp for e in evs] == [(1, 3), (2, 3), (3, 3), (1, 2), (2, 2)]
    assert getattr(evs[2], "session_id", None) == sid and getattr(evs[2], "seq", None) == 1


def test_a_group_cut_at_every_byte_offset_is_kept_whole_or_not_at_all(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log, durability="none") as j:
        sid = j.create_session("m", first_message="one")
        with j.batch():
            for i in range(3):
                j.append_message(sid, "user", f"in a group {i}")
            j.rename(sid, "grouped")
    lines = lines_of(log)
    before = b"".join(lines[:-4])
    group = b"".join(lines[-4:])
    probe = tmp_path / "probe.jsonl"
    for cut in range(len(group) + 1):
        probe.write_bytes(before + group[:cut])
        for q in tmp_path.glob("probe.jsonl.torn-*"):
            q.unlink()
        with Journal.open(probe, durability="none") as j:
            if cut == len(group):
                assert j.repairs == [] and j.last_pos == 7
                assert j.last_seq(sid) == 4
                continue
            if cut == 0:
                assert j.repairs == []
            else:
                (repair,) = j.repairs
                assert repair.offset == len(before) and repair.line == 4
                assert Path(repair.quarantine_path).read_bytes() == group[:cut]
            assert probe.read_bytes() == before
            assert (j.last_pos, j.last_seq(sid)) == (3, 1)
            assert j.append_message(sid, "user", "after").seq == 2


def test_an_incomplete_group_in_the_middle_is_corruption(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        with j.batch():
            j.append_message(sid, "user", "a")
            j.append_message(sid, "user", "b")
            j.append_message(sid, "user", "c")
        j.rename(sid, "after")
    lines = lines_of(log)
    # drop the middle member, then fix up nothing: positions and the group both break
    damaged = b"".join(lines[:3] + lines[4:])
    log.write_bytes(damaged)
    with pytest.raises(CorruptLog, match=r"line 4 .*position 5 where 4 was expected"):
        Journal.open(log)
    assert log.read_bytes() == damaged


def test_a_group_missing_its_last_member_before_other_records_is_corruption(
    tmp_path: Path,
) -> None:
    """Craft: a group of 3 whose third member never came, then a valid single record."""
    from journal.events import SessionRenamed, encode_line

    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", first_message="x")  # group of 3 at pos 1..3
    lines = lines_of(log)
    ts = "2030-01-01T00:00:00.000000Z"
    tail = encode_line(SessionRenamed(pos=3, id="r", ts=ts, session_id=sid, title="t"))
    damaged = b"".join(lines[:2]) + tail
    log.write_bytes(damaged)
    with pytest.raises(CorruptLog, match=r"line 1 \(byte offset 0\): atomic group has only 2"):
        list(read_log(str(log)))


@pytest.mark.parametrize(
    ("grps", "message"),
    [
        ([(2, 2)], r"line 4 \(byte offset \d+\): group member 2 of 2 out of order"),
        ([(1, 1)], "group member 1 of 1 out of order"),
        ([(1, 3), (3, 3)], r"line 4 \(byte offset \d+\): atomic group has only 1 of its 3"),
        ([(1, 3), (2, 2)], "atomic group has only 1 of its 3 records"),
    ],
)
def test_group_members_out_of_order_are_corruption(
    tmp_path: Path, grps: list[tuple[int, int]], message: str
) -> None:
    """Whole records (valid checksums) whose group framing is impossible."""
    from journal.events import SessionRenamed, encode_line

    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", first_message="x")  # a group of 3 at pos 1..3
    ts = "2030-01-01T00:00:00.000000Z"
    crafted = [
        encode_line(
            SessionRenamed(pos=4 + k, id=f"r{k}", ts=ts, session_id=sid, title="t", grp=grp)
        )
        for k, grp in enumerate(grps)
    ]
    damaged = log.read_bytes() + b"".join(crafted)
    log.write_bytes(damaged)
    with pytest.raises(CorruptLog, match=message):
        Journal.open(log)
    assert log.read_bytes() == damaged
    with pytest.raises(CorruptLog, match=message):
        list(read_log(str(log)))


def test_an_exception_in_a_batch_writes_nothing_and_restores_the_state(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", first_message="one")
        before = log.read_bytes()
        with pytest.raises(RuntimeError, match="changed my mind"), j.batch():
            assert j.append_message(sid, "user", "two").seq == 2
            other = j.create_session("m2", session_id="other")
            j.archive(sid)
            raise RuntimeError("changed my mind")
        assert log.read_bytes() == before
        assert (j.last_pos, j.last_seq(sid), j.status(sid)) == (3, 1, "active")
        with pytest.raises(UnknownSession):
            j.status(other)
        assert "m2" not in j._state.models
        r = j.append_message(sid, "user", "two again")
        assert (r.pos, r.seq) == (4, 2)
        assert j.create_session("m2", session_id="other") == "other"
    assert [e.pos for e, _ in read_log(str(log))] == [1, 2, 3, 4, 5, 6]


def test_receipts_inside_a_batch_are_final(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j, Journal.open(log) as other:
        sid = j.create_session("m")
        with j.batch():
            receipts = [j.append_message(sid, "user", f"m{i}") for i in range(3)]
        r = other.append_message(sid, "user", "later")
    assert [x.pos for x in receipts] == [3, 4, 5] and r.pos == 6 and r.seq == 4
    evs = {e.pos: e for e, _ in read_log(str(log))}
    assert [evs[x.pos].id for x in receipts] == [x.event_id for x in receipts]


def test_a_failed_call_caught_inside_a_batch_leaves_nothing_of_itself(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        with j.batch():
            j.append_message(sid, "user", "kept")
            with pytest.raises(InvalidValue, match="content is empty"):
                j.create_session("m9", session_id="half", first_message="")
            with pytest.raises(SequenceConflict):
                j.append_message(sid, "user", "stale", expected_seq=0)
            j.append_message(sid, "user", "kept too")
        assert "half" not in j._state.sessions and "m9" not in j._state.models
    evs = [e for e, _ in read_log(str(log))]
    assert [getattr(e, "content", None) for e in evs[2:]] == ["kept", "kept too"]
    assert [e.grp for e in evs[2:]] == [(1, 2), (2, 2)]


def test_batches_do_not_nest(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "s.jsonl") as j:
        sid = j.create_session("m")
        with pytest.raises(InvalidValue, match="do not nest"), j.batch():
            j.append_message(sid, "user", "x")
            with j.batch():
                pass  # pragma: no cover
        assert j.last_seq(sid) == 0


def test_group_event_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_GROUP_EVENTS", 5)
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        before = log.read_bytes()
        with pytest.raises(GroupTooLarge, match="at most 5 events"), j.batch():
            for i in range(6):
                j.append_message(sid, "user", f"m{i}")
        assert log.read_bytes() == before
        assert j.last_seq(sid) == 0
        with j.batch():
            for i in range(5):
                j.append_message(sid, "user", f"m{i}")
        assert j.last_seq(sid) == 5


def test_group_byte_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writer_module, "MAX_GROUP_BYTES", 10_000)
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        before = log.read_bytes()
        too_large = pytest.raises(
            GroupTooLarge, match=r"group of \d+ bytes is over the limit of 10000"
        )
        with too_large, j.batch():
            for _ in range(3):
                j.append_message(sid, "user", "x" * 4000)
        assert log.read_bytes() == before
        assert (j.last_seq(sid), j.last_pos) == (0, 2)
        assert j.append_message(sid, "user", "fits").seq == 1


def _state_of(j: Journal, session_ids: set[str]) -> tuple[object, ...]:
    """What the writer knows: of each session (in memory, or in the checkpoint it started
    from), the models, the id window, where it stands."""
    state = j._state
    sessions = {sid: s.fields() if (s := state.peek(sid)) else None for sid in session_ids}
    ids = state.recent_ids.ids()
    return sessions, set(state.models), ids, state.last_pos, state.last_ts


CALLS = st.lists(
    st.tuples(
        st.sampled_from(["message", "empty", "pause", "resume", "archive", "restore",
                         "timeout", "meta", "create"]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=8,
)  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.tuples(CALLS, st.booleans()), min_size=1, max_size=4))
def test_the_state_after_any_batch_is_the_state_its_log_gives(
    tmp_path_factory: pytest.TempPathFactory, batches: list[tuple[list[tuple[str, str]], bool]]
) -> None:
    """Calls that fail inside a batch and batches that are abandoned roll the writer's
    state back exactly: it is always the state a fresh open folds from the log."""
    log = tmp_path_factory.mktemp("state") / "s.jsonl"
    with Journal.open(log, "none") as j:
        j.create_session("m", session_id="a")
        j.create_session("m", session_id="b")
        for calls, abandon in batches:
            with contextlib.suppress(RuntimeError), j.batch():
                for call, sid in calls:
                    with contextlib.suppress(JournalError):
                        _call(j, call, sid)
                if abandon:
                    raise RuntimeError("abandoned")
            with Journal.open(log, "none") as fresh:
                known = {"a", "b"} | set(j._state.sessions) | set(fresh._state.sessions)
                assert _state_of(j, known) == _state_of(fresh, known)


def _call(j: Journal, call: str, sid: str) -> None:
    if call == "message":
        j.append_message(sid, "user", "hi")
    elif call == "empty":
        j.append_message(sid, "user", "")  # refused: content is empty
    elif call == "pause":
        j.pause(sid)
    elif call == "resume":
        j.resume(sid)
    elif call == "archive":
        j.archive(sid)
    elif call == "restore":
        j.restore(sid)
    elif call == "timeout":
        j.time_out(sid, "idle")
    elif call == "meta":
        j.set_metadata(sid, "k", "v")
    else:
        j.create_session("m2", first_message="first")
