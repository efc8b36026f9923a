"""Event types and the line format of the log.

Every change to a session is one event, stored as one JSON line::

    {"type":"message_appended","pos":7,"id":"…","v":1,"ts":"2026-11-26T10:00:00.000001Z",
     "session_id":"…","seq":3,"role":"user","content":"Hello",…,"crc":"1a2b3c4d"}

The envelope is ``type`` (the tag), ``pos`` (1-based, gapless), ``id`` (a UUID, the
idempotency key), ``v`` (the schema version of that event type), ``ts`` (when it was
recorded), the optional ``at`` (when it happened, for imported history) and ``grp``
(``[i, n]``: member i of an atomic group of n). The last field, ``crc``, is the CRC-32 of
the line with that field removed, so a flipped byte inside well-formed JSON is caught.

Tags are part of the file format: classes may be renamed, tags never. New fields get
defaults. A breaking change bumps that type's ``v`` and decodes the old shape through an
upcaster in ``decode_line`` (none exists yet: every type is at v1).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, TypeVar, get_args

import msgspec
from msgspec import UNSET, UnsetType

from journal.jsoncheck import event_problem, text_problem

# ``tool`` carries a tool's result; ``developer`` is kept as its own role (OpenAI's newer
# name for instructions), not mapped to ``system``, so a transcript is returned as sent.
Role = Literal["user", "assistant", "system", "tool", "developer"]
ROLES: Final[tuple[str, ...]] = get_args(Role)
TimeoutKind = Literal["idle", "hard"]
SnapshotReason = Literal["checkpoint", "timeout_warning", "pre_archive", "pre_delete"]
SNAPSHOT_REASONS: Final = ("checkpoint", "timeout_warning", "pre_archive", "pre_delete")


# The one timestamp shape of the log, checked by the decoder itself (in C) on every line;
# the calendar (no 31 February) is checked after decoding.
_TS_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z\Z"
Timestamp = Annotated[str, msgspec.Meta(pattern=_TS_PATTERN)]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event; ``pos``, ``id`` and ``ts`` are set by the writer."""

    pos: int = 0
    id: str = ""
    v: int = 1
    ts: Timestamp = ""
    at: Timestamp | UnsetType = UNSET
    grp: tuple[int, int] | UnsetType = UNSET

    @property
    def when(self) -> str:
        """The time the event describes: ``at`` for imported history, else ``ts``."""
        return self.ts if self.at is UNSET else self.at


class ModelRegistered(Event, frozen=True, kw_only=True, tag="model_registered"):
    """A model the router can talk to; written before the first session that uses it."""

    model_id: str
    model_name: str
    provider: str | None = None


class SessionCreated(Event, frozen=True, kw_only=True, tag="session_created"):
    """A new, active session; its hard deadline is ``when + hard_timeout_seconds``."""

    session_id: str
    model_id: str
    model_name: str | None = None
    title: str | None = None
    idle_timeout_seconds: int | None = 3600
    hard_timeout_seconds: int | None = 86400


class MessageHeader(Event, frozen=True, kw_only=True, tag="message_appended"):
    """The part of a message the writer's state needs: its session and ``seq``.

    Messages are the bulk of a log; decoding only this much when a writer opens the log
    (``StateEvent``) halves the decoding work, because ``content`` is skipped, not copied
    into a string. The full record is checked when it is written and when it is projected.
    """

    session_id: str
    seq: int


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A function call an assistant message asks for; ``arguments`` is the model's JSON text."""

    id: str
    name: str
    arguments: str = ""


class MessageAppended(MessageHeader, frozen=True, kw_only=True, tag="message_appended"):
    """One message; ``seq`` is 1-based and gapless within its session.

    ``tool_calls`` (assistant), ``tool_call_id`` (tool) and ``raw`` (the provider's message
    item, JSON text kept verbatim) came later: UNSET when absent, so they are left out of
    the line and a plain message is written exactly as before.
    """

    role: Role
    content: str
    tokens_used: int | None = None
    duration_seconds: float | None = None
    metadata: dict[str, Any] | None = None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    raw: str | UnsetType = UNSET


class SessionMetadataSet(Event, frozen=True, kw_only=True, tag="session_metadata_set"):
    """Sets one metadata key of a session (``value`` None clears it)."""

    session_id: str
    key: str
    value: str | None


class SessionRenamed(Event, frozen=True, kw_only=True, tag="session_renamed"):
    """A new title."""

    session_id: str
    title: str | None


class SessionPaused(Event, frozen=True, kw_only=True, tag="session_paused"):
    """Timeouts are suspended until the session is resumed or gets a message."""

    session_id: str


class SessionResumed(Event, frozen=True, kw_only=True, tag="session_resumed"):
    """A paused session is active again; its idle clock restarts."""

    session_id: str


