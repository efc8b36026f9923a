"""The writer API: validation, conflicts, idempotency, timeouts and restore."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journal import (
    IdempotencyConflict,
    InvalidState,
    InvalidValue,
    Journal,
    JournalClosed,
    SequenceConflict,
    SessionExists,
    UnknownSession,
    ValidationError,
    read_log,
)
from journal import events as ev
from journal.events import format_ts
from journal.validation import MAX_CONTENT_BYTES, MAX_METADATA_VALUE_BYTES, MAX_TEXT_CHARS

T0 = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)


class Clock:
    """An injectable clock that moves only when told."""

    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "sessions.jsonl"


@pytest.fixture
def j(log: Path, clock: Clock) -> Iterator[Journal]:
    with Journal.open(log, clock=clock) as journal:
        yield journal


def events(path: Path) -> list[ev.AnyEvent]:
    return [e for e, _ in read_log(str(path))]


@contextmanager
def unchanged(path: Path) -> Iterator[None]:
    before = path.read_bytes()
    yield
    assert path.read_bytes() == before


def test_the_design_cards_example(log: Path) -> None:
    with Journal.open(str(log), durability="always") as j:
        sid = j.create_session(
            model_id="gpt-4o",
            model_name="GPT-4o",
            title="Trip plan",
            idle_timeout_seconds=3600,
            hard_timeout_seconds=86400,
        )
        r = j.append_message(
            sid, role="user", content="Hello", tokens_used=12, duration_seconds=0.4
        )
        assert (r.pos, r.seq, r.duplicate, r.session_id) == (3, 1, False, sid)
        assert uuid.UUID(r.event_id)
        j.set_metadata(sid, "channel", "web")
        j.rename(sid, "Paris in May")
        j.pause(sid)
        j.resume(sid)
        j.snapshot(sid, reason="checkpoint")
        j.archive(sid)
        assert j.expire_due() == []
        j.restore(sid)
        j.delete_session(sid)
        assert j.status(sid) == "deleted"
        assert not j.closed
    types = [type(e).__struct_config__.tag for e in events(log)]
    assert types == [
        "model_registered",
        "session_created",
        "message_appended",
        "session_metadata_set",
        "session_renamed",
        "session_paused",
        "session_resumed",
        "session_snapshotted",
        "session_archived",
        "session_restored",
        "session_snapshotted",
        "session_deleted",
    ]
    assert [e.pos for e in events(log)] == list(range(1, 13))
    assert j.closed
    with pytest.raises(JournalClosed, match="closed"):
        j.rename(sid, "after close")


# -- validation: a specific error, an actionable message, nothing written --------------------
SID = "s1"
SURROGATE = "ok \ud800 no"
Call = Callable[[Journal], Any]
BAD_INPUT: list[tuple[str, Call, type[Exception], str]] = [
    (
        "unknown session",
        lambda j: j.append_message("nope", "user", "hi"),
        UnknownSession,
        "unknown session 'nope'",
    ),
    ("unknown session rename", lambda j: j.rename("nope", "t"), UnknownSession, "'nope'"),
    (
        "bad role",
        lambda j: j.append_message(SID, "robot", "hi"),
        InvalidValue,
        "role must be one of user, assistant, system, tool, developer, not 'robot'",
    ),
    (
        "empty content",
        lambda j: j.append_message(SID, "user", ""),
        InvalidValue,
        "content is empty",
    ),
    (
        "content not a string",
        lambda j: j.append_message(SID, "user", b"hi"),
        InvalidValue,
        "content must be a string, not bytes",
    ),
    (
        "negative tokens",
        lambda j: j.append_message(SID, "user", "hi", tokens_used=-1),
        InvalidValue,
        "tokens_used must be a whole number >= 0, not -1",
    ),
    (
        "bool tokens",
        lambda j: j.append_message(SID, "user", "hi", tokens_used=True),
        InvalidValue,
        "tokens_used",
    ),
    (
        "huge tokens",
        lambda j: j.append_message(SID, "user", "hi", tokens_used=2**64),
        InvalidValue,
        "does not fit in 64 bits",
    ),
    (
        "negative duration",
        lambda j: j.append_message(SID, "user", "hi", duration_seconds=-0.5),
        InvalidValue,
        "duration_seconds must be a finite number >= 0, not -0.5",
    ),
    (
        "NaN duration",
        lambda j: j.append_message(SID, "user", "hi", duration_seconds=math.nan),
        InvalidValue,
        "not nan",
    ),
    (
        "inf duration",
        lambda j: j.append_message(SID, "user", "hi", duration_seconds=math.inf),
        InvalidValue,
        "not inf",
    ),
    (
        "path-like session id",
        lambda j: j.append_message("../etc/passwd", "user", "hi"),
        InvalidValue,
        r"malformed session id '\.\./etc/passwd'",
    ),
    (
        "slash in session id",
        lambda j: j.create_session("m", session_id="a/b"),
        InvalidValue,
        "malformed session id 'a/b'",
    ),
    (
        "SQL-like session id",
        lambda j: j.append_message("x'; DROP TABLE sessions; --", "user", "hi"),
        InvalidValue,
        "malformed session id",
    ),
    (
        "empty session id",
        lambda j: j.create_session("m", session_id=""),
        InvalidValue,
        "malformed session id ''",
    ),
    (
        "long session id",
        lambda j: j.create_session("m", session_id="a" * 129),
        InvalidValue,
        "1-128 characters",
    ),
    (
        "session id with NUL",
        lambda j: j.rename("s\x001", "t"),
        InvalidValue,
        "malformed session id",
    ),
    (
        "malformed model id",
        lambda j: j.create_session("gpt 4o"),
        InvalidValue,
        "malformed model id 'gpt 4o'",
    ),
    (
        "malformed event id",
        lambda j: j.append_message(SID, "user", "hi", event_id="not-a-uuid"),
        InvalidValue,
        "malformed event id 'not-a-uuid'",
    ),
    (
        "upper-case event id",
        lambda j: j.append_message(SID, "user", "hi", event_id=str(uuid.uuid4()).upper()),
        InvalidValue,
        "canonical lowercase",
    ),
    (
        "oversized content",
        lambda j: j.append_message(SID, "user", "é" * (MAX_CONTENT_BYTES // 2 + 1)),
        InvalidValue,
        f"over the limit of {MAX_CONTENT_BYTES} bytes",
    ),
    (
        "lone surrogate in content",
        lambda j: j.append_message(SID, "user", SURROGATE),
        InvalidValue,
        r"content holds a lone surrogate \(\\ud800\) at character 3",
    ),
    (
        "lone surrogate in title",
        lambda j: j.rename(SID, SURROGATE),
        InvalidValue,
        "title holds a lone surrogate",
    ),
    (
        "lone surrogate in metadata value",
        lambda j: j.set_metadata(SID, "k", SURROGATE),
        InvalidValue,
        "value holds a lone surrogate",
    ),
    (
        "lone surrogate in message metadata",
        lambda j: j.append_message(SID, "user", "hi", metadata={"k": SURROGATE}),
        InvalidValue,
        "metadata",
    ),
    (
        "NUL in content",
        lambda j: j.append_message(SID, "user", "a\x00b"),
        InvalidValue,
        "content holds a NUL character at 1",
    ),
    (
        "NaN in message metadata",
        lambda j: j.append_message(SID, "user", "hi", metadata={"x": math.nan}),
        InvalidValue,
        "^metadata is not JSON-serialisable: at x: nan is not a JSON number$",
    ),
    (
        "metadata not a mapping",
        lambda j: j.append_message(SID, "user", "hi", metadata=[1]),
        InvalidValue,
        "metadata must be a JSON object",
    ),
    (
        "oversized message metadata",
        lambda j: j.append_message(
            SID, "user", "hi", metadata={"k": "x" * MAX_METADATA_VALUE_BYTES}
        ),
        InvalidValue,
        rf"metadata is \d+ bytes of JSON; the limit is {MAX_METADATA_VALUE_BYTES}",
    ),
    (
        "long title",
        lambda j: j.rename(SID, "t" * (MAX_TEXT_CHARS + 1)),
        InvalidValue,
        f"title is {MAX_TEXT_CHARS + 1} characters long; the limit is {MAX_TEXT_CHARS}",
    ),
    (
        "empty metadata key",
        lambda j: j.set_metadata(SID, "", "v"),
        InvalidValue,
        "key must be a non-empty string",
    ),
    (
        "zero timeout",
        lambda j: j.create_session("m", idle_timeout_seconds=0),
        InvalidValue,
        "idle_timeout_seconds must be None or a whole number of seconds",
    ),
    (
        "negative timeout",
        lambda j: j.create_session("m", hard_timeout_seconds=-5),
        InvalidValue,
        "hard_timeout_seconds",
    ),
    (
        "session exists",
        lambda j: j.create_session("m", session_id=SID),
        SessionExists,
        "session 's1' already exists",
    ),
    (
        "model registered twice",
        lambda j: j.register_model("m"),
        InvalidValue,
        "model 'm' is already registered",
    ),
    (
        "bad snapshot reason",
        lambda j: j.snapshot(SID, reason="whim"),
        InvalidValue,
        "reason must be one of checkpoint",
    ),
    (
        "resume an active session",
        lambda j: j.resume(SID),
        InvalidState,
        "session 's1' is active: cannot resume",
    ),
    (
        "restore an active session",
        lambda j: j.restore(SID),
        InvalidState,
        "session 's1' is active: cannot restore",
    ),
    (
        "malformed at",
        lambda j: j.append_message(SID, "user", "hi", at="yesterday"),
        InvalidValue,
        "at: not an RFC 3339",
    ),
    (
        "naive at",
        lambda j: j.append_message(SID, "user", "hi", at=datetime(2020, 1, 1)),
        InvalidValue,
        "timezone-aware",
    ),
    (
        "naive expire_due",
        lambda j: j.expire_due(datetime(2030, 1, 1)),
        InvalidValue,
        "timezone-aware",
    ),
    (
        "bad first message",
        lambda j: j.create_session(
            "m2", session_id="s2", first_message={"role": "x", "content": "y"}
        ),
        InvalidValue,
        "role must be one of",
    ),
    (
        "first message neither text nor mapping",
        lambda j: j.create_session("m2", session_id="s2", first_message=42),
        InvalidValue,
        "first_message must be a string or a mapping",
    ),
    (
        "empty first message",
        lambda j: j.create_session("m2", session_id="s2", first_message=""),
        InvalidValue,
        "content is empty",
    ),
    (
        "expected_seq conflict",
        lambda j: j.append_message(SID, "user", "hi", expected_seq=0),
        SequenceConflict,
        "session 's1': expected last seq 0, but it is 1; read the new messages and retry",
    ),
    (
        "negative expected_seq",
        lambda j: j.append_message(SID, "user", "hi", expected_seq=-1),
        InvalidValue,
        "expected_seq",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(c, e, m, id=name) for name, c, e, m in BAD_INPUT],
)
def test_bad_input_raises_its_error_and_writes_nothing(
    j: Journal, log: Path, call: Call, error: type[Exception], message: str
) -> None:
    j.create_session("m", session_id=SID, first_message="first")
    last = j.last_pos
    with unchanged(log), pytest.raises(error, match=message):
        call(j)
    # the writer is still usable and its state untouched
    assert j.last_pos == last
    assert j.append_message(SID, "user", "next").seq == 2
    assert [e.pos for e in events(log)] == list(range(1, last + 2))
    assert "s2" not in j._state.sessions and "m2" not in j._state.models


def test_a_clock_without_a_time_zone_is_refused_before_anything_is_written(log: Path) -> None:
    with Journal.open(log, clock=lambda: datetime(2026, 1, 1)) as j, unchanged(log):
        with pytest.raises(
            InvalidValue, match="the clock's reading must be a timezone-aware datetime"
        ):
            j.create_session("m")
        assert j.last_pos == 0 and j._state.models == set()


@pytest.mark.parametrize(
    ("status", "make"),
    [
        ("expired", lambda j, c: (c.advance(90_000), j.expire_due())),
        ("archived", lambda j, c: j.archive(SID)),
        ("deleted", lambda j, c: j.delete_session(SID)),
    ],
)
def test_no_message_to_a_closed_session(
    j: Journal, log: Path, clock: Clock, status: str, make: Callable[[Journal, Clock], Any]
) -> None:
    j.create_session("m", session_id=SID)
    make(j, clock)
    assert j.status(SID) == status
    error: type[ValidationError] = UnknownSession if status == "deleted" else InvalidState
    with unchanged(log), pytest.raises(error, match=f"session 's1' .*{status}") as info:
        j.append_message(SID, "user", "hello?")
    assert "restore" in str(info.value)
    j.restore(SID)
    assert j.append_message(SID, "user", "hello again").seq == 1


def test_expected_seq(j: Journal, log: Path) -> None:
    sid = j.create_session("m")
    assert j.append_message(sid, "user", "a", expected_seq=0).seq == 1
    assert j.append_message(sid, "assistant", "b", expected_seq=1).seq == 2
    with unchanged(log), pytest.raises(SequenceConflict) as info:
        j.append_message(sid, "user", "stale", expected_seq=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert j.last_seq(sid) == 2


# -- idempotency -----------------------------------------------------------------------------
def test_duplicate_event_id_returns_the_first_receipt(j: Journal, log: Path) -> None:
    sid = j.create_session("m")
    eid = str(uuid.uuid4())
    first = j.append_message(sid, "user", "once", event_id=eid)
    with unchanged(log):
        again = j.append_message(sid, "user", "once", event_id=eid)
    assert again == first._replace(duplicate=True)
    assert first.duplicate is False


def test_duplicate_across_two_journals_and_after_reopen(log: Path) -> None:
    eid, cid = str(uuid.uuid4()), str(uuid.uuid4())
    with Journal.open(log) as a, Journal.open(log) as b:
        sid = a.create_session("m", event_id=cid, first_message="hi")
        first = a.append_message(sid, "user", "once", event_id=eid)
        with unchanged(log):
            assert b.append_message(sid, "user", "once", event_id=eid) == first._replace(
                duplicate=True
            )
            assert b.create_session("m", event_id=cid, first_message="hi") == sid
    with Journal.open(log) as c, unchanged(log):
        assert c.append_message(sid, "user", "once", event_id=eid).duplicate
        assert c.create_session("m", event_id=cid) == sid


def test_event_id_reused_for_another_operation(j: Journal, log: Path) -> None:
    a = j.create_session("m", session_id="a")
    b = j.create_session("m", session_id="b")
    eid = str(uuid.uuid4())
    r = j.append_message(a, "user", "x", event_id=eid)
    with unchanged(log):
        with pytest.raises(
            IdempotencyConflict,
            match=f"event id {eid} was already used for a "
            f"message_appended event at position {r.pos}",
        ):
            j.rename(a, "t", event_id=eid)
        with pytest.raises(IdempotencyConflict):
            j.append_message(b, "user", "x", event_id=eid)
    cid = str(uuid.uuid4())
    j.create_session("m", session_id="c", event_id=cid)
    with unchanged(log), pytest.raises(IdempotencyConflict, match="session_created"):
        j.create_session("m", session_id="d", event_id=cid)


def test_delete_retry_is_idempotent(j: Journal, log: Path) -> None:
    sid = j.create_session("m")
    eid = str(uuid.uuid4())
    r = j.delete_session(sid, event_id=eid)
    with unchanged(log):
        assert j.delete_session(sid, event_id=eid) == r._replace(duplicate=True)


def test_a_retry_of_every_call_returns_the_first_receipt(j: Journal, log: Path) -> None:
    """Each call of a session's life, retried with its event_id at once and again after
    the session moved on, writes nothing and returns the first call's receipt."""
    sid = j.create_session("m", session_id=SID)
    calls: list[Callable[[str], Any]] = [
        lambda e: j.register_model("m2", event_id=e),
        lambda e: j.set_metadata(sid, "k", "v", event_id=e),
        lambda e: j.rename(sid, "t", event_id=e),
        lambda e: j.pause(sid, event_id=e),
        lambda e: j.resume(sid, event_id=e),
        lambda e: j.snapshot(sid, event_id=e),
        lambda e: j.time_out(sid, "idle", event_id=e),
        lambda e: j.archive(sid, event_id=e),
        lambda e: j.restore(sid, event_id=e),
    ]
    done = []
    for call in calls:
        eid = str(uuid.uuid4())
        first = call(eid)
        assert first.duplicate is False and first.event_id == eid
        with unchanged(log):
            assert call(eid) == first._replace(duplicate=True)
        done.append((call, eid, first))
    with unchanged(log):
        for call, eid, first in done:
            assert call(eid) == first._replace(duplicate=True)


