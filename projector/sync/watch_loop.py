"""The live projector's worker loop: when to run the projector's catch-up, and reports.

``projector.watch`` is the public face (lock, signals, the ``watch`` entry point); this
module holds the loop it runs: watchdog hints and a ``stat`` poll wake a worker that runs
``projector.sync.catchup.catch_up`` on a connection kept open between passes (``replay`` on the
first pass and whenever the database must be created or rebuilt), reports every committed
batch, and stops only between batches.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from watchdog.events import (
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from journal.errors import CorruptLog
from journal.events import AnyEvent, ts_seconds
from journal.log import TornTail
from journal.log.segments import LogView
from projector.db import connect
from projector.errors import CheckpointMismatch
from projector.sync.catchup import CatchUpResult, catch_up
from projector.sync.replay import replay

# A caller's ``stop`` Event cannot wake our wait, so the worker looks at it this often.
# Twenty wake-ups a second cost well under 0.1 % of a core.
_STOP_CHECK: Final = 0.05
# Before calling a bad line corruption, look again: a reader racing a writer that cuts a
# torn tail and appends may once see bytes of both. Real corruption is still there later.
_CORRUPTION_RECHECK: Final = 0.2
_SCAN_CHUNK: Final = 1 << 20
# SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold and
# fsyncs the database: milliseconds added to that batch's latency. The watcher turns it off
# on its connection and checkpoints from a thread of its own instead, when the WAL has grown.
_CHECKPOINT_EVERY: Final = 0.5
_CHECKPOINT_WAL_BYTES: Final = 4 << 20


@dataclass(frozen=True)
class BatchReport:
    """One committed batch, as the worker saw it."""

    applied: int
    first_pos: int
    last_pos: int
    behind: int  # whole records in the log after the new checkpoint, at commit time
    lag_ms: float | None  # commit time minus the recorded ``ts`` of the batch's first event
    duration_ms: float
    committed: float  # time.monotonic() just after the commit
    rebuilt: bool
    torn: TornTail | None


class _Hints(FileSystemEventHandler):
    """Turns file events about the log (and nothing else in its directory) into a wake-up."""

    def __init__(self, log_path: str, wake: threading.Event) -> None:
        self._log = log_path
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        # The database and its -wal file usually live beside the log: their events must
        # not wake the worker, or every commit would trigger another pass.
        if _fspath(event.src_path) == self._log or _fspath(event.dest_path) == self._log:
            self._wake.set()


def _fspath(path: bytes | str) -> str:
    return os.fsdecode(path) if path else ""


def _start_observer(log_path: str, wake: threading.Event) -> BaseObserver | None:
    """An inotify (or platform) observer on the log's directory; None if it cannot start."""
    directory = os.path.dirname(log_path)
    if not os.path.isdir(directory):
        return None
    observer = Observer()
    observer.name = "journal-watch-observer"
    observer.daemon = True
    # Modify/create/move only: open and close events would fire on our own reads.
    observer.schedule(
        _Hints(log_path, wake),
        directory,
        recursive=False,
        event_filter=[FileModifiedEvent, FileCreatedEvent, FileMovedEvent],
    )
    try:
        observer.start()
    except OSError:
        # Out of inotify watches, or a file system without them: the poll carries on alone.
        observer.unschedule_all()
        return None
    return observer


def _stop_observer(observer: BaseObserver) -> None:
    observer.stop()
    observer.join()


Signature = tuple[int, ...]


