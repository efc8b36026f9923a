"""Forgetting sessions: the one operation that takes something out of the log.

``forget`` appends a ``session_forgotten`` record per session (the positions of its
records, nothing personal, not even the id), then has the log backend overwrite each of
those records in place with a ``redacted`` record of the same length, so every other
record keeps its position, id and byte offset. Before that, the session's bytes are
removed from where torn tails were moved aside. Projectors purge the session's rows when
they meet the record. The redaction is prepared before the records are appended
(``LogBackend.plan_redaction``): a writer stopped part way leaves it to the next writer
that opens the log, which completes it if the records were appended, and drops it if not.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from journal.errors import ConflictError, InvalidValue, UnknownSession
from journal.events import SessionForgotten
from journal.operation_base import OperationBase
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
        with self._writing(user_batch=True) as w:
            dup = self._duplicate(event_id, "session_forgotten", None)
            if dup is not None:
                return [dup]
            for session_id in session_ids:
                if self._state.find(session_id) is None:
                    raise UnknownSession(session_id)
            found = {
                sid: as_ranges(positions)
                for sid, positions in self._log.find_sessions(session_ids).items()
            }
            for session_id, positions in (expected or {}).items():
                if found.get(session_id) != positions:
                    raise ConflictError(
                        f"session {session_id!r} changed after it was copied (its records "
                        "are not those expected); nothing was forgotten"
                    )
            for session_id in session_ids:
                self._log.scrub_torn(session_id)
            every = tuple(sorted(r for sid in session_ids for r in found[sid]))
            self._log.plan_redaction(every, len(session_ids))
            receipts = [
                self._add(w, SessionForgotten(positions=found[sid]), event_id)
                for sid in session_ids
            ]
        with self._log.exclusive():
            self._log.redact(every)
        return receipts
