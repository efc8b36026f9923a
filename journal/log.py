"""The log file: safe opening, whole-record appends with group commit, and the reader.

Appends go through one ``O_APPEND`` descriptor per handle, as a loop over ``os.write`` of
whole records, under an exclusive ``flock`` held by the caller (see ``LogFile.locked``).
Durability is settled after the lock is released, so concurrent callers share one fsync.

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

import binascii
import errno
import fcntl
import operator
import os
import stat
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import repeat
from typing import BinaryIO, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from journal.errors import (
    CorruptLog,
    DurabilityError,
    InvalidValue,
    JournalClosed,
    LogError,
    LogWriteError,
    NotALog,
    UnsafeLogPath,
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

Durability = Literal["always", "batch", "none"]
DURABILITY_MODES: Final = ("always", "batch", "none")
FILE_MODE: Final = 0o600
_READ_BUFFER: Final = 1 << 20


def fsync_directory(path: str) -> None:
    """Make a file's creation, rename or removal in ``path`` durable."""
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_regular_file(path: str, st: os.stat_result) -> None:
    """Refuse anything but a plain file with a single name (symlink checked by the caller)."""
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeLogPath(f"{path}: not a regular file", path=path)
    if st.st_nlink > 1:
        raise UnsafeLogPath(
            f"{path}: has {st.st_nlink} hard links; a log must have exactly one name", path=path
        )


