"""Erasing a forgotten session from a log file: the one exception to append-only.

``redact_in_place`` overwrites records with their same-length ``redacted`` form
(``journal.events.redaction_line``), so every other record keeps its position and byte
offset. ``scrub_quarantine`` removes a session's torn bytes from the files torn tails were
moved to. ``carries_session`` is the rule both use, and the memory log too, to tell which
bytes belong to the session.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Collection, Iterable, Iterator
from typing import Final

import msgspec

import journal.events as ev
from journal.errors import CorruptLog, LogError
from journal.log.files import FILE_MODE, fsync_directory
from journal.log.segments import LogView

_CHUNK: Final = 1 << 22
_Header = dict[str, int | None]  # a redaction note's first line
_ID_FIELD: Final = b'"session_id":'


def carries_session(piece: bytes, session_id: str) -> bool:
    """Whether bytes of a record (whole, or a torn start of one) belong to the session.

    A record names its session before any of its content, so a torn piece that holds any
    of the content holds the whole id, and one cut inside the id holds nothing else of it.
    """
    field = _ID_FIELD + ev.encode_json(session_id)
    if field in piece:
        return True
    # Cut inside the id: the piece ends with the field's start (the quote and a character
    # at least) and nothing of the session but that.
    stripped = piece.rstrip(b"\r\n")
    return any(stripped.endswith(field[:cut]) for cut in range(len(_ID_FIELD) + 2, len(field)))


def positions_in(ranges: Iterable[tuple[int, int]]) -> Iterator[int]:
    """Every position of a forgetting's inclusive ranges, ascending."""
    for first, last in ranges:
        yield from range(first, last + 1)


# A record's session field, as the writer encodes it (ids are plain characters, no escapes).
_SESSION_FIELD: Final = re.compile(rb'"session_id":"([^"\\]*)"')


def find_records(
    log: LogView, session_ids: Collection[str], end: int, after: int = 0, pos: int = 0
) -> dict[str, list[int]]:
    """The positions of every record of each session in bytes ``after`` (where the record
    ending there has ``pos``) to ``end`` of a log, ascending: the log is searched for the
    sessions' id fields (at the speed of a byte search, not of decoding), and each line
    found is decoded to confirm it."""
    wanted = {ev.encode_json(sid)[1:-1]: sid for sid in session_ids}
    found: dict[str, list[int]] = {sid: [] for sid in session_ids}
    path = log.path
    line, offset = pos + 1, after  # the line number at byte ``offset``, a line's start
    while offset < end:
        chunk = log.pread(min(_CHUNK, end - offset), offset)
        whole = chunk.rfind(b"\n") + 1  # search whole lines only
        if not whole:
            break  # no newline in the rest: no whole record
        counted = 0
        for at, session_id in _fields(chunk, whole, wanted):
            line += chunk.count(b"\n", counted, at)
            counted = at
            start = chunk.rfind(b"\n", 0, counted) + 1
            try:
                event = ev.decode_line(chunk[start : chunk.index(b"\n", counted)])
            except ev.LineError as exc:
                raise CorruptLog(exc.reason, path=path, line=line, offset=offset + start) from None
            # The same bytes in a message's metadata are no session field.
            if getattr(event, "session_id", None) == session_id and event.pos == line:
                found[session_id].append(line)
        line += chunk.count(b"\n", counted, whole)
        offset += whole
    return found


# Up to this many sessions, each id field is searched for on its own (a byte search);
# beyond, every session field is matched once and looked up.
_SEARCHED_ALONE: Final = 8


def _fields(chunk: bytes, whole: int, wanted: dict[bytes, str]) -> list[tuple[int, str]]:
    """(offset, session id) of each wanted session's id field in ``chunk[:whole]``."""
    if len(wanted) > _SEARCHED_ALONE:
        return [
            (m.start(), sid)
            for m in _SESSION_FIELD.finditer(chunk, 0, whole)
            if (sid := wanted.get(m.group(1))) is not None
        ]
    found = []
    for encoded, sid in wanted.items():
        needle = b'"session_id":"%s"' % encoded
        at = chunk.find(needle, 0, whole)
        while at >= 0:
            found.append((at, sid))
            at = chunk.find(needle, at + 1, whole)
    return sorted(found)


