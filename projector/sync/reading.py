"""Reading the log as units: single events and whole atomic groups.

A unit is what the projection applies in one piece: an event outside any group, or every
member of a group (the checkpoint never falls inside one). ``skip_bad_lines`` is how the
quarantine mode of replay, and verify, step over a bad line in the middle of the log.
``same_line`` recognises a checkpoint's line after its redaction, ``forgettings_after``
finds the forgettings ahead of a reader (whose sessions' records may not all be redacted
yet).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from msgspec import UNSET

from journal.errors import CorruptLog
from journal.events import (
    REDACTED_HASH_DIGITS,
    AnyEvent,
    LineError,
    Redacted,
    SessionForgotten,
    decode_line,
    format_ts,
    line_digest,
    parse_ts,
)
from journal.log import LogReader
from journal.log.segments import LogView, ReadAt


@dataclass(frozen=True, slots=True)
class Record:
    """One event and the bytes ``[start, end)`` of its line."""

    event: AnyEvent
    start: int
    end: int


def units(reader: LogReader) -> Iterator[list[Record]]:
    """Group the reader's records into units, from its runs (``LogReader.runs``: chunks
    checked and decoded by loops in C).

    A run that is not ``whole`` holds one member of a group whose members arrive one run
    at a time, its end the whole group's: a member's line ends where the next one starts."""
    unit: list[Record] = []
    for run in reader.runs():
        start = run.start
        for event, end in zip(run.events, run.ends(), strict=True):
            if unit and unit[-1].end != start:  # the previous member ends where this starts
                prev = unit[-1]
                unit[-1] = Record(prev.event, prev.start, start)
            unit.append(Record(event, start, end))
            start = end
            grp = event.grp
            if grp is UNSET or grp[0] == grp[1]:
                yield unit
                unit = []


@dataclass(frozen=True)
class Until:
    """The end of a prefix of the log: by position, by recorded time, or both."""

    pos: int | None = None
    ts: str | None = None

    @classmethod
    def of(cls, until: int | str | datetime | None) -> Until | None:
        """``until`` as given to rebuild: a pos (int, or digits) or a time (RFC 3339)."""
        if until is None:
            return None
        if isinstance(until, bool):
            raise ValueError("until must be a position or a time, not a bool")
        if isinstance(until, int):
            return cls(pos=until)
        if isinstance(until, datetime):
            if until.tzinfo is None:
                raise ValueError("until: a time must be timezone-aware")
            return cls(ts=format_ts(until))
        text = until.strip()
        if text.isdigit():
            return cls(pos=int(text))
        try:
            return cls(ts=format_ts(parse_ts(text)))
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"until: {until!r} is neither a position nor an RFC 3339 time"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(ts=format_ts(moment))

    def includes(self, unit: list[Record]) -> bool:
        """A unit belongs to the prefix only as a whole: judged by its last member."""
        return self.admits(unit[-1].event)

    def admits(self, last: AnyEvent) -> bool:
        """Whether the unit that ends with the event ``last`` belongs to the prefix."""
        if self.pos is not None and last.pos > self.pos:
            return False
        return not (self.ts is not None and last.ts > self.ts)


def same_line(line: bytes, digest: str) -> bool:
    """Whether ``line`` (newline included) is the line whose ``line_digest`` is ``digest``,
    or its redaction (``redaction_line``: same place, same length, the digest's start in
    ``was``), for a checkpoint whose last line belonged to a session forgotten since."""
    if line_digest(line) == digest:
        return True
    try:
        event = decode_line(line[:-1])
    except LineError:
        return False
    return isinstance(event, Redacted) and event.was == digest[:REDACTED_HASH_DIGITS]


# A forgetting's tag, as the log writes it: it cannot occur inside a JSON string (the
# quotes would be escaped there), so every match starts a session_forgotten line's type.
_FORGETTING_TAG: Final = b'"type":"session_forgotten"'
_SCAN_BYTES: Final = 1 << 20


def forgettings_after(log: ReadAt, start: int) -> list[tuple[int, int]]:
    """The positions listed by the forgettings of the open log after byte
    ``start`` (a line's start), as ascending ranges; lines that are not whole records are
    passed over."""
    ranges: list[tuple[int, int]] = []
    offset, carry = start, b""
    while chunk := log.pread(_SCAN_BYTES, offset):
        offset += len(chunk)
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        data, carry = data[:cut], data[cut:]
        at = data.find(_FORGETTING_TAG)
        while at >= 0:
            end = data.index(b"\n", at)
            try:
                event = decode_line(data[data.rfind(b"\n", 0, at) + 1 : end])
            except LineError:
                event = None
            if isinstance(event, SessionForgotten):
                ranges.extend(event.positions)
            at = data.find(_FORGETTING_TAG, end)
    return sorted(ranges)


def read_bytes(log: ReadAt, start: int, end: int) -> bytes:
    """The bytes ``[start, end)`` of an open log."""
    chunks: list[bytes] = []
    while start < end:
        chunk = log.pread(end - start, start)
        if not chunk:
            break
        chunks.append(chunk)
        start += len(chunk)
    return b"".join(chunks)


@dataclass(frozen=True)
class Skipped:
    """Bad bytes stepped over: ``[start, end)``; reading resumes at ``end`` after ``next_pos``."""

    start: int
    end: int
    line: int
    reason: str
    data: bytes
    last_line_start: int  # where the last line of the range starts (for the checkpoint)
    next_pos: int  # the pos the range stands for: reading resumes expecting next_pos + 1


def skip_bad_lines(path: str, reader: LogReader, exc: CorruptLog) -> Skipped:
    """The range to set aside after ``exc``: from the reader's last whole unit to the end of
    the bad line (group members read before it included: they can never form a whole
    group). The next valid line decides which pos reading resumes with."""
    start = reader.end
    with LogView(path) as log, closing(log.lines(exc.offset)) as lines:
        bad = next(lines, b"")
        end = exc.offset + len(bad)
        next_pos = reader.last_pos
        nxt = next(lines, b"")
        if nxt.endswith(b"\n"):
            try:
                following = decode_line(nxt[:-1])
            except LineError:
                pass  # another bad line: the next skip deals with it
            else:
                # A pos the reader will accept next; if the following line repeats an old
                # pos it is itself reported and skipped next time round.
                next_pos = max(reader.last_pos, following.pos - 1)
        data = read_bytes(log, start, end)
    return Skipped(
        start=start,
        end=end,
        line=reader.last_pos + 1,
        reason=exc.reason,
        data=data,
        last_line_start=exc.offset,
        next_pos=next_pos,
    )
