"""What the writer must know to validate the next event, folded from the log.

Memory is bounded by the number of sessions and models (plus a fixed window of recent
event ids), never by the number of events. The same rules decide status changes here and
in the projection, so a session the writer accepts a message for is one the projection can
store it in.

Status lifecycle::

    created ─► active ◄──────── message / resume / restore
                 │  ▲
        pause ◄──┘  └── (message on idle or paused)
                 ├─► idle      (session_timed_out kind=idle)
                 ├─► paused    (timeouts suspended)
                 ├─► expired   (session_timed_out kind=hard; restore to reopen)
                 ├─► archived  (restore to reopen)
                 └─► deleted   (restore brings it back from its pre_delete snapshot)
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Final, NamedTuple, assert_never

from journal.events import (
    AnyEvent,
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
    ts_seconds,
)

# Statuses in which a session takes new messages.
OPEN_STATUSES: Final = frozenset({"active", "idle", "paused"})
DEFAULT_ID_WINDOW: Final = 65_536


class StateViolation(ValueError):
    """An event the state cannot follow (unknown session, seq gap): a log defect."""


@dataclass(slots=True)
class SessionState:
    """One session as far as validation needs it."""

    status: str
    last_seq: int
    model_id: str
    idle_timeout: int | None
    hard_timeout: int | None
    idle_since: float  # POSIX seconds of the last message, creation, resume or restore
    hard_deadline: float | None
    warned: bool = False  # a timeout_warning was written since the last activity
    pre_delete_pos: int | None = None  # pos of the snapshot a deleted session returns from


class Receipt(NamedTuple):
    """What an append returns: where the event landed."""

    pos: int
    event_id: str
    session_id: str | None
    seq: int | None
    duplicate: bool = False


class JournalState:
    """Sessions, models and recent event ids, as of ``last_pos``.

    ``undo`` journalling lets a failed atomic group roll the state back exactly.
    """

    def __init__(self, id_window: int = DEFAULT_ID_WINDOW) -> None:
        self.sessions: dict[str, SessionState] = {}
        self.models: set[str] = set()
        self.recent_ids: OrderedDict[str, tuple[str, Receipt]] = OrderedDict()
        self.id_window = id_window
        self.last_pos = 0
        self.last_ts = ""
        self._undo: list[tuple[str, object, object]] | None = None

    # -- atomic groups ------------------------------------------------------------------
    def begin(self) -> None:
        """Start recording changes so that ``rollback`` can undo them."""
        self._undo = []

    def commit(self) -> None:
        self._undo = None

    def savepoint(self) -> int:
        """A mark inside the current ``begin`` that ``rollback_to`` can return to."""
        assert self._undo is not None
        return len(self._undo)

    def rollback(self) -> None:
        """Undo every change since ``begin``, newest first."""
        self.rollback_to(0)
        self._undo = None

    def rollback_to(self, mark: int) -> None:
        """Undo the changes made since ``savepoint`` returned ``mark``, newest first."""
        assert self._undo is not None
        undo, self._undo = self._undo[mark:], self._undo[:mark]
        for kind, key, old in reversed(undo):
            if kind == "session":
                if old is None:
                    self.sessions.pop(str(key), None)
                else:
                    assert isinstance(old, SessionState)
                    self.sessions[str(key)] = old
            elif kind == "model":
                self.models.discard(str(key))
            elif kind == "id":
                self.recent_ids.pop(str(key), None)
            else:
                assert isinstance(old, tuple)
                self.last_pos, self.last_ts = old

    def _remember(self, kind: str, key: object, old: object) -> None:
        if self._undo is not None:
            self._undo.append((kind, key, old))

    # -- folding events -----------------------------------------------------------------
    def apply(self, event: AnyEvent) -> Receipt:
        """Fold one event (already validated, or read from the log) into the state."""
        self._remember("pos", None, (self.last_pos, self.last_ts))
        self.last_pos = event.pos
        self.last_ts = max(self.last_ts, event.ts)
        session_id = getattr(event, "session_id", None)
        seq = self._fold(event)
        receipt = Receipt(event.pos, event.id, session_id, seq)
        self._remember_id(event, receipt)
        return receipt

    def _remember_id(self, event: AnyEvent, receipt: Receipt) -> None:
        ids = self.recent_ids
        if event.id in ids:  # a duplicate id in the log: keep the first receipt
            return
        self._remember("id", event.id, None)
        ids[event.id] = (type(event).__struct_config__.tag, receipt)  # type: ignore[assignment]
        if len(ids) > self.id_window:
            ids.popitem(last=False)

    def _set(self, session_id: str, new: SessionState) -> None:
        self._remember("session", session_id, self.sessions.get(session_id))
        self.sessions[session_id] = new

    def _fold(self, event: AnyEvent) -> int | None:
        """Apply the event's effect; returns the message seq for messages."""
        match event:
            case ModelRegistered():
                if event.model_id not in self.models:
                    self._remember("model", event.model_id, None)
                    self.models.add(event.model_id)
                return None
            case SessionCreated():
                if event.session_id in self.sessions:
                    raise StateViolation(f"session {event.session_id!r} created twice")
                if event.model_id not in self.models:
                    raise StateViolation(
                        f"session {event.session_id!r} uses model "
                        f"{event.model_id!r} before it is registered"
                    )
                now = ts_seconds(event.when)
                hard = event.hard_timeout_seconds
                self._set(
                    event.session_id,
                    SessionState(
                        status="active",
                        last_seq=0,
                        model_id=event.model_id,
                        idle_timeout=event.idle_timeout_seconds,
                        hard_timeout=hard,
                        idle_since=now,
                        hard_deadline=None if hard is None else now + hard,
                    ),
                )
                return None
            case MessageAppended():
                s = self.session(event.session_id)
                if event.seq != s.last_seq + 1:
                    raise StateViolation(
                        f"session {event.session_id!r}: message seq {event.seq} after "
                        f"seq {s.last_seq} (seqs must be gapless)"
                    )
                status = "active" if s.status in ("idle", "paused") else s.status
                self._set(
                    event.session_id,
                    replace(
                        s,
                        status=status,
                        last_seq=event.seq,
                        warned=False,
                        idle_since=ts_seconds(event.when),
                    ),
                )
                return event.seq
            case SessionPaused():
                self._status(event.session_id, "paused")
            case SessionResumed():
                s = self.session(event.session_id)
                self._set(
                    event.session_id,
                    replace(s, status="active", warned=False, idle_since=ts_seconds(event.when)),
                )
            case TimeoutWarning():
                self._set(event.session_id, replace(self.session(event.session_id), warned=True))
            case SessionTimedOut():
                # An idle session still has a hard deadline ahead, which deserves its own
                # warning: the idle warning that came before does not count for it.
                self._set(
                    event.session_id,
                    replace(
                        self.session(event.session_id),
                        status="idle" if event.kind == "idle" else "expired",
                        warned=False,
                    ),
                )
            case SessionArchived():
                self._status(event.session_id, "archived")
            case SessionSnapshotted():
                if event.reason == "pre_delete":
                    self._set(
                        event.session_id,
                        replace(self.session(event.session_id), pre_delete_pos=event.pos),
                    )
            case SessionRestored():
                s = self.session(event.session_id)
                now = ts_seconds(event.when)
                self._set(
                    event.session_id,
                    replace(
                        s,
                        status="active",
                        warned=False,
                        idle_since=now,
                        hard_deadline=None if s.hard_timeout is None else now + s.hard_timeout,
                    ),
                )
            case SessionDeleted():
                self._status(event.session_id, "deleted")
            case SessionMetadataSet() | SessionRenamed():
                pass
            case _:
                assert_never(event)
        return None

    def session(self, session_id: str) -> SessionState:
        """The session's state; StateViolation if the log never created it."""
        try:
            return self.sessions[session_id]
        except KeyError:
            raise StateViolation(f"event for unknown session {session_id!r}") from None

    def _status(self, session_id: str, status: str) -> None:
        self._set(session_id, replace(self.session(session_id), status=status))