# -- timeouts --------------------------------------------------------------------------------
def tags(evs: list[ev.AnyEvent]) -> list[str]:
    return [str(type(e).__struct_config__.tag) for e in evs]


def test_expire_due_warning_idle_and_hard(j: Journal, log: Path, clock: Clock) -> None:
    sid = j.create_session("m", idle_timeout_seconds=1000, hard_timeout_seconds=5000)
    assert j.expire_due(T0 + timedelta(seconds=600)) == []
    n = len(events(log))

    clock.advance(750)
    (warn,) = j.expire_due()
    new = events(log)[n:]
    assert tags(new) == ["session_snapshotted", "timeout_warning"]
    snap, w = new
    assert isinstance(snap, ev.SessionSnapshotted) and snap.reason == "timeout_warning"
    assert isinstance(w, ev.TimeoutWarning) and w.pos == warn.pos
    assert (w.kind, w.deadline, w.as_of) == (
        "idle",
        format_ts(T0 + timedelta(seconds=1000)),
        format_ts(clock.now),
    )
    assert snap.grp == (1, 2) and w.grp == (2, 2)
    with unchanged(log):
        assert j.expire_due() == []  # warned once per period of activity

    as_of = T0 + timedelta(seconds=1001)
    clock.advance(300)  # the writer's clock differs from the decision time
    (idle,) = j.expire_due(as_of)
    assert idle.session_id == sid
    timed_out = events(log)[-1]
    assert isinstance(timed_out, ev.SessionTimedOut)
    assert (timed_out.kind, timed_out.as_of, timed_out.ts) == (
        "idle",
        format_ts(as_of),
        format_ts(clock.now),
    )
    assert j.status(sid) == "idle"
    assert j.append_message(sid, "user", "back").seq == 1
    assert j.status(sid) == "active"

    # an idle session, warned before it went idle, is warned again before its hard deadline
    clock.advance(800)
    assert len(j.expire_due()) == 1
    assert isinstance(events(log)[-1], ev.TimeoutWarning)
    clock.advance(201)
    assert len(j.expire_due()) == 1
    assert j.status(sid) == "idle"
    n = len(events(log))
    clock.now = T0 + timedelta(seconds=4800)
    (hard_warn,) = j.expire_due()
    assert hard_warn.pos == events(log)[-1].pos
    last = events(log)[-1]
    assert isinstance(last, ev.TimeoutWarning) and last.kind == "hard", tags(events(log)[n:])
    assert last.deadline == format_ts(T0 + timedelta(seconds=5000))

    clock.now = T0 + timedelta(seconds=5000)
    (hard,) = j.expire_due()
    assert hard.pos == events(log)[-1].pos
    last = events(log)[-1]
    assert isinstance(last, ev.SessionTimedOut) and last.kind == "hard"
    assert j.status(sid) == "expired"
    with pytest.raises(InvalidState, match="is expired: cannot append a message"):
        j.append_message(sid, "user", "late")
    j.restore(sid)
    assert j.status(sid) == "active"
    assert j.expire_due(clock.now + timedelta(seconds=10)) == []  # fresh deadlines


