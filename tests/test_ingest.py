"""``append`` input: any bytes give a documented error or a valid group, and a rejected
input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import Journal, JournalError, read_log
from projector.cli.ingest import InputError, append_events, parse_lines

SESSION = "s-1"


def seeded(log: Path) -> None:
    with Journal.open(log, durability="none") as j:
        j.create_session("gpt-4o", session_id=SESSION, first_message="hello")


def feed(log: Path, data: bytes) -> None:
    """What ``session-journal append`` does with its input."""
    events = parse_lines(data.splitlines(keepends=True), "input")
    with Journal.open(log, durability="none") as j:
        append_events(j, events)


nasty_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(),
    st.none(),
    st.booleans(),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=20,
    ),
)
fields = st.dictionaries(
    st.sampled_from(["type", "session_id", "seq", "role", "content", "tokens_used",
                     "duration_seconds", "metadata", "title", "key", "value", "id", "at",
                     "model_id", "reason", "kind"]),
    nasty_values,
    max_size=8,
)  # fmt: skip
types = st.sampled_from(["message_appended", "session_renamed", "session_metadata_set",
                         "session_created", "session_paused", "session_snapshotted",
                         "session_timed_out", "timeout_warning", "unknown"])  # fmt: skip


def render(obj: dict[str, object], t: str) -> bytes:
    obj = {"type": t, **{k: v for k, v in obj.items() if k != "type"}}
    return json.dumps(
        obj
    ).encode()  # NaN and Infinity come out as bare words, as JSON does not allow


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(objs=st.lists(st.tuples(fields, types), min_size=1, max_size=4))
def test_structured_garbage_is_rejected_whole_or_written_whole(
    tmp_path: Path, objs: list[tuple[dict[str, object], str]]
) -> None:
    log = tmp_path / "fuzz.jsonl"
    log.unlink(missing_ok=True)
    seeded(log)
    before = log.read_bytes()
    data = b"\n".join(render(o, t) for o, t in objs)
    try:
        feed(log, data)
    except JournalError as exc:
        assert str(exc)  # a message a person can act on
        assert log.read_bytes() == before
        return
    after = [e for e, _ in read_log(str(log))]
    assert len(after) > 2  # written, and the log still reads back whole


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_never_half_write(tmp_path: Path, data: bytes) -> None:
    log = tmp_path / "bytes.jsonl"
    log.unlink(missing_ok=True)
    seeded(log)
    before = log.read_bytes()
    try:
        feed(log, data)
    except JournalError:
        assert log.read_bytes() == before
        return
    assert log.read_bytes().startswith(before)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'\xef\xbb\xbf{"type":"session_paused","session_id":"s-1"}', "byte-order mark"),
        (b'{"type":"session_renamed","session_id":"s-1","title":"a","title":"b"}', None),
        (b'{"type":"session_renamed","session_id":"s-1","title":"\\ud800"}', "surrogate"),
        (
            b'{"type":"session_renamed","session_id":"s-1","title":"\x80"}',
            r"^input: line 1: not valid UTF-8 \(byte 54\)",
        ),
        (b"[" * 2000 + b"]" * 2000, r"^input: line 1: JSON nested deeper than 257 levels \("),
        (
            b'{"type":"message_appended","session_id":"s-1","seq":2,"role":"user",'
            b'"content":"x","tokens_used":1e400}',
            "^input: line 1: message_appended: tokens_used must be a whole number or null, not inf",
        ),
        (
            b'{"type":"message_appended","session_id":"s-1","seq":2,"role":"user",'
            b'"content":"x","tokens_used":123456789012345678901234567890}',
            "^input: line 1: tokens_used 123456789012345678901234567890 does not fit in 64 bits",
        ),
        (
            b'{"type":"message_appended","session_id":"s-1","seq":2,"role":"user",'
            b'"content":"x","duration_seconds":NaN}',
            "^input: line 1: NaN is not a JSON number",
        ),
        (
            b'{"type":"message_appended","session_id":"s-1","seq":2,"role":"user","content":"'
            + b"x" * (5 << 20)
            + b'"}',
            "content is over the limit",
        ),
        (b'[{"type":"session_paused","session_id":"s-1"}]', "^input: line 1: not a JSON object"),
        (
            b'{"type":"timeout_warning","session_id":"s-1","kind":"idle",'
            b'"deadline":"2026-11-26T10:00:00.000000Z","as_of":"2026-11-26T09:55:00.000000Z"}',
            "^input: line 1: timeout_warning is written by expire only",
        ),
        (
            b'{"type":"session_paused","session_id":"s-1"}\n'
            b'{"type":"session_timed_out","session_id":"s-1","kind":"idle",'
            b'"as_of":"2026-11-26T10:00:00.000000Z"}',
            "^input: line 2: session_timed_out events are written by `session-journal expire`",
        ),
        (
            b'{"type":"session_paused","session_id":"s-1"}\n'
            b'{"type":"session_forgotten","positions":[[2,3]]}',
            "^input: line 2: session_forgotten records are written by the writer alone, when it "
            "forgets a session",
        ),
        (
            b'{"type":"redacted","was":"00","pad":"  "}',
            "^input: line 1: redacted records are written by the writer alone",
        ),
        (
            b'{"type":"session_renamed","session_id":"../../etc/passwd","title":"x"}',
            "malformed session id",
        ),
        (
            b'{"type":"session_renamed","session_id":"x\');DROP TABLE sessions;--","title":"x"}',
            "malformed session id",
        ),
    ],
)
def test_documented_errors_for_hostile_input(
    tmp_path: Path, line: bytes, expected: str | None
) -> None:
    log = tmp_path / "hostile.jsonl"
    seeded(log)
    before = log.read_bytes()
    if expected is None:  # duplicate keys: JSON's last one wins, as in every parser
        feed(log, line)
        assert [e for e, _ in read_log(str(log))][-1].title == "b"  # type: ignore[union-attr]
        return
    with pytest.raises(JournalError, match=expected):
        feed(log, line)
    assert log.read_bytes() == before


def test_too_many_events_for_one_group_is_refused_before_writing(tmp_path: Path) -> None:
    log = tmp_path / "many.jsonl"
    seeded(log)
    before = log.read_bytes()
    line = b'{"type":"session_renamed","session_id":"s-1","title":"t"}\n'
    with pytest.raises(JournalError, match="at most 10000"):
        feed(log, line * 10_001)
    assert log.read_bytes() == before


def test_input_error_names_source_and_line() -> None:
    with pytest.raises(InputError, match=r"^in\.jsonl: line 3: not valid JSON;"):
        parse_lines([b"", b'{"type":"session_paused","session_id":"s"}', b"{"], "in.jsonl")


@pytest.mark.parametrize(("depth", "ok"), [(255, True), (256, False)])
def test_append_takes_metadata_as_deep_as_the_writer_does(
    tmp_path: Path, depth: int, ok: bool
) -> None:
    """The event's object is one level above its metadata: metadata nesting 256 levels
    (the writer's limit) gets through append, one more does not."""
    log = tmp_path / "deep.jsonl"
    seeded(log)
    before = log.read_bytes()
    line = (
        b'{"type":"message_appended","session_id":"s-1","role":"user","content":"x",'
        b'"metadata":{"a":%s}}' % (b"[" * depth + b"]" * depth)
    )
    if ok:
        feed(log, line)
        assert log.read_bytes() != before
    else:
        with pytest.raises(JournalError, match="nested deeper than"):
            feed(log, line)
        assert log.read_bytes() == before
