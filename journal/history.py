"""Appending history read back from an archive (``session-journal retain``'s) or another log.

Each event keeps its id and the time it happened (its ``at``, else its ``ts``, becomes
the new record's ``at``, the time the projection shows); it gets a new position and is
recorded now. The events are checked as the log's own are when a writer reads it (a
session created once, gapless seqs, a known model), then written as one atomic group.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from msgspec import UNSET

from journal.errors import InvalidValue
from journal.events import AnyEvent, Redacted, SessionForgotten
from journal.operation_base import OperationBase
from journal.state import Receipt, StateViolation


class History(OperationBase):
    """``Journal.reappend``."""

    def reappend(self, events: Sequence[AnyEvent]) -> list[Receipt]:
        """Append ``events`` (decoded records) as one atomic group, each keeping its id and
        time; an event whose id is among the log's recent ids is not appended again (its
        first receipt comes back, marked duplicate), so an import can be run again."""
        receipts: list[Receipt] = []
        with self._writing(user_batch=True) as w:
            for event in events:
                if isinstance(event, (SessionForgotten, Redacted)):
                    raise InvalidValue(
                        f"position {event.pos}: a {event.__struct_config__.tag} record is "
                        "the log's own and cannot be appended; nothing was written"
                    )
                seen = self._state.recent_ids.get(event.id) if event.id else None
                if seen is not None:
                    receipts.append(seen[1]._replace(duplicate=True))
                    continue
                bare = msgspec.structs.replace(event, grp=UNSET, at=UNSET)
                try:
                    receipts.append(self._add(w, bare, event.id or None, at=event.when))
                except StateViolation as exc:
                    raise InvalidValue(
                        f"position {event.pos} (event {event.id}): {exc}; nothing was written"
                    ) from None
        return receipts
