"""The log as one file: ``FileSource`` reads it, ``FileLog`` is a writer's handle on it.

Cursors are byte offsets into the whole log: its sealed segments, then the active file
(``journal.log.segments``). The active file is named by its path and known by its inode:
a path that names another file (unless a rotation sealed this one), or a log shorter than
what was read of it, means the log was replaced or cut by something other than this
library, and the writer stops.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Collection, Sequence
from typing import Final

from journal.errors import InvalidValue, LogError, UnsafeLogPath
from journal.events import decode_line
from journal.log.appender import Durability, LogFile
from journal.log.backend import START, Cursor, TornTail
from journal.log.erasure import (
    complete_redaction,
    find_records,
    plan_redaction,
    positions_in,
    redact_in_place,
    scrub_quarantine,
)
from journal.log.files import open_log_for_append
from journal.log.reader import LogReader, StateReader
from journal.log.segments import (
    DEFAULT_SEGMENT_BYTES,
    LogView,
    Manifest,
    ReadAt,
    load_manifest,
    rotate,
    sealed_index,
    settle,
)
from journal.repair import quarantine_tail

_BACK_CHUNK: Final = 1 << 22
log = logging.getLogger(__name__)


class FileSource:
    """Reads a log file; never creates or changes it."""

    def __init__(self, path: str) -> None:
        self.path = path

    @property
    def name(self) -> str:
        return self.path

    def read(self, after: Cursor = START, pos: int = 0) -> LogReader:
        return LogReader(self.path, after, pos)

    def read_state(self, after: Cursor = START, pos: int = 0) -> StateReader:
        return StateReader(self.path, after, pos)


class FileLog(LogFile, FileSource):
    """A writer's handle on a log file (created 0600 if missing): see ``LogFile``.

    The first time it looks where the log ends (under the lock), it completes a redaction
    a power cut interrupted (``erasure.complete_redaction``), before anything is read.
    An append to an active file of ``segment_bytes`` or more seals it first
    (``segments.rotate``); a handle whose file another writer sealed moves on to the new
    active file when it next takes the lock (so it never appends to a sealed file).
    """

    _redaction_checked = False

    def __init__(
        self,
        path: str,
        durability: Durability = "always",
        batch_interval: float = 0.05,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if segment_bytes < 1:
            raise InvalidValue(f"segment_bytes must be at least 1, not {segment_bytes}")
        super().__init__(path, durability, batch_interval)
        self.segment_bytes = segment_bytes
        try:
            self.manifest = load_manifest(path)
        except BaseException:
            self.close()
            raise
        self.base = self.manifest.end  # checked against the file in ``end``

    def view(self) -> LogView:
        """The whole log, read through this handle's file (close it after use)."""
        return LogView(self.path, active_fd=self.fd, manifest=self.manifest)

    def _locked_anew(self) -> None:
        # The flock was taken on this handle's file: if another writer sealed it, only
        # the flock of the active file holds the log (taken when following the rotation).
        self._current()

    def last_line(self, end: Cursor) -> tuple[Cursor, bytes]:
        with self.view() as view:
            if not 0 < end <= view.size():
                return end, b""
            start = last_lines_start(view, START, end, 1)
            line = view.pread(end - start, start)
        return Cursor(start), line if line.endswith(b"\n") else b""

    def end(self, known: Cursor) -> Cursor:
        mine = self._current()
        if not self._redaction_checked:
            complete_redaction(self.path, self.identity)
            self._redaction_checked = True
            mine = self._current()
        size = self.base + mine.st_size
        if size < known:
            raise LogError(
                f"{self.path}: the log shrank from {known} to "
                f"{size} bytes while open; records were removed by "
                "something other than this library",
                path=self.path,
            )
        self._end_seen = (self.lock_epoch, size)
        return Cursor(size)

    def _current(self) -> os.stat_result:
        """The active file, made this handle's (lock held): a rotation that sealed the
        handle's file is followed, one a crash interrupted is settled first."""
        settled = None  # the file settled last: a file settled twice has another name
        while True:
            mine = self._stat_path()
            if mine is not None and (mine.st_ino, mine.st_dev) == self.identity:
                if mine.st_nlink == 1:
                    return mine
                if settled == self.identity:
                    raise UnsafeLogPath(
                        f"{self.path}: has {mine.st_nlink} names and no rotation explains "
                        "them; a log must have exactly one name",
                        path=self.path,
                    )
                settle(self.path)  # a writer stopped while sealing this file
                settled = self.identity
            if not self._follow_rotation():
                raise LogError(
                    f"{self.path}: the log was moved or replaced while open; "
                    "close the journal and open it again",
                    path=self.path,
                )

    def _stat_path(self) -> os.stat_result | None:
        try:
            return os.stat(self.path)  # the path still names our file: its size is ours
        except FileNotFoundError:
            return None

    def _follow_rotation(self) -> bool:
        """If this handle's file was sealed, move to the active file (lock held): whether
        the handle's file is, or now is, the log's active file."""
        manifest = load_manifest(self.path)
        if sealed_index(self.path, manifest, os.fstat(self.fd)) is None:
            self.manifest = manifest
            return (mine := self._stat_path()) is not None and (
                mine.st_ino,
                mine.st_dev,
            ) == self.identity
        fd, opened = open_log_for_append(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._move_to(fd, opened, load_manifest(self.path))
        return True

    def _move_to(self, fd: int, opened: os.stat_result, manifest: Manifest) -> None:
        """Write to ``fd`` from now on (flocked already): the old file was sealed, and so
        made durable, by the writer that sealed it."""
        old = self.fd
        with self._cond:
            self.fd, self.identity = fd, (opened.st_ino, opened.st_dev)
            self.manifest, self.base = manifest, manifest.end
            self._synced = self._written
            self._retired.append(old)
        fcntl.flock(old, fcntl.LOCK_UN)
        self._end_seen = None

    def append(self, lines: Sequence[bytes], after: Cursor) -> tuple[int, Cursor]:
        # Sealing before the append, not after it: the latest write, the one a crash can
        # cut short, is always in the active file.
        if after - self.base >= self.segment_bytes and self._size() == after:
            self._rotate(after)
        return super().append(lines, after)

    def _rotate(self, end: int) -> None:
        """Seal the active file, which ends at ``end`` with a whole record (lock held).
        A rotation that fails before its commit leaves the log as it was (``settle`` tidies
        up); one that fails after it is followed; if the log cannot be brought to either,
        the handle refuses to go on."""
        with self.view() as view:
            start = last_lines_start(view, self.base, end, 1)
            last_pos = decode_line(view.pread(end - start, start).rstrip(b"\n")).pos
        try:
            fd, manifest = rotate(self.path, self.fd, self.manifest, last_pos)
        except OSError as exc:
            log.warning("%s: the log could not be sealed into a segment: %s", self.path, exc)
            self._end_seen = None
            try:
                self._current()  # settles it, and follows it if it was committed
            except OSError as again:
                with self._cond:
                    self._failure = again
            return
        self._move_to(fd, os.fstat(fd), manifest)
        self._end_seen = (self.lock_epoch, end)

    def start_of_last(self, count: int, after: Cursor, end: Cursor) -> Cursor:
        with self.view() as view:
            return Cursor(last_lines_start(view, after, end, count))

    def repair(self, torn: TornTail) -> str:
        return quarantine_tail(self, torn.offset)

    def find_sessions(
        self,
        session_ids: Collection[str],
        after: Cursor = START,
        pos: int = 0,
        first_pos: int = 0,
    ) -> dict[str, list[int]]:
        # ``first_pos`` is not used: the bytes are searched for the ids, which is fast, and
        # nothing maps a position to its offset without reading up to it.
        with self.view() as view:
            return find_records(view, session_ids, self._size(), after, pos)

    def _size(self) -> int:
        return self.base + os.fstat(self.fd).st_size

    def plan_redaction(self, positions: Sequence[tuple[int, int]], records: int) -> None:
        plan_redaction(
            self.path, self.identity, list(positions_in(positions)), self._size(), records
        )

    def redact(self, positions: Sequence[tuple[int, int]]) -> int:
        return redact_in_place(
            self.path, self.identity, list(positions_in(positions)), self._size()
        )

    def scrub_torn(self, session_id: str) -> list[str]:
        return scrub_quarantine(self.path, session_id)


def last_lines_start(view: ReadAt, start: int, end: int, lines: int) -> int:
    """Where the last ``lines`` lines of bytes ``start`` to ``end`` begin (``start`` if
    there are no more), read backwards from the end so only that stretch is read."""
    remaining = lines  # newlines to step over before the one that precedes them
    at = end
    while at > start:
        size = min(at - start, _BACK_CHUNK)
        chunk = view.pread(size, at - size)
        found = chunk.count(b"\n")
        if found > remaining:
            cut = len(chunk)
            for _ in range(remaining + 1):
                cut = chunk.rfind(b"\n", 0, cut)
            return at - size + cut + 1
        remaining -= found
        at -= size
    return start
