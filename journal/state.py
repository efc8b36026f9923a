"""What the writer must know to validate the next event, folded from the log.

Memory is bounded by the number of sessions and models (plus a fixed window of recent
event ids), never by the number of events. With a ``SessionStore`` (the writer's
checkpoint, ``journal.statefile``) it holds only the open sessions and those changed since
the checkpoint; any other is looked up in the store when an event or a call names it.

The status each event leaves its session in is ``journal.lifecycle``'s, the module the
writer's checks read too, so a session the writer accepts a message for is one the folded
state (and the projection) can store it in.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, Protocol, assert_never

from msgspec import UNSET

import journal.events as ev
from journal.lifecycle import (
    ACTIVE,
    REOPENED_BY_MESSAGE,
    STATUS_AFTER,
    STATUS_AFTER_TIMEOUT,
)
from journal.lifecycle import (
    OPEN_STATUSES as OPEN,
)

DEFAULT_ID_WINDOW: Final = 65_536


class StateViolation(ValueError):
    """An event the state cannot follow (unknown session, seq gap): a log defect.

    ``index`` is the event's index in the list given to ``apply_many``.
    """

    index: int = 0


@dataclass(slots=True)
class SessionState:
    """One session as far as validation needs it."""

    status: str
    last_seq: int
    model_id: str
    idle_timeout: int | None
    hard_timeout: int | None
    # Kept as the log's timestamp text: parsing one per message would dominate opening a
    # large log, and only expire_due needs it as a number.
    idle_since: str  # time of the last message, creation, resume or restore
    hard_deadline: float | None  # POSIX seconds
    warned: bool = False  # a timeout_warning was written since the last activity
    pre_delete_pos: int | None = None  # pos of the snapshot a deleted session returns from
    created_pos: int = 0  # pos of its session_created: what a forgetting names it by

    def fields(self) -> tuple[Any, ...]:
        """Every field, in order: ``SessionState(*s.fields())`` is a copy."""
        return (
            self.status,
            self.last_seq,
            self.model_id,
            self.idle_timeout,
            self.hard_timeout,
            self.idle_since,
            self.hard_deadline,
            self.warned,
            self.pre_delete_pos,
            self.created_pos,
        )


class Receipt(NamedTuple):
    """What an append returns: where the event landed."""

    pos: int
    event_id: str
    session_id: str | None
    seq: int | None
    duplicate: bool = False


_new_receipt = tuple.__new__
_get_ts = operator.attrgetter("ts")
_STATE_TYPES: Final[tuple[type[ev.Event], ...]] = (*ev.EVENT_TYPES, ev.MessageHeader)
_TAG_OF: Final[dict[type, str]] = {cls: str(cls.__struct_config__.tag) for cls in _STATE_TYPES}


class SessionStore(Protocol):
    """Sessions kept out of memory: the state as of a checkpoint the state started from."""

    def session(self, session_id: str) -> SessionState | None: ...

    def created_at(self, pos: int) -> str | None: ...


IdRow = tuple[str, str, int, str | None, int | None]  # event id, tag, pos, session, seq


class IdWindow:
    """Receipts of recent event ids: at least the last ``size``, at most twice that.

    Two generations of plain dicts: when the young one fills up it becomes the old one and
    the previous old one is dropped, which costs O(1) per id, unlike evicting one by one.
    A window started from a checkpoint holds, for the ids before it, only the set of them:
    their receipts are looked up in the checkpoint when a retry names one (``stored``).
    """

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        self._young: dict[str, tuple[str, Receipt]] = {}
        self._old: dict[str, tuple[str, Receipt]] = {}
        self._stored: set[str] = set()
        self._stored_row: Callable[[str], IdRow | None] | None = None
        self._dropped: dict[str, int] = {}  # forgotten sessions: {id: pos of the forgetting}

    def get(self, event_id: str) -> tuple[str, Receipt] | None:
        """(tag, receipt) of the event with this id, if still remembered."""
        found = self._young.get(event_id)
        if found is None:
            found = self._old.get(event_id)
            if found is None and event_id in self._stored:
                return self._from_store(event_id)
        return found

    def _from_store(self, event_id: str) -> tuple[str, Receipt] | None:
        assert self._stored_row is not None
        row = self._stored_row(event_id)
        if row is None:
            return None
        eid, tag, pos, sid, seq = row
        if sid is not None and pos < self._dropped.get(sid, 0):
            return None  # its session was forgotten since the checkpoint
        return tag, _new_receipt(Receipt, (pos, eid, sid, seq, False))

    def __contains__(self, event_id: str) -> bool:
        return self.get(event_id) is not None

    def add(self, event_id: str, tag: str, receipt: Receipt) -> None:
        if len(self._young) >= self.size:
            self._old, self._young = self._young, {}
        self._young[event_id] = (tag, receipt)

    def ids(self) -> set[str]:
        """Every event id remembered."""
        return self._young.keys() | self._old.keys() | self._stored

    def discard(self, event_id: str) -> None:
        self._young.pop(event_id, None)
        self._old.pop(event_id, None)
        self._stored.discard(event_id)

    def load(self, ids: set[str], row: Callable[[str], IdRow | None]) -> None:
        """Start an empty window from a checkpoint's ids, whose receipts ``row`` looks up."""
        assert not self._young and not self._old
        self._stored, self._stored_row = ids, row

    def since(self, pos: int) -> Iterator[IdRow]:
        """(event id, tag, pos, session id, seq) of each id remembered of a record after
        ``pos``, oldest generation first."""
        for generation in (self._old, self._young):
            for eid, (tag, r) in generation.items():
                if r.pos > pos:
                    yield eid, tag, r.pos, r.session_id, r.seq

    def drop_sessions(self, forgotten: dict[str, int]) -> None:
        """Drop the receipts of forgotten sessions' events: ``{session id: pos of its
        forgetting}`` (a later session that reuses the id keeps its own)."""
        self._dropped.update(forgotten)
        for generation in (self._young, self._old):
            gone = [
                eid
                for eid, (_, r) in generation.items()
                if r.session_id in forgotten and r.pos < forgotten[r.session_id]
            ]
            for eid in gone:
                del generation[eid]


