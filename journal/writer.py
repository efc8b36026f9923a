"""The writer API: the only way the host app changes a session.

Every call validates its input against the state folded from the log, turns it into one
or more events and appends them as one atomic unit. Under the log's exclusive lock the
writer first reads whatever other processes (or other ``Journal`` objects) appended since
its last look, so positions and per-session seqs stay gapless however many writers share
the file. A call returns only once its records are durable (in the default mode).
Concurrent calls from threads share one hold of the lock, one write and one fsync
(``journal.commit``); each stays its own atomic group.

Idempotent retries: a call given an ``event_id`` that is among the last ``id_window``
events of the log (default 65,536, whichever process wrote them) returns the first
call's receipt with ``duplicate=True`` and writes nothing. Older ids are forgotten, which
keeps memory bounded; retry within that window.

This module holds ``Journal`` itself: opening the log, catching up with it, and the append
machinery every operation goes through. The operations it inherits are those of
``journal.operations``, ``journal.forgetting`` and ``journal.history``; which status allows
each is ``journal.lifecycle``'s.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypedDict, TypeVar, Unpack

import msgspec

from journal.checkpointing import Checkpointing
from journal.commit import Call, Combiner
from journal.errors import GroupTooLarge, InvalidValue, JournalClosed, LogError
from journal.events import AnyEvent, Event, encode_line, format_ts
from journal.forgetting import Forgetting
from journal.gcpause import gc_paused
from journal.history import History
from journal.ids import random_event_id
from journal.log import (
    START,
    AppendConflict,
    AppendTooLarge,
    Cursor,
    Durability,
    FileLog,
    LogBackend,
    LogSource,
    TornTail,
)
from journal.log.segments import DEFAULT_SEGMENT_BYTES
from journal.log.urls import is_stream_url, nats_extra
from journal.operation_base import CONFLICT_WAIT_S
from journal.operations import Operations
from journal.pending import InGroup as _InGroup
from journal.pending import Pending as _Pending
from journal.state import DEFAULT_ID_WINDOW, JournalState, Receipt, StateViolation
from journal.validation import LATEST, MAX_GROUP_BYTES, MAX_GROUP_EVENTS, check_time

log = logging.getLogger("journal")

E = TypeVar("E", bound=Event)

_LATEST_TS: Final = format_ts(LATEST)


class _NotCaughtUp(Exception):
    """A combined call failed on a state not caught up with the log (no lock spans the
    writers): the batch is run again after a catch-up."""


def _forget_outcomes(calls: list[Call]) -> None:
    """Clear what a run of the calls gave, before they are run again (nothing was written)."""
    for call in calls:
        call.result = call.error = None


def _open_jetstream(url: str, durability: Durability) -> LogBackend:
    """A log in a JetStream stream (``journal.log.jetstream``, with the nats extra)."""
    if durability != "always":
        raise InvalidValue(
            f"{url}: a JetStream log is as durable as its servers' sync_interval makes it; "
            f"open it with durability 'always', not {durability!r}"
        )
    with nats_extra(url):
        from journal.log.jetstream import JetStreamLog
    return JetStreamLog(url)


def open_backend(
    path: str | os.PathLike[str],
    durability: Durability = "always",
    batch_interval_ms: float = 50,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> LogBackend:
    """The log ``path`` names: a file, or a JetStream stream for a ``nats://`` URL."""
    if isinstance(path, str) and is_stream_url(path):
        return _open_jetstream(path, durability)
    return FileLog(os.fspath(path), durability, batch_interval_ms / 1000, segment_bytes)


@dataclass(frozen=True)
class Repair:
    """A torn tail the writer moved aside when it opened (or caught up with) the log."""

    offset: int
    length: int
    line: int
    reason: str
    quarantine_path: str