def open_log_for_append(path: str) -> tuple[int, os.stat_result]:
    """Open (creating 0600 if needed) the log for appending; returns (fd, its fstat).

    Refuses symlinks (``O_NOFOLLOW``), hard links and non-regular files.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    created = False
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, FILE_MODE)
        created = True
    except FileExistsError:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafeLogPath(
                    f"{path}: is a symlink; refusing to follow it", path=path
                ) from exc
            if exc.errno == errno.EISDIR:
                raise UnsafeLogPath(f"{path}: not a regular file (a directory)", path=path) from exc
            raise LogError(f"{path}: cannot open: {exc.strerror}", path=path) from exc
    except OSError as exc:
        raise LogError(f"{path}: cannot create: {exc.strerror}", path=path) from exc
    try:
        opened = os.fstat(fd)
        check_regular_file(path, opened)
        if created:
            os.fchmod(fd, FILE_MODE)  # whatever the umask: conversations are private
            fsync_directory(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        os.close(fd)
        raise
    return fd, opened


@dataclass(frozen=True)
class TornTail:
    """Bytes at the end of the log that are not (yet) whole records."""

    offset: int
    length: int
    line: int
    reason: str


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

    def __iter__(self) -> Iterator[tuple[E, int]]:
        try:
            f = open(self.path, "rb", buffering=_READ_BUFFER)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with f:
            f.seek(self.start)
            yield from self._records(f)

    def batches(self) -> Iterator[tuple[list[E], int, list[bytes]]]:
        """Like iterating, but in runs: ``(events, offset of the first, their lines)``.

        Whole chunks of the file are checked (checksums, positions, groups) and decoded by
        loops that run in C; a chunk that fails any check is read again line by line, so
        errors and torn tails are reported exactly as by iteration. ``lines`` exclude the
        ``\\n`` (empty for a run read line by line, always a single event); after each run,
        ``end`` is the offset just after it.
        """
        try:
            f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        offset = self.start
        with f:
            pos = self.last_pos
            size = _FAST_CHUNK
            while True:
                # Read from the first unused byte each time, rather than joining a carried
                # partial line to the next chunk: that join would copy every chunk.
                block = os.pread(f.fileno(), size, offset)
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

    def _records(self, f: BinaryIO) -> Iterator[tuple[E, int]]:
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
        if start == 0:
            _check_starts_as_a_log(self.path)
        self.torn = TornTail(offset=start, length=end - start, line=line, reason=reason)

    def _bad_line(
        self,
        f: BinaryIO,
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


def read_log(path: str, start: int = 0, start_pos: int = 0) -> Iterator[tuple[AnyEvent, int]]:
    """Shorthand for iterating a LogReader when the torn-tail details are not needed."""
    return iter(LogReader(path, start, start_pos))


class _Locked:
    """``with log.locked():`` — a plain context manager: this runs on every append."""

    __slots__ = ("_log",)

    def __init__(self, log: LogFile) -> None:
        self._log = log

    def __enter__(self) -> None:
        self._log._acquire()

    def __exit__(self, *exc: object) -> None:
        self._log._release()


# Consecutive threads of one process that may take the log without releasing the flock.
MAX_HANDOFFS: Final = 32


class LogFile:
    """One append handle on the log: locking, whole-record writes and group commit.

    Callers hold ``locked()`` around catching up and ``append``; they call ``wait_durable``
    with the token ``append`` returned after releasing it, so one fsync covers every record
    written by any thread in the meantime. A failed fsync is never retried: the handle is
    poisoned, since the kernel may already have dropped the dirty pages it could not write.
    """

    def __init__(
        self, path: str, durability: Durability = "always", batch_interval: float = 0.05
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise InvalidValue(
                f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}"
            )
        self.path = path
        self.durability = durability
        self.fd, opened = open_log_for_append(path)
        # Which file this handle writes: an open file keeps its inode, so a path that
        # shows these again still names it.
        self.identity = (opened.st_ino, opened.st_dev)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._flock_held = False
        # Threads waiting for ``_lock``, so that the holder can pass the flock on to them.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._handoffs = 0
        self._locked = _Locked(self)
        # Bumped whenever the flock is taken afresh: while it stays the same, this process
        # has held the log the whole time and no other writer can have appended.
        self.lock_epoch = 0
        self._cond = threading.Condition(threading.Lock())
        self._written = 0  # appends made through this handle
        self._synced = 0  # appends covered by a completed fsync
        self._syncing = False
        self._failure: OSError | None = None
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._flush_wakeup = threading.Event()
        if durability == "batch":
            self._batch_interval = batch_interval
            self._flusher = threading.Thread(
                target=self._flush_loop, name="journal-flush", daemon=True
            )
            self._flusher.start()

    # -- locking -------------------------------------------------------------------------
    def locked(self) -> _Locked:
        """Exclusive access across threads (RLock) and processes (flock), re-entrant.

        When other threads of this process are waiting, the flock is handed on with the
        thread lock instead of being released and taken again (at most ``MAX_HANDOFFS``
        times in a row, so other processes get their turn): each flock call releases the
        GIL, and under contention every release costs a trip through the GIL queue.
        """
        return self._locked

    def _acquire(self) -> None:
        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        except BaseException:  # interrupted while waiting: a flock kept for us is let go
            with self._waiting_lock:
                self._waiting -= 1
            if self._lock.acquire(blocking=False):
                try:
                    if self._lock_depth == 0 and self._flock_held:
                        self._release_flock()
                finally:
                    self._lock.release()
            raise
        with self._waiting_lock:
            self._waiting -= 1
        try:
            if self._lock_depth == 0 and not self._flock_held:
                self._check_open()
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self._flock_held = True
                self._handoffs = 0
                self.lock_epoch += 1
            self._check_open()
        except BaseException:
            if self._lock_depth == 0 and self._flock_held:
                self._release_flock()
            self._lock.release()
            raise
        self._lock_depth += 1

    def _release(self) -> None:
        try:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                self._release_flock()
        finally:
            self._lock.release()

    def _release_flock(self) -> None:
        """Release the flock, or keep it for a waiting thread (``_lock`` held)."""
        if self._waiting and self._handoffs < MAX_HANDOFFS and not self._closed:
            self._handoffs += 1
            return
        self._flock_held = False
        if not self._closed:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    # -- writing -------------------------------------------------------------------------
    def append(self, data: bytes, at: int) -> int:
        """Write whole records at the end (``at``, the current size); returns a sync token.

        On failure the file is cut back to ``at`` so no partial record remains.
        """
        self._check_open()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self.fd, at)
            except OSError as trunc_exc:  # pragma: no cover - needs a failing truncate
                raise LogWriteError(
                    f"{self.path}: write failed ({exc.strerror}) and cutting the partial "
                    f"record back to byte {at} failed too ({trunc_exc.strerror}); the next "
                    "writer to open the log quarantines it",
                    path=self.path,
                ) from exc
            raise LogWriteError(
                f"{self.path}: write failed ({exc.strerror}); nothing was appended", path=self.path
            ) from exc
        with self._cond:
            self._written += 1
            return self._written

    @property
    def last_token(self) -> int:
        """The sync token of this handle's latest append (0 before any)."""
        return self._written

    def wait_durable(self, token: int) -> None:
        """Return once the append ``token`` is as durable as the mode promises."""
        if self.durability != "always":
            return
        with self._cond:
            while self._synced < token:
                if self._closed and self._failure is None:
                    raise JournalClosed(f"{self.path}: the journal was closed")
                if self._failure is not None:
                    raise DurabilityError(
                        f"{self.path}: fsync failed earlier ({self._failure.strerror}); "
                        "this record may not be on disk: reopen the journal and retry with "
                        "the same event_id",
                        path=self.path,
                    ) from self._failure
                if self._syncing:
                    self._cond.wait()
                    continue
                self._sync_locked()

    def _sync_locked(self) -> None:
        """fsync with ``_cond`` held on entry and exit, released while the disk works."""
        self._syncing = True
        target = self._written
        error: OSError | None = None
        self._cond.release()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            error = exc
        finally:
            self._cond.acquire()
            self._syncing = False
            self._cond.notify_all()
        if error is not None:
            self._failure = error
            raise DurabilityError(
                f"{self.path}: fsync failed ({error.strerror}); the last records may not be "
                "on disk: reopen the journal and retry with the same event_id",
                path=self.path,
            ) from error
        self._synced = max(self._synced, target)

    def sync(self) -> None:
        """fsync everything written through this handle so far (any mode)."""
        with self._cond:
            if self._failure is None and self._synced < self._written and not self._syncing:
                self._sync_locked()

    def _flush_loop(self) -> None:
        while not self._flush_wakeup.wait(self._batch_interval):
            try:
                self.sync()
            except DurabilityError:
                return

    def cut_back(self, offset: int) -> None:
        """Cut the log at ``offset``, durably (a torn tail, once ``journal.repair`` copied it)."""
        try:
            os.ftruncate(self.fd, offset)
            os.fsync(self.fd)
        except OSError as exc:
            with self._cond:
                self._failure = exc  # whether the cut reached the disk is unknown
            raise DurabilityError(
                f"{self.path}: cutting the torn tail off at byte offset {offset} failed "
                f"({exc.strerror}); it was copied aside first: open the journal again",
                path=self.path,
            ) from exc

    # -- lifetime ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.path}: the journal is closed")
        if self._failure is not None:
            raise JournalClosed(
                f"{self.path}: an fsync failed ({self._failure.strerror}); this handle "
                "accepts no more appends: open the journal again"
            )

    def close(self) -> None:
        """Sync what is pending (unless a sync already failed) and close the descriptor."""
        if self._closed:
            return
        self._flush_wakeup.set()
        if self._flusher is not None:
            self._flusher.join()
        # Under the append lock and after any fsync in flight: closing the descriptor under
        # a writer would send its bytes, or its fsync, to whatever file reuses the number.
        with self._lock, self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            try:
                if (
                    self.durability != "none"
                    and self._failure is None
                    and self._synced < self._written
                ):
                    self._sync_locked()
            finally:
                self._closed = True
                self._cond.notify_all()
                os.close(self.fd)


