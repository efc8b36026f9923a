"""Appending to the log file: locking, whole-record writes and group commit.

Appends go through one ``O_APPEND`` descriptor per handle, as a loop over ``os.write`` of
whole records, under an exclusive ``flock`` held by the caller (see ``LogFile.exclusive``).
Durability is settled after the lock is released, so concurrent callers share one fsync.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Sequence
from typing import Final, Literal

from journal.errors import (
    DurabilityError,
    InvalidValue,
    JournalClosed,
    LogWriteError,
)
from journal.log.backend import AppendConflict, Cursor, LogBusy
from journal.log.files import open_log_for_append

Durability = Literal["always", "batch", "none"]
DURABILITY_MODES: Final = ("always", "batch", "none")


class _Locked:
    """``with log.exclusive():`` — a plain context manager: this runs on every append."""

    __slots__ = ("_log", "_wait")

    def __init__(self, log: LogFile, wait: bool) -> None:
        self._log, self._wait = log, wait

    def __enter__(self) -> None:
        if self._wait:
            self._log._acquire()
        else:
            self._log._try_acquire()

    def __exit__(self, *exc: object) -> None:
        self._log._release()


# Consecutive threads of one process that may take the log without releasing the flock.
MAX_HANDOFFS: Final = 32


class LogFile:
    """One append handle on the log: locking, whole-record writes and group commit.

    Callers hold ``exclusive()`` around catching up and ``append``; they call ``wait_durable``
    with the token ``append`` returned after releasing it, so one fsync covers every record
    written by any thread in the meantime. A failed fsync is never retried: the handle is
    poisoned, since the kernel may already have dropped the dirty pages it could not write.
    """

    def __init__(
        self, path: str, durability: Durability = "always", batch_interval: float = 0.05
    ) -> None:
        if durability not in DURABILITY_MODES:
            raise InvalidValue(
                f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}"
            )
        self.path = path
        self.durability = durability
        self.fd, opened = open_log_for_append(path)
        # Which file this handle writes: an open file keeps its inode, so a path that
        # shows these again still names it.
        self.identity = (opened.st_ino, opened.st_dev)
        self.base = 0  # where the file starts in the whole log (sealed segments before it)
        # Files this handle wrote before they were sealed: kept open until it closes, as
        # an fsync in flight on another thread may still use one.
        self._retired: list[int] = []
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._flock_held = False
        # Threads waiting for ``_lock``, so that the holder can pass the flock on to them.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        self._handoffs = 0
        self._locked = _Locked(self, wait=True)
        self._locked_now = _Locked(self, wait=False)
        # Bumped whenever the flock is taken afresh: while it stays the same, this process
        # has held the log the whole time and no other writer can have appended.
        self.lock_epoch = 0
        # (lock_epoch, size): the log's size as last seen under the lock, in that epoch.
        self._end_seen: tuple[int, int] | None = None
        self._cond = threading.Condition(threading.Lock())
        self._written = 0  # appends made through this handle
        self._synced = 0  # appends covered by a completed fsync
        self._syncing = False
        self._failure: OSError | None = None
        self._closed = False
        self._flusher: threading.Thread | None = None
        self._flush_wakeup = threading.Event()
        if durability == "batch":
            self._batch_interval = batch_interval
            self._flusher = threading.Thread(
                target=self._flush_loop, name="journal-flush", daemon=True
            )
            self._flusher.start()

    # -- locking -------------------------------------------------------------------------
    lock_spans_writers = True  # the flock keeps out every process's handles

    def exclusive(self, wait: bool = True) -> _Locked:
        """Exclusive access across threads (RLock) and processes (flock), re-entrant.

        When other threads of this process are waiting, the flock is handed on with the
        thread lock instead of being released and taken again (at most ``MAX_HANDOFFS``
        times in a row, so other processes get their turn): each flock call releases the
        GIL, and under contention every release costs a trip through the GIL queue.
        With ``wait=False`` entering raises ``LogBusy`` if another thread or process
        holds the log.
        """
        return self._locked if wait else self._locked_now

    def _acquire(self) -> None:
        with self._waiting_lock:
            self._waiting += 1
        try:
            self._lock.acquire()
        except BaseException:  # interrupted while waiting: a flock kept for us is let go
            with self._waiting_lock:
                self._waiting -= 1
            if self._lock.acquire(blocking=False):
                try:
                    if self._lock_depth == 0 and self._flock_held:
                        self._release_flock()
                finally:
                    self._lock.release()
            raise
        # Nothing between the acquire above and this try: an exception raised in between
        # (by a signal handler) would leave the lock held for good.
        try:
            with self._waiting_lock:
                self._waiting -= 1
            if self._lock_depth == 0 and not self._flock_held:
                self.check_open()
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self._flock_held = True
                self._handoffs = 0
                self.lock_epoch += 1
                self._locked_anew()
            self.check_open()
            self._lock_depth += 1
        except BaseException:
            if self._lock_depth == 0 and self._flock_held:
                self._release_flock()
            self._lock.release()
            raise

    def _try_acquire(self) -> None:
        """``_acquire`` without waiting: LogBusy if another thread or process holds the log."""
        if not self._lock.acquire(blocking=False):
            raise LogBusy(self.path)
        try:  # nothing before this try: see _acquire
            if self._lock_depth == 0 and not self._flock_held:
                self.check_open()
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise LogBusy(self.path) from None
                self._flock_held = True
                self._handoffs = 0
                self.lock_epoch += 1
                self._locked_anew()
            self.check_open()
            self._lock_depth += 1
        except BaseException:
            if self._lock_depth == 0 and self._flock_held:
                self._release_flock()
            self._lock.release()
            raise

    def _locked_anew(self) -> None:
        """Called when this handle takes the flock (not when it is handed on)."""

    def _release(self) -> None:
        try:
            self._lock_depth -= 1
            if self._lock_depth == 0:
                self._release_flock()
        finally:
            self._lock.release()

    def _release_flock(self) -> None:
        """Release the flock, or keep it for a waiting thread (``_lock`` held)."""
        if self._waiting and self._handoffs < MAX_HANDOFFS and not self._closed:
            self._handoffs += 1
            return
        self._flock_held = False
        if not self._closed:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    # -- writing -------------------------------------------------------------------------
    def append(self, lines: Sequence[bytes], after: Cursor) -> tuple[int, Cursor]:
        """Write whole records at the end, which must be ``after``; returns (sync token,
        the new end).

        On failure the file is cut back to ``after`` so no partial record remains.
        """
        self.check_open()
        data = b"".join(lines)
        at = after
        # Where the log ends is known without asking the file system while this process
        # has held the lock since it last looked (``end_seen``).
        if self._end_seen != (self.lock_epoch, at) and self.base + os.fstat(self.fd).st_size != at:
            raise AppendConflict(
                f"{self.path}: the log no longer ends at byte offset {at}, where this writer "
                "read it to; nothing was written",
                path=self.path,
            )
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError as exc:
            try:
                os.ftruncate(self.fd, at - self.base)
            except OSError as trunc_exc:  # pragma: no cover - needs a failing truncate
                raise LogWriteError(
                    f"{self.path}: write failed ({exc.strerror}) and cutting the partial "
                    f"record back to byte {at} failed too ({trunc_exc.strerror}); the next "
                    "writer to open the log quarantines it",
                    path=self.path,
                ) from exc
            raise LogWriteError(
                f"{self.path}: write failed ({exc.strerror}); nothing was appended", path=self.path
            ) from exc
        end = Cursor(at + len(data))
        self._end_seen = (self.lock_epoch, end)
        with self._cond:
            self._written += 1
            return self._written, end

    @property
    def last_token(self) -> int:
        """The sync token of this handle's latest append (0 before any)."""
        return self._written

    def wait_durable(self, token: int) -> None:
        """Return once the append ``token`` is as durable as the mode promises."""
        if self.durability != "always":
            return
        with self._cond:
            while self._synced < token:
                if self._closed and self._failure is None:
                    raise JournalClosed(f"{self.path}: the journal was closed")
                if self._failure is not None:
                    raise DurabilityError(
                        f"{self.path}: fsync failed earlier ({self._failure.strerror}); "
                        "this record may not be on disk: reopen the journal and retry with "
                        "the same event_id",
                        path=self.path,
                    ) from self._failure
                if self._syncing:
                    self._cond.wait()
                    continue
                self._sync_locked()

    def _sync_locked(self) -> None:
        """fsync with ``_cond`` held on entry and exit, released while the disk works."""
        self._syncing = True
        target = self._written
        error: OSError | None = None
        self._cond.release()
        try:
            os.fsync(self.fd)
        except OSError as exc:
            error = exc
        finally:
            self._cond.acquire()
            self._syncing = False
            self._cond.notify_all()
        if error is not None:
            self._failure = error
            raise DurabilityError(
                f"{self.path}: fsync failed ({error.strerror}); the last records may not be "
                "on disk: reopen the journal and retry with the same event_id",
                path=self.path,
            ) from error
        self._synced = max(self._synced, target)

    def sync(self) -> None:
        """fsync everything written through this handle so far (any mode)."""
        with self._cond:
            if self._failure is None and self._synced < self._written and not self._syncing:
                self._sync_locked()

    def _flush_loop(self) -> None:
        while not self._flush_wakeup.wait(self._batch_interval):
            try:
                self.sync()
            except DurabilityError:
                return

    def cut_back(self, offset: int) -> None:
        """Cut the log at ``offset``, durably (a torn tail, once ``journal.repair`` copied it)."""
        self._end_seen = None
        try:
            os.ftruncate(self.fd, offset - self.base)
            os.fsync(self.fd)
        except OSError as exc:
            with self._cond:
                self._failure = exc  # whether the cut reached the disk is unknown
            raise DurabilityError(
                f"{self.path}: cutting the torn tail off at byte offset {offset} failed "
                f"({exc.strerror}); it was copied aside first: open the journal again",
                path=self.path,
            ) from exc

    # -- lifetime ------------------------------------------------------------------------
    def check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.path}: the journal is closed")
        if self._failure is not None:
            raise JournalClosed(
                f"{self.path}: an fsync failed ({self._failure.strerror}); this handle "
                "accepts no more appends: open the journal again"
            )

    def close(self) -> None:
        """Sync what is pending (unless a sync already failed) and close the descriptor."""
        if self._closed:
            return
        self._flush_wakeup.set()
        if self._flusher is not None:
            self._flusher.join()
        # Under the append lock and after any fsync in flight: closing the descriptor under
        # a writer would send its bytes, or its fsync, to whatever file reuses the number.
        with self._lock, self._cond:
            if self._closed:
                return
            while self._syncing:
                self._cond.wait()
            try:
                if (
                    self.durability != "none"
                    and self._failure is None
                    and self._synced < self._written
                ):
                    self._sync_locked()
            finally:
                self._closed = True
                self._cond.notify_all()
                for fd in (*self._retired, self.fd):
                    os.close(fd)