def _line_starts(fd: LogView, wanted: list[int], end: int) -> dict[int, int]:
    """The byte offsets where lines ``wanted`` (1-based numbers, ascending) start."""
    found: dict[int, int] = {}
    targets = iter(wanted)
    target = next(targets, None)
    line, line_start = 1, 0  # the next line to reach, and where it starts
    offset = 0
    while target is not None and offset < end:
        chunk = fd.pread(min(_CHUNK, end - offset), offset)
        if not chunk:
            break
        newlines = chunk.count(b"\n")
        if target > line + newlines:  # no wanted line starts in this chunk: skip it whole
            if newlines:
                line, line_start = line + newlines, offset + chunk.rfind(b"\n") + 1
        else:
            cut = 0
            while target is not None:
                if target == line:
                    found[line] = line_start
                    target = next(targets, None)
                    continue
                nl = chunk.find(b"\n", cut)
                if nl < 0:
                    break
                cut = nl + 1
                line, line_start = line + 1, offset + cut
        offset += len(chunk)
    return found


def plan_redaction(
    path: str, identity: tuple[int, int], positions: list[int], end: int, records: int
) -> None:
    """Note durably how the records at ``positions`` (ascending) are to be redacted, before
    the ``records`` forgettings that list them are appended at byte ``end``.

    A writer stopped anywhere after this leaves the note, which ``complete_redaction``
    carries out if the forgettings were appended, and drops if they were not.
    """
    with _open_to_overwrite(path, identity) as fd:
        _write_note(path, {"end": end, "records": records}, _changes(fd, path, positions, end))


def redact_in_place(path: str, identity: tuple[int, int], positions: list[int], end: int) -> int:
    """Overwrite the records at ``positions`` (ascending) with their redaction, durably;
    returns how many changed. Carries out the note ``plan_redaction`` left, if any;
    otherwise notes the overwrites first, as it would have (the forgettings that list
    these positions are in the log already).

    In a file log a record's pos is its line number. The records are overwritten last
    first, so a writer killed part way leaves the session's creation whole; after a power
    cut, which may leave a record half overwritten, the note lets ``complete_redaction``
    finish the overwrite before anyone reads the log.
    """
    if not os.path.exists(_note_path(path)):
        with _open_to_overwrite(path, identity) as fd:
            _write_note(path, {"end": None}, _changes(fd, path, positions, end))
    return complete_redaction(path, identity)


def _changes(fd: LogView, path: str, positions: list[int], end: int) -> list[tuple[int, bytes]]:
    """(offset, redaction) of each record at ``positions`` that is not redacted yet, the
    last position first."""
    starts = _line_starts(fd, positions, end)
    changes: list[tuple[int, bytes]] = []
    for pos in reversed(positions):
        start = starts.get(pos)
        if start is None:
            raise LogError(f"{path}: no record at position {pos} to redact", path=path)
        line = _read_line(fd, start, end)
        new = _redaction(path, line, pos, start)
        if new != line:
            changes.append((start, new))
    return changes


def _open_to_overwrite(path: str, identity: tuple[int, int]) -> LogView:
    view = LogView(path, writable=True)  # no O_APPEND: pwrite
    active = view.active_fd
    if active is None or (os.fstat(active).st_ino, os.fstat(active).st_dev) != identity:
        view.close()
        raise LogError(f"{path}: the log was replaced while open", path=path)
    return view


def _redaction(path: str, line: bytes, pos: int, start: int) -> bytes:
    """The redaction of the line found at ``pos``; LogError if it is not that record."""
    try:
        new = ev.redaction_line(line)
    except ev.LineError as exc:
        raise LogError(
            f"{path}: line {pos} (byte offset {start}): cannot redact it: {exc.reason}",
            path=path,
        ) from None
    if ev.decode_line(new[:-1]).pos != pos:
        raise LogError(
            f"{path}: line {pos} (byte offset {start}) holds another position", path=path
        )
    return new


def _note_path(path: str) -> str:
    return f"{path}.redacting"


