"""What the writer and the projector need of a log, whatever stores it.

A log is a sequence of checksummed records (the lines of ``journal.events``), each with a
gapless ``pos``; some records form atomic groups. Two sides:

* ``LogSource`` reads: from a **cursor**, runs of whole records, stopping before a torn
  tail (the remains of a write a crash cut short) and raising ``CorruptLog`` for damage
  no crash can leave. A cursor is opaque and ordered: a byte offset in a file, a stream
  sequence elsewhere, with gaps allowed. Callers keep cursors and compare them, never
  compute with them.
* ``LogBackend`` says where the log ends now, raising ``LogError`` when it was replaced
  or cut behind the writer's back, and appends: under ``exclusive()`` (across threads
  and processes), a caller that has read up to cursor ``after`` appends whole lines as
  one atomic unit. If anything was appended after ``after`` meanwhile, the append raises
  ``AppendConflict`` and writes nothing: that is the log-wide expected version, which
  keeps ``pos`` gapless.
  Idempotency keys (event ids) are the writer's: it folds them from what it reads, so a
  retry through any handle on any backend is answered from its window. A torn tail is
  moved aside by ``repair`` before the next append.

``journal.log.file_backend`` and ``journal.log.memory`` implement both; the contract
tests (``tests/test_log_contract.py``) run one body of tests against each.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from itertools import accumulate
from typing import Final, Generic, NewType, Protocol, TypeVar

from journal.errors import LogError, LogWriteError
from journal.events import AnyEvent, Event, StateEvent

Cursor = NewType("Cursor", int)
START: Final = Cursor(0)  # before the first record, on every backend

E = TypeVar("E", bound=Event)


@dataclass(frozen=True)
class TornTail:
    """What follows the last whole record when it is not one: a write a crash cut short.

    ``offset`` is the cursor where it starts, ``line`` the ``pos`` its first record would
    have had, ``length`` its size (bytes, in a file).
    """

    offset: int
    length: int
    line: int
    reason: str


class AppendConflict(LogError):
    """Something was appended after the cursor the caller read up to: nothing was written."""


class AppendTooLarge(LogWriteError):
    """The unit is larger than this log takes in one append: nothing was written."""


class LogBusy(Exception):
    """``exclusive(wait=False)``: another thread or process holds the log now."""


@dataclass(slots=True)
class Run(Generic[E]):
    """Consecutive records: their events, and the cursors before and after them.

    ``whole`` runs hold whole groups only. Otherwise the run is one member of a group
    whose members come one run each, and ``end`` is already the whole group's (a reader
    resumes after whole groups only). ``ends()`` (where each record ends) is worked out
    by ``ends_of`` only when asked for: most readers need just the run's ``end``.
    """

    events: list[E]
    start: Cursor
    end: Cursor
    ends_of: Callable[[], list[Cursor]]
    whole: bool = True

    def ends(self) -> list[Cursor]:
        """The cursor just after each record, in order (the last is ``end``)."""
        return self.ends_of()

    def count_before(self, cursor: Cursor) -> int:
        """How many of the run's records begin before ``cursor``."""
        if self.end <= cursor:
            return len(self.events)
        if self.start >= cursor:
            return 0
        starts = [self.start, *self.ends()[:-1]]
        return sum(1 for s in starts if s < cursor)


def ends_from_sizes(start: Cursor, sizes: Sequence[int]) -> Callable[[], list[Cursor]]:
    """``Run.ends`` for a backend whose cursor moves by each record's size."""
    return lambda: [Cursor(c) for c in accumulate(sizes, initial=start)][1:]


class Reading(Protocol[E]):
    """One pass over a log from a cursor; after it, ``end``, ``last_pos`` and ``torn`` say
    where the last whole record ended, its ``pos``, and what follows it (or None)."""

    end: int
    last_pos: int
    torn: TornTail | None

    def __iter__(self) -> Iterator[tuple[E, int]]:
        """``(event, cursor just after it)``; a group's members once the group is whole."""
        ...

    def runs(self) -> Iterator[Run[E]]:
        """The same records in runs, for callers that take them in bulk."""
        ...