def test_paused_sessions_are_skipped(j: Journal, log: Path, clock: Clock) -> None:
    sid = j.create_session("m", idle_timeout_seconds=10, hard_timeout_seconds=20)
    j.pause(sid)
    with unchanged(log):
        assert j.expire_due(T0 + timedelta(days=30)) == []
    j.append_message(sid, "user", "a message resumes it")
    assert j.status(sid) == "active"
    assert len(j.expire_due(T0 + timedelta(days=30))) == 1
    assert j.status(sid) == "expired"


def test_no_timeouts_means_never_expires(j: Journal, log: Path) -> None:
    j.create_session("m", idle_timeout_seconds=None, hard_timeout_seconds=None)
    with unchanged(log):
        assert j.expire_due(T0 + timedelta(days=3650)) == []


def _timeout_run(path: Path) -> list[tuple[Any, ...]]:
    clock = Clock()
    with Journal.open(path, clock=clock) as j:
        for i in range(6):
            j.create_session(
                "m", session_id=f"s{i}", idle_timeout_seconds=100 + 50 * i, hard_timeout_seconds=400
            )
        for step in range(10):
            clock.advance(60)
            if step == 3:
                j.append_message("s2", "user", "keep alive")
                j.pause("s5")
            j.expire_due()
    return [
        (
            type(e).__name__,
            getattr(e, "session_id", None),
            getattr(e, "kind", None),
            getattr(e, "as_of", None),
            e.ts,
            e.pos,
            e.grp,
        )
        for e in events(path)
    ]


