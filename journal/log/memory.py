"""A log held in memory: the second implementation of ``journal.log.backend``, for tests.

A ``MemoryStore`` holds the records (the same checksummed lines a file holds) and is
shared by any number of ``MemoryLog`` handles, as a file is by its writers. Nothing
survives the process: every append is as durable as it will ever be when it returns.

Cursors advance by ``STRIDE`` per record, so a caller that computes with cursors instead
of keeping them fails its tests here rather than on the next backend.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Final, Generic, TypeVar

import msgspec
from msgspec import UNSET

import journal.events as ev
from journal.errors import CorruptLog, JournalClosed, LogError
from journal.log.backend import START, AppendConflict, Cursor, LogBusy, Run, TornTail
from journal.log.erasure import carries_session, positions_in

STRIDE: Final = 16
E = TypeVar("E", bound=ev.Event)


class MemoryStore:
    """The records of one in-memory log, and what became of its torn tails."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.lines: list[bytes] = []  # each record's line, newline included
        self.cursors: list[Cursor] = []  # the cursor just after each record
        self.lock = threading.RLock()
        self.generation = 0  # bumped when the log is replaced by another
        self.quarantined: dict[str, list[bytes]] = {}

    @property
    def end(self) -> Cursor:
        return self.cursors[-1] if self.cursors else START

    def add(self, line: bytes) -> None:
        """Store a line as it is (an append, or damage done by a test)."""
        self.lines.append(line)
        self.cursors.append(Cursor(self.end + STRIDE))

    def cut(self, keep: int) -> list[bytes]:
        """Keep the first ``keep`` records; returns the others."""
        gone = self.lines[keep:]
        del self.lines[keep:], self.cursors[keep:]
        return gone

    def replace(self) -> None:
        """Another, empty log takes this one's place (as a file replaced at its path)."""
        with self.lock:
            self.cut(0)
            self.generation += 1

    def index_after(self, cursor: Cursor) -> int:
        """The index of the first record after ``cursor``."""
        return bisect.bisect_right(self.cursors, cursor)


class MemoryReading(Generic[E]):
    """One pass over a store from a cursor: see ``journal.log.backend.Reading``."""

    def __init__(
        self, store: MemoryStore, after: Cursor, pos: int, decoder: msgspec.json.Decoder[E]
    ) -> None:
        with store.lock:
            first = store.index_after(after)
            self._lines = store.lines[first:]
            self._cursors = store.cursors[first:]
        self._name = store.name
        self._decoder = decoder
        self.end: int = after
        self.last_pos = pos
        self.torn: TornTail | None = None

    def __iter__(self) -> Iterator[tuple[E, int]]:
        for run in self.runs():
            yield from zip(run.events, run.ends(), strict=True)

    def runs(self) -> Iterator[Run[E]]:
        """All whole units after the cursor, as one run; stops before a torn tail."""
        events: list[E] = []
        ends: list[Cursor] = []
        group: list[tuple[E, Cursor]] = []
        start = unit_start = Cursor(self.end)
        for line, cursor in zip(self._lines, self._cursors, strict=True):
            expected = self.last_pos + len(group) + 1
            if not line.endswith(b"\n"):
                self._tear(unit_start, self.last_pos + 1, "unterminated last record")
                group = []
                break
            event = self._decode(line, expected, unit_start)
            if event.grp is UNSET:
                if group:
                    raise self._broken_group(group, unit_start)
            else:
                index, size = event.grp
                if index != len(group) + 1 or size < 2 or index > size:
                    if group:
                        raise self._broken_group(group, unit_start)
                    raise self._corrupt(
                        f"group member {index} of {size} out of order", expected, unit_start
                    )
                if index < size:
                    group.append((event, cursor))
                    continue
            group.append((event, cursor))
            events.extend(e for e, _ in group)
            ends.extend(c for _, c in group)
            unit_start, self.end, self.last_pos = cursor, cursor, event.pos
            group = []
        if group:
            first = group[0][0]
            assert first.grp is not UNSET
            reason = f"atomic group has {len(group)} of its {first.grp[1]} records"
            self._tear(unit_start, first.pos, reason)
        if events:
            yield Run(events, start, Cursor(self.end), lambda: ends)

    def _decode(self, line: bytes, expected: int, at: Cursor) -> E:
        try:
            event = ev.decode_checked(line[:-1], self._decoder)
        except ev.LineError as exc:
            raise self._corrupt(exc.reason, expected, at) from exc
        if event.pos != expected:
            raise self._corrupt(f"position {event.pos} where {expected} was expected", expected, at)
        return event

    def _corrupt(self, reason: str, line: int, at: Cursor) -> CorruptLog:
        return CorruptLog(reason, path=self._name, line=line, offset=at)

    def _broken_group(self, group: list[tuple[E, Cursor]], at: Cursor) -> CorruptLog:
        first = group[0][0]
        assert first.grp is not UNSET
        reason = f"atomic group has only {len(group)} of its {first.grp[1]} records"
        return self._corrupt(reason, first.pos, at)

    def _tear(self, at: Cursor, line: int, reason: str) -> None:
        records = len(self._cursors) - bisect.bisect_right(self._cursors, at)
        self.torn = TornTail(offset=at, length=records, line=line, reason=reason)