class TimeoutWarning(Event, frozen=True, kw_only=True, tag="timeout_warning"):
    """The session will time out (``kind``) at ``deadline``; decided as of ``as_of``."""

    session_id: str
    kind: TimeoutKind
    deadline: Timestamp
    as_of: Timestamp


class SessionTimedOut(Event, frozen=True, kw_only=True, tag="session_timed_out"):
    """``idle``: the session goes idle (a message revives it); ``hard``: it expires."""

    session_id: str
    kind: TimeoutKind
    as_of: Timestamp


class SessionArchived(Event, frozen=True, kw_only=True, tag="session_archived"):
    """The session is archived; the projection keeps a ``pre_archive`` snapshot."""

    session_id: str


class SessionSnapshotted(Event, frozen=True, kw_only=True, tag="session_snapshotted"):
    """A snapshot of the session and its messages as of this event."""

    session_id: str
    reason: SnapshotReason = "checkpoint"
    note: str | None = None


class SessionRestored(Event, frozen=True, kw_only=True, tag="session_restored"):
    """Active again with fresh deadlines; a deleted session comes back from ``snapshot_pos``."""

    session_id: str
    snapshot_pos: int | None = None


class SessionDeleted(Event, frozen=True, kw_only=True, tag="session_deleted"):
    """The session leaves the projection; its ``pre_delete`` snapshot stays."""

    session_id: str


class MessagesTruncated(Event, frozen=True, kw_only=True, tag="messages_truncated"):
    """The session's messages after seq ``keep_through_seq`` are withdrawn: the log keeps
    them (an audit trail), the projection drops them and the next message reuses the seq
    after ``keep_through_seq``."""

    session_id: str
    keep_through_seq: int
    reason: str | None = None


class SessionForgotten(Event, frozen=True, kw_only=True, tag="session_forgotten"):
    """A session was erased (``Journal.forget``): each of its records was overwritten in
    place by a ``redacted`` record of the same length. Holds no personal data, not even
    the session's id: ``positions`` are the erased records' positions, as ascending
    inclusive ranges ``[first, last]``; the very first is the session's creation."""

    positions: tuple[tuple[int, int], ...]


class Redacted(Event, frozen=True, kw_only=True, tag="redacted"):
    """A forgotten session's record, as ``redaction_line`` overwrites it: the same length,
    ``pos``, ``ts`` and group, no content and no event id. ``was`` is the start of the
    SHA-256 of the line it replaced (newline included), so a projector whose checkpoint
    named that line can tell it was redacted, not replaced; ``pad`` fills the length."""

    was: str = ""
    pad: str = ""


# The event types after message_appended, in the order of the README's list: both unions end so.
_AFTER_MESSAGES = (
    SessionMetadataSet
    | SessionRenamed
    | SessionPaused
    | SessionResumed
    | TimeoutWarning
    | SessionTimedOut
    | SessionArchived
    | SessionSnapshotted
    | SessionRestored
    | SessionDeleted
    | MessagesTruncated
    | SessionForgotten
    | Redacted
)
AnyEvent = ModelRegistered | SessionCreated | MessageAppended | _AFTER_MESSAGES
# What the writer folds into its state: every event whole, except messages (header only).
StateEvent = ModelRegistered | SessionCreated | MessageHeader | _AFTER_MESSAGES
EVENT_TYPES: Final[tuple[type[Event], ...]] = get_args(AnyEvent)
TAGS: Final[dict[str, type[Event]]] = {str(cls.__struct_config__.tag): cls for cls in EVENT_TYPES}

# Built once: msgspec's encoders and decoders are reusable and thread-safe.
_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
event_decoder = _decoder  # for readers that decode many checked lines at once
state_decoder: msgspec.json.Decoder[StateEvent] = msgspec.json.Decoder(StateEvent)

# `,"crc":"xxxxxxxx"}` closes every line: 8 lowercase hex digits of CRC-32.
CRC_PREFIX: Final = b',"crc":"'
_CRC_PREFIX_LEN: Final = len(CRC_PREFIX)
CRC_SUFFIX_LEN: Final = _CRC_PREFIX_LEN + 8 + 2