def test_expire_due_is_deterministic_with_an_injected_clock(tmp_path: Path) -> None:
    a = _timeout_run(tmp_path / "a.jsonl")
    b = _timeout_run(tmp_path / "b.jsonl")
    assert a == b
    kinds = [(e[0], e[2]) for e in a]
    assert ("SessionTimedOut", "idle") in kinds and ("SessionTimedOut", "hard") in kinds
    assert ("TimeoutWarning", "idle") in kinds
    paused_at = next(e[5] for e in a if e[:2] == ("SessionPaused", "s5"))
    assert [e for e in a if e[1] == "s5" and e[5] > paused_at] == []


@pytest.mark.parametrize("status", ["idle", "expired", "archived", "deleted"])
def test_restore(j: Journal, log: Path, clock: Clock, status: str) -> None:
    sid = j.create_session("m", idle_timeout_seconds=10, hard_timeout_seconds=1000)
    j.append_message(sid, "user", "one")
    if status == "idle":
        j.expire_due(T0 + timedelta(seconds=11))
    elif status == "expired":
        j.expire_due(T0 + timedelta(seconds=1000))
    elif status == "archived":
        j.archive(sid)
    else:
        j.delete_session(sid)
    assert j.status(sid) == status
    clock.advance(5000)
    r = j.restore(sid)
    restored = events(log)[-1]
    assert isinstance(restored, ev.SessionRestored) and restored.pos == r.pos
    if status == "deleted":
        snap = events(log)[-3]
        assert isinstance(snap, ev.SessionSnapshotted) and snap.reason == "pre_delete"
        assert restored.snapshot_pos == snap.pos
    else:
        assert restored.snapshot_pos is None
    assert j.status(sid) == "active"
    assert j.append_message(sid, "user", "two").seq == 2
    # fresh deadlines: counted from the restore
    assert j.expire_due(clock.now + timedelta(seconds=5), warn_before_seconds=0) == []