class MemoryLog:
    """A writer's handle on a ``MemoryStore`` (a new one if none is given)."""

    lock_spans_writers = True  # one lock per store, held by one handle at a time

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.name = self.store.name
        self.lock_epoch = 0
        self.last_token = 0  # appends made through this handle
        self._generation = self.store.generation
        self._depth = 0
        self._closed = False

    @contextmanager
    def exclusive(self, wait: bool = True) -> Iterator[None]:
        if not self.store.lock.acquire(blocking=wait):
            raise LogBusy(self.name)
        try:
            self.check_open()
            if self._depth == 0:
                self.lock_epoch += 1  # others may have appended since we last held it
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
        finally:
            self.store.lock.release()

    def read(self, after: Cursor = START, pos: int = 0) -> MemoryReading[ev.AnyEvent]:
        return MemoryReading(self.store, after, pos, ev.event_decoder)

    def read_state(self, after: Cursor = START, pos: int = 0) -> MemoryReading[ev.StateEvent]:
        return MemoryReading(self.store, after, pos, ev.state_decoder)

    def end(self, known: Cursor) -> Cursor:
        with self.store.lock:
            if self.store.generation != self._generation:
                raise LogError(f"{self.name}: the log was replaced while open", path=self.name)
            end = self.store.end
        if end < known:
            raise LogError(
                f"{self.name}: the log was cut below what was read of it", path=self.name
            )
        return end

    def start_of_last(self, count: int, after: Cursor, end: Cursor) -> Cursor:
        with self.store.lock:
            first = self.store.index_after(after)
            last = self.store.index_after(end)
            if last - first <= count:
                return after
            return self.store.cursors[last - count - 1]

    def last_line(self, end: Cursor) -> tuple[Cursor, bytes]:
        with self.store.lock:
            k = bisect.bisect_left(self.store.cursors, end)
            if k == len(self.store.cursors) or self.store.cursors[k] != end:
                return end, b""
            return (self.store.cursors[k - 1] if k else START), self.store.lines[k]

    def append(self, lines: Sequence[bytes], after: Cursor) -> tuple[int, Cursor]:
        self.check_open()
        with self.store.lock:
            if self.store.generation != self._generation or self.store.end != after:
                raise AppendConflict(
                    f"{self.name}: the log no longer ends where this writer read it to; "
                    "nothing was written",
                    path=self.name,
                )
            for line in lines:
                self.store.add(line)
            self.last_token += 1
            return self.last_token, self.store.end

    def wait_durable(self, token: int) -> None:
        """Nothing to wait for: a memory log is as durable as it gets once appended."""

    def sync(self) -> None:
        """Nothing to sync."""

    def repair(self, torn: TornTail) -> str:
        with self.store.lock:
            where = base = f"{self.name}#torn-{torn.offset}"
            n = 1
            while where in self.store.quarantined:  # a second tear at the same place
                where, n = f"{base}.{n}", n + 1
            self.store.quarantined[where] = self.store.cut(
                self.store.index_after(Cursor(torn.offset))
            )
            return where

    def find_sessions(
        self,
        session_ids: Collection[str],
        after: Cursor = START,
        pos: int = 0,
        first_pos: int = 0,
    ) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {sid: [] for sid in session_ids}
        with self.store.lock:
            lines = self.store.lines[self.store.index_after(after) :]
        for line in lines:
            event = ev.decode_line(line[:-1])
            positions = found.get(getattr(event, "session_id", ""))
            if positions is not None:
                positions.append(event.pos)
        return found

    def plan_redaction(self, positions: Sequence[tuple[int, int]], records: int) -> None:
        """Nothing to prepare: a redaction here is done whole under the store's lock."""

    def redact(self, positions: Sequence[tuple[int, int]]) -> int:
        changed = 0
        with self.store.lock:
            for pos in reversed(list(positions_in(positions))):
                line = self.store.lines[pos - 1]  # positions are gapless from 1 here too
                new = ev.redaction_line(line)
                if ev.decode_line(new[:-1]).pos != pos:
                    raise LogError(
                        f"{self.name}: record {pos} holds another position", path=self.name
                    )
                if new != line:
                    self.store.lines[pos - 1] = new
                    changed += 1
        return changed

    def scrub_torn(self, session_id: str) -> list[str]:
        changed: list[str] = []
        with self.store.lock:
            for where, lines in list(self.store.quarantined.items()):
                kept = [line for line in lines if not carries_session(line, session_id)]
                if len(kept) != len(lines):
                    changed.append(where)
                    if kept:
                        self.store.quarantined[where] = kept
                    else:
                        del self.store.quarantined[where]
        return changed

    def check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.name}: the journal is closed")

    def close(self) -> None:
        self._closed = True
