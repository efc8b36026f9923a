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
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar

import msgspec
from msgspec import UNSET

from journal.commit import Call, Combiner, Ticket
from journal.errors import (
    GroupTooLarge,
    IdempotencyConflict,
    InvalidState,
    InvalidValue,
    JournalClosed,
    LogError,
    SequenceConflict,
    SessionExists,
    UnknownSession,
)
from journal.events import (
    SNAPSHOT_REASONS,
    AnyEvent,
    Event,
    MessageAppended,
    ModelRegistered,
    SessionArchived,
    SessionCreated,
    SessionDeleted,
    SessionMetadataSet,
    SessionPaused,
    SessionRenamed,
    SessionRestored,
    SessionResumed,
    SessionSnapshotted,
    SessionTimedOut,
    TimeoutWarning,
    ToolCall,
    encode_line,
    format_ts,
    ts_seconds,
)
from journal.gcpause import gc_paused
from journal.lifecycle import OPEN_STATUSES
from journal.log import Durability, LogFile, StateReader, TornTail
from journal.repair import quarantine_tail
from journal.state import (
    DEFAULT_ID_WINDOW,
    JournalState,
    Receipt,
    SessionState,
    StateViolation,
)
from journal.validation import (
    LATEST,
    MAX_GROUP_BYTES,
    MAX_GROUP_EVENTS,
    MAX_METADATA_VALUE_BYTES,
    MessageParts,
    check_at,
    check_count,
    check_duration,
    check_event_id,
    check_message,
    check_metadata,
    check_model_id,
    check_session_id,
    check_text,
    check_time,
    check_timeout,
)

log = logging.getLogger("journal")

# A stretch of log to catch up on this long is read with GC paused (journal.gcpause), and
# the ids of its lines before the last ``id_window`` are not entered.
_LONG_STRETCH_BYTES: Final = 16 * 1024 * 1024
DEFAULT_WARN_BEFORE_SECONDS: Final = 300.0

_EVENT_ID_NAMESPACE: Final = uuid.UUID("7f1b2c3e-4d5a-5b6c-8d7e-9f0a1b2c3d4e")

E = TypeVar("E", bound=Event)
# append_message's arguments once checked (Journal._check_message).
_MessageArgs = tuple[
    str,
    str,
    str,
    int | None,
    float | None,
    dict[str, Any] | None,
    int | None,
    str | None,
    str | None,
    MessageParts,
]
P = ParamSpec("P")
T = TypeVar("T")