def _signature(log_path: str) -> Signature | None:
    """What changes whenever the log does: identity, size and times. None if absent."""
    try:
        st = os.stat(log_path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _count_records(log_path: str, offset: int) -> int:
    """Whole lines after ``offset``: the events the projection is still behind by."""
    count = 0
    with contextlib.suppress(OSError), LogView(log_path) as log:
        while chunk := log.pread(_SCAN_CHUNK, offset):
            count += chunk.count(b"\n")
            offset += len(chunk)
    return count


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _Stopped(Exception):
    """Raised from the progress hook, right after a batch committed, to end a long pass."""


class _Pass:
    """One catch-up pass: reports each committed batch, and stops between batches."""

    def __init__(
        self, log: str, stop: threading.Event, on_batch: Callable[[BatchReport], None] | None
    ) -> None:
        self.log = log
        self.stop = stop
        self.on_batch = on_batch
        self.reported = 0
        self.pass_started = time.monotonic()
        self.reset()

    def reset(self) -> None:
        """Forget uncommitted events (a rebuild follows, counted on its own)."""
        self.applied = self.first_pos = self.last_pos = 0
        self.first_ts: str | None = None
        self.started = time.monotonic()

    def observe(self, event: AnyEvent) -> None:
        if self.first_ts is None:
            self.first_ts, self.first_pos = event.ts, event.pos
        self.applied += 1
        self.last_pos = event.pos

    def after_commit(self, done: int, total: int) -> None:
        # catch_up's progress hook runs right after each COMMIT: the moment its events
        # became visible, and the one place where a long pass (a burst, a restart far
        # behind) can stop without losing or repeating work. A pass already at the end
        # of what it set out to read just finishes.
        if self.on_batch is not None and self.applied:
            self.on_batch(self.report(self.applied, self.last_pos, done))
        self.reset()
        if self.stop.is_set() and done < total:
            raise _Stopped

    def report(
        self,
        applied: int,
        last_pos: int,
        end_offset: int,
        rebuilt: bool = False,
        torn: TornTail | None = None,
        since: float | None = None,
    ) -> BatchReport:
        committed = time.monotonic()
        lag_ms = None
        if self.first_ts is not None:
            with contextlib.suppress(ValueError):
                lag_ms = (time.time() - ts_seconds(self.first_ts)) * 1000.0
        self.reported += applied
        return BatchReport(
            applied=applied,
            first_pos=self.first_pos if self.first_ts is not None else last_pos - applied + 1,
            last_pos=last_pos,
            behind=_count_records(self.log, end_offset),
            lag_ms=lag_ms,
            duration_ms=(committed - (self.started if since is None else since)) * 1000.0,
            committed=committed,
            rebuilt=rebuilt,
            torn=torn,
        )


class Worker:
    """The loop that decides when to catch up; see the module docstring."""

    def __init__(
        self,
        log_path: str,
        db_path: str,
        stop: threading.Event,
        poll_interval: float,
        use_observer: bool,
        on_batch: Callable[[BatchReport], None] | None,
    ) -> None:
        self.log = os.path.abspath(log_path)
        self.db = db_path
        self.stop = stop
        self.poll_interval = poll_interval
        self.use_observer = use_observer
        self.on_batch = on_batch
        self.wake = threading.Event()
        self.observer: BaseObserver | None = None
        self.conn: sqlite3.Connection | None = None
        self.db_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the open database
        self.seen: Signature | None = None  # the log's stat before the last good pass
        self.corruption_at: tuple[int, int] | None = None
        self.torn_at: int | None = None  # the torn tail last reported, not to repeat it

    def run(self) -> None:
        done = threading.Event()
        checkpointer = threading.Thread(
            target=_checkpoint_loop, args=(self.db, done), name="journal-watch-checkpoint"
        )
        checkpointer.start()
        try:
            self._loop()
        finally:
            done.set()
            checkpointer.join()

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                if self.use_observer and self.observer is None:
                    self.observer = _start_observer(self.log, self.wake)
                # Cleared before the stat: a hint arriving during the pass is kept and
                # triggers the next one.
                self.wake.clear()
                signature = _signature(self.log)
                # After a pass, look again at once: appends made during it are the next
                # batch, whether or not a hint for them arrives.
                if signature is not None and signature != self.seen and self._pass(signature):
                    continue
                self._sleep(self.poll_interval)
        except _Stopped:
            pass
        finally:
            self._close_db()
            if self.observer is not None:
                _stop_observer(self.observer)
                self.observer = None

    # -- one pass ------------------------------------------------------------------------
    def _pass(self, signature: Signature) -> bool:
        """One catch-up; True to look again at once, False to wait for a hint or the poll."""
        seen = _Pass(self.log, self.stop, self.on_batch)
        try:
            rebuilt, result = self._catch_up(seen)
        except CorruptLog as exc:
            where = (exc.line, exc.offset)
            if self.corruption_at != where:
                self.corruption_at = where
                self._sleep(_CORRUPTION_RECHECK)
                return True
            raise
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            # Someone else (a `replay`, a `rebuild`) holds the write lock; try again soon.
            return False
        self.corruption_at = None
        self.seen = signature
        if self.on_batch is not None:
            # Batches committed by catch_up were reported as they committed; what replay
            # or a rebuild applied, and a newly seen torn tail, are reported here.
            torn_at = result.torn.offset if result.torn is not None else None
            unreported = result.events_applied - seen.reported
            if rebuilt or unreported > 0 or (torn_at is not None and torn_at != self.torn_at):
                self.on_batch(
                    seen.report(
                        max(unreported, 0),
                        result.last_pos,
                        result.end_offset,
                        rebuilt,
                        result.torn,
                        since=seen.pass_started,
                    )
                )
            self.torn_at = torn_at
        return True

    def _catch_up(self, seen: _Pass) -> tuple[bool, CatchUpResult]:
        """The projector's own catch-up, on a connection kept open between passes.

        ``replay`` runs first, and again whenever the checkpoint is not on the log or the
        database file was replaced: it creates the schema, and rebuilds for another schema
        version or a log that was truncated or replaced. Otherwise ``catch_up`` runs alone.
        """
        if self.conn is not None and self._db_replaced():
            self._close_db()
        if self.conn is not None:
            try:
                return False, catch_up(
                    self.conn, self.log, progress=seen.after_commit, observer=seen.observe
                )
            except CheckpointMismatch:
                self._close_db()
                seen.reset()  # what a rebuild applies is counted afresh
        result = replay(self.log, self.db, progress=seen.after_commit)
        self._open_db()
        return result.rebuilt, result

    def _open_db(self) -> None:
        # The identity is taken before connecting: if the file is swapped in between, the
        # next pass sees an identity that does not match and opens the database again.
        try:
            st = os.stat(self.db)
            self.db_id = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            self.db_id = None  # removed already: the next pass starts over with replay
        self.conn = connect(self.db)
        self.conn.execute("PRAGMA wal_autocheckpoint = 0")

    def _db_replaced(self) -> bool:
        # `rebuild` swaps in a new file by rename: a connection to the old one would
        # write where no reader looks.
        try:
            st = os.stat(self.db)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != self.db_id

    def _close_db(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
            self.db_id = None

    def _sleep(self, seconds: float) -> None:
        """Wait for a hint, the stop event or ``seconds``, whichever comes first."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.wake.wait(min(remaining, _STOP_CHECK)):
                return


def _checkpoint_loop(db_path: str, done: threading.Event) -> None:
    """Fold the WAL into the database off the apply path (see ``_CHECKPOINT_EVERY``).

    PASSIVE never waits for readers or the writer; a checkpoint that cannot finish now
    is simply tried again later. A new connection each time follows a database that a
    rebuild swapped in.
    """
    while not done.wait(_CHECKPOINT_EVERY):
        try:
            if os.stat(f"{db_path}-wal").st_size < _CHECKPOINT_WAL_BYTES:
                continue
        except FileNotFoundError:
            continue
        try:
            # mode=rw: never create a database that a rebuild is about to swap in.
            conn = sqlite3.connect(
                f"file:{db_path}?mode=rw", uri=True, isolation_level=None, timeout=0
            )
            try:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()
        except sqlite3.Error:
            continue