def test_clock_stepping_back_is_clamped(j: Journal, log: Path, clock: Clock) -> None:
    sid = j.create_session("m")
    clock.advance(-3600)
    j.append_message(sid, "user", "from the past")
    clock.advance(7200)
    j.append_message(sid, "user", "from the future")
    stamps = [e.ts for e in events(log)]
    assert stamps == sorted(stamps)
    assert stamps[2] == stamps[1] == format_ts(T0)
    assert stamps[3] == format_ts(T0 + timedelta(seconds=3600))


def test_one_write_reads_the_clock_once_and_its_events_share_that_time(log: Path) -> None:
    readings: list[datetime] = []

    def clock() -> datetime:
        readings.append(T0 + timedelta(seconds=len(readings)))
        return readings[-1]

    with Journal.open(log, clock=clock) as j:
        sid = j.create_session("m", first_message="hi")  # 3 events: model, session, message
        with j.batch():
            for n in range(5):
                j.append_message(sid, "assistant", f"part {n}")
        j.append_message(sid, "user", "thanks")
    assert len(readings) == 3
    assert [e.ts for e in events(log)] == [format_ts(readings[0])] * 3 + [
        format_ts(readings[1])
    ] * 5 + [format_ts(readings[2])]


def test_clamping_holds_across_writers(log: Path) -> None:
    with Journal.open(log, clock=Clock(T0 + timedelta(days=1))) as ahead:
        sid = ahead.create_session("m")
    with Journal.open(log, clock=Clock(T0)) as behind:
        behind.append_message(sid, "user", "x")
    stamps = [e.ts for e in events(log)]
    assert stamps == sorted(stamps)