def _write_note(path: str, header: _Header, changes: list[tuple[int, bytes]]) -> None:
    """The note: a header line, then ``<offset> <redaction line>`` per record; fsynced."""
    out = os.open(_note_path(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        body = b"".join(b"%d %s" % (start, new) for start, new in changes)
        os.write(out, ev.encode_json(header) + b"\n" + body)
        os.fsync(out)
    finally:
        os.close(out)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def complete_redaction(path: str, identity: tuple[int, int]) -> int:
    """Carry out the note of a redaction, if there is one; how many records it changed.

    A note made before its forgettings were appended counts only if they were: at the
    byte offset it names, that many ``session_forgotten`` records. Only its whole entries
    count: it is durable before any record is overwritten, so a note cut short means none
    was, and its whole entries are still right. A record is overwritten only where the
    noted redaction fits: the same length, and there the record it redacts, or that
    record half overwritten (a line that no longer checks). The note goes last.
    """
    note = _note_path(path)
    try:
        with open(note, "rb") as f:
            header, _, body = f.read().partition(b"\n")
    except FileNotFoundError:
        return 0
    changed = 0
    with _open_to_overwrite(path, identity) as fd:
        if _recorded(fd, header):
            for start, new in filter(None, map(_noted, body.splitlines(keepends=True))):
                if _fits(fd, start, new):
                    fd.pwrite(new, start)
                    changed += 1
            fd.fsync()  # and seals again the segments it changed
    os.unlink(note)
    fsync_directory(os.path.dirname(os.path.abspath(path)))
    return changed


def _recorded(fd: LogView, header: bytes) -> bool:
    """Whether the forgettings a note waits for are in the log (or it waits for none)."""
    try:
        fields = msgspec.json.decode(header, type=_Header)
        end, records = fields["end"], fields.get("records") or 0
    except (msgspec.MsgspecError, KeyError):
        return False  # a header cut short: nothing was overwritten after it
    if end is None:
        return True
    lines = _lines_at(fd, end, records)
    try:
        found = [ev.decode_line(line) for line in lines]
    except ev.LineError:
        return False
    return len(found) == records and all(isinstance(e, ev.SessionForgotten) for e in found)


def _lines_at(fd: LogView, offset: int, count: int) -> list[bytes]:
    """Up to ``count`` whole lines from ``offset`` on, without their newlines."""
    data = b""
    while data.count(b"\n") < count:
        chunk = fd.pread(_CHUNK, offset + len(data))
        if not chunk:
            break
        data += chunk
    return data.split(b"\n")[:count] if data.count(b"\n") >= count else []


def _noted(entry: bytes) -> tuple[int, bytes] | None:
    """(offset, redaction) of a whole entry of the note, else None."""
    head, _, new = entry.partition(b" ")
    if not head.isdigit() or not new.endswith(b"\n"):
        return None
    try:
        redacted = ev.decode_line(new[:-1])
    except ev.LineError:
        return None
    return (int(head), new) if isinstance(redacted, ev.Redacted) else None


def _fits(fd: LogView, start: int, new: bytes) -> bool:
    """Whether ``new`` may overwrite the bytes at ``start`` (see ``complete_redaction``)."""
    there = fd.pread(len(new), start)
    if len(there) != len(new) or not there.endswith(b"\n") or b"\n" in there[:-1]:
        return False
    try:
        return ev.decode_line(there[:-1]).pos == ev.decode_line(new[:-1]).pos
    except ev.LineError:
        return True  # half overwritten by the interrupted pass


def _read_line(fd: LogView, start: int, end: int) -> bytes:
    """The whole line that starts at ``start``, newline included."""
    parts: list[bytes] = []
    at = start
    while at < end:
        chunk = fd.pread(min(1 << 16, end - at), at)
        nl = chunk.find(b"\n")
        if nl >= 0:
            parts.append(chunk[: nl + 1])
            return b"".join(parts)
        parts.append(chunk)
        at += len(chunk)
    return b"".join(parts)


def quarantine_files(log_path: str) -> list[str]:
    """The files the log's torn tails were moved to (``<log>.torn-<offset>[.n]``)."""
    return sorted(glob.glob(glob.escape(log_path) + ".torn-*"))


def scrub_quarantine(log_path: str, session_id: str) -> list[str]:
    """Remove the session's torn bytes from every quarantine file; the files changed.

    A file left with nothing is removed; any other is replaced whole by a copy without
    them (written, fsynced, then renamed over it), so a crash leaves one or the other.
    """
    changed: list[str] = []
    for path in quarantine_files(log_path):
        with open(path, "rb") as f:
            data = f.read()
        pieces = data.splitlines(keepends=True)
        kept = [p for p in pieces if not carries_session(p, session_id)]
        if len(kept) == len(pieces):
            continue
        if kept:
            tmp = f"{path}.scrub"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, b"".join(kept))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        else:
            os.unlink(path)
        fsync_directory(os.path.dirname(os.path.abspath(path)))
        changed.append(path)
    return changed
