"""verify's reading of the log: its defects (bad lines, a torn tail, ids used twice, what a
forgetting left of its session) and its fold, up to the checkpoint, of what the projection
must hold.

Bad lines are stepped over, each reported once, so one damaged line does not hide the rest
of the log. A torn-looking end is looked at again once no writer holds the log's lock.
"""

from __future__ import annotations

import fcntl
import operator
import os
import time
from collections.abc import Callable, Iterator
from typing import Final

from journal.errors import CorruptLog
from journal.events import AnyEvent
from journal.log import LogReader, TornTail
from journal.log.segments import broken_seals, log_size
from projector.checks.findings import Findings
from projector.checks.idcheck import IdCheck
from projector.checks.logfold import ForgetCheck, LogTally
from projector.sync.reading import skip_bad_lines

_WRITER_WAIT_SECONDS: Final = 5.0
_event_id = operator.attrgetter("id")


class LogRuns:
    """The whole log as runs of events (the reader's chunks), bad lines stepped over.

    Each stretch of bad lines is reported to ``found`` (if given) once: a damaged member
    of an atomic group makes the group's next members fail too (out of order), which says
    nothing new. After iteration ``last_pos`` and ``torn`` describe the end of the log.
    """

    def __init__(
        self,
        log: str,
        found: Findings | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.log = log
        self.found = found
        self.progress = progress
        self.last_pos = 0
        self.torn: TornTail | None = None

    def __iter__(self) -> Iterator[list[AnyEvent]]:
        total = log_size(self.log)
        next_report = 0
        offset, pos = 0, 0
        stretch: list[CorruptLog] = []  # bad lines one after the other, reported as one
        while True:
            reader = LogReader(self.log, offset, pos)
            try:
                for run in reader.runs():
                    yield run.events
                    if self.progress is not None and reader.end >= next_report:
                        self.progress(reader.end, total)
                        next_report = reader.end + (1 << 20)
            except CorruptLog as exc:
                skip = skip_bad_lines(self.log, reader, exc)
                if stretch and exc.offset != offset:  # a good line came between
                    self._report(stretch)
                    stretch = []
                stretch.append(exc)
                offset, pos = skip.end, skip.next_pos
                continue
            self._report(stretch)
            if self.progress is not None:
                self.progress(total, total)
            self.last_pos, self.torn = reader.last_pos, reader.torn
            return

    def _report(self, stretch: list[CorruptLog]) -> None:
        if self.found is None or not stretch:
            return
        first, last = stretch[0], stretch[-1]
        reason = first.reason
        if len(stretch) > 1:
            reason += (
                f"; the {len(stretch) - 1} line(s) after it, to line {last.line}, fail too "
                f"(last: {last.reason})"
            )
        self.found.add("log", reason, line=first.line, offset=first.offset)


def check_log(
    log: str, upto: int, found: Findings, progress: Callable[[int, int], None] | None
) -> tuple[LogTally, int]:
    """Read the whole log, reporting its defects (ids used twice: ``IdCheck``); fold it
    up to pos ``upto``."""
    tally = LogTally()
    observe = tally.observe
    ids = IdCheck()
    forgets = ForgetCheck()
    runs = LogRuns(log, found, progress)
    for events in runs:
        ids.add_all(map(_event_id, events))
        forgets.observe_all(events)
        if events[-1].pos <= upto:
            for event in events:
                observe(event)
        else:
            for event in events:
                if event.pos <= upto:
                    observe(event)
    check_log_end(log, runs.torn, ids, forgets, found)
    return tally, runs.last_pos


def events_upto(log: str, upto: int) -> Iterator[AnyEvent]:
    """The log's events up to pos ``upto``, bad lines stepped over (``check_log`` reported
    them): a second reading, for ``logfold.recount``."""
    for events in LogRuns(log, Findings(), None):
        for event in events:
            if event.pos > upto:
                return
            yield event


def check_log_end(
    log: str, torn: TornTail | None, ids: IdCheck, forgets: ForgetCheck, found: Findings
) -> None:
    """What the whole log's reading leaves to report: a torn tail, repeated ids, records a
    forgetting left (or redactions no forgetting made)."""
    for pos, first, missed in forgets.incomplete:
        more = f" (and {missed - 1} more of its positions)" if missed > 1 else ""
        found.add(
            "forgetting",
            f"forgetting at pos {pos} is incomplete: pos {first} still holds its record{more}",
            line=first,
        )
    for first, last in forgets.unlisted():
        span = f"pos {first}" if first == last else f"pos {first}-{last}"
        found.add("forgetting", f"{span} is redacted, but no forgetting lists it", line=first)
    for segment, how in broken_seals(log):
        found.add(
            "log",
            f"sealed segment {segment.name} (pos {segment.first_pos}-{segment.last_pos}) {how}",
            line=segment.first_pos,
            offset=segment.start,
        )
    if torn is not None:
        torn = _torn_once_writers_are_done(log, torn)
    if torn is not None:
        found.add(
            "log",
            f"torn tail of {torn.length} bytes ({torn.reason}): a crash left it; the next "
            "write moves it aside",
            line=torn.line,
            offset=torn.offset,
        )
    if ids.any_suspects:
        _repeated_ids(log, ids, found)


def _torn_once_writers_are_done(log: str, torn: TornTail) -> TornTail | None:
    """The torn tail still there once no writer is appending, or None.

    A writer appends under an exclusive flock of the log, so what looks torn while one
    holds it may be a write in progress: look again under a shared flock. A writer that
    keeps the lock longer (a long batch) has repaired any real torn tail when it took it.
    """
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        deadline = time.monotonic() + _WRITER_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
        reader = LogReader(log, torn.offset, torn.line - 1)
        for _ in reader:
            pass
        return reader.torn
    except CorruptLog:
        return torn  # changed while it was read again: reported as it was seen
    finally:
        os.close(fd)


def _repeated_ids(log: str, ids: IdCheck, found: Findings) -> None:
    """Report every id used again, at the line that repeats it (bad lines told already)."""
    seen: set[str] = set()
    for events in LogRuns(log):
        for event in events:
            if ids.suspected(event.id):
                if event.id in seen:
                    found.add("log", f"event id {event.id} is used twice", line=event.pos)
                seen.add(event.id)
