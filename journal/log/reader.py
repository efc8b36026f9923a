"""Reading the log file back: records in order, whole groups only, and how the file ends.

The reader tells apart three endings of a log: a clean end, a torn tail and corruption.
A crash tears at most a writer's last write (one record, or one atomic group of lines),
and only into a prefix of its bytes; a power cut may add zeros or garbage after that
prefix (blocks the file system allocated but never wrote). So, after the last whole record
or whole group, the rest of the file is

* a **torn tail** when a crash can have left it: whole records of a group cut short, then
  a part of a record without its newline, then anything but a complete line that ends as
  a record ends. It is moved aside by the next writer; readers stop before it;
* **corruption** otherwise, that is when the rest holds a complete, newline-terminated
  line that ends as a record ends (its ``,"crc":"…"}`` field, before the newline or before
  CR LF) without being a valid member of that group. A crash cuts a record before its
  newline, never after, and unwritten blocks do not end in a checksum field: such a line
  was written whole and changed since (edited, converted to CR LF, flipped by the disk,
  or written by a newer version). That is an error naming the path, line and byte offset
  of the first bad line; nothing is moved or cut off.

``_Reader._bad_line`` applies this rule, and only it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Final, Generic, TypeVar

import msgspec
from msgspec import UNSET

from journal.errors import (
    CorruptLog,
    NotALog,
)
from journal.events import (
    CRC_PREFIX,
    CRC_SUFFIX_LEN,
    AnyEvent,
    Event,
    LineError,
    StateEvent,
    decode_checked,
    event_decoder,
    state_decoder,
    verify_checksum,
)
from journal.log.backend import Cursor, Run, TornTail, ends_from_sizes
from journal.log.fastpath import _FAST_CHUNK, _fast_run
from journal.log.segments import LogView

E = TypeVar("E", bound=Event)


class _Reader(Generic[E]):
    """The log reader, generic in the events it decodes (see LogReader, StateReader)."""

    decoder: msgspec.json.Decoder[E]

    def __init__(self, path: str, start: int = 0, start_pos: int = 0) -> None:
        self.path = path
        self.start = start
        self.end = start
        self.last_pos = start_pos
        self.torn: TornTail | None = None
        self._base = 0  # where the active file starts (sealed segments before it)

    def __iter__(self) -> Iterator[tuple[E, int]]:
        with LogView(self.path) as view, closing(view.lines(self.start)) as lines:
            self._base = view.base
            try:
                yield from self._records(lines)
            except CorruptLog as exc:
                if exc.offset < view.base:
                    raise exc.in_file(*view.where(exc.offset)) from None
                raise

    def runs(self) -> Iterator[Run[E]]:
        """Like iterating, but in runs (``Run``: events, offsets before and after).

        Whole chunks of the file are checked (checksums, positions, groups) and decoded by
        loops that run in C; a chunk that fails any check is read again line by line, so
        errors and torn tails are reported exactly as by iteration (a run of one event).
        """
        for events, start, lines in self._batches():
            yield Run(
                events,
                Cursor(start),
                Cursor(self.end),
                _line_ends(start, lines, self.end),
                whole=bool(lines),
            )

    def _batches(self) -> Iterator[tuple[list[E], int, list[bytes]]]:
        """``(events, offset of the first, their lines without the newline)``; ``lines`` is
        empty for a run read line by line (a single event)."""
        offset = self.start
        with LogView(self.path) as view:
            self._base = view.base
            pos = self.last_pos
            size = _FAST_CHUNK
            while True:
                # Read from the first unused byte each time, rather than joining a carried
                # partial line to the next chunk: that join would copy every chunk.
                block = view.pread(size, offset)
                cut = block.rfind(b"\n") + 1
                if not cut:
                    if len(block) < size:
                        break  # the end: an unterminated line, or nothing
                    size *= 2  # one line longer than a chunk
                    continue
                run = _fast_run(block, cut, pos, self.decoder)
                if run is None:
                    break
                events, lines, used = run
                if events:
                    start, offset, pos = offset, offset + used, events[-1].pos
                    self.end, self.last_pos = offset, pos
                    yield events, start, lines
                # An atomic group still open at the end of the chunk is read again with
                # the next one; a chunk holding nothing but part of a group grows, unless
                # it reached the end (a torn group: line by line below).
                if used:
                    size = _FAST_CHUNK
                elif len(block) < size:
                    break
                else:
                    size *= 2
        # What is left (a torn tail, a chunk that failed a check): line by line from there.
        self.start = offset
        for event, end in self:
            yield [event], offset, []
            offset = end

    def _records(self, f: Iterator[bytes]) -> Iterator[tuple[E, int]]:
        offset = self.start
        pos = self.last_pos
        group: list[tuple[E, int]] = []
        group_start = offset
        for line in f:
            line_start = offset
            offset += len(line)
            expected = pos + len(group) + 1
            # a torn tail starts at the group's first line, if a group is open
            tail_start, tail_line = (group_start, pos + 1) if group else (line_start, expected)
            if not line.endswith(b"\n"):
                self._tear(tail_start, offset, tail_line, "unterminated last line")
                return
            try:
                event = decode_checked(line[:-1], self.decoder)
            except LineError as exc:
                self._bad_line(f, line, exc, line_start, expected, tail_start, tail_line)
                return
            if event.pos != expected:
                raise CorruptLog(
                    f"position {event.pos} where {expected} was expected",
                    path=self.path,
                    line=expected,
                    offset=line_start,
                )
            if event.grp is UNSET:
                if group:
                    raise self._broken_group(group, group_start)
                pos = event.pos
                self.end, self.last_pos = offset, pos
                yield event, offset
                continue
            index, size = event.grp
            if (
                index != len(group) + 1
                or size < 2
                or index > size
                or (group and group[0][0].grp != (1, size))
            ):
                if group:
                    raise self._broken_group(group, group_start)
                raise CorruptLog(
                    f"group member {index} of {size} out of order",
                    path=self.path,
                    line=expected,
                    offset=line_start,
                )
            if not group:
                group_start = line_start
            group.append((event, offset))
            if index == size:
                pos = event.pos
                self.end, self.last_pos = offset, pos
                yield from group
                group = []
        if group:
            first = group[0][0]
            assert first.grp is not UNSET
            self._tear(
                group_start,
                offset,
                first.pos,
                f"atomic group has {len(group)} of its {first.grp[1]} records",
            )

    def _tear(self, start: int, end: int, line: int, reason: str) -> None:
        if start < self._base:  # only the active file can have been cut by a crash
            raise CorruptLog(
                f"a sealed segment ends inside a record ({reason})",
                path=self.path,
                line=line,
                offset=start,
                why="a segment is sealed only after its last record was written whole",
            )
        if start == 0:
            _check_starts_as_a_log(self.path)
        self.torn = TornTail(offset=start, length=end - start, line=line, reason=reason)

    def _bad_line(
        self,
        f: Iterator[bytes],
        line: bytes,
        exc: LineError,
        line_start: int,
        line_no: int,
        tail_start: int,
        tail_line: int,
    ) -> None:
        """The rule of the module docstring, for ``line``: the first complete line after the
        last whole unit that is not a valid record. Raises CorruptLog or notes a torn tail.
        """
        body = line[:-1]
        why = None
        if body.endswith(b"\r") and _is_whole(body[:-1]):
            reason, why = CRLF_CONVERTED
        elif exc.whole:
            reason, why = exc.reason, WRITTEN_WHOLE
        elif _ends_as_a_record(body):
            reason, why = exc.reason, COMPLETE_LINE
        else:
            reason = exc.reason
        if why is not None:
            raise CorruptLog(reason, path=self.path, line=line_no, offset=line_start, why=why)
        end = line_start + len(line)
        for later in f:
            end += len(later)
            if later.endswith(b"\n") and _ends_as_a_record(later[:-1]):
                raise CorruptLog(reason, path=self.path, line=line_no, offset=line_start)
        self._tear(tail_start, end, tail_line, reason)

    def _broken_group(self, group: list[tuple[E, int]], start: int) -> CorruptLog:
        first = group[0][0]
        assert first.grp is not UNSET
        return CorruptLog(
            f"atomic group has only {len(group)} of its {first.grp[1]} records",
            path=self.path,
            line=first.pos,
            offset=start,
        )


class LogReader(_Reader[AnyEvent]):
    """Yields ``(event, byte offset just after it)`` from ``start`` to the last whole record.

    ``start_pos`` is the ``pos`` of the record that ends at ``start`` (0 at the start of the
    file): positions must continue from it without a gap. Members of an atomic group are
    yielded only once the whole group has been read. After iteration, ``end`` is the offset
    after the last yielded record, ``last_pos`` its position and ``torn`` describes a torn
    tail (or is None). Raises CorruptLog for a bad line no crash can leave.
    """

    decoder = event_decoder


class StateReader(_Reader[StateEvent]):
    """A LogReader that decodes messages as ``MessageHeader``: what a writer's state needs.

    Every line's checksum, envelope, position and group are checked as by LogReader; a
    message's body (role, content, tokens, metadata) is skipped, not decoded. It was
    checked when written, and the projector, which stores it, decodes it whole.
    """

    decoder = state_decoder


# Why a complete line that is not a record is no torn write (see the module docstring).
COMPLETE_LINE: Final = (
    "the line is complete, and a crash cuts a record before its newline, never after: it "
    "was changed after it was written"
)
WRITTEN_WHOLE: Final = (
    "the line's checksum is valid, so it was written whole (by a newer version of session-journal?)"
)
CRLF_CONVERTED: Final = (
    "the line ends with CR LF: the log's line endings were converted (by an editor or a checkout?)",
    "`session-journal repair-line-endings` converts them back",
)


_RECORD_START: Final = b'{"type":"'


def _check_starts_as_a_log(path: str) -> None:
    """Refuse a file with no whole record whose first bytes no crash of a writer can leave.

    A writer's first write starts with a record, so a crash leaves a prefix of one (then
    maybe a power cut's fill), or only the fill, which on a new file is zeros. Any other
    first byte (a SQLite header: the paths were swapped) means the file is not a log, and
    nothing of it may be moved aside or cut off.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:1] not in (b"", b"\0", _RECORD_START[:1]):
        raise NotALog(
            f"{path}: is not a session-journal log (it starts with {head!r}, not with a "
            "record); is it the database? Check --log and --db",
            path=path,
        )


def _ends_as_a_record(line: bytes) -> bool:
    """Whether ``line`` (without its newline) ends with a checksum field, maybe then CR."""
    if line.endswith(b"\r"):
        line = line[:-1]
    return line[-CRC_SUFFIX_LEN:-10] == CRC_PREFIX and line.endswith(b'"}')


def _is_whole(line: bytes) -> bool:
    """Whether ``line`` (without its line ending) carries its own valid checksum."""
    try:
        verify_checksum(line)
    except LineError:
        return False
    return True


def _line_ends(start: int, lines: list[bytes], end: int) -> Callable[[], list[Cursor]]:
    """``Run.ends`` for a run of file lines: each ends one newline after its bytes."""
    if not lines:
        return lambda: [Cursor(end)]
    return lambda: ends_from_sizes(Cursor(start), [len(line) + 1 for line in lines])()


def read_log(path: str, start: int = 0, start_pos: int = 0) -> Iterator[tuple[AnyEvent, int]]:
    """Shorthand for iterating a LogReader when the torn-tail details are not needed."""
    return iter(LogReader(path, start, start_pos))
