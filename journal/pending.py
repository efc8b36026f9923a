"""The events a writer call (or a ``batch()`` block) has built but not yet written, in
their atomic groups, and the guard that takes a failed call's events back out of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from journal.events import AnyEvent
from journal.state import JournalState


@dataclass
class Pending:
    """Events built by the current call or ``batch()`` block, not yet written."""

    user_batch: bool
    groups: list[list[AnyEvent]] = field(default_factory=lambda: [[]])
    ts: str | None = None  # when these events are recorded: one time for all of them
    token: int = 0  # the durability token of their write, once written
    # Whether the writer's state was caught up with the log under this hold of its lock
    # (always, where a lock spans the writers): see ``LogBackend.lock_spans_writers``.
    fresh: bool = True

    def split(self) -> None:
        """Start a new atomic group (ignored inside a user's batch, which is one group)."""
        if not self.user_batch and self.groups[-1]:
            self.groups.append([])


class InGroup:
    """A call inside a batch (or create_session's first message) adds to its group; if it
    fails and the caller catches the error, nothing of this call may stay in the group.

    A class, not a generator context manager: it is entered once per call in a batch,
    where the generator's overhead was a tenth of the time of an append.
    """

    __slots__ = ("_mark", "_n_groups", "_n_last", "_pending", "_state")

    def __init__(self, state: JournalState, pending: Pending) -> None:
        self._state, self._pending = state, pending

    def __enter__(self) -> Pending:
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