class LineError(ValueError):
    """A line that is not a valid record; ``reason`` says why.

    ``whole`` is True when the line's checksum is valid: it was written whole, so it is no
    torn write, whatever else is wrong with it (a newer version's event type, say).
    """

    def __init__(self, reason: str, *, whole: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.whole = whole


def checksum(body: bytes) -> int:
    """CRC-32 of a record's JSON object without its ``crc`` field."""
    return zlib.crc32(body) & 0xFFFFFFFF


def encode_line(event: Event) -> bytes:
    """The event as one log line: JSON, the checksum field last, and ``\\n``."""
    body = _encoder.encode(event)
    return b'%s%s%08x"}\n' % (body[:-1], CRC_PREFIX, checksum(body))


# Hex digits of the replaced line's SHA-256 a redaction keeps: 128 bits tell lines apart.
REDACTED_HASH_DIGITS: Final = 32


def line_digest(line: bytes) -> str:
    """The SHA-256 of a whole line (newline included), in hex: what checkpoints keep."""
    return hashlib.sha256(line).hexdigest()


def redaction_line(line: bytes) -> bytes:
    """The ``redacted`` record that replaces ``line`` (a whole record, newline included).

    Keeps the record's ``pos``, ``ts`` and ``grp`` (so positions, time order and groups
    still check) and its length (so every other record keeps its byte offset); a line
    already redacted comes back as it is. Raises LineError if ``line`` is not a record.
    """
    event = decode_line(line[:-1])
    if isinstance(event, Redacted):
        return line
    fields: dict[str, Any] = {"type": "redacted", "pos": event.pos, "ts": event.ts}
    if event.grp is not UNSET:
        fields["grp"] = list(event.grp)
    fields["was"] = line_digest(line)[:REDACTED_HASH_DIGITS]
    fields["pad"] = ""
    # A record's own id (36 characters) alone leaves room for ``was``: only a line made
    # by hand can be too short.
    room = len(line) - len(_encoder.encode(fields)) - CRC_SUFFIX_LEN
    if room >= 0:
        fields["pad"] = " " * room
        body = _encoder.encode(fields)
        return b'%s%s%08x"}\n' % (body[:-1], CRC_PREFIX, checksum(body))
    raise LineError(f"record {event.pos} is too short to hold its redaction")


def verify_checksum(line: bytes) -> None:
    """Raise LineError unless ``line`` (without its ``\\n``) ends with its own valid CRC."""
    cut = len(line) - CRC_SUFFIX_LEN
    if cut < 1 or line[cut : cut + _CRC_PREFIX_LEN] != CRC_PREFIX or line[-2:] != b'"}':
        raise LineError("not a record (no checksum at the end of the line)")
    digits = line[cut + _CRC_PREFIX_LEN : -2]
    if not digits.isalnum():  # int() would also take signs, spaces and underscores
        raise LineError("malformed checksum")
    try:
        expected = int(digits, 16)
    except ValueError:
        raise LineError("malformed checksum") from None
    # CRC of the line with the crc field cut out, computed without copying the line.
    if zlib.crc32(b"}", zlib.crc32(memoryview(line)[:cut])) != expected:
        raise LineError("checksum mismatch")


def decode_line(line: bytes) -> AnyEvent:
    """Check a line's checksum and decode it; ``line`` excludes the trailing ``\\n``.

    Raises LineError naming the defect.
    """
    return decode_checked(line, _decoder)


E = TypeVar("E", bound=Event)


def decode_checked(line: bytes, decoder: msgspec.json.Decoder[E]) -> E:
    """``decode_line`` with another decoder (``state_decoder``: messages as headers)."""
    verify_checksum(line)
    # A crafted line (its checksum matches, its JSON not): the reasons are the project's own.
    try:
        event = decoder.decode(line)
    except msgspec.ValidationError:
        reason = event_problem(line, TAGS)
        raise LineError(f"invalid event: {reason}", whole=True) from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        raise LineError(text_problem(line), whole=True) from None
    # Every consumer does arithmetic on these; a bad one must fail here, as a bad line,
    # not later as a stray ValueError in the writer or the projector.
    for name, value in (("ts", event.ts), ("at", event.at)):
        if value is not UNSET:
            try:
                datetime.fromisoformat(value)  # the shape is checked; this checks the calendar
            except ValueError:
                raise LineError(
                    f"invalid event: {name} {value!r} is not a date on the calendar", whole=True
                ) from None
    return event


def encode_json(obj: Any) -> bytes:
    """Compact JSON, the same encoder the log uses (for hashes and exports)."""
    return _encoder.encode(obj)


def format_ts(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds: the one timestamp format of the log and database."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    # isoformat is several times faster than strftime; "+00:00" becomes "Z".
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


_TS = re.compile(_TS_PATTERN)


def parse_ts(text: str) -> datetime:
    """Inverse of format_ts; raises ValueError on any other shape."""
    if not isinstance(text, str) or not _TS.fullmatch(text):
        raise ValueError(f"not an RFC 3339 UTC timestamp with microseconds: {text!r}")
    # fromisoformat is C and checks the calendar (no month 13, no 31 February).
    return datetime.fromisoformat(text)


def ts_seconds(text: str) -> float:
    """A log timestamp as POSIX seconds (exact to the microsecond for present-day dates)."""
    return parse_ts(text).timestamp()
