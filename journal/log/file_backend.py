"""The log as one file: ``FileSource`` reads it, ``FileLog`` is a writer's handle on it.

Cursors are byte offsets. The file is named by its path and known by its inode: a path
that names another file, or a file shorter than what was read of it, means the log was
replaced or cut by something other than this library, and the writer stops.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Final

from journal.errors import LogError
from journal.log.appender import LogFile
from journal.log.backend import START, Cursor, TornTail
from journal.log.erasure import (
    complete_redaction,
    find_records,
    plan_redaction,
    positions_in,
    redact_in_place,
    scrub_quarantine,
)
from journal.log.reader import LogReader, StateReader
from journal.repair import quarantine_tail

_BACK_CHUNK: Final = 1 << 22


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
    """

    _redaction_checked = False

    def end(self, known: Cursor) -> Cursor:
        if not self._redaction_checked:
            complete_redaction(self.path, self.identity)
            self._redaction_checked = True
        try:
            mine = os.stat(self.path)  # the path still names our file: its size is ours
        except FileNotFoundError:
            mine = None
        if mine is None or (mine.st_ino, mine.st_dev) != self.identity:
            raise LogError(
                f"{self.path}: the log was moved or replaced while open; "
                "close the journal and open it again",
                path=self.path,
            )
        if mine.st_size < known:
            raise LogError(
                f"{self.path}: the log shrank from {known} to "
                f"{mine.st_size} bytes while open; records were removed by "
                "something other than this library",
                path=self.path,
            )
        self._end_seen = (self.lock_epoch, mine.st_size)
        return Cursor(mine.st_size)

    def start_of_last(self, count: int, after: Cursor, end: Cursor) -> Cursor:
        return Cursor(last_lines_start(self.fd, after, end, count))

    def repair(self, torn: TornTail) -> str:
        return quarantine_tail(self, torn.offset)

    def find_sessions(self, session_ids: Collection[str]) -> dict[str, list[int]]:
        return find_records(self.path, session_ids, os.fstat(self.fd).st_size)

    def plan_redaction(self, positions: Sequence[tuple[int, int]], records: int) -> None:
        size = os.fstat(self.fd).st_size
        plan_redaction(self.path, self.identity, list(positions_in(positions)), size, records)

    def redact(self, positions: Sequence[tuple[int, int]]) -> int:
        size = os.fstat(self.fd).st_size
        return redact_in_place(self.path, self.identity, list(positions_in(positions)), size)

    def scrub_torn(self, session_id: str) -> list[str]:
        return scrub_quarantine(self.path, session_id)


def last_lines_start(fd: int, start: int, end: int, lines: int) -> int:
    """Where the last ``lines`` lines of bytes ``start`` to ``end`` begin (``start`` if
    there are no more), read backwards from the end so only that stretch is read."""
    remaining = lines  # newlines to step over before the one that precedes them
    at = end
    while at > start:
        size = min(at - start, _BACK_CHUNK)
        chunk = os.pread(fd, size, at - size)
        found = chunk.count(b"\n")
        if found > remaining:
            cut = len(chunk)
            for _ in range(remaining + 1):
                cut = chunk.rfind(b"\n", 0, cut)
            return at - size + cut + 1
        remaining -= found
        at -= size
    return start
