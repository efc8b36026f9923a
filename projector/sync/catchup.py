"""Catching the projection up with the log: the one loop every path runs.

``catch_up`` reads from the checkpoint to the end of the log (or to a prefix's end) and
applies it in batches; each batch commits its rows and the checkpoint together, and a
batch only ends between units, so an atomic group is always applied whole. A torn tail or
an incomplete group at the end is where it stops (a write may be in progress: normal).
The live watcher calls ``catch_up`` again whenever the log grows; ``projector.replay`` wraps it for
one-shot use, rebuilding when the database is stale or its checkpoint is not on the log.

A forgotten session is purged by its forgetting, and the files scrubbed of it when the
catch-up ends (``projector.forgetting``); a checkpoint whose line was redacted since still
stands, and so does a catch-up that meets a forgotten session's records before all of
them are redacted (``_Batch.forgotten_later``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from journal.errors import CorruptLog
from journal.events import AnyEvent, line_digest
from journal.log import LogReader, TornTail
from journal.log.segments import LogView
from projector.db import (
    Checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from projector.errors import CheckpointMismatch, InvariantViolation
from projector.forgetting import listed, scrub_database
from projector.rules.apply import apply_event, fill_fts
from projector.rules.session_rows import ApplyError
from projector.sync.bulk_catchup import CatchUpLoader
from projector.sync.reading import (
    Record,
    Skipped,
    Until,
    forgettings_after,
    read_bytes,
    same_line,
    skip_bad_lines,
    units,
)

DEFAULT_BATCH_EVENTS: Final = 2_000
# A batch also ends after this many bytes of log, so that memory stays bounded.
BATCH_BYTES: Final = 16 * 2**20
# From this much unread log on, batches take the bulk path (projector/sync/bulk.py): the
# events folded in Python, the rows written in bulk with the triggers dropped inside the
# batch's transaction (and created again before its COMMIT: no reader ever sees the schema
# without them). Below it (a live watcher's few new lines), events go one by one through
# the triggers, where a batch costs no more than its events.
BULK_MIN_BYTES: Final = 256 * 1024
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class CatchUpResult:
    """What one ``catch_up`` did."""

    events_applied: int
    last_pos: int  # pos of the last applied line (the checkpoint)
    end_offset: int  # byte offset just after it
    torn: TornTail | None  # bytes at the end that are not (yet) whole records
    quarantined: int  # bad lines set aside (quarantine mode)
    # A forgotten session was purged, but a reader kept the WAL, which may still hold its
    # old pages: the next catch-up (replay, watch's next pass) tries the scrub again.
    scrub_pending: bool = False


def check_checkpoint(log_path: str, cp: Checkpoint) -> None:
    """Raise CheckpointMismatch unless the line the checkpoint covers is still in the log."""
    if cp.log_offset == 0:
        return
    view = _open_log(log_path, cp)
    assert view is not None  # the checkpoint covers a line: a missing log raised
    with view:
        _check_checkpoint_at(view, view.size(), log_path, cp)


def _open_log(log_path: str, cp: Checkpoint) -> LogView | None:
    """The log opened for reading; None if it does not exist and ``cp`` covers nothing
    (CheckpointMismatch if it does)."""
    view = LogView(log_path)
    if view.active_fd is not None or view.manifest.segments:
        return view
    view.close()
    if cp.log_offset == 0:
        return None
    raise CheckpointMismatch(
        "the log does not exist", path=log_path, offset=cp.log_offset, pos=cp.log_pos
    )


def _check_checkpoint_at(fd: LogView, size: int, log_path: str, cp: Checkpoint) -> None:
    """``check_checkpoint`` on the open log, ``size`` bytes long."""
    if cp.log_offset == 0:
        return
    if size < cp.log_offset:
        raise CheckpointMismatch(
            f"the log is only {size} bytes long",
            path=log_path,
            offset=cp.log_offset,
            pos=cp.log_pos,
        )
    if not same_line(read_bytes(fd, cp.line_start, cp.log_offset), cp.line_hash):
        raise CheckpointMismatch(
            "the line there has different bytes",
            path=log_path,
            offset=cp.log_offset,
            pos=cp.log_pos,
        )


def catch_up(
    conn: sqlite3.Connection,
    log_path: str | os.PathLike[str],
    *,
    quarantine: bool = False,
    batch_events: int = DEFAULT_BATCH_EVENTS,
    progress: Progress | None = None,
    until: int | str | datetime | None = None,
    observer: Callable[[AnyEvent], None] | None = None,
    bulk: bool = True,
) -> CatchUpResult:
    """Apply the log from the checkpoint to its end (or ``until``), in batches.

    Raises CheckpointMismatch if the checkpoint is not on the log, CorruptLog for a bad
    line in the middle (after committing every whole unit before it; with
    ``quarantine=True`` the line is recorded in ``projector_quarantine`` instead and
    reading goes on), and InvariantViolation for an event the projection cannot apply
    (its batch rolled back). ``observer`` sees every applied event. A long stretch of log
    goes by the bulk path unless ``bulk=False`` (or an ``observer`` is given): then every
    event goes through the triggers one by one.
    """
    path = os.fspath(log_path)
    if batch_events < 1:
        raise ValueError("batch_events must be at least 1")
    stop = Until.of(until)
    cp = read_checkpoint(conn)
    fd = _open_log(path, cp)
    if fd is None:
        return CatchUpResult(0, cp.log_pos, cp.log_offset, None, 0)
    try:
        size = fd.size()
        _check_checkpoint_at(fd, size, path, cp)
    except BaseException:
        fd.close()
        raise
    batch: _Batch
    if bulk and observer is None and size - cp.log_offset >= BULK_MIN_BYTES:
        batch = _BulkBatch(conn, fd, cp, progress, size)
    else:
        batch = _Batch(conn, fd, cp, progress, size)
    torn: TornTail | None = None
    try:
        while True:
            try:
                torn = _drain(batch, path, stop, batch_events, quarantine, observer)
                break
            except _Refused:
                # The bulk batch was rolled back: from its start, the events go one by one,
                # and the incremental path applies them or reports the event precisely.
                batch = _Batch.resume(batch)
            except _Moved:
                # Another projector (a second replay, say) moved the checkpoint: go on
                # from where it stopped, so every event is still applied exactly once.
                moved = read_checkpoint(conn)
                check_checkpoint(path, moved)
                batch = _Batch.resume(batch, moved)
    finally:
        batch.abort()
        fd.close()
    scrubbed = scrub_database(conn)
    return CatchUpResult(
        batch.applied, batch.cp.log_pos, batch.cp.log_offset, torn, batch.quarantined, not scrubbed
    )


def _drain(
    batch: _Batch,
    path: str,
    stop: Until | None,
    batch_events: int,
    quarantine: bool,
    observer: Callable[[AnyEvent], None] | None,
) -> TornTail | None:
    """Apply the log from the batch's checkpoint to its end (or ``stop``), committing as
    batches fill; returns the torn tail found at the end, if any."""
    while True:
        reader = LogReader(path, batch.cp.log_offset, batch.cp.log_pos)
        try:
            for unit in units(reader):
                if stop is not None and not stop.includes(unit):
                    break
                batch.apply(unit, path, observer)
                if batch.pending >= batch_events or batch.pending_bytes >= BATCH_BYTES:
                    batch.commit()
        except CorruptLog as exc:
            batch.commit()  # every whole unit before the bad line is good
            if not quarantine:
                raise
            batch.quarantine(skip_bad_lines(path, reader, exc))
            continue
        except InvariantViolation as exc:
            # The batch was rolled back; every whole unit before the event is good, as
            # before a bad line: apply those again, commit, then report the event.
            batch = _Batch.resume(batch)
            _drain(batch, path, Until(pos=exc.line - 1), batch_events, quarantine, observer)
            raise
        batch.commit()
        return reader.torn


class _Batch:
    """The open transaction: rows of whole units, then the checkpoint, then COMMIT."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        fd: LogView,
        cp: Checkpoint,
        progress: Progress | None,
        total: int,
    ) -> None:
        self.conn = conn
        self.fd = fd
        self.cp = cp
        self.progress = progress
        self.total = total
        self.pending = 0
        self.pending_bytes = 0
        self.applied = 0
        self.quarantined = 0
        self.last: Record | None = None
        # The positions the forgettings ahead list, once an event failed (forgotten_later).
        self.forgotten: list[tuple[int, int]] | None = None

    @classmethod
    def resume(cls, other: _Batch, cp: Checkpoint | None = None) -> _Batch:
        """A batch that goes on from ``other``'s last commit (or from ``cp``)."""
        batch = cls(other.conn, other.fd, cp or other.cp, other.progress, other.total)
        batch.applied, batch.quarantined = other.applied, other.quarantined
        batch.forgotten = other.forgotten
        return batch

    def _begin(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            # Under the write lock now: if another projector committed since this one
            # read the checkpoint, its events are in; applying them again would fail.
            if read_checkpoint(self.conn) != self.cp:
                self.conn.execute("ROLLBACK")
                raise _Moved

    def apply(
        self, unit: list[Record], path: str, observer: Callable[[AnyEvent], None] | None
    ) -> None:
        self._begin()
        for rec in unit:
            try:
                apply_event(self.conn, rec.event)
            except (ApplyError, sqlite3.IntegrityError) as exc:
                if self.forgotten_later(rec):
                    continue
                self.abort()
                reason = exc.reason if isinstance(exc, ApplyError) else str(exc)
                raise InvariantViolation(
                    f"{type(rec.event).__struct_config__.tag}: {reason}",
                    path=path,
                    line=rec.event.pos,
                    offset=rec.start,
                    session_id=getattr(rec.event, "session_id", None),
                ) from exc
            if observer is not None:
                observer(rec.event)
        self._took(unit)

    def forgotten_later(self, rec: Record) -> bool:
        """Whether a forgetting further on lists the record's position: then its session
        is being forgotten, its earlier records redacted but not yet this one (a writer
        redacts after it appends the forgetting, so that forgetting is already in the
        log), and the event that cannot be applied without them is passed over. Whatever
        it left of its session, in this transaction, the forgetting purges."""
        if self.forgotten is None:
            self.forgotten = forgettings_after(self.fd, rec.end)
        return listed(self.forgotten, rec.event.pos)

    def _took(self, unit: list[Record]) -> None:
        """Count an applied unit into the open transaction."""
        self.pending += len(unit)
        self.pending_bytes += unit[-1].end - unit[0].start
        self.last = unit[-1]

    def _before_commit(self) -> None:
        fill_fts(self.conn, self.cp.log_pos)

    def commit(self) -> None:
        if self.last is None:
            return
        last = self.last
        self._before_commit()
        cp = Checkpoint(
            log_offset=last.end,
            log_pos=last.event.pos,
            line_start=last.start,
            line_hash=line_digest(read_bytes(self.fd, last.start, last.end)),
        )
        write_checkpoint(self.conn, cp)
        self.conn.execute("COMMIT")
        self.cp = cp
        self.applied += self.pending
        self.pending = 0
        self.pending_bytes = 0
        self.last = None
        if self.progress is not None:
            self.progress(cp.log_offset, max(self.total, cp.log_offset))

    def quarantine(self, skip: Skipped) -> None:
        """Record the bad bytes and move the checkpoint past them, in one transaction."""
        self._begin()
        self.conn.execute(
            "INSERT INTO projector_quarantine (line_offset, line, reason, data) "
            "VALUES (?, ?, ?, ?)",
            (skip.start, skip.line, skip.reason, skip.data),
        )
        cp = Checkpoint(
            log_offset=skip.end,
            log_pos=skip.next_pos,
            line_start=skip.last_line_start,
            line_hash=line_digest(skip.data[skip.last_line_start - skip.start :]),
        )
        write_checkpoint(self.conn, cp)
        self.conn.execute("COMMIT")
        self.cp = cp
        self.quarantined += 1

    def abort(self) -> None:
        """Roll back what is not committed (an error, or the caller interrupted)."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        self.pending = 0
        self.pending_bytes = 0
        self.last = None


class _Refused(Exception):
    """The bulk path cannot apply an event; its batch was rolled back."""


class _Moved(Exception):
    """The checkpoint moved under this batch: another projector committed first."""


class _BulkBatch(_Batch):
    """A batch on the bulk path: triggers dropped at BEGIN, created again before COMMIT
    (a ROLLBACK restores them too), the events folded by a ``CatchUpLoader``."""

    # The triggers (name, sql) dropped by the open transaction, and its fold.
    triggers: tuple[tuple[str, str], ...] = ()
    loader: CatchUpLoader | None = None

    def apply(
        self, unit: list[Record], path: str, observer: Callable[[AnyEvent], None] | None
    ) -> None:
        loader = self.loader
        if loader is None:
            self._begin()
            self.triggers = tuple(
                (str(name), str(sql))
                for name, sql in self.conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY rowid"
                )
            )
            for name, _sql in self.triggers:
                self.conn.execute(f'DROP TRIGGER "{name}"')
            loader = self.loader = CatchUpLoader(self.conn, self.cp.log_pos)
        try:
            for rec in unit:
                loader.apply(rec.event)
        except (ApplyError, sqlite3.IntegrityError) as exc:
            self.abort()
            raise _Refused from exc
        self._took(unit)

    def commit(self) -> None:
        try:
            super().commit()
        except (ApplyError, sqlite3.IntegrityError) as exc:
            self.abort()
            raise _Refused from exc

    def _before_commit(self) -> None:
        assert self.loader is not None
        self.loader.finish()
        for _name, sql in self.triggers:
            self.conn.execute(sql)
        self.loader = None

    def abort(self) -> None:
        super().abort()
        self.loader = None
