"""The live projector: keeps the SQLite projection current while the log grows.

One worker loop (``projector.sync.watch_loop``) runs the projector's own catch-up
(``projector.sync.catchup.catch_up``: from the checkpoint to the end of the log, checkpoint in
the same transaction; ``replay`` when the database is new, of another schema, or its
checkpoint is not on the log any more, which rebuilds it); the live projector only
decides *when* to run it. Two sources wake the worker:

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
import re
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Final

from journal.errors import JournalError
from journal.log import FILE_MODE
from projector.db import check_ours, check_paths
from projector.errors import ForeignFile
from projector.sync.watch_loop import BatchReport, Worker

__all__ = [
    "AlreadyWatching",
    "BatchReport",
    "format_report",
    "lock_path",
    "projection_lock",
    "run_watch",
    "watch",
]

DEFAULT_POLL_INTERVAL: Final = 1.0


class AlreadyWatching(JournalError):
    """Another live projector already holds this database's watch lock."""


# What a watch lock holds: the pid of the projector that took it last, or nothing yet.
_LOCK_TEXT: Final = re.compile(rb"(?:[0-9]+\n)?")


def lock_path(db_path: str) -> str:
    """The file whose ``flock`` marks a database as watched."""
    return f"{db_path}.watch.lock"


def _acquire_lock(db_path: str) -> int:
    check_ours(db_path)  # no lock file beside a file that is not a projection
    path = lock_path(db_path)
    try:
        fd = os.open(
            path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, FILE_MODE
        )
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR):
            raise
        raise ForeignFile(path, "is a symbolic link or a directory, not a watch lock") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ForeignFile(path, "is not a regular file, so not a watch lock")
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
        if not _LOCK_TEXT.fullmatch(os.pread(fd, 64, 0)):
            raise ForeignFile(path, "is not a watch lock (it holds something else)")
        os.fchmod(fd, FILE_MODE)
        # The pid is only for the refusal message; the flock is what excludes.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def projection_lock(log_path: str, db_path: str) -> Iterator[None]:
    """Hold the lock a live projector holds, for a one-off writer of the database.

    ``replay``, ``rebuild``, ``demo`` and ``import-legacy`` take it on the command line, so
    they cannot race a running ``watch`` (a rebuild swapping the file under it, or two
    catch-ups applying the same events); raises AlreadyWatching while one runs, and
    ForeignFile (before any lock file is made) if the database path is not a projection's.
    """
    check_paths(log_path, db_path)
    fd = _acquire_lock(db_path)
    try:
        yield
    finally:
        os.close(fd)


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
    check_paths(log_path, db_path)
    fd = _acquire_lock(db_path)
    try:
        Worker(
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


@contextlib.contextmanager
def _feeding(
    feed: Callable[[threading.Event], None] | None, stop: threading.Event
) -> Iterator[None]:
    """Run ``feed(stop)`` on a thread of its own while the body runs; should it fail, set
    ``stop`` and raise its error once the body has returned."""
    if feed is None:
        yield
        return
    failed: list[BaseException] = []

    def run() -> None:
        try:
            feed(stop)
        except BaseException as exc:  # handed to the main thread, raised there
            failed.append(exc)
            stop.set()

    thread = threading.Thread(target=run, name="journal-watch-feed", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    if failed:
        raise failed[0]


def run_watch(
    log_path: str,
    db_path: str,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    echo: Callable[[str], None] | None = None,
    feed: Callable[[threading.Event], None] | None = None,
    name: str | None = None,
) -> None:
    """``session-journal watch``: watch until SIGINT/SIGTERM; ``echo`` gets a line per batch.
    ``feed(stop)``, if given, keeps ``log_path`` growing meanwhile (a stream's copy: see
    ``journal.log.stream_copy``); ``name`` is what to call the log in the lines echoed."""
    stop = threading.Event()
    with _stop_on_signals(stop), _feeding(feed, stop):
        if echo is not None:
            echo(f"watching {name or log_path} -> {db_path} (poll every {poll_interval:g} s)")
        watch(
            log_path,
            db_path,
            stop=stop,
            poll_interval=poll_interval,
            on_batch=(lambda r: echo(format_report(r))) if echo is not None else None,
        )
        if echo is not None:
            echo("stopped")