# -- the fast path: chunks of lines checked and decoded by loops that run in C ----------
_FAST_CHUNK: Final = 1 << 20
_body = operator.itemgetter(slice(None, -CRC_SUFFIX_LEN))
_crc_open = operator.itemgetter(slice(-CRC_SUFFIX_LEN, -10))
_crc_digits = operator.itemgetter(slice(-10, -2))
_crc_close = operator.itemgetter(slice(-2, None))
_get_pos = operator.attrgetter("pos")
_get_ts = operator.attrgetter("ts")
_get_at = operator.attrgetter("at")
_get_grp = operator.attrgetter("grp")
_crc32 = zlib.crc32
_CLOSE_CRC: Final = b"}"


def _whole_groups(grps: list[tuple[int, int] | UnsetType]) -> int | None:
    """How many of these records form whole units (a group still open at the end is left
    out); None if the groups are out of order (the caller reads line by line)."""
    open_at = -1  # index of the open group's first member
    size = 0
    for k, grp in enumerate(grps):
        if grp is UNSET:
            if open_at >= 0:
                return None
            continue
        index, total = grp
        if open_at < 0:
            if index != 1 or total < 2:
                return None
            open_at, size = k, total
        elif total != size or index != k - open_at + 1:
            return None
        if index == size:
            open_at = -1
    return open_at if open_at >= 0 else len(grps)


def _fast_run(
    data: bytes, cut: int, pos: int, decoder: msgspec.json.Decoder[E]
) -> tuple[list[E], list[bytes], int] | None:
    """Check and decode ``data[:cut]`` (whole lines) in one go: (events, lines, bytes used).

    None when anything is amiss (the caller reads those lines again one by one, which
    names the defect). A group still open at the end is left out (``used < cut``).
    """
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: part of a line, or nothing
    n = len(lines)
    if min(map(len, lines)) <= CRC_SUFFIX_LEN:
        return None
    if not (
        all(map(operator.eq, map(_crc_open, lines), repeat(CRC_PREFIX)))
        and all(map(operator.eq, map(_crc_close, lines), repeat(b'"}')))
    ):
        return None
    try:
        # All checksums at once: 8 hex digits per line make 4 big-endian bytes each.
        expected = struct.unpack(f">{n}I", binascii.unhexlify(b"".join(map(_crc_digits, lines))))
    except (binascii.Error, struct.error):
        return None
    actual = map(_crc32, repeat(_CLOSE_CRC), map(_crc32, map(_body, lines)))
    if not all(map(operator.eq, actual, expected)):
        return None
    try:
        events: list[E] = decoder.decode_lines(memoryview(data)[:cut])
        list(map(datetime.fromisoformat, map(_get_ts, events)))
        ats = set(map(_get_at, events))
        ats.discard(UNSET)
        list(map(datetime.fromisoformat, ats))
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None
    if len(events) != n or list(map(_get_pos, events)) != list(range(pos + 1, pos + n + 1)):
        return None
    grps = list(map(_get_grp, events))
    keep = n if grps.count(UNSET) == n else _whole_groups(grps)
    if keep is None:
        return None
    if keep < n:
        used = sum(map(len, lines[:keep])) + keep
        return events[:keep], lines[:keep], used
    return events, lines, cut
