"""Event encoding: every valid event round-trips; the line format rejects damage."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from journal import events as ev
from journal.events import (
    EVENT_TYPES,
    TAGS,
    LineError,
    MessageAppended,
    decode_line,
    encode_line,
    format_ts,
    parse_ts,
)

# -- strategies ---------------------------------------------------------------------------
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
opt_text = st.none() | text
ident = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,20}", fullmatch=True)
moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
stamps = moments.map(format_ts)
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text
json_values = st.recursive(
    json_scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def envelope() -> dict[str, st.SearchStrategy[object]]:
    return {
        "pos": st.integers(1, 2**53),
        "id": st.uuids().map(str),
        "v": st.just(1),
        "ts": stamps,
        "at": st.just(msgspec.UNSET) | stamps,
        "grp": st.just(msgspec.UNSET)
        | st.integers(2, 50).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))),
    }


SPECIFIC: dict[type[ev.Event], dict[str, st.SearchStrategy[object]]] = {
    ev.ModelRegistered: {"model_id": ident, "model_name": text, "provider": opt_text},
    ev.SessionCreated: {
        "session_id": ident,
        "model_id": ident,
        "model_name": opt_text,
        "title": opt_text,
        "idle_timeout_seconds": st.none() | st.integers(1, 10**8),
        "hard_timeout_seconds": st.none() | st.integers(1, 10**8),
    },
    ev.MessageAppended: {
        "session_id": ident,
        "seq": st.integers(1, 2**40),
        "role": st.sampled_from(ev.ROLES),
        "content": text.filter(bool),
        "tokens_used": st.none() | st.integers(0, 2**63 - 1),
        "duration_seconds": st.none()
        | st.floats(min_value=0, allow_nan=False, allow_infinity=False),
        "metadata": st.none() | st.dictionaries(text, json_values, max_size=4),
    },
    ev.SessionMetadataSet: {"session_id": ident, "key": text, "value": opt_text},
    ev.SessionRenamed: {"session_id": ident, "title": opt_text},
    ev.SessionPaused: {"session_id": ident},
    ev.SessionResumed: {"session_id": ident},
    ev.TimeoutWarning: {
        "session_id": ident,
        "kind": st.sampled_from(("idle", "hard")),
        "deadline": stamps,
        "as_of": stamps,
    },
    ev.SessionTimedOut: {
        "session_id": ident,
        "kind": st.sampled_from(("idle", "hard")),
        "as_of": stamps,
    },
    ev.SessionArchived: {"session_id": ident},
    ev.SessionSnapshotted: {
        "session_id": ident,
        "reason": st.sampled_from(ev.SNAPSHOT_REASONS),
        "note": opt_text,
    },
    ev.SessionRestored: {"session_id": ident, "snapshot_pos": st.none() | st.integers(1, 2**40)},
    ev.SessionDeleted: {"session_id": ident},
    ev.MessagesTruncated: {
        "session_id": ident,
        "keep_through_seq": st.integers(0, 2**40),
        "reason": opt_text,
    },
    ev.SessionForgotten: {
        "positions": st.lists(
            st.tuples(st.integers(1, 2**40), st.integers(1, 2**40)), max_size=5
        ).map(lambda pairs: tuple(sorted((min(p), max(p)) for p in pairs)))
    },
    ev.Redacted: {
        "was": st.from_regex(r"[0-9a-f]{32}", fullmatch=True) | st.just(""),
        "pad": st.integers(0, 40).map(lambda n: " " * n),
    },
}

any_event = st.one_of(
    [st.builds(cls, **envelope(), **fields) for cls, fields in SPECIFIC.items()]  # type: ignore[arg-type]
)


def test_every_event_type_has_a_strategy_and_a_unique_tag() -> None:
    assert set(SPECIFIC) == set(EVENT_TYPES)
    assert len(TAGS) == len(EVENT_TYPES)


@settings(max_examples=400, deadline=None)
@given(any_event)
def test_any_valid_event_round_trips(event: ev.Event) -> None:
    line = encode_line(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_line(line[:-1]) == event
    # readable with jq: plain JSON with the checksum as a field
    obj = msgspec.json.decode(line)
    assert obj["type"] == event.__struct_config__.tag
    assert len(obj["crc"]) == 8


@settings(max_examples=300, deadline=None)
@given(any_event, st.data())
def test_any_single_byte_change_is_detected(event: ev.Event, data: st.DataObject) -> None:
    line = encode_line(event)[:-1]
    i = data.draw(st.integers(0, len(line) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != line[i]))
    damaged = line[:i] + bytes([new]) + line[i + 1 :]
    with pytest.raises(LineError):
        decode_line(damaged)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_line_error(data: bytes) -> None:
    try:
        decode_line(data)
    except LineError as exc:
        assert exc.reason


def _with_crc(body: bytes) -> bytes:
    """A crafted line whose checksum is right, whatever its JSON says."""
    return body[:-1] + b',"crc":"%08x"}' % ev.checksum(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"type":"nope","pos":1}', "^invalid event: unknown event type 'nope'"),
        (
            b'{"type":"session_paused","pos":1}',
            "^invalid event: session_paused: the field 'session_id' is missing$",
        ),
        (
            b'{"type":"session_paused","pos":"1","session_id":"s"}',
            "^invalid event: session_paused: pos must be a whole number, not '1'$",
        ),
        (
            b'{"type":"session_paused","pos":1,"session_id":"s","grp":[1]}',
            "^invalid event: session_paused: grp must be a list of 2 numbers, not",
        ),
        (
            b'{"type":"session_paused","pos":1e400,"session_id":"s"}',
            "^invalid event: session_paused: pos must be a whole number, not inf$",
        ),
        (b'{"type":"session_paused","pos":1,"session_id":"s",}', "^not valid JSON$"),
        (b'{"type":"session_paused","pos":NaN,"session_id":"s"}', "^NaN is not a JSON number$"),
        (
            b'{"type":"session_paused","pos":1,"session_id":"s\x80"}',
            r"^not valid UTF-8 \(byte 48\)",
        ),
        (
            b'{"type":"session_paused","pos":1,"session_id":"s","ts":"yesterday"}',
            "^invalid event: session_paused: ts must be a timestamp like",
        ),
        (
            b'{"type":"session_paused","pos":1,"session_id":"s","ts":"2026-13-40T00:00:00.000000Z"}',
            "^invalid event: ts '2026-13-40T00:00:00.000000Z' is not a date on the calendar$",
        ),
        (
            b'{"type":"session_paused","pos":1,"session_id":"s","ts":"2026-01-01T00:00:00.000000Z","at":"now"}',
            "^invalid event: session_paused: at must be a timestamp like",
        ),
    ],
)
def test_crafted_lines_with_a_valid_checksum_are_still_checked(body: bytes, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        decode_line(_with_crc(body))


def test_checksum_mismatch_and_missing_checksum_are_named() -> None:
    line = encode_line(
        ev.SessionPaused(pos=1, id="x", ts=format_ts(datetime.now(UTC)), session_id="s")
    )
    with pytest.raises(LineError, match="checksum mismatch"):
        decode_line(line[:-1].replace(b'"s"', b'"t"'))
    with pytest.raises(LineError, match="no checksum"):
        decode_line(b'{"type":"session_paused"}')
    with pytest.raises(LineError, match="malformed checksum"):
        decode_line(line[:-11] + b'XYZ12345"}')


def test_timestamps_are_one_format_in_utc() -> None:
    moment = datetime(2026, 11, 26, 11, 0, 0, 1, tzinfo=timezone(timedelta(hours=1)))
    text_ = format_ts(moment)
    assert text_ == "2026-11-26T10:00:00.000001Z"
    assert parse_ts(text_) == moment
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_ts("2026-11-26T10:00:00Z")


def test_when_prefers_at() -> None:
    m = MessageAppended(
        ts="2026-01-02T00:00:00.000000Z", session_id="s", seq=1, role="user", content="x"
    )
    assert m.when == m.ts
    m2 = msgspec.structs.replace(m, at="2020-01-01T00:00:00.000000Z")
    assert m2.when == "2020-01-01T00:00:00.000000Z"
    assert not math.isnan(ev.ts_seconds(m2.when))


session_events = st.one_of(
    [
        st.builds(cls, **envelope(), **fields)  # type: ignore[arg-type]
        for cls, fields in SPECIFIC.items()
        if "session_id" in fields
    ]
)


@settings(max_examples=300, deadline=None)
@given(session_events)
def test_a_redaction_keeps_length_place_time_and_group_and_nothing_else(event: ev.Event) -> None:
    line = encode_line(event)
    redacted = ev.redaction_line(line)
    assert len(redacted) == len(line) and redacted.endswith(b"\n")
    kept = decode_line(redacted[:-1])
    assert isinstance(kept, ev.Redacted)
    assert (kept.pos, kept.ts, kept.grp) == (event.pos, event.ts, event.grp)
    assert kept.id == "" and kept.at is msgspec.UNSET
    assert kept.was == ev.line_digest(line)[: ev.REDACTED_HASH_DIGITS]
    assert ev.redaction_line(redacted) == redacted  # redacting again changes nothing
    assert set(msgspec.json.decode(redacted)) <= {"type", "pos", "ts", "grp", "was", "pad", "crc"}


def test_a_line_too_short_for_its_redaction_is_refused() -> None:
    short = encode_line(ev.SessionPaused(pos=1, ts="2026-01-01T00:00:00.000000Z", session_id="s"))
    with pytest.raises(LineError, match="too short"):
        ev.redaction_line(short)
