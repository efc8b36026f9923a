"""bulk_load: rebuild's one transaction over the whole log, on the bulk path.

The triggers and secondary indexes are dropped, the log is read in checked runs of whole
units and folded by ``projector.sync.bulk.Loader``, then the dropped objects are created again
from their own text and the checkpoint is written, all in one transaction: a crash leaves
a file the next rebuild throws away. See ``projector.sync.bulk`` for how the rows come out
equal to the incremental path's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from journal.events import AnyEvent, line_digest
from journal.log import LogReader, Run
from journal.log.segments import LogView, log_size
from projector.db import Checkpoint, write_checkpoint
from projector.sync.bulk import Loader
from projector.sync.reading import Until, read_bytes


def _deferred_objects(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The triggers and secondary indexes (``type``, ``name``, ``sql``), in schema order."""
    return [
        (str(t), str(n), str(sql))
        for t, n, sql in conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY rowid"
        )
    ]


Observer = Callable[[AnyEvent], None]
Progress = Callable[[int, int], None]


class BulkResult:
    """What ``bulk_load`` applied: the same figures as ``catch_up``'s result, and
    ``examined``: the bytes of the log it looked at (a torn tail included) if it read the
    log to its end, None if it stopped at ``until``."""

    def __init__(self, applied: int, cp: Checkpoint, torn: Any, examined: int | None) -> None:
        self.events_applied = applied
        self.checkpoint = cp
        self.torn = torn
        self.examined = examined


def bulk_load(
    conn: sqlite3.Connection,
    log_path: str | os.PathLike[str],
    *,
    until: Until | None = None,
    progress: Progress | None = None,
    observer: Observer | None = None,
) -> BulkResult:
    """Project the log (or its prefix) into ``conn``, a database with a fresh schema.

    One transaction; raises (leaving ``conn`` to be thrown away) ApplyError for an event
    the projection refuses, CorruptLog for a bad line, sqlite3.Error for a row a
    constraint refuses.
    """
    path = os.fspath(log_path)
    total = log_size(path)
    deferred = _deferred_objects(conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    for kind, name, _sql in deferred:
        conn.execute(f'DROP {kind.upper()} "{name}"')
    loader = Loader(conn)
    apply = loader.apply if observer is None else _observed(loader.apply, observer)
    reader = LogReader(path)
    applied = 0
    last: tuple[AnyEvent, int, int] | None = None  # event, start, end of the last line
    group: list[AnyEvent] = []
    next_progress = 0
    examined: int | None = None  # set if the loop reads the log to its end
    # Runs of whole lines checked and decoded in C (whole groups only), or single events
    # where a chunk had to be read line by line (a group's members then come one by one).
    for run in reader.runs():
        events = run.events
        if run.whole:
            done = _apply_run(apply, events, until)
            if events:
                last = _last_line(run)
                applied += len(events)
            if done:
                break
        else:
            event = events[0]
            grp = event.grp
            group.append(event)
            if grp is not UNSET and grp[0] != grp[1]:
                continue
            if until is not None and not until.admits(event):
                break
            for member in group:
                apply(member)
            applied += len(group)
            last = (event, run.start, run.end)
            group = []
        if progress is not None and applied >= next_progress:
            next_progress = applied + 20_000
            progress(reader.end, max(total, reader.end))
    else:
        examined = reader.end + (reader.torn.length if reader.torn is not None else 0)
    loader.finish()
    for _kind, _name, sql in deferred:
        conn.execute(sql)
    cp = Checkpoint(0, 0, 0, "")
    if last is not None:
        cp = _checkpoint_after(path, *last)
        write_checkpoint(conn, cp)
    conn.execute("COMMIT")
    conn.execute("PRAGMA foreign_keys = ON")
    if progress is not None and last is not None:
        progress(cp.log_offset, max(total, cp.log_offset))
    return BulkResult(applied, cp, reader.torn, examined)


def _observed(apply: Observer, observer: Observer) -> Observer:
    """``apply``, then the observer told of the event."""

    def both(event: AnyEvent) -> None:
        apply(event)
        observer(event)

    return both


def _apply_run(apply: Observer, events: list[AnyEvent], until: Until | None) -> bool:
    """Apply a run of whole units, cut to the prefix; whether the prefix ends in it."""
    done = until is not None and not until.admits(events[-1])
    if done:
        assert until is not None
        del events[_included(events, until) :]
    for event in events:
        apply(event)
    return done


def _last_line(run: Run[AnyEvent]) -> tuple[AnyEvent, int, int]:
    """The last of a run's applied events (a prefix of the run's records), with where its
    line starts and ends."""
    k = len(run.events)
    ends = run.ends()
    return run.events[-1], ends[k - 2] if k > 1 else run.start, ends[k - 1]


def _checkpoint_after(path: str, event: AnyEvent, line_start: int, line_end: int) -> Checkpoint:
    """The checkpoint of the line that holds ``event``: where it ends, and its hash."""
    with LogView(path) as log:
        data = read_bytes(log, line_start, line_end)
    return Checkpoint(line_end, event.pos, line_start, line_digest(data))


def _included(events: list[AnyEvent], until: Until) -> int:
    """How many of ``events`` (a run of whole units, the last not included) belong to the
    prefix: a unit is judged by its last member, and pos and ts only grow along the log."""
    k = 0
    while until.admits(events[k]):
        k += 1
    while k and (grp := events[k - 1].grp) is not UNSET and grp[0] != grp[1]:
        k -= 1  # a group member whose group ends beyond the prefix
    return k