class JournalOptions(TypedDict, total=False):
    """``Journal.open``'s keyword options (see ``Journal``)."""

    clock: Callable[[], datetime] | None
    batch_interval_ms: float
    id_window: int
    new_id: Callable[[], str] | None
    segment_bytes: int
    state_path: str | os.PathLike[str] | None


class Journal(Operations, Forgetting, History, Checkpointing):
    """Appends validated events to one log file. Thread-safe and process-safe.

    Open with ``Journal.open(path)``; use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | LogBackend,
        durability: Durability = "always",
        *,
        clock: Callable[[], datetime] | None = None,
        batch_interval_ms: float = 50,
        id_window: int = DEFAULT_ID_WINDOW,
        new_id: Callable[[], str] | None = None,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._new_id = new_id or random_event_id
        if isinstance(path, (str, os.PathLike)):
            self._log = open_backend(path, durability, batch_interval_ms, segment_bytes)
        else:  # a log of another kind, opened with its own durability settings
            self._log = path
        self.path = self._log.name
        self._state = JournalState(id_window)
        self._end = START  # where the state has read the log up to
        self._caught_up_in = 0  # the log's lock_epoch at the last catch-up
        self._pending: _Pending | None = None
        self._pending_owner: int | None = None
        self._combiner = Combiner(self._run_batch, self._log.wait_durable)
        self.repairs: list[Repair] = []
        try:
            self._open_statefile(state_path)
            with self._log.exclusive():
                self._catch_up()
                if self._statefile is not None and (
                    self._state.store is None or self._checkpoint_due()
                ):
                    self._save_checkpoint()
        except BaseException:
            if self._statefile is not None:  # nothing to write down: the open failed
                self._statefile.close()
            self._log.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | LogBackend,
        durability: Durability = "always",
        **options: Unpack[JournalOptions],
    ) -> Journal:
        """Open (or create) the log at ``path``, repairing a torn tail if there is one.

        ``path`` may also be a ``nats://`` URL, a log kept in a JetStream stream (with the
        nats extra: ``journal.log.jetstream``), or an open ``journal.log.LogBackend``
        (``MemoryLog``, say); their own settings then say how durable an append is. The
        options are ``Journal``'s: ``clock`` (timezone-aware datetimes) and ``new_id``
        (canonical UUID strings for events and sessions given none) can be injected for
        tests and reproducible logs;
        ``batch_interval_ms`` is the fsync interval of the ``batch`` mode; ``id_window``
        how many recent event ids answer retries; ``segment_bytes`` the size at which a
        log file is sealed into a segment and a new one started (``journal.log.segments``);
        ``state_path`` where the writer keeps its state checkpoint (``journal.checkpointing``):
        a log file keeps it beside itself (``<log>.state``) unless told otherwise; a writer
        on a stream keeps one only where told (a file of its host's), and reads the whole
        stream when it opens without one.
        """
        return cls(path, durability, **options)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Write the state checkpoint, flush pending durability work, release the file."""
        try:
            self._close_checkpoint()
        finally:
            self._log.close()

    def _now(self) -> str:
        """The clock's reading as the log's timestamp text."""
        return check_time("the clock's reading", self._clock())

    # -- reading the log ------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Fold what was appended since our last look (lock held); repair a torn tail.

        Starts from the state checkpoint instead when it is ahead of this state."""
        if self._statefile is not None:
            self._start_from_checkpoint()
        end = self._log.end(self._end)
        if end == self._end:
            return
        reading = self._log.read_state(self._end, self._state.last_pos)
        # Only the last ``id_window`` ids are remembered: find where the last records start
        # (a file reads back from its end) and skip entering the older ones. A stretch
        # longer than the window is long: it is read with GC paused.
        first = self._end
        remember_from = self._log.start_of_last(self._state.recent_ids.size, self._end, end)
        long_stretch = remember_from > first
        with gc_paused(long_stretch):
            for run in reading.runs():
                try:
                    self._state.apply_many(run.events, run.count_before(remember_from))
                except StateViolation as exc:
                    k = exc.index
                    self._end = ([run.start, *run.ends()])[k]
                    raise LogError(
                        f"{self._log.name}: line {run.events[k].pos} (byte offset "
                        f"{self._end}): {exc}",
                        path=self._log.name,
                    ) from exc
                self._end = run.end
        if reading.torn is not None:
            self._repair(reading.torn)
            if remember_from > first:
                # Lines of the torn tail were counted: the window may hold fewer ids than
                # promised. Rare (after a crash): fold the log again, now free of the tail.
                self._state = JournalState(self._state.recent_ids.size)
                self._end = START
                self._catch_up()

    def _repair(self, torn: TornTail) -> None:
        quarantine = self._log.repair(torn)
        repair = Repair(torn.offset, torn.length, torn.line, torn.reason, quarantine)
        self.repairs.append(repair)
        log.warning(
            "%s: torn tail at line %d (byte offset %d, %d bytes: %s) moved to %s",
            self.path,
            torn.line,
            torn.offset,
            torn.length,
            torn.reason,
            quarantine,
        )

    # -- the append machinery -------------------------------------------------------------
    def _writing(self, user_batch: bool = False) -> AbstractContextManager[_Pending]:
        """Lock, catch up, collect events, then write them in one go and wait for fsync.

        Re-entrant: inside ``batch()`` every call adds to the batch's group.
        """
        pending = self._pending
        if pending is not None and self._pending_owner == threading.get_ident():
            return _InGroup(self._state, pending)
        return self._write_group(user_batch)

    @contextmanager
    def _write_group(self, user_batch: bool) -> Iterator[_Pending]:
        # The caller's code runs inside: its errors reach it at once, so judged on a state
        # caught up with the log.
        with self._locked_pending(user_batch, fresh=True) as pending:
            yield pending
        if pending.token:
            self._log.wait_durable(pending.token)

    @contextmanager
    def _locked_pending(
        self, user_batch: bool, wait: bool = True, fresh: bool = False
    ) -> Iterator[_Pending]:
        """Lock, catch up, collect events, then write them in one go (not waiting for the
        fsync: ``pending.token`` says which write to wait for, after the lock is let go).
        With ``wait=False``, LogBusy if another thread or process holds the log.

        Where no lock spans the writers, the catch-up is skipped unless ``fresh`` (or a
        failure since): the append is refused if others appended (``_run_batch``)."""
        with self._log.exclusive(wait):
            spans = self._log.lock_spans_writers
            stale = self._log.lock_epoch != self._caught_up_in
            if stale or (fresh and not spans):
                self._catch_up()
                # Until the flock is let go, nobody else can append: no need to look again.
                self._caught_up_in = self._log.lock_epoch
            pending = _Pending(user_batch, fresh=spans or stale or fresh)
            self._pending, self._pending_owner = pending, threading.get_ident()
            self._state.begin()
            try:
                yield pending
                # Nothing written (a retry answered from the id window) still waits for
                # this handle's last write: its receipt may name a record not yet durable.
                pending.token = self._write(pending) or self._log.last_token
            except BaseException:
                self._state.rollback()
                # A write cut short by anything but an I/O error leaves part of a record;
                # whoever appends next, even a thread the flock is handed to, catches up
                # first and so finds it (a torn tail) instead of writing after it.
                self._caught_up_in = -1
                raise
            finally:
                self._pending = self._pending_owner = None
            self._state.commit()
            if self._checkpoint_due():
                self._save_checkpoint()

    def _run_batch(self, calls: list[Call], wait: bool = True) -> int:
        """Run combined calls under one hold of the lock, each its own atomic group; one
        write for them all. Returns its durability token (0 if nothing was written).
        With ``wait=False``, LogBusy (nothing ran) if the log is held elsewhere."""
        first_conflict: float | None = None
        while True:
            try:
                with self._locked_pending(user_batch=False, wait=wait) as pending:
                    for call in calls:
                        try:
                            call.result = call.fn(*call.args, **call.kwargs)
                        except Exception as exc:  # undone alone (_InGroup); the others go on
                            call.error = exc
                        pending.split()
                    if not pending.fresh and any(call.error for call in calls):
                        raise _NotCaughtUp  # judge them again on the log as it is
                return pending.token
            except _NotCaughtUp:
                # Nothing was written; the failure made the next hold catch up first.
                _forget_outcomes(calls)
            except AppendConflict:
                # Another host appended first (a log no lock spans): nothing was written
                # and the state was rolled back; catch up and run the calls again.
                now = time.monotonic()
                first_conflict = first_conflict or now
                if now - first_conflict > CONFLICT_WAIT_S:
                    raise
                _forget_outcomes(calls)
            except AppendTooLarge:
                if len(calls) == 1:
                    raise
                # Combined, the calls are more than the log takes in one append (nothing
                # was written): each alone, waiting for the lock now that they have run once.
                _forget_outcomes(calls)
                return max(self._run_batch([call]) for call in calls)

    def _write(self, pending: _Pending) -> int:
        chunks: list[bytes] = []
        for group in pending.groups:
            n = len(group)
            for i, event in enumerate(group, 1):
                framed = msgspec.structs.replace(event, grp=(i, n)) if n > 1 else event
                chunks.append(encode_line(framed))
        if not chunks:
            return 0
        if pending.user_batch and (size := sum(map(len, chunks))) > MAX_GROUP_BYTES:
            raise GroupTooLarge(
                f"atomic group of {size} bytes is over the limit of "
                f"{MAX_GROUP_BYTES}; nothing was written"
            )
        token, self._end = self._log.append(chunks, self._end)
        return token

    def _add(
        self, pending: _Pending, event: E, event_id: str | None, at: str | None = None
    ) -> Receipt:
        """Give the event its envelope, fold it into the state and queue it."""
        if len(pending.groups[-1]) >= MAX_GROUP_EVENTS:
            raise GroupTooLarge(
                f"an atomic group holds at most {MAX_GROUP_EVENTS} events; nothing was written"
            )
        ts = pending.ts
        if ts is None:  # the clock is read once per write, whatever the number of events
            ts = pending.ts = max(self._now(), self._state.last_ts)  # never back
            if ts > _LATEST_TS:  # only after a record no writer of this version makes
                raise InvalidValue(
                    f"the log's last record is dated {ts}, after the years 1000 to 9989 the "
                    "log records: a new record could not be dated after it; nothing was written"
                )
        envelope: dict[str, Any] = {
            "pos": self._state.last_pos + 1,
            "id": event_id or self._new_id(),
            "ts": ts,
        }
        if at is not None:
            envelope["at"] = at
        stamped: AnyEvent = msgspec.structs.replace(event, **envelope)  # type: ignore[assignment]
        receipt = self._state.apply(stamped)
        pending.groups[-1].append(stamped)
        return receipt

    # -- atomic batches, and what callers read of the writer itself -----------------------
    @contextmanager
    def batch(self) -> Iterator[Journal]:
        """Append every call made inside the block as one atomic group.

        The log stays locked for the block, so receipts returned inside it are final; the
        group is written (one write, one fsync) when the block exits. An exception leaving
        the block writes nothing.
        """
        if self._pending is not None and self._pending_owner == threading.get_ident():
            raise InvalidValue("batch() blocks do not nest")
        with self._writing(user_batch=True):
            yield self

    @property
    def last_pos(self) -> int:
        """The position of the last record this writer has seen."""
        return self._state.last_pos

    @property
    def source(self) -> LogSource:
        """The log this writer appends to, to read."""
        return self._log

    @property
    def read_to(self) -> Cursor:
        """Where this writer has read the log up to: the cursor after ``last_pos``."""
        return self._end

    @property
    def closed(self) -> bool:
        try:
            self._log.check_open()
        except JournalClosed:
            return True
        return False