def random_event_id() -> str:
    """A random (version 4) UUID as text; twice as fast as ``str(uuid.uuid4())``."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_LATEST_TS: Final = format_ts(LATEST)
_CALENDAR_END: Final = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Repair:
    """A torn tail the writer moved aside when it opened (or caught up with) the log."""

    offset: int
    length: int
    line: int
    reason: str
    quarantine_path: str


@dataclass
class _Pending:
    """Events built by the current call or ``batch()`` block, not yet written."""

    user_batch: bool
    groups: list[list[AnyEvent]] = field(default_factory=lambda: [[]])
    ts: str | None = None  # when these events are recorded: one time for all of them
    token: int = 0  # the durability token of their write, once written

    def split(self) -> None:
        """Start a new atomic group (ignored inside a user's batch, which is one group)."""
        if not self.user_batch and self.groups[-1]:
            self.groups.append([])


class _InGroup:
    """A call inside a batch (or create_session's first message) adds to its group; if it
    fails and the caller catches the error, nothing of this call may stay in the group.

    A class, not a generator context manager: it is entered once per call in a batch,
    where the generator's overhead was a tenth of the time of an append.
    """

    __slots__ = ("_mark", "_n_groups", "_n_last", "_pending", "_state")

    def __init__(self, state: JournalState, pending: _Pending) -> None:
        self._state, self._pending = state, pending

    def __enter__(self) -> _Pending:
        groups = self._pending.groups
        self._mark = self._state.savepoint()
        self._n_groups, self._n_last = len(groups), len(groups[-1])
        return self._pending

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self._state.rollback_to(self._mark)
            groups = self._pending.groups
            del groups[self._n_groups :]
            del groups[-1][self._n_last :]


def _combined(
    method: Callable[Concatenate[Journal, P], T],
) -> Callable[Concatenate[Journal, P], T]:
    """A writing method whose calls from concurrent threads share one write and one fsync
    (``journal.commit``). Inside ``batch()``, or run by the combiner, it runs in place."""

    def combined(self: Journal, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._pending is not None and self._pending_owner == threading.get_ident():
            return method(self, *args, **kwargs)
        call = Call(method, (self, *args), kwargs)
        ticket = Ticket((call,))
        self._combiner.submit(ticket)
        if call.error is not None:
            raise call.error
        if ticket.token:
            self._log.wait_durable(ticket.token)
        result: T = call.result
        return result

    functools.update_wrapper(combined, method)  # name, docstring and signature for help()
    return combined


class Journal:
    """Appends validated events to one log file. Thread-safe and process-safe.

    Open with ``Journal.open(path)``; use as a context manager or call ``close()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        durability: Durability = "always",
        *,
        clock: Callable[[], datetime] | None = None,
        batch_interval_ms: float = 50,
        id_window: int = DEFAULT_ID_WINDOW,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._new_id = new_id or random_event_id
        self._log = LogFile(self.path, durability, batch_interval_ms / 1000)
        self._state = JournalState(id_window)
        self._end = 0  # byte offset up to which the state has read the log
        self._caught_up_in = 0  # the LogFile.lock_epoch of the last catch-up
        self._pending: _Pending | None = None
        self._pending_owner: int | None = None
        self._combiner = Combiner(self._run_batch)
        self.repairs: list[Repair] = []
        try:
            with self._log.locked():
                self._catch_up()
        except BaseException:
            self._log.close()
            raise

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        durability: Durability = "always",
        *,
        clock: Callable[[], datetime] | None = None,
        batch_interval_ms: float = 50,
        id_window: int = DEFAULT_ID_WINDOW,
        new_id: Callable[[], str] | None = None,
    ) -> Journal:
        """Open (or create) the log at ``path``, repairing a torn tail if there is one.

        ``clock`` (timezone-aware datetimes) and ``new_id`` (canonical UUID strings for
        events and sessions given none) can be injected for tests and reproducible logs.
        """
        return cls(
            path,
            durability,
            clock=clock,
            batch_interval_ms=batch_interval_ms,
            id_window=id_window,
            new_id=new_id,
        )

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush pending durability work and release the file."""
        self._log.close()

    def _now(self) -> str:
        """The clock's reading as the log's timestamp text."""
        return check_time("the clock's reading", self._clock())

    # -- reading the log ------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Fold what was appended since our last look (lock held); repair a torn tail."""
        try:
            mine = os.stat(self.path)  # the path still names our file: its size is ours
        except FileNotFoundError:
            mine = None
        if mine is None or (mine.st_ino, mine.st_dev) != self._log.identity:
            raise LogError(
                f"{self.path}: the log was moved or replaced while open; "
                "close the journal and open it again",
                path=self.path,
            )
        if mine.st_size == self._end:
            return
        if mine.st_size < self._end:
            raise LogError(
                f"{self.path}: the log shrank from {self._end} to "
                f"{mine.st_size} bytes while open; records were removed by "
                "something other than this library",
                path=self.path,
            )
        reader = StateReader(self.path, self._end, self._state.last_pos)
        long_stretch = mine.st_size - self._end > _LONG_STRETCH_BYTES
        # Only the last ``id_window`` ids are remembered: on a long stretch, find where its
        # last lines start (reading back from the end) and skip entering the older ones.
        first, remember_from = self._end, self._end
        if long_stretch:
            remember_from = _last_lines_start(
                self._log.fd, self._end, mine.st_size, self._state.recent_ids.size
            )
        with gc_paused(long_stretch):
            for events, start, lines in reader.batches():
                try:
                    self._state.apply_many(
                        events, _lines_before(remember_from, start, reader.end, lines, len(events))
                    )
                except StateViolation as exc:
                    k = exc.index
                    self._end = start + sum(map(len, lines[:k])) + k
                    raise LogError(
                        f"{self.path}: line {events[k].pos} (byte offset {self._end}): {exc}",
                        path=self.path,
                    ) from exc
                self._end = reader.end
        if reader.torn is not None:
            self._repair(reader.torn)
            if remember_from > first:
                # Lines of the torn tail were counted: the window may hold fewer ids than
                # promised. Rare (after a crash): fold the log again, now free of the tail.
                self._state = JournalState(self._state.recent_ids.size)
                self._end = 0
                self._catch_up()

    def _repair(self, torn: TornTail) -> None:
        quarantine = quarantine_tail(self._log, torn.offset)
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
        with self._locked_pending(user_batch) as pending:
            yield pending
        if pending.token:
            self._log.wait_durable(pending.token)

    @contextmanager
    def _locked_pending(self, user_batch: bool) -> Iterator[_Pending]:
        """Lock, catch up, collect events, then write them in one go (not waiting for the
        fsync: ``pending.token`` says which write to wait for, after the lock is let go)."""
        with self._log.locked():
            if self._log.lock_epoch != self._caught_up_in:
                self._catch_up()
                # Until the flock is let go, nobody else can append: no need to look again.
                self._caught_up_in = self._log.lock_epoch
            pending = _Pending(user_batch)
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

    def _run_batch(self, calls: list[Call]) -> int:
        """Run combined calls under one hold of the lock, each its own atomic group; one
        write for them all. Returns its durability token (0 if nothing was written)."""
        with self._locked_pending(user_batch=False) as pending:
            for call in calls:
                try:
                    call.result = call.fn(*call.args, **call.kwargs)
                except Exception as exc:  # undone alone (_InGroup); the others go on
                    call.error = exc
                pending.split()
        return pending.token

    def _write(self, pending: _Pending) -> int:
        chunks: list[bytes] = []
        for group in pending.groups:
            n = len(group)
            for i, event in enumerate(group, 1):
                framed = msgspec.structs.replace(event, grp=(i, n)) if n > 1 else event
                chunks.append(encode_line(framed))
        if not chunks:
            return 0
        data = b"".join(chunks)
        if pending.user_batch and len(data) > MAX_GROUP_BYTES:
            raise GroupTooLarge(
                f"atomic group of {len(data)} bytes is over the limit of "
                f"{MAX_GROUP_BYTES}; nothing was written"
            )
        token = self._log.append(data, self._end)
        self._end += len(data)
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

    def _duplicate(self, event_id: str | None, tag: str, session_id: str | None) -> Receipt | None:
        if event_id is None:
            return None
        check_event_id(event_id)
        seen = self._state.recent_ids.get(event_id)
        if seen is None:
            return None
        seen_tag, receipt = seen
        if seen_tag != tag or (session_id is not None and receipt.session_id != session_id):
            raise IdempotencyConflict(
                f"event id {event_id} was already used for a {seen_tag} event at position "
                f"{receipt.pos}; use a new id for a different operation"
            )
        return receipt._replace(duplicate=True)

    def _session(
        self, session_id: str, operation: str, allowed: frozenset[str] | None = None
    ) -> SessionState:
        check_session_id(session_id)
        s = self._state.sessions.get(session_id)
        if s is None:
            raise UnknownSession(session_id)
        if s.status == "deleted" and (allowed is None or "deleted" not in allowed):
            raise UnknownSession(session_id, deleted=True)
        if allowed is not None and s.status not in allowed:
            raise InvalidState(session_id, s.status, operation)
        return s

    @staticmethod
    def _derived_id(event_id: str | None, part: str) -> str | None:
        """A deterministic id for an auxiliary event, so retries and imports repeat it."""
        return (
            None if event_id is None else str(uuid.uuid5(_EVENT_ID_NAMESPACE, f"{event_id}/{part}"))
        )

    # -- the public API -------------------------------------------------------------------
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

    @_combined
    def register_model(
        self,
        model_id: str,
        model_name: str | None = None,
        provider: str | None = None,
        *,
        event_id: str | None = None,
    ) -> Receipt:
        """Record a model (done automatically on its first use by a session)."""
        check_model_id(model_id)
        check_text("model_name", model_name)
        check_text("provider", provider)
        with self._writing() as w:
            dup = self._duplicate(event_id, "model_registered", None)
            if dup is not None:
                return dup
            if model_id in self._state.models:
                raise InvalidValue(f"model {model_id!r} is already registered")
            return self._add(
                w,
                ModelRegistered(
                    model_id=model_id, model_name=model_name or model_id, provider=provider
                ),
                event_id,
            )

    @_combined
    def create_session(
        self,
        model_id: str,
        model_name: str | None = None,
        title: str | None = None,
        *,
        idle_timeout_seconds: int | None = 3600,
        hard_timeout_seconds: int | None = 86400,
        session_id: str | None = None,
        first_message: str | Mapping[str, Any] | None = None,
        provider: str | None = None,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> str:
        """Start a session (and its first message, atomically); returns its id.

        ``first_message`` is the content of a user message, or the keyword arguments of
        ``append_message``. An unknown model is registered in the same atomic group.
        """
        sid = session_id if session_id is not None else self._new_id()
        check_session_id(sid)
        check_model_id(model_id)
        check_text("model_name", model_name)
        check_text("title", title)
        check_timeout("idle_timeout_seconds", idle_timeout_seconds)
        check_timeout("hard_timeout_seconds", hard_timeout_seconds)
        at = check_at(at)
        message = _first_message_kwargs(first_message)
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_created", session_id)
            if dup is not None:
                assert dup.session_id is not None
                return dup.session_id
            if sid in self._state.sessions:
                raise SessionExists(sid)
            if model_id not in self._state.models:
                self._add(
                    w,
                    ModelRegistered(
                        model_id=model_id, model_name=model_name or model_id, provider=provider
                    ),
                    self._derived_id(event_id, "model"),
                    at,
                )
            self._add(
                w,
                SessionCreated(
                    session_id=sid,
                    model_id=model_id,
                    model_name=model_name,
                    title=title,
                    idle_timeout_seconds=idle_timeout_seconds,
                    hard_timeout_seconds=hard_timeout_seconds,
                ),
                event_id,
                at,
            )
            if message is not None:
                message.setdefault("event_id", self._derived_id(event_id, "first_message"))
                message.setdefault("at", at)
                self.append_message(sid, **message)
        return sid

    def append_message(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        tokens_used: int | None = None,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        expected_seq: int | None = None,
        event_id: str | None = None,
        at: datetime | str | None = None,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None,
        tool_call_id: str | None = None,
        raw: str | Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> Receipt:
        """Append a message; ``expected_seq`` is the last seq the caller saw (0 for none).

        ``tool_calls`` (an assistant's: each ``id``, ``name``, ``arguments``),
        ``tool_call_id`` (a tool result's) and ``raw`` (the provider's message item, as JSON
        text kept verbatim or a value encoded compactly) carry real LLM traffic.
        """
        return self._append_checked(
            *self._check_message(
                session_id,
                role,
                content,
                tokens_used=tokens_used,
                duration_seconds=duration_seconds,
                metadata=metadata,
                expected_seq=expected_seq,
                event_id=event_id,
                at=at,
                tool_calls=tool_calls,
                tool_call_id=tool_call_id,
                raw=raw,
            )
        )

    def _check_message(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        tokens_used: int | None = None,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        expected_seq: int | None = None,
        event_id: str | None = None,
        at: datetime | str | None = None,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None,
        tool_call_id: str | None = None,
        raw: str | Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> _MessageArgs:
        """append_message's checks of its arguments alone: the hot path's work that needs
        no state, done by the caller before the hand-over, outside the log's lock."""
        parts = check_message(role, content, tool_calls, tool_call_id, raw)
        check_count("tokens_used", tokens_used)
        check_duration(duration_seconds)
        meta = check_metadata(metadata)
        if expected_seq is not None:
            check_count("expected_seq", expected_seq)
        at = check_at(at)
        return (
            session_id,
            role,
            content,
            tokens_used,
            duration_seconds,
            meta,
            expected_seq,
            event_id,
            at,
            parts,
        )

    @_combined
    def _append_checked(
        self,
        session_id: str,
        role: str,
        content: str,
        tokens_used: int | None,
        duration_seconds: float | None,
        meta: dict[str, Any] | None,
        expected_seq: int | None,
        event_id: str | None,
        at: str | None,
        parts: MessageParts,
    ) -> Receipt:
        """append_message, its arguments checked: what needs the state, under the lock."""
        with self._writing() as w:
            dup = self._duplicate(event_id, "message_appended", session_id)
            if dup is not None:
                return dup
            s = self._session(session_id, "append a message", OPEN_STATUSES)
            if expected_seq is not None and expected_seq != s.last_seq:
                raise SequenceConflict(session_id, expected_seq, s.last_seq)
            return self._add(
                w,
                MessageAppended(
                    session_id=session_id,
                    seq=s.last_seq + 1,
                    role=role,  # type: ignore[arg-type]
                    content=content,
                    tokens_used=tokens_used,
                    duration_seconds=duration_seconds,
                    metadata=meta,
                    tool_calls=UNSET if parts.tool_calls is None else parts.tool_calls,
                    tool_call_id=UNSET if parts.tool_call_id is None else parts.tool_call_id,
                    raw=UNSET if parts.raw is None else parts.raw,
                ),
                event_id,
                at,
            )

    @_combined
    def set_metadata(
        self,
        session_id: str,
        key: str,
        value: str | None,
        *,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> Receipt:
        """Set (or, with None, clear) one metadata key of a session."""
        check_text("key", key, required=True)
        if value is not None:
            check_text("value", value, limit=MAX_METADATA_VALUE_BYTES)
            size = len(value.encode("utf-8"))
            if size > MAX_METADATA_VALUE_BYTES:
                raise InvalidValue(
                    f"value is {size} bytes of UTF-8; the limit is {MAX_METADATA_VALUE_BYTES}"
                )
        at = check_at(at)
        return self._simple(
            SessionMetadataSet(session_id=session_id, key=key, value=value),
            "set metadata",
            None,
            event_id,
            at,
        )

    @_combined
    def rename(self, session_id: str, title: str | None, *, event_id: str | None = None) -> Receipt:
        """Give the session a new title."""
        check_text("title", title)
        return self._simple(
            SessionRenamed(session_id=session_id, title=title), "rename", None, event_id
        )

    @_combined
    def pause(
        self, session_id: str, *, event_id: str | None = None, at: datetime | str | None = None
    ) -> Receipt:
        """Suspend the session's timeouts until resume() or its next message."""
        return self._simple(
            SessionPaused(session_id=session_id),
            "pause",
            frozenset({"active", "idle"}),
            event_id,
            check_at(at),
        )

    @_combined
    def resume(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Make a paused session active; its idle clock restarts."""
        return self._simple(
            SessionResumed(session_id=session_id), "resume", frozenset({"paused"}), event_id
        )

    @_combined
    def snapshot(
        self,
        session_id: str,
        reason: str = "checkpoint",
        *,
        note: str | None = None,
        event_id: str | None = None,
    ) -> Receipt:
        """Record a snapshot of the session and its messages as of now."""
        if reason not in SNAPSHOT_REASONS:
            raise InvalidValue(
                f"reason must be one of {', '.join(SNAPSHOT_REASONS)}, not {reason!r}"
            )
        check_text("note", note)
        return self._simple(
            SessionSnapshotted(
                session_id=session_id,
                reason=reason,  # type: ignore[arg-type]
                note=note,
            ),
            "snapshot",
            None,
            event_id,
        )

    @_combined
    def archive(
        self, session_id: str, *, event_id: str | None = None, at: datetime | str | None = None
    ) -> Receipt:
        """Archive the session (the projection keeps a pre_archive snapshot)."""
        return self._simple(
            SessionArchived(session_id=session_id),
            "archive",
            frozenset({"active", "idle", "paused", "expired"}),
            event_id,
            check_at(at),
        )

    @_combined
    def time_out(
        self,
        session_id: str,
        kind: Literal["idle", "hard"],
        *,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> Receipt:
        """Record that one session timed out, decided by the caller (imports, or a host
        app that runs its own timeout policy); ``expire_due`` decides for every session.

        ``idle`` makes an active session idle; ``hard`` expires an active, idle or paused
        one. The decision time (``as_of``) is ``at`` when given, else the writer's clock.
        """
        if kind not in ("idle", "hard"):
            raise InvalidValue(f"kind must be 'idle' or 'hard', not {kind!r}")
        at = check_at(at)
        as_of = self._now() if at is None else at
        allowed = frozenset({"active"} if kind == "idle" else {"active", "idle", "paused"})
        return self._simple(
            SessionTimedOut(session_id=session_id, kind=kind, as_of=as_of),
            "time out",
            allowed,
            event_id,
            at,
        )

    @_combined
    def restore(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Reopen an idle, expired, archived or deleted session with fresh deadlines.

        A deleted session comes back from the ``pre_delete`` snapshot taken when it was
        deleted, messages included.
        """
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_restored", session_id)
            if dup is not None:
                return dup
            s = self._session(
                session_id, "restore", frozenset({"idle", "expired", "archived", "deleted"})
            )
            snapshot_pos = s.pre_delete_pos if s.status == "deleted" else None
            return self._add(
                w, SessionRestored(session_id=session_id, snapshot_pos=snapshot_pos), event_id
            )

    @_combined
    def delete_session(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Delete the session from the projection, after a ``pre_delete`` snapshot.

        The log keeps every event; ``restore`` brings the session back.
        """
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_deleted", session_id)
            if dup is not None:
                return dup
            self._session(session_id, "delete")
            self._add(
                w,
                SessionSnapshotted(session_id=session_id, reason="pre_delete"),
                self._derived_id(event_id, "pre_delete"),
            )
            return self._add(w, SessionDeleted(session_id=session_id), event_id)

    @_combined
    def expire_due(
        self,
        now: datetime | None = None,
        *,
        warn_before_seconds: float = DEFAULT_WARN_BEFORE_SECONDS,
    ) -> list[Receipt]:
        """Append the timeout events due as of ``now`` (default: the writer's clock).

        Per session, at most one of: ``session_timed_out(kind=hard)`` once past the hard
        deadline (status expired), ``session_timed_out(kind=idle)`` once idle for longer
        than its idle timeout (status idle), or, within ``warn_before_seconds`` of either
        deadline, a ``timeout_warning`` with a ``timeout_warning`` snapshot. Paused sessions
        are skipped. The decision time is recorded in each event as ``as_of``.
        """
        as_of = self._now() if now is None else check_time("now", now)
        t = ts_seconds(as_of)
        receipts: list[Receipt] = []
        with self._writing() as w:
            for sid, s in list(self._state.sessions.items()):
                if s.status not in ("active", "idle"):
                    continue
                idle_at = (
                    ts_seconds(s.idle_since) + s.idle_timeout
                    if s.idle_timeout is not None and s.status == "active"
                    else math.inf
                )
                hard_at = s.hard_deadline if s.hard_deadline is not None else math.inf
                # A deadline past the calendar (only a log from before the writer kept
                # times in range holds one) is its last moment, which no clock reaches.
                idle_at, hard_at = (min(x, _CALENDAR_END) for x in (idle_at, hard_at))
                if hard_at <= t:
                    kind: Literal["idle", "hard"] | None = "hard"
                elif idle_at <= t:
                    kind = "idle"
                else:
                    kind = None
                if kind is not None:
                    receipts.append(
                        self._add(w, SessionTimedOut(session_id=sid, kind=kind, as_of=as_of), None)
                    )
                elif not s.warned and min(idle_at, hard_at) - warn_before_seconds <= t:
                    soon: Literal["idle", "hard"] = "idle" if idle_at <= hard_at else "hard"
                    deadline = datetime.fromtimestamp(min(idle_at, hard_at), UTC)
                    self._add(w, SessionSnapshotted(session_id=sid, reason="timeout_warning"), None)
                    receipts.append(
                        self._add(
                            w,
                            TimeoutWarning(
                                session_id=sid, kind=soon, deadline=format_ts(deadline), as_of=as_of
                            ),
                            None,
                        )
                    )
                w.split()
        return receipts

    def _simple(
        self,
        event: AnyEvent,
        operation: str,
        allowed: frozenset[str] | None,
        event_id: str | None,
        at: str | None = None,
    ) -> Receipt:
        """Validate the session's status and append one event about it."""
        session_id: str = event.session_id  # type: ignore[union-attr]
        with self._writing() as w:
            dup = self._duplicate(
                event_id,
                type(event).__struct_config__.tag,  # type: ignore[arg-type]
                session_id,
            )
            if dup is not None:
                return dup
            self._session(session_id, operation, allowed)
            return self._add(w, event, event_id, at)

    # -- read-only views for callers ------------------------------------------------------
    def receipt(self, event_id: str) -> Receipt | None:
        """Where the event with this id landed, if it is within the id window."""
        seen = self._state.recent_ids.get(event_id)
        return None if seen is None else seen[1]

    def last_seq(self, session_id: str) -> int:
        """The seq of the session's last message (0 if none), as of the last look."""
        return self._session(session_id, "read", None).last_seq

    def status(self, session_id: str) -> str:
        """The session's status as of the writer's last look at the log."""
        return self._session(
            session_id,
            "read",
            frozenset({"active", "idle", "paused", "archived", "expired", "deleted"}),
        ).status

    @property
    def last_pos(self) -> int:
        """The position of the last record this writer has seen."""
        return self._state.last_pos

    @property
    def closed(self) -> bool:
        try:
            self._log._check_open()
        except JournalClosed:
            return True
        return False


_BACK_CHUNK = 1 << 22


def _last_lines_start(fd: int, start: int, end: int, lines: int) -> int:
    """Where the last ``lines`` lines of bytes ``start`` to ``end`` begin (``start`` if
    there are no more), read backwards from the end so only that stretch is read."""
    remaining = lines  # newlines to step over before the one that precedes them
    at = end
    while at > start:
        size = min(at - start, _BACK_CHUNK)
        chunk = os.pread(fd, size, at - size)
        found = chunk.count(b"\n")
        if found > remaining:
            cut = len(chunk)
            for _ in range(remaining + 1):
                cut = chunk.rfind(b"\n", 0, cut)
            return at - size + cut + 1
        remaining -= found
        at -= size
    return start


def _lines_before(offset: int, start: int, end: int, lines: list[bytes], count: int) -> int:
    """How many of a run of ``count`` records (bytes ``start`` to ``end``, their ``lines``
    when known) begin before byte ``offset``."""
    if end <= offset:
        return count
    if start >= offset:
        return 0
    before = 0
    for line in lines:
        if start >= offset:
            break
        start += len(line) + 1
        before += 1
    return before


def _first_message_kwargs(first: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if first is None:
        return None
    if isinstance(first, str):
        return {"role": "user", "content": first}
    if isinstance(first, Mapping):
        return dict(first)
    raise InvalidValue("first_message must be a string or a mapping of append_message arguments")