class JournalState:
    """Sessions, models and recent event ids, as of ``last_pos``.

    ``undo`` journalling lets a failed atomic group roll the state back exactly: before a
    session's state is changed in place, a copy of it is recorded, or for a message, the
    four fields a message changes. Undone newest first, a "message" entry restores its
    fields on whatever state the session has by then (an older copy put back included),
    which then is the state before that message.
    """

    def __init__(
        self, id_window: int = DEFAULT_ID_WINDOW, store: SessionStore | None = None
    ) -> None:
        self.sessions: dict[str, SessionState] = {}
        self.store = store
        # For the next checkpoint: sessions changed since the store's, and sessions forgotten.
        self.dirty: set[str] = set()
        self.forgotten_ids: list[str] = []
        self.models: set[str] = set()
        self.recent_ids = IdWindow(id_window)
        self.last_pos = 0
        self.last_ts = ""
        self._undo: list[tuple[str, object, object]] | None = None
        # Sessions by the pos of their creation, built at the first forgetting folded.
        self._by_created: dict[int, str] | None = None
        self._forgotten: dict[str, int] = {}  # receipts to drop from the id window

    # -- atomic groups ------------------------------------------------------------------
    def begin(self) -> None:
        """Start recording changes so that ``rollback`` can undo them."""
        self._undo = []

    def commit(self) -> None:
        self._undo = None
        self._drop_forgotten_receipts()

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
        if undo:
            self._by_created = None  # rebuilt when next needed, from the sessions put back
        for kind, key, old in reversed(undo):
            if kind == "session":
                if old is None:
                    self.sessions.pop(str(key), None)
                else:
                    assert isinstance(old, SessionState)
                    self.sessions[str(key)] = old
            elif kind == "message":  # on the session's state as it is now (see below)
                s = self.sessions[str(key)]
                s.status, s.last_seq, s.warned, s.idle_since = old  # type: ignore[misc]
            elif kind == "model":
                self.models.discard(str(key))
            elif kind == "id":
                self.recent_ids.discard(str(key))
            elif kind == "forgot":
                self._forgotten.pop(str(key), None)
                self.forgotten_ids.remove(str(key))
            else:
                assert isinstance(old, tuple)
                self.last_pos, self.last_ts = old

    # -- folding events -----------------------------------------------------------------
    def apply(self, event: ev.StateEvent) -> Receipt:
        """Fold one event (already validated, or read from the log) into the state."""
        undo = self._undo
        if undo is not None:
            undo.append(("pos", None, (self.last_pos, self.last_ts)))
        self.last_pos = event.pos
        if event.ts > self.last_ts:
            self.last_ts = event.ts
        seq = self._fold(event)
        # tuple.__new__ skips the Python-level __new__ of the named tuple: this runs once
        # per record when a large log is opened.
        receipt = _new_receipt(
            Receipt, (event.pos, event.id, getattr(event, "session_id", None), seq, False)
        )
        # A duplicate id in the log keeps its first; a redacted record has no id.
        if event.id and event.id not in self.recent_ids:
            if undo is not None:
                undo.append(("id", event.id, None))
            self.recent_ids.add(event.id, event.__struct_config__.tag, receipt)  # type: ignore[arg-type]
        return receipt

    def apply_many(self, events: Sequence[ev.StateEvent], remember_from: int = 0) -> None:
        """``apply`` each event in turn (outside ``begin``): the loop that opens a log.

        Messages, the bulk of any log, are folded inline; on a StateViolation the state
        stands as after the events before the failing one (``exc.index``). Ids of the
        events before index ``remember_from`` are not entered in the id window (the caller
        knows that enough newer events follow to push them out of it).
        """
        assert self._undo is None
        sessions = self.sessions
        window = self.recent_ids
        size = window.size
        young, old = window._young, window._old
        fold = self._fold
        new = _new_receipt
        tag_of = _TAG_OF
        touched = self.dirty.add
        header, whole = ev.MessageHeader, ev.MessageAppended
        active, reopened = ACTIVE, REOPENED_BY_MESSAGE
        last_pos, last_ts = self.last_pos, self.last_ts
        k = 0
        seq: int | None
        try:
            for k, event in enumerate(events):
                if type(event) is header or type(event) is whole:
                    s = sessions.get(event.session_id)
                    seq = event.seq
                    if s is None or seq != s.last_seq + 1:
                        fold(event)  # raises the precise StateViolation
                        raise AssertionError("unreachable")  # pragma: no cover
                    if s.status != active and s.status in reopened:
                        s.status = active
                    s.last_seq = seq
                    s.warned = False
                    s.idle_since = event.ts if event.at is UNSET else event.at
                    touched(event.session_id)
                else:
                    self.last_pos = event.pos  # _fold reads it for pre_delete snapshots
                    seq = fold(event)
                # Older events than the window keeps cost no receipt: most of a large log.
                if k >= remember_from:
                    eid = event.id
                    # A duplicate id keeps its first; a redacted record has none.
                    if eid and eid not in young and eid not in old:
                        if len(young) >= size:
                            old, young = young, {}
                            window._old, window._young = old, young
                        receipt = new(
                            Receipt,
                            (event.pos, eid, getattr(event, "session_id", None), seq, False),
                        )
                        young[eid] = (tag_of[type(event)], receipt)
        except StateViolation as exc:
            exc.index = k
            self.last_pos = events[k - 1].pos if k else last_pos  # set for a non-message
            if k:
                self.last_ts = max(last_ts, max(map(_get_ts, events[:k])))
            raise
        if events:
            self.last_pos = events[-1].pos
            self.last_ts = max(last_ts, max(map(_get_ts, events)))
        self._drop_forgotten_receipts()

    def _edit(self, session_id: str) -> SessionState:
        """The session's state, to change in place; a copy is kept first for rollback."""
        s = self.session(session_id)
        self.dirty.add(session_id)
        if self._undo is not None:
            # A new object with the same fields (slots: faster than copy.copy).
            self._undo.append(("session", session_id, SessionState(*s.fields())))
        return s

    def _fold(self, event: ev.StateEvent) -> int | None:
        """Apply the event's effect; returns the message seq for messages."""
        match event:
            case ev.MessageHeader():  # or a whole MessageAppended, its subclass
                return self._fold_message(event)
            case ev.ModelRegistered():
                if event.model_id not in self.models:
                    if self._undo is not None:
                        self._undo.append(("model", event.model_id, None))
                    self.models.add(event.model_id)
            case ev.SessionCreated():
                self._fold_created(event)
            case ev.SessionPaused() | ev.SessionArchived() | ev.SessionDeleted():
                self._edit(event.session_id).status = STATUS_AFTER[type(event)]
            case ev.SessionResumed() | ev.SessionRestored():
                self._fold_reopened(event)
            case ev.TimeoutWarning():
                self._edit(event.session_id).warned = True
            case ev.SessionTimedOut():
                # An idle session still has a hard deadline ahead, which deserves its own
                # warning: the idle warning that came before does not count for it.
                s = self._edit(event.session_id)
                s.status = STATUS_AFTER_TIMEOUT[event.kind]
                s.warned = False
            case ev.SessionSnapshotted():
                self._fold_snapshotted(event)
            case ev.SessionMetadataSet() | ev.SessionRenamed():
                self.session(event.session_id)
            case ev.MessagesTruncated():
                self._fold_truncated(event)
            case ev.SessionForgotten():
                self._fold_forgotten(event)
            case ev.Redacted():
                pass  # what was there is gone from the state too (see _fold_forgotten)
            case _:
                assert_never(event)
        return None

    def _fold_reopened(self, event: ev.SessionResumed | ev.SessionRestored) -> None:
        s = self._edit(event.session_id)
        s.status, s.warned, s.idle_since = STATUS_AFTER[type(event)], False, event.when
        if isinstance(event, ev.SessionRestored) and s.hard_timeout is not None:
            s.hard_deadline = ev.ts_seconds(event.when) + s.hard_timeout

    def _fold_snapshotted(self, event: ev.SessionSnapshotted) -> None:
        if event.reason == "pre_delete":
            self._edit(event.session_id).pre_delete_pos = event.pos
        else:
            self.session(event.session_id)

    def _fold_message(self, event: ev.MessageHeader) -> int:
        s = self.session(event.session_id)
        if event.seq != s.last_seq + 1:
            raise StateViolation(
                f"session {event.session_id!r}: message seq {event.seq} after "
                f"seq {s.last_seq} (seqs must be gapless)"
            )
        if self._undo is not None:  # the fields a message changes, not a copy
            saved = (s.status, s.last_seq, s.warned, s.idle_since)
            self._undo.append(("message", event.session_id, saved))
        if s.status in REOPENED_BY_MESSAGE:
            s.status = ACTIVE
        self.dirty.add(event.session_id)
        s.last_seq = event.seq
        s.warned = False
        s.idle_since = event.when
        return event.seq

    def _fold_truncated(self, event: ev.MessagesTruncated) -> None:
        s = self._edit(event.session_id)
        if not 0 <= event.keep_through_seq <= s.last_seq:
            raise StateViolation(
                f"session {event.session_id!r}: messages withdrawn after seq "
                f"{event.keep_through_seq}, but its last seq is {s.last_seq}"
            )
        s.last_seq = event.keep_through_seq

    def _fold_forgotten(self, event: ev.SessionForgotten) -> None:
        """Drop the session created at the first position, if its records were read."""
        if self._by_created is None:
            self._by_created = {s.created_pos: sid for sid, s in self.sessions.items()}
        first = event.positions[0][0] if event.positions else 0
        session_id = self._by_created.get(first)
        if session_id is None and self.store is not None:
            session_id = self.store.created_at(first)
            if session_id is not None:
                self.session(session_id)  # into memory, so that a rollback can put it back
        if session_id is None:  # redacted before this state read it: nothing to drop
            return
        s = self.sessions.pop(session_id)
        self._by_created.pop(s.created_pos, None)
        self.dirty.discard(session_id)
        self.forgotten_ids.append(session_id)
        self._forgotten[session_id] = event.pos
        if self._undo is not None:
            self._undo.append(("session", session_id, s))
            self._undo.append(("forgot", session_id, None))

    def _drop_forgotten_receipts(self) -> None:
        if self._forgotten:
            self.recent_ids.drop_sessions(self._forgotten)
            self._forgotten = {}

    def _fold_created(self, event: ev.SessionCreated) -> None:
        if self.find(event.session_id) is not None:
            raise StateViolation(f"session {event.session_id!r} created twice")
        if event.model_id not in self.models:
            raise StateViolation(
                f"session {event.session_id!r} uses model "
                f"{event.model_id!r} before it is registered"
            )
        hard = event.hard_timeout_seconds
        if self._undo is not None:
            self._undo.append(("session", event.session_id, None))
        self.dirty.add(event.session_id)
        self.sessions[event.session_id] = SessionState(
            status=STATUS_AFTER[type(event)],
            last_seq=0,
            model_id=event.model_id,
            idle_timeout=event.idle_timeout_seconds,
            hard_timeout=hard,
            idle_since=event.when,
            hard_deadline=None if hard is None else ev.ts_seconds(event.when) + hard,
            created_pos=event.pos,
        )
        if self._by_created is not None:
            self._by_created[event.pos] = event.session_id

    def session(self, session_id: str) -> SessionState:
        """The session's state; StateViolation if the log never created it."""
        s = self.find(session_id)
        if s is None:
            raise StateViolation(f"event for unknown session {session_id!r}")
        return s

    def find(self, session_id: str) -> SessionState | None:
        """The session's state, from memory or else from the store (then kept in memory:
        it is about to change); None if there is no such session."""
        s = self.sessions.get(session_id)
        if s is None and self.store is not None:
            s = self.store.session(session_id)
            if s is not None:
                self.sessions[session_id] = s
                if self._by_created is not None:
                    self._by_created[s.created_pos] = session_id
        return s

    def peek(self, session_id: str) -> SessionState | None:
        """The session's state without keeping it in memory: for reads outside the lock,
        which must not bring in a state newer than what this one has folded."""
        s = self.sessions.get(session_id)
        if s is None and self.store is not None:
            s = self.store.session(session_id)
        return s

    def evict_ended(self) -> None:
        """Let go of the sessions that are no longer open (once a checkpoint holds them)."""
        for session_id in [sid for sid, s in self.sessions.items() if s.status not in OPEN]:
            del self.sessions[session_id]
        self._by_created = None
