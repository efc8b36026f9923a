"""A session's lifecycle, stated once: its statuses, the status each event leaves it in,
and which statuses allow each of the writer's operations.

The writer checks an operation's ``Rule`` before it appends anything; the state it folds
from the log (``journal.state``) moves a session between statuses by ``STATUS_AFTER`` and
its companions below. Both read this module, so what the writer allows and what the events
it writes do to a session cannot drift apart.

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

from collections.abc import Mapping
from typing import Final, NamedTuple

import journal.events as ev

ACTIVE: Final = "active"
IDLE: Final = "idle"
PAUSED: Final = "paused"
EXPIRED: Final = "expired"
ARCHIVED: Final = "archived"
DELETED: Final = "deleted"
STATUSES: Final = frozenset({ACTIVE, IDLE, PAUSED, EXPIRED, ARCHIVED, DELETED})

# Statuses in which a session takes new messages.
OPEN_STATUSES: Final = frozenset({ACTIVE, IDLE, PAUSED})
# Statuses whose timeouts run (a paused session's are suspended): what expire_due looks at.
TIMED_STATUSES: Final = frozenset({ACTIVE, IDLE})
# Closed statuses, which restore() reopens: InvalidState says so when one forbids an operation.
CLOSED_STATUSES: Final = frozenset({EXPIRED, ARCHIVED})
# Statuses no one writes in any more (a restore aside): what retention archives and forgets.
ENDED_STATUSES: Final = CLOSED_STATUSES | {DELETED}

# -- what each event changes ----------------------------------------------------------
# session_timed_out's kinds (events.TimeoutKind); an idle timeout is named after the
# status it leaves a session in.
IDLE_TIMEOUT: Final[ev.TimeoutKind] = IDLE
HARD_TIMEOUT: Final[ev.TimeoutKind] = "hard"

# The status an event leaves its session in, for the events that set one outright.
STATUS_AFTER: Final[Mapping[type[ev.Event], str]] = {
    ev.SessionCreated: ACTIVE,
    ev.SessionResumed: ACTIVE,
    ev.SessionRestored: ACTIVE,
    ev.SessionPaused: PAUSED,
    ev.SessionArchived: ARCHIVED,
    ev.SessionDeleted: DELETED,
}
# session_timed_out leaves its session in the status its kind says.
STATUS_AFTER_TIMEOUT: Final[Mapping[ev.TimeoutKind, str]] = {
    IDLE_TIMEOUT: IDLE,
    HARD_TIMEOUT: EXPIRED,
}
# A message makes an idle or paused session active again; any other keeps its status.
REOPENED_BY_MESSAGE: Final = frozenset({IDLE, PAUSED})


# -- which statuses allow each operation ----------------------------------------------
class Rule(NamedTuple):
    """An operation, as errors name it (``cannot {operation}``), and the statuses that
    allow it. ``None`` allows every status but deleted: a deleted session is unknown to
    any operation whose statuses do not name it."""

    operation: str
    allowed: frozenset[str] | None


APPEND_MESSAGE: Final = Rule("append a message", OPEN_STATUSES)
SET_METADATA: Final = Rule("set metadata", None)
RENAME: Final = Rule("rename", None)
# Withdrawing messages: in the statuses that take new ones, which it makes room for.
TRUNCATE: Final = Rule("withdraw messages", OPEN_STATUSES)
SNAPSHOT: Final = Rule("snapshot", None)
DELETE: Final = Rule("delete", None)
PAUSE: Final = Rule("pause", frozenset({ACTIVE, IDLE}))
RESUME: Final = Rule("resume", frozenset({PAUSED}))
ARCHIVE: Final = Rule("archive", frozenset({ACTIVE, IDLE, PAUSED, EXPIRED}))
TIME_OUT: Final[Mapping[str, Rule]] = {
    IDLE_TIMEOUT: Rule("time out", frozenset({ACTIVE})),
    HARD_TIMEOUT: Rule("time out", frozenset({ACTIVE, IDLE, PAUSED})),
}
RESTORE: Final = Rule("restore", frozenset({IDLE, EXPIRED, ARCHIVED, DELETED}))
# Reads: last_seq knows no deleted session; status() tells any status, deleted included.
READ: Final = Rule("read", None)
READ_STATUS: Final = Rule("read", STATUSES)
