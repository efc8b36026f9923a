"""The live projector: keeps the SQLite projection current while the log grows.

One worker loop runs the projector's own catch-up (``projector.replay``: from the
checkpoint to the end of the log, checkpoint in the same transaction, a checkpoint ahead of
the log answered with a rebuild); this module only decides *when* to run it. Two sources
wake the worker:

* watchdog events on the log's directory, filtered to the log file. They are hints only:
  the worker never trusts their content, it always reads from the checkpoint to the end,
  so a lost, merged or overflowed event costs latency, never correctness;
* a poll every ``poll_interval`` seconds, the backstop for lost events and for file
  systems without inotify. A poll compares the log's ``stat`` with the one taken before
  the last catch-up and runs the catch-up only if it changed, so an idle watcher costs a
  ``stat`` a second.

Events that arrive while a catch-up runs are coalesced: the next pass reads everything
appended in the meantime as one batch. A torn last line (an append in progress) is left
where it is; the change that completes it wakes the worker again.

Only one live projector runs per database: it holds an exclusive ``flock`` on
``<db>.watch.lock`` for its lifetime and a second one is refused with ``AlreadyWatching``.
Readers are never blocked for long: the database is in WAL mode and each batch is one
short transaction.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
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

from journal.errors import CorruptLog, JournalError
from journal.events import AnyEvent, ts_seconds
from journal.log import FILE_MODE, TornTail
from projector.catchup import CatchUpResult, catch_up, replay
from projector.db import connect
from projector.errors import CheckpointMismatch

__all__ = [
    "AlreadyWatching",
    "BatchReport",
    "lock_path",
    "run_watch",
    "watch",
]

DEFAULT_POLL_INTERVAL: Final = 1.0
# A caller's ``stop`` Event cannot wake our wait, so the worker looks at it this often.
# Twenty wake-ups a second cost well under 0.1 % of a core.
_STOP_CHECK: Final = 0.05
# Before calling a bad line corruption, look again: a reader racing a writer that cuts a
# torn tail and appends may once see bytes of both. Real corruption is still there later.
_CORRUPTION_RECHECK: Final = 0.2
_SCAN_CHUNK: Final = 1 << 20


class AlreadyWatching(JournalError):
    """Another live projector already holds this database's watch lock."""


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


def lock_path(db_path: str) -> str:
    """The file whose ``flock`` marks a database as watched."""
    return f"{db_path}.watch.lock"


def _acquire_lock(db_path: str) -> int:
    path = lock_path(db_path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise AlreadyWatching(
                f"{db_path}: already watched by another live projector (pid {owner}); "
                f"stop it first (its lock is {path})"
            ) from None
        os.fchmod(fd, FILE_MODE)
        # The pid is only for the refusal message; the flock is what excludes.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


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


Signature = tuple[int, int, int, int, int]


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
    with contextlib.suppress(OSError), open(log_path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(_SCAN_CHUNK):
            count += chunk.count(b"\n")
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


class _Worker:
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
        self.conn = connect(self.db)
        st = os.stat(self.db)
        self.db_id = (st.st_dev, st.st_ino)

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


def watch(
    log_path: str,
    db_path: str,
    *,
    stop: threading.Event,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    use_observer: bool = True,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> None:
    """Keep ``db_path`` current with ``log_path`` until ``stop`` is set.

    Runs in the calling thread (a host app starts it in one of its own); returns after the
    batch in progress has committed and every thread it started has ended. The log may not
    exist yet. Raises AlreadyWatching if another live projector holds the database, and
    CorruptLog if a bad line in the middle of the log is still there when looked at again.
    ``on_batch`` is called from the worker after each committed batch.
    """
    if poll_interval <= 0:
        raise ValueError("poll_interval must be positive")
    fd = _acquire_lock(db_path)
    try:
        _Worker(
            log_path,
            db_path,
            stop,
            poll_interval,
            use_observer,
            on_batch,
        ).run()
    finally:
        os.close(fd)


def format_report(report: BatchReport) -> str:
    """The ``--verbose`` line for a batch."""
    parts = []
    if report.rebuilt:
        parts.append("rebuilt the projection from the log (replaced, truncated or a new schema)")
    if report.applied:
        text = (
            f"applied {report.applied} event(s) (pos {report.first_pos}-{report.last_pos}) "
            f"in {report.duration_ms:.1f} ms; lag {report.behind} event(s)"
        )
        if report.lag_ms is not None:
            text += f", {report.lag_ms:.1f} ms"
        parts.append(text)
    if report.torn is not None:
        parts.append(
            f"waiting for an incomplete record at byte {report.torn.offset} "
            f"({report.torn.reason}): an append in progress"
        )
    return "; ".join(parts) or f"up to date at pos {report.last_pos}"


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop``; the batch in progress still commits."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    installed: list[tuple[signal.Signals, signal._HANDLER]] = []
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                installed.append((signum, signal.signal(signum, handler)))
            except ValueError:  # not the main thread: the caller owns the signals
                break
        yield
    finally:
        for signum, previous in installed:
            signal.signal(signum, previous)


def run_watch(
    log_path: str,
    db_path: str,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    echo: Callable[[str], None] | None = None,
) -> None:
    """``session-journal watch``: watch until SIGINT/SIGTERM; ``echo`` gets a line per batch."""
    stop = threading.Event()
    with _stop_on_signals(stop):
        if echo is not None:
            echo(f"watching {log_path} -> {db_path} (poll every {poll_interval:g} s)")
        watch(
            log_path,
            db_path,
            stop=stop,
            poll_interval=poll_interval,
            on_batch=(lambda r: echo(format_report(r))) if echo is not None else None,
        )
        if echo is not None:
            echo("stopped")
