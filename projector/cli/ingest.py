"""Appending events given as JSON lines (``session-journal append``), through the writer.

Input lines have the log's shape without ``pos``, ``v``, ``ts`` and ``crc``; ``id`` (the
idempotency key), ``at`` (when it happened, any RFC 3339 time) and a message's ``seq`` are
optional: a message without ``seq`` goes after its session's last one, one with ``seq``
must be the next (so a retried input cannot append twice). Every line is parsed and typed
before anything is written, then the whole input goes through the writer's validation as
one atomic group: one bad event (a shape error, an unknown session, a seq that is not the
next one) and nothing is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any, Final, NamedTuple, assert_never

import msgspec
from msgspec import UNSET

from journal import (
    ConflictError,
    InvalidValue,
    Journal,
    Receipt,
    SequenceConflict,
    ValidationError,
)
from journal import events as ev
from journal.jsoncheck import MAX_JSON_DEPTH, event_problem, too_deep
from journal.validation import MAX_GROUP_EVENTS
from projector.queries import parse_time

_input_decoder: msgspec.json.Decoder[ev.AnyEvent] = msgspec.json.Decoder(ev.AnyEvent)
_ENVELOPE_SET_BY_WRITER = ("pos", "v", "ts", "crc", "grp")


class InputError(InvalidValue):
    """A line of ``append`` input that is not a well-formed event."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}: line {line}: {reason}; nothing was written")
        self.source = source
        self.line = line


class Parsed(NamedTuple):
    """One input event and where it came from; ``seq_given``: a message's seq was in
    the input (else the writer gives the next one)."""

    source: str
    line: int
    event: ev.AnyEvent
    seq_given: bool = True


# Placed where a message's seq was left out so that the line types; never written (the
# writer numbers the message).
_SEQ_LEFT_OUT = 1


def _unknown_fields(fields: dict[str, Any]) -> str | None:
    """Fields the event type does not have (a typo such as "tokens" would be dropped)."""
    kind = fields.get("type")
    cls = ev.TAGS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        return None  # event_problem names the bad type
    known = {f.encode_name for f in msgspec.structs.fields(cls)} | {"type"}
    unknown = sorted(set(fields) - known)
    if not unknown:
        return None
    return (
        f"{fields['type']} has no field {', '.join(map(repr, unknown))}; "
        f"its fields: {', '.join(sorted(known - {'type', 'pos', 'v', 'ts', 'crc', 'grp'}))}"
    )


def _normalise_at(fields: dict[str, Any]) -> None:
    """``at`` as the log records it (UTC, microseconds), from any RFC 3339 time."""
    at = fields.get("at")
    if at is None:
        return
    try:
        if not isinstance(at, str):
            raise ValueError
        fields["at"] = ev.format_ts(parse_time(at))
    except ValueError:
        raise ValueError(
            f"'at' must be a time such as 2026-11-26T10:15:33.139877Z, not {at!r}"
        ) from None


def parse_lines(lines: Iterable[bytes], source: str = "<stdin>") -> list[Parsed]:
    """Type every non-blank line; raise InputError naming the first bad one."""
    events: list[Parsed] = []
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(b"\xef\xbb\xbf"):
            raise InputError(
                source, number, "starts with a byte-order mark; save as UTF-8 without BOM"
            )
        # The event's object is one level above its metadata's, which may nest the limit.
        if too_deep(line, MAX_JSON_DEPTH + 1):
            raise InputError(
                source,
                number,
                f"JSON nested deeper than {MAX_JSON_DEPTH + 1} levels "
                f"(an event's metadata may nest {MAX_JSON_DEPTH})",
            )
        try:
            fields = msgspec.json.decode(line)
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            raise InputError(source, number, event_problem(line, ev.TAGS)) from None
        if not isinstance(fields, dict):
            raise InputError(source, number, "not a JSON object")
        present = [name for name in _ENVELOPE_SET_BY_WRITER if name in fields]
        if present:
            raise InputError(
                source, number, f"{', '.join(present)} are set by the writer; leave them out"
            )
        if isinstance(fields.get("type"), str) and fields["type"] == "timeout_warning":
            raise InputError(source, number, "timeout_warning is written by expire only")
        unknown = _unknown_fields(fields)
        if unknown:
            raise InputError(source, number, unknown)
        seq_given = fields.get("type") != "message_appended" or fields.get("seq") is not None
        if not seq_given:
            fields["seq"] = _SEQ_LEFT_OUT
        try:
            _normalise_at(fields)
        except ValueError as exc:
            raise InputError(source, number, str(exc)) from None
        typed = line if seq_given and "at" not in fields else msgspec.json.encode(fields)
        try:
            events.append(Parsed(source, number, _input_decoder.decode(typed), seq_given))
        except msgspec.ValidationError:
            raise InputError(source, number, event_problem(typed, ev.TAGS)) from None
    if len(events) > MAX_GROUP_EVENTS:
        raise InvalidValue(
            f"{source}: {len(events)} events; append writes one atomic group "
            f"of at most {MAX_GROUP_EVENTS}: split the input"
        )
    return events