def test_at_is_recorded_and_used_for_deadlines(j: Journal, log: Path, clock: Clock) -> None:
    then = T0 - timedelta(days=2)
    sid = j.create_session("m", at=then, hard_timeout_seconds=86400, idle_timeout_seconds=None)
    created = events(log)[-1]
    assert created.at == format_ts(then) and created.ts == format_ts(T0)
    (r,) = j.expire_due()
    assert j.status(sid) == "expired" and r.session_id == sid


def test_time_out_one_session_with_its_own_decision_time(j: Journal, log: Path) -> None:
    sid = j.create_session("gpt-4o", first_message="hi")
    r = j.time_out(sid, "idle", at="2026-01-02T03:04:05.000006Z")
    assert j.status(sid) == "idle"
    last = events(log)[-1]
    assert isinstance(last, ev.SessionTimedOut)
    assert (last.kind, last.as_of, last.at, last.pos) == (
        "idle",
        "2026-01-02T03:04:05.000006Z",
        "2026-01-02T03:04:05.000006Z",
        r.pos,
    )
    with unchanged(log), pytest.raises(InvalidState, match="is idle: cannot time out"):
        j.time_out(sid, "idle")
    j.time_out(sid, "hard")
    assert j.status(sid) == "expired"
    with unchanged(log), pytest.raises(InvalidValue, match="kind must be"):
        j.time_out(sid, "soon")  # type: ignore[arg-type]


