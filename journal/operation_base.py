"""What every operation of the writer stands on: the hand-over of concurrent calls
(``combined``) and the idempotency and session-status checks.

``OperationBase`` is the base of ``journal.operations.Operations``, which
``journal.writer.Journal`` extends with the machinery that locks, reads and appends to the
log; the members of that machinery the operations call are declared here for the type
checker only.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Concatenate, Final, ParamSpec, TypeVar

from journal.commit import Call, Combiner, Ticket
from journal.errors import IdempotencyConflict, InvalidState, UnknownSession
from journal.events import AnyEvent, Event
from journal.lifecycle import DELETED, Rule
from journal.log import LogBackend
from journal.log.backend import Cursor
from journal.pending import Pending
from journal.state import JournalState, Receipt, SessionState
from journal.validation import check_event_id, check_session_id

# A write that keeps losing the race to other hosts for this long raises AppendConflict
# (on a log no lock spans; a file log never conflicts under its lock). Losers are not
# served in turn: a writer that just appended knows the end at once.
CONFLICT_WAIT_S: Final = 20.0

E = TypeVar("E", bound=Event)
W = TypeVar("W", bound="OperationBase")
P = ParamSpec("P")
T = TypeVar("T")


def combined(method: Callable[Concatenate[W, P], T]) -> Callable[Concatenate[W, P], T]:
    """A writing method whose calls from concurrent threads share one write and one fsync
    (``journal.commit``). Inside ``batch()``, or run by the combiner, it runs in place."""

    def combined(self: W, /, *args: P.args, **kwargs: P.kwargs) -> T:
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


class OperationBase:
    """The checks every operation makes, on the writer's state."""

    if TYPE_CHECKING:  # provided by journal.writer.Journal
        _state: JournalState
        _log: LogBackend
        _end: Cursor
        _combiner: Combiner
        _pending: Pending | None
        _pending_owner: int | None
        _new_id: Callable[[], str]

        def _now(self) -> str: ...

        def _catch_up(self) -> None: ...

        def _writing(self, user_batch: bool = False) -> AbstractContextManager[Pending]: ...

        def _add(
            self, pending: Pending, event: E, event_id: str | None, at: str | None = None
        ) -> Receipt: ...

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

    def _session(self, session_id: str, rule: Rule, *, reading: bool = False) -> SessionState:
        """The session, if its status allows the operation (``journal.lifecycle``).
        ``reading``: for a read outside the log's lock (``JournalState.peek``)."""
        check_session_id(session_id)
        s = self._state.peek(session_id) if reading else self._state.find(session_id)
        if s is None:
            raise UnknownSession(session_id)
        allowed = rule.allowed
        if s.status == DELETED and (allowed is None or DELETED not in allowed):
            raise UnknownSession(session_id, deleted=True)
        if allowed is not None and s.status not in allowed:
            raise InvalidState(session_id, s.status, rule.operation)
        return s

    def _simple(
        self, event: AnyEvent, rule: Rule, event_id: str | None, at: str | None = None
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
            self._session(session_id, rule)
            return self._add(w, event, event_id, at)
