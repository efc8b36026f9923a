"""Forgetting sessions: the one operation that takes something out of the log.

``forget`` appends a ``session_forgotten`` record per session (the positions of its
records, nothing personal, not even the id), then has the log backend overwrite each of
those records in place with a ``redacted`` record of the same length, so every other
record keeps its position, id and byte offset. Before that, the session's bytes are
removed from where torn tails were moved aside. Projectors purge the session's rows when
they meet the record. The redaction is prepared before the records are appended
(``LogBackend.plan_redaction``): a writer stopped part way leaves it to the next writer
that opens the log, which completes it if the records were appended, and drops it if not.

Where no lock spans the writers (a stream), another host may append while the records are
searched for: the forgettings' append is then refused and the forgetting tried again,
searching only what was appended since (a whole search of a long log takes seconds, and a
busy log is appended to far more often).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from journal.errors import ConflictError, InvalidValue, UnknownSession
from journal.events import SessionForgotten
from journal.log import START, AppendConflict
from journal.operation_base import CONFLICT_WAIT_S, OperationBase
from journal.state import Receipt
from journal.validation import check_session_id

Ranges = tuple[tuple[int, int], ...]


def as_ranges(positions: list[int]) -> Ranges:
    """Ascending positions as inclusive ``(first, last)`` ranges of consecutive ones."""
    ranges: list[tuple[int, int]] = []
    for pos in positions:
        if ranges and ranges[-1][1] == pos - 1:
            ranges[-1] = (ranges[-1][0], pos)
        else:
            ranges.append((pos, pos))
    return tuple(ranges)


class Forgetting(OperationBase):
    """``Journal.forget`` and ``Journal.forget_many``."""

    def forget(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Erase the session from the log, whatever its status: zero residue, nothing else
        changed (see the module docstring). Afterwards the id can be used again.

        The log is read whole to find the session's records, under the lock: other
        appends wait meanwhile.
        """
        return self._forget([session_id], event_id)[0]

    def forget_many(
        self, session_ids: Sequence[str], *, expected: Mapping[str, Ranges] | None = None
    ) -> list[Receipt]:
        """Forget several sessions with one reading of the log; all are recorded as one
        atomic group, then redacted. Every id must name a session.

        ``expected``: the positions of each session's records the caller copied elsewhere
        (an archive): if the log holds other records of one of them now, nothing is
        forgotten (ConflictError).
        """
        return self._forget(list(dict.fromkeys(session_ids)), None, expected)

    def _forget(
        self,
        session_ids: list[str],
        event_id: str | None,
        expected: Mapping[str, Ranges] | None = None,
    ) -> list[Receipt]:
        for session_id in session_ids:
            check_session_id(session_id)
        if self._pending is not None and self._pending_owner == threading.get_ident():
            raise InvalidValue("forgetting is an operation of its own: not inside batch()")
        search = _Search(session_ids)
        if not self._log.lock_spans_writers:
            # The whole search, and the plan, before the race for the log's end: each try
            # then searches only what was appended since, and plans again only if that
            # found more of the sessions.
            with self._log.exclusive():
                self._catch_up()
                search.search(self)
                self._log.plan_redaction(search.ranges(), len(session_ids))
                search.planned = search.ranges()
        deadline = time.monotonic() + CONFLICT_WAIT_S
        while True:
            try:
                receipts, every = self._forget_once(search, event_id, expected)
                break
            except AppendConflict:
                if self._log.lock_spans_writers or time.monotonic() > deadline:
                    raise
        if receipts and every is not None:
            with self._log.exclusive():
                self._log.redact(every)
        return receipts

    def _forget_once(
        self, search: _Search, event_id: str | None, expected: Mapping[str, Ranges] | None
    ) -> tuple[list[Receipt], Ranges | None]:
        """One try: the receipts, and the positions to redact (None: a retry answered)."""
        session_ids = search.session_ids
        with self._writing(user_batch=True) as w:
            dup = self._duplicate(event_id, "session_forgotten", None)
            if dup is not None:
                return [dup], None
            for session_id in session_ids:
                if self._state.find(session_id) is None:
                    raise UnknownSession(session_id)
            search.search(self)
            found = {sid: as_ranges(sorted(search.seen[sid])) for sid in session_ids}
            for session_id, positions in (expected or {}).items():
                if found.get(session_id) != positions:
                    raise ConflictError(
                        f"session {session_id!r} changed after it was copied (its records "
                        "are not those expected); nothing was forgotten"
                    )
            for session_id in session_ids:
                self._log.scrub_torn(session_id)
            every = search.ranges()
            if every != search.planned:
                self._log.plan_redaction(every, len(session_ids))
                search.planned = every
            receipts = [
                self._add(w, SessionForgotten(positions=found[sid]), event_id)
                for sid in session_ids
            ]
        return receipts, every


class _Search:
    """The records of the sessions being forgotten found so far, and where the search
    has reached: at least where the writer had read the log up to when it searched."""

    def __init__(self, session_ids: list[str]) -> None:
        self.session_ids = session_ids
        self.seen: dict[str, set[int]] = {sid: set() for sid in session_ids}
        self.after, self.pos = START, 0
        self.planned: Ranges | None = None

    def search(self, journal: Forgetting) -> None:
        """Search what follows the last search (the log held, the writer caught up): at
        first, from the earliest creation of the sessions, since a session has no record
        before its creation (those of a forgotten session of the same id are redacted)."""
        first_pos = self._first_created(journal) if self.after == START else 0
        found = journal._log.find_sessions(self.session_ids, self.after, self.pos, first_pos)
        for sid, hits in found.items():
            self.seen[sid].update(hits)
        self.after, self.pos = journal._end, journal._state.last_pos

    def _first_created(self, journal: Forgetting) -> int:
        """Where the earliest of the sessions was created (0: one is unknown)."""
        states = [journal._state.find(sid) for sid in self.session_ids]
        return min((s.created_pos if s is not None else 0 for s in states), default=0)

    def ranges(self) -> Ranges:
        """Every record found, of every session, as ranges."""
        return tuple(
            sorted(r for sid in self.session_ids for r in as_ranges(sorted(self.seen[sid])))
        )