def test_pause_and_archive_record_when_they_happened(j: Journal, log: Path) -> None:
    sid = j.create_session("gpt-4o")
    j.pause(sid, at="2025-05-05T05:05:05.000000Z")
    j.archive(sid, at="2025-05-06T05:05:05.000000Z")
    paused, archived = events(log)[-2:]
    assert paused.when == "2025-05-05T05:05:05.000000Z"
    assert archived.when == "2025-05-06T05:05:05.000000Z"
    with unchanged(log), pytest.raises(InvalidValue, match="at:"):
        j.pause(sid, at="yesterday")


def test_metadata_value_limit_counts_bytes(j: Journal, log: Path) -> None:
    sid = j.create_session("gpt-4o")
    j.set_metadata(sid, "k", "é" * (64 * 1024 // 2))  # exactly 64 KiB of UTF-8
    with unchanged(log), pytest.raises(InvalidValue, match="bytes of UTF-8"):
        j.set_metadata(sid, "k", "é" * (64 * 1024 // 2 + 1))


def test_unknown_durability_mode_is_bad_input(log: Path) -> None:
    with pytest.raises(InvalidValue, match="durability must be one of always, batch, none"):
        Journal.open(log, durability="sometimes")  # type: ignore[arg-type]
    assert not log.exists()


def test_metadata_nested_too_deeply_is_bad_input(j: Journal, log: Path) -> None:
    sid = j.create_session("gpt-4o")
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    with unchanged(log), pytest.raises(InvalidValue, match="nested deeper than 256 levels"):
        j.append_message(sid, "user", "x", metadata={"deep": deep})


def _one_char_changed(u: uuid.UUID, at: int, ch: str) -> str:
    text = str(u)
    return text[: at % 36] + ch + text[at % 36 + 1 :]


@given(
    st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: f"{{{u}}}"),
        st.builds(_one_char_changed, st.uuids(), st.integers(0, 35), st.characters()),
        st.text(max_size=40),
    )
)
def test_event_ids_are_exactly_the_uuids_in_canonical_form(value: str) -> None:
    from journal.validation import check_event_id

    try:
        canonical = str(uuid.UUID(value)) == value
    except ValueError:
        canonical = False
    try:
        check_event_id(value)
        accepted = True
    except InvalidValue:
        accepted = False
    assert accepted == canonical