def append_events(journal: Journal, events: list[Parsed]) -> list[Receipt]:
    """Write the events as one atomic group; any invalid event writes nothing.

    A refusal by the writer is reported with the input line that caused it.
    """
    receipts: list[Receipt] = []
    with journal.batch():
        for parsed in events:
            try:
                receipts.append(_append_one(journal, parsed.event, parsed.seq_given))
            except SequenceConflict as exc:
                given = exc.expected + 1
                reason = (
                    f"seq {given} is not the next message of session {exc.session_id!r}, "
                    f"which is {exc.actual + 1}; leave seq out to append after its last"
                )
                raise InputError(parsed.source, parsed.line, reason) from exc
            except (ValidationError, ConflictError) as exc:
                raise InputError(parsed.source, parsed.line, str(exc)) from exc
    return receipts


_CREATE_FIELDS: Final = (
    "model_id",
    "model_name",
    "title",
    "idle_timeout_seconds",
    "hard_timeout_seconds",
    "session_id",
)


# The events whose writer method takes ``at``: the others are dated when written.
_DATED: Final = (
    ev.SessionCreated,
    ev.MessageAppended,
    ev.SessionMetadataSet,
    ev.SessionPaused,
    ev.SessionArchived,
)


_EXPIRE_WRITES: Final = "events are written by `session-journal expire`"
_FORGET_WRITES: Final = (
    "records are written by the writer alone, when it forgets a session (`session-journal forget`)"
)
# The events only another command writes, and which.
_NOT_APPENDED: Final[dict[type[ev.Event], str]] = {
    ev.SessionTimedOut: _EXPIRE_WRITES,
    ev.TimeoutWarning: _EXPIRE_WRITES,
    ev.SessionForgotten: _FORGET_WRITES,
    ev.Redacted: _FORGET_WRITES,
}


def _append_one(j: Journal, e: ev.AnyEvent, seq_given: bool) -> Receipt:
    """Call the writer method that produces this event, so the same validation applies."""
    # An id is chosen here when the input has none, so that every receipt can name it.
    eid = e.id or str(uuid.uuid4())
    at: Any = None if e.at is msgspec.UNSET else e.at
    if at is not None and type(e) not in _DATED:
        raise InvalidValue(
            f"{e.__struct_config__.tag}: 'at' (when imported history happened) is taken by "
            f"{', '.join(str(t.__struct_config__.tag) for t in _DATED)} only; leave it out "
            "(this event is dated when it is written)"
        )
    match e:
        case ev.ModelRegistered():
            return j.register_model(e.model_id, e.model_name, e.provider, event_id=eid)
        case ev.SessionCreated():
            before = j.last_pos
            # The event's fields are create_session's arguments, by the same names.
            fields = {name: getattr(e, name) for name in _CREATE_FIELDS}
            j.create_session(**fields, event_id=eid, at=at)
            receipt = j.receipt(eid)
            assert receipt is not None  # just written, or found in the id window
            return receipt._replace(duplicate=j.last_pos == before)
        case ev.MessageAppended():
            return j.append_message(
                e.session_id,
                e.role,
                e.content,
                tokens_used=e.tokens_used,
                duration_seconds=e.duration_seconds,
                metadata=e.metadata,
                tool_calls=None if e.tool_calls is UNSET else e.tool_calls,
                tool_call_id=None if e.tool_call_id is UNSET else e.tool_call_id,
                raw=None if e.raw is UNSET else e.raw,
                expected_seq=e.seq - 1 if seq_given else None,
                event_id=eid,
                at=at,
            )
        case ev.SessionMetadataSet():
            return j.set_metadata(e.session_id, e.key, e.value, event_id=eid, at=at)
        case ev.SessionRenamed():
            return j.rename(e.session_id, e.title, event_id=eid)
        case ev.SessionPaused():
            return j.pause(e.session_id, event_id=eid, at=at)
        case ev.SessionResumed():
            return j.resume(e.session_id, event_id=eid)
        case ev.SessionSnapshotted():
            return j.snapshot(e.session_id, e.reason, note=e.note, event_id=eid)
        case ev.SessionArchived():
            return j.archive(e.session_id, event_id=eid, at=at)
        case ev.SessionRestored():
            return j.restore(e.session_id, event_id=eid)
        case ev.SessionDeleted():
            return j.delete_session(e.session_id, event_id=eid)
        case ev.MessagesTruncated():
            return j.truncate(e.session_id, e.keep_through_seq, reason=e.reason, event_id=eid)
        case ev.SessionTimedOut() | ev.TimeoutWarning() | ev.SessionForgotten() | ev.Redacted():
            raise InvalidValue(f"{e.__struct_config__.tag} {_NOT_APPENDED[type(e)]}, not by append")
        case _:
            assert_never(e)