class LogSource(Protocol):
    """The read side of a log."""

    @property
    def name(self) -> str:
        """What to call the log in messages (its path, say)."""
        ...

    def read(self, after: Cursor = START, pos: int = 0) -> Reading[AnyEvent]:
        """Records after ``after``, where the record ending there has ``pos`` (0: none)."""
        ...

    def read_state(self, after: Cursor = START, pos: int = 0) -> Reading[StateEvent]:
        """Like ``read``, with messages decoded as headers (no body): what a writer needs."""
        ...


class LogBackend(LogSource, Protocol):
    """A log to append to: one handle of a writer, safe to share between its threads."""

    @property
    def lock_epoch(self) -> int:
        """Changes each time ``exclusive()`` is taken afresh; while it stays the same, no
        other handle can have appended (where ``lock_spans_writers``)."""
        ...

    @property
    def lock_spans_writers(self) -> bool:
        """Whether ``exclusive()`` keeps every other handle out. Where it does not (a
        stream that several hosts append to), the writer appends on the state it has,
        the append being refused (``AppendConflict``) if others appended meanwhile, and
        a call refused on that state is judged again after a catch-up."""
        ...

    @property
    def last_token(self) -> int:
        """The durability token of this handle's latest append (0 before any)."""
        ...

    def exclusive(self, wait: bool = True) -> AbstractContextManager[None]:
        """Hold the log against every other writer (re-entrant within a thread). With
        ``wait=False``, entering raises ``LogBusy`` instead of waiting for another holder."""
        ...

    def end(self, known: Cursor) -> Cursor:
        """Where the log ends now; LogError if it was replaced, or cut before ``known``."""
        ...

    def start_of_last(self, count: int, after: Cursor, end: Cursor) -> Cursor:
        """Where the last ``count`` records between ``after`` and ``end`` begin."""
        ...

    def last_line(self, end: Cursor) -> tuple[Cursor, bytes]:
        """The record that ends at ``end``: where it starts and its line, newline
        included (``b""`` if no record ends there). A checkpoint names a place in the log
        by that line's hash."""
        ...

    def append(self, lines: Sequence[bytes], after: Cursor) -> tuple[int, Cursor]:
        """Append encoded records (each ending in a newline) as one atomic unit, under
        ``exclusive()``; returns (durability token, the new end). AppendConflict if the
        log no longer ends at ``after``."""
        ...

    def wait_durable(self, token: int) -> None:
        """Return once the append ``token`` is as durable as the handle's mode promises."""
        ...

    def sync(self) -> None:
        """Make everything appended through this handle durable now, in any mode."""
        ...

    def repair(self, torn: TornTail) -> str:
        """Move a torn tail aside (under ``exclusive()``); returns where it was kept."""
        ...

    def find_sessions(
        self,
        session_ids: Collection[str],
        after: Cursor = START,
        pos: int = 0,
        first_pos: int = 0,
    ) -> dict[str, list[int]]:
        """The positions of every record of each session after ``after`` (where the
        record ending there has ``pos``), ascending; under ``exclusive()``, so that where
        ``lock_spans_writers`` none is appended meanwhile. The caller knows that no
        session has a record before position ``first_pos``: a backend may skip to it."""
        ...

    def plan_redaction(self, positions: Sequence[tuple[int, int]], records: int) -> None:
        """Before the ``records`` forgettings that list ``positions`` are appended (under
        ``exclusive()``): prepare ``redact`` so that, should this writer stop before it is
        done, the log completes it, only if those forgettings were appended."""
        ...

    def redact(self, positions: Sequence[tuple[int, int]]) -> int:
        """Overwrite the records at ``positions`` (a forgetting's inclusive ranges) with
        their ``redacted`` form, in place and durably, under ``exclusive()``. Records
        already redacted stay as they are; returns how many changed."""
        ...

    def scrub_torn(self, session_id: str) -> list[str]:
        """Remove the session's bytes from where torn tails were moved aside; returns the
        places changed."""
        ...

    def check_open(self) -> None:
        """Raise JournalClosed if this handle was closed or can no longer append."""
        ...

    def close(self) -> None:
        """Settle pending durability work and let the log go."""
        ...
