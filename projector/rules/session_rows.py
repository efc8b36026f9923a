"""What each event does to a session's row: the projection's rules, stated once.

Both ways of applying the log take them from here: ``projector.rules.apply``, one event at a
time in SQL (catch-up, replay, the live watcher), and ``projector.sync.bulk``, the log folded
in Python (rebuild, a long catch-up). The two batch and order their writes differently,
but neither says again what an event does; tests/test_bulk_rebuild.py holds their rows
equal.

Where each rule lives:

* Creation, ``created_row``: a session starts active with no messages, its idle clock
  started and its hard deadline (``deadline``) counted from its creation; without a model
  name of its own it takes its registered model's.
* Every other event that changes a session, ``changes`` and ``restored``: the columns it
  sets, its own time and pos stamped as ``updated_at`` and ``last_event_pos``. A rename
  sets the title; a pause, resume, timeout (``idle`` or ``expired`` by its kind) or archive
  the status; a resume restarts the idle clock (``last_activity``); a restore makes the
  session active, restarts its idle clock and counts a fresh hard deadline from then.
* A timeout warning marks the session warned, ``warned``.
* Withdrawing messages (``messages_truncated``) removes those after its seq; the session's
  counters become those of the messages kept, ``truncated``: the insert trigger's
  arithmetic over them in seq order, so the totals are the same float, bit for bit, as
  if the withdrawn messages had never come.
* A deleted session being restored comes back as its snapshot holds it,
  ``recreated_row``; its messages are then added again, in seq order, as messages.
* A forgotten session (``session_forgotten``) loses every row, its snapshots included,
  and its redacted records project nothing: ``projector.forgetting``, on both paths (the
  bulk one hands a forgetting with anything to purge to the per-event one).
* A metadata value sets its key, which keeps the id (pos) of the event that first set it;
  a null value removes the key. This one is about ``session_metadata``'s rows, not the
  session's, and each path writes it in its own terms: an upsert in
  ``apply._metadata_set``, a dict in ``bulk.Loader._metadata_set``.

Three rules run inside the SQL statements of the per-event path, so that a message costs
one INSERT: ``schema/30_triggers.sql`` carries them out there, and the bulk fold follows
them through the names below (the counters' arithmetic in ``bulk.Loader._add_message``,
in the trigger's order, so that even the float sums agree); tests/test_rules.py holds
each trigger equal to its statement here, for every status:

* a message adds its tokens and duration (a NULL as 0) to the session's totals, becomes
  its last activity and update, and wakes an idle or paused session,
  ``status_after_message``: trigger ``update_message_count_insert``;
* a new ``last_activity`` (a message, resume or restore) clears the warning,
  ``NOT_WARNED``: trigger ``session_activity_au``;
* entering ``archived`` takes the ``pre_archive`` snapshot, ``takes_pre_archive``: trigger
  ``create_snapshot_on_archive``.

journal/state.py follows the same lifecycle to validate what the writer accepts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Final, assert_never

from journal import events as ev
from projector.rules.message_rows import SnapshotContext

ACTIVE: Final = "active"
# The statuses a message turns back into ACTIVE.
WOKEN_BY_MESSAGE: Final = frozenset({"idle", "paused"})
# A session's warning state, (timeout_warning_sent, warning_sent_at), after activity.
NOT_WARNED: Final = (0, None)

# The columns of a sessions row, in the order of created_row, recreated_row and
# bulk_sessions.FoldSession's fields.
SESSION_COLUMNS: Final = (
    "session_id", "created_at", "updated_at", "model_id", "model_name", "title",
    "message_count", "total_tokens", "total_duration_seconds", "last_activity", "status",
    "idle_timeout_seconds", "hard_timeout_seconds", "expires_at", "last_event_pos",
)  # fmt: skip

# The events ``changes`` knows: those that only set columns of their session.
Change = (
    ev.SessionRenamed
    | ev.SessionPaused
    | ev.SessionResumed
    | ev.SessionTimedOut
    | ev.SessionArchived
    | ev.SessionMetadataSet
    | ev.MessagesTruncated
)


class ApplyError(ValueError):
    """The event cannot be applied; the caller adds the line and offset."""

    def __init__(self, reason: str, session_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.session_id = session_id


def deadline(when: str, seconds: int | None, session_id: str) -> str | None:
    """The time ``seconds`` after ``when`` (None without a timeout)."""
    if seconds is None:
        return None
    try:
        return ev.format_ts(ev.parse_ts(when) + timedelta(seconds=seconds))
    except OverflowError:  # only a log from before the writer kept times in range
        raise ApplyError(
            f"the deadline {seconds} s after {when} lies past the end of the calendar",
            session_id,
        ) from None


def created_row(e: ev.SessionCreated, registered_name: str) -> tuple[Any, ...]:
    """The new session's row (SESSION_COLUMNS); ``registered_name``: its model's name."""
    when = e.when
    return (
        e.session_id, when, when, e.model_id,
        e.model_name if e.model_name is not None else registered_name, e.title, 0, 0, 0.0,
        when, ACTIVE, e.idle_timeout_seconds, e.hard_timeout_seconds,
        deadline(when, e.hard_timeout_seconds, e.session_id), e.pos,
    )  # fmt: skip


def recreated_row(session_id: str, ctx: SnapshotContext[Any], snapshot_pos: int) -> tuple[Any, ...]:
    """The row of a deleted session brought back from its snapshot, before its messages
    are added again: the times of its creation, the status and deadlines it had (the
    restore's own change follows), and the snapshot's pos as its last event."""
    created = ctx.created_at
    return (
        session_id, created, created, ctx.model_id, ctx.model_name, ctx.title, 0, 0, 0.0,
        created, ctx.status, ctx.idle_timeout_seconds, ctx.hard_timeout_seconds,
        ctx.expires_at, snapshot_pos,
    )  # fmt: skip


def changes(e: Change) -> dict[str, Any]:
    """The columns of its session the event sets, with their values."""
    values: dict[str, Any]
    match e:
        case ev.SessionRenamed():
            values = {"title": e.title}
        case ev.SessionPaused():
            values = {"status": "paused"}
        case ev.SessionResumed():
            values = {"status": ACTIVE, "last_activity": e.when}
        case ev.SessionTimedOut():
            values = {"status": "idle" if e.kind == "idle" else "expired"}
        case ev.SessionArchived():
            values = {"status": "archived"}
        case ev.SessionMetadataSet():  # its key and value go to session_metadata
            values = {}
        case ev.MessagesTruncated():  # its counters: ``truncated``
            values = {}
        case _:
            assert_never(e)
    values["updated_at"] = e.when
    values["last_event_pos"] = e.pos
    return values


Totals = tuple[int, int, float]  # message_count, total_tokens, total_duration_seconds


def add_message(totals: Totals, tokens: int | None, duration: float | None) -> Totals:
    """A session's counters once a message is added: the insert trigger's arithmetic."""
    count, used, took = totals
    return (
        count + 1,
        used + (tokens if tokens is not None else 0),
        took + (duration if duration is not None else 0),
    )


def kept_totals(kept: Iterable[tuple[int | None, float | None]]) -> Totals:
    """The counters of the messages ``kept`` (tokens and duration of each, in seq order),
    summed as they were added, so the float is the same, bit for bit."""
    totals: Totals = (0, 0, 0.0)
    for tokens, duration in kept:
        totals = add_message(totals, tokens, duration)
    return totals


def truncated(e: ev.MessagesTruncated, totals: Totals) -> dict[str, Any]:
    """The columns a truncation sets: the counters of the messages it keeps (``totals``),
    with ``changes``'s stamps. ApplyError if the session had fewer messages than it keeps."""
    count, tokens, duration = totals
    if count != e.keep_through_seq:
        raise ApplyError(
            f"messages withdrawn after seq {e.keep_through_seq}, but the session has {count}",
            e.session_id,
        )
    return {
        "message_count": count,
        "total_tokens": tokens,
        "total_duration_seconds": duration,
        **changes(e),
    }


# A truncation's statements, the same on both paths.
WITHDRAW_SQL: Final = "DELETE FROM messages WHERE session_id = ? AND sequence_number > ?"
KEPT_SQL: Final = (
    "SELECT tokens_used, duration_seconds FROM messages WHERE session_id = ? "
    "ORDER BY sequence_number"
)


def restored(e: ev.SessionRestored, hard_timeout_seconds: int | None) -> dict[str, Any]:
    """The columns a restore sets (``changes``'s for SessionRestored): the session is
    active again, its idle clock restarted and its hard deadline counted from now."""
    return {
        "status": ACTIVE,
        "last_activity": e.when,
        "expires_at": deadline(e.when, hard_timeout_seconds, e.session_id),
        "updated_at": e.when,
        "last_event_pos": e.pos,
    }


def warned(when: str) -> tuple[int, str]:
    """The warning state, as NOT_WARNED, after a timeout_warning at ``when``."""
    return (1, when)


def status_after_message(status: str) -> str:
    """The session's status once a message is added (trigger update_message_count_insert)."""
    return ACTIVE if status in WOKEN_BY_MESSAGE else status


def takes_pre_archive(old_status: str, new_status: str) -> bool:
    """Whether this change of status takes a pre_archive snapshot (trigger
    create_snapshot_on_archive)."""
    return new_status == "archived" and old_status != "archived"
