"""Applying one event to the projection: one function per event type.

The projector inserts and updates facts taken from the event; the triggers of
``schema/30_triggers.sql`` keep the counters, ``last_activity``/``updated_at`` after a
message, the timeout mirror, the ``pre_archive`` snapshot and the full-text index's
renames and deletions. Every
time stored is the event's (``event.when``: ``at`` for imported history, else ``ts``) and
every row id comes from the log, so applying the same events always yields the same rows.

Status changes follow journal/state.py exactly: a message wakes an idle or paused session
(in the message trigger); ``session_timed_out`` makes it idle (``idle``) or expired
(``hard``); ``session_restored`` makes it active with fresh deadlines and, for a deleted
session, first brings it back from its ``pre_delete`` snapshot, messages included (same
message ids and seqs); ``session_deleted`` removes the session's rows but not its snapshots.

The full-text index gets new messages once per batch (``fill_fts``, called by the
catch-up just before each commit) rather than from an AFTER INSERT trigger: on 20,500
events (500 sessions x 40 messages), batches of 2,000, the trigger ran at 13.6k-15.6k
events/s and the per-batch insert at 26.1k-28.0k events/s (3 runs each, 2-core machine).
A deletion, rare, stays with a trigger (messages_ad); a rename leaves the index alone (it
holds the messages' own text only).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar, assert_never

import msgspec

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
    encode_json,
    format_ts,
    parse_ts,
)
from projector.message_rows import INSERT_MESSAGE_SQL, SnapshotMessage, message_row


class ApplyError(ValueError):
    """The event cannot be applied; the caller adds the line and offset."""

    def __init__(self, reason: str, session_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.session_id = session_id


class SnapshotMetadata(msgspec.Struct, frozen=True):
    metadata_id: int
    key: str
    value: str | None


M = TypeVar("M", SnapshotMessage, msgspec.Raw)


class SnapshotContext(msgspec.Struct, Generic[M], frozen=True):
    """A session and its messages as of a snapshot (the seed's context, extended).

    ``SnapshotContext[SnapshotMessage]`` decodes the messages; ``SnapshotContext[Raw]``
    leaves each one undecoded, a slice of the text (the bulk path copies them as they are).
    """

    session_id: str
    title: str | None
    model_id: str | None
    model_name: str | None
    created_at: str
    status: str
    message_count: int
    total_tokens: int
    total_duration_seconds: float
    idle_timeout_seconds: int | None
    hard_timeout_seconds: int | None
    expires_at: str | None
    last_activity: str
    metadata: list[SnapshotMetadata]
    messages: list[M]
    snapshot_reason: str
    snapshot_time: str


_context_decoder = msgspec.json.Decoder(SnapshotContext[SnapshotMessage])
# The session columns a snapshot copies, in the order snapshot_context selects them.
SNAPSHOT_SESSION_FIELDS = (
    "session_id", "title", "model_id", "model_name", "created_at", "status",
    "message_count", "total_tokens", "total_duration_seconds", "idle_timeout_seconds",
    "hard_timeout_seconds", "expires_at", "last_activity",
)  # fmt: skip


# New messages into the full-text index, in one statement per batch. Rows already there
# (a session restored in this batch inserts its own) are skipped.
FTS_FILL_SQL = """
INSERT INTO sessions_fts (rowid, session_id, content)
SELECT m.message_id, m.session_id, m.content
FROM messages AS m
WHERE m.message_id > ?
  AND NOT EXISTS (SELECT 1 FROM sessions_fts AS f WHERE f.rowid = m.message_id)
ORDER BY m.message_id
"""


# A restored session's messages (their ids older than the batch) into the index.
RESTORED_FTS_SQL = (
    "INSERT INTO sessions_fts (rowid, session_id, content) "
    "SELECT m.message_id, m.session_id, m.content FROM messages AS m "
    "WHERE m.session_id = ? "
    "AND NOT EXISTS (SELECT 1 FROM sessions_fts AS f WHERE f.rowid = m.message_id)"
)


def fill_fts(conn: sqlite3.Connection, after_pos: int) -> None:
    """Index the messages of events after ``after_pos`` (the batch's starting checkpoint)."""
    conn.execute(FTS_FILL_SQL, (after_pos,))


def apply_event(conn: sqlite3.Connection, event: AnyEvent) -> None:
    """Apply one event inside the caller's transaction; raises ApplyError or sqlite3.Error."""
    match event:
        case ModelRegistered():
            _model_registered(conn, event)
        case SessionCreated():
            _session_created(conn, event)
        case MessageAppended():
            _message_appended(conn, event)
        case SessionMetadataSet():
            _metadata_set(conn, event)
        case SessionRenamed():
            _update(conn, event.session_id, event, title=event.title)
        case SessionPaused():
            _update(conn, event.session_id, event, status="paused")
        case SessionResumed():
            _update(conn, event.session_id, event, status="active", last_activity=event.when)
        case TimeoutWarning():
            _timeout_warning(conn, event)
        case SessionTimedOut():
            status = "idle" if event.kind == "idle" else "expired"
            _update(conn, event.session_id, event, status=status)
        case SessionArchived():
            # The create_snapshot_on_archive trigger takes the pre_archive snapshot, with
            # snapshot_id = last_event_pos = this event's pos.
            _update(conn, event.session_id, event, status="archived")
        case SessionSnapshotted():
            _snapshotted(conn, event)
        case SessionRestored():
            _restored(conn, event)
        case SessionDeleted():
            _deleted(conn, event)
        case _:
            assert_never(event)


def _model_registered(conn: sqlite3.Connection, e: ModelRegistered) -> None:
    # A repeated registration changes nothing, as in journal/state.py.
    conn.execute(
        "INSERT INTO models (model_id, model_name, provider, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (model_id) DO NOTHING",
        (e.model_id, e.model_name, e.provider, e.when),
    )


def _plus_seconds(when: str, seconds: int | None, session_id: str) -> str | None:
    if seconds is None:
        return None
    try:
        return format_ts(parse_ts(when) + timedelta(seconds=seconds))
    except OverflowError:  # only a log from before the writer kept times in range
        raise ApplyError(
            f"the deadline {seconds} s after {when} lies past the end of the calendar",
            session_id,
        ) from None


def _session_created(conn: sqlite3.Connection, e: SessionCreated) -> None:
    if conn.execute("SELECT 1 FROM models WHERE model_id = ?", (e.model_id,)).fetchone() is None:
        raise ApplyError(f"session uses model {e.model_id!r}, never registered", e.session_id)
    try:
        conn.execute(
            "INSERT INTO sessions (session_id, created_at, updated_at, model_id, model_name, "
            "title, last_activity, status, idle_timeout_seconds, hard_timeout_seconds, "
            "expires_at, last_event_pos) "
            "VALUES (?, ?, ?, ?, COALESCE(?, (SELECT model_name FROM models WHERE model_id = ?)),"
            " ?, ?, 'active', ?, ?, ?, ?)",
            (
                e.session_id,
                e.when,
                e.when,
                e.model_id,
                e.model_name,
                e.model_id,
                e.title,
                e.when,
                e.idle_timeout_seconds,
                e.hard_timeout_seconds,
                _plus_seconds(e.when, e.hard_timeout_seconds, e.session_id),
                e.pos,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise ApplyError(f"session created twice ({exc})", e.session_id) from exc


def _message_appended(conn: sqlite3.Connection, e: MessageAppended) -> None:
    # No lookup first: the foreign key rejects an unknown session and the
    # messages_seq_check trigger a duplicate or missing seq, at no cost to the good case.
    try:
        conn.execute(INSERT_MESSAGE_SQL, message_row(e))
    except sqlite3.IntegrityError as exc:
        if "FOREIGN KEY" in str(exc):
            raise ApplyError("message for an unknown (or deleted) session", e.session_id) from exc
        last = conn.execute(
            "SELECT message_count FROM sessions WHERE session_id = ?", (e.session_id,)
        ).fetchone()
        raise ApplyError(
            f"message seq {e.seq} after seq {last[0] if last else '?'} "
            f"(seqs must be gapless and unique: {exc})",
            e.session_id,
        ) from exc


def _metadata_set(conn: sqlite3.Connection, e: SessionMetadataSet) -> None:
    _update(conn, e.session_id, e)
    if e.value is None:
        conn.execute(
            "DELETE FROM session_metadata WHERE session_id = ? AND key = ?", (e.session_id, e.key)
        )
        return
    # The row keeps the id (pos) of the event that first set the key.
    conn.execute(
        "INSERT INTO session_metadata (metadata_id, session_id, key, value) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value",
        (e.pos, e.session_id, e.key, e.value),
    )


def _timeout_warning(conn: sqlite3.Connection, e: TimeoutWarning) -> None:
    cur = conn.execute(
        "UPDATE session_timeouts SET timeout_warning_sent = 1, warning_sent_at = ? "
        "WHERE session_id = ?",
        (e.when, e.session_id),
    )
    if cur.rowcount != 1:
        raise ApplyError("timeout warning for an unknown (or deleted) session", e.session_id)


# Columns an event may set besides updated_at and last_event_pos (an allow-list: the
# names are formatted into SQL, the values always bound).
_SETTABLE = frozenset({"title", "status", "last_activity", "expires_at"})


def _update(conn: sqlite3.Connection, session_id: str, e: AnyEvent, **values: Any) -> None:
    """Set columns of one session, stamping updated_at and last_event_pos from the event."""
    assert _SETTABLE.issuperset(values)
    sets = "".join(f"{name} = ?, " for name in values)
    cur = conn.execute(
        f"UPDATE sessions SET {sets}updated_at = ?, last_event_pos = ? WHERE session_id = ?",
        (*values.values(), e.when, e.pos, session_id),
    )
    if cur.rowcount != 1:
        raise ApplyError(
            f"{type(e).__struct_config__.tag} for an unknown (or deleted) session", session_id
        )


def _exists(conn: sqlite3.Connection, session_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM sessions WHERE session_id = ?", (session_id,)).fetchone()
    return row is not None


# A session's messages as a snapshot keeps them, in seq order.
SNAPSHOT_MESSAGES_SQL = (
    "SELECT message_id, sequence_number, role, content, timestamp, tokens_used, "
    "duration_seconds, metadata, tool_calls, tool_call_id, raw FROM messages "
    "WHERE session_id = ? ORDER BY sequence_number"
)
INSERT_SNAPSHOT_SQL = (
    "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
    "message_count, total_tokens, context_json, note, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT), ?, ?)"
)
_snapshot_encoder = msgspec.json.Encoder()  # configured as the log's encoder (encode_json)
MESSAGES_OPEN = b',"messages":['
MESSAGES_CLOSE = b'],"snapshot_reason":'
_MESSAGES_CUT = MESSAGES_OPEN + MESSAGES_CLOSE  # an empty list of messages


def snapshot_json(
    head: SnapshotContext[SnapshotMessage], rows: Iterable[Sequence[Any]]
) -> bytearray:
    """``encode_json`` of ``head`` with ``messages`` (empty in ``head``) made of ``rows``
    (SNAPSHOT_MESSAGES_SQL's), built in one buffer as the rows stream past: a long
    session's snapshot is never held as rows, structs and text at once. Bound with
    ``CAST(? AS TEXT)``, the buffer is stored as the same text its decoded string would be.
    """
    out = bytearray()
    snapshot_json_into(out, head, rows)
    return out


def snapshot_json_into(
    out: bytearray,
    head: SnapshotContext[SnapshotMessage],
    rows: Iterable[Sequence[Any]],
    after_message: Callable[[bytearray], None] | None = None,
    earlier: Callable[[bytearray], bool] | None = None,
) -> tuple[int, int]:
    """``snapshot_json`` into ``out``, calling ``after_message(out)`` after each message
    (the bulk path empties ``out`` there as it grows). ``earlier``, if given, writes
    encoded messages before ``rows`` (without brackets; True if there were any). Returns
    where the messages start and the length of what follows them."""
    whole = encode_json(head)
    # Inside a JSON string every '"' is escaped, so this text can only be the field itself.
    cut = whole.rindex(_MESSAGES_CUT) + len(MESSAGES_OPEN)
    out += whole[:cut]
    sep = earlier(out) if earlier is not None else False
    encode_into = _snapshot_encoder.encode_into
    for r in rows:
        if sep:
            out += b","
        sep = True
        encode_into(SnapshotMessage(*r), out, -1)
        if after_message is not None:
            after_message(out)
    tail = whole[cut:]  # from the closing bracket on
    out += tail
    return cut, len(tail)


def snapshot_context(
    conn: sqlite3.Connection, session_id: str, reason: str, when: str
) -> bytearray:
    """The session and its messages as JSON, as they are now (deterministic bytes)."""
    row = conn.execute(
        "SELECT session_id, title, model_id, model_name, created_at, status, message_count, "
        "total_tokens, total_duration_seconds, idle_timeout_seconds, hard_timeout_seconds, "
        "expires_at, last_activity FROM sessions WHERE session_id = ?",
        (session_id,),
    ).fetchone()
    if row is None:
        raise ApplyError("snapshot of an unknown (or deleted) session", session_id)
    metadata = [
        SnapshotMetadata(*r)
        for r in conn.execute(
            "SELECT metadata_id, key, value FROM session_metadata WHERE session_id = ? "
            "ORDER BY key",
            (session_id,),
        )
    ]
    names = SNAPSHOT_SESSION_FIELDS
    head = SnapshotContext(
        **dict(zip(names, row, strict=True)),
        metadata=metadata,
        messages=[],
        snapshot_reason=reason,
        snapshot_time=when,
    )
    return snapshot_json(head, conn.execute(SNAPSHOT_MESSAGES_SQL, (session_id,)))


def _snapshotted(conn: sqlite3.Connection, e: SessionSnapshotted) -> None:
    context = snapshot_context(conn, e.session_id, e.reason, e.when)
    count, tokens = conn.execute(
        "SELECT message_count, total_tokens FROM sessions WHERE session_id = ?", (e.session_id,)
    ).fetchone()
    # snapshot_type is the event's reason (the seed stored 'timeout_warning' whatever the
    # reason was).
    conn.execute(
        INSERT_SNAPSHOT_SQL,
        (e.pos, e.session_id, e.reason, e.when, count, tokens, context, e.note, e.when),
    )


def _restored(conn: sqlite3.Connection, e: SessionRestored) -> None:
    if not _exists(conn, e.session_id):
        if e.snapshot_pos is None:
            raise ApplyError("restore of a deleted session without a snapshot_pos", e.session_id)
        _recreate_from_snapshot(conn, e.session_id, e.snapshot_pos)
    hard = conn.execute(
        "SELECT hard_timeout_seconds FROM sessions WHERE session_id = ?", (e.session_id,)
    ).fetchone()
    _update(
        conn,
        e.session_id,
        e,
        status="active",
        last_activity=e.when,
        expires_at=_plus_seconds(e.when, hard[0], e.session_id),
    )


def _recreate_from_snapshot(conn: sqlite3.Connection, session_id: str, snapshot_pos: int) -> None:
    """Bring a deleted session back, rows and ids as they were when the snapshot was taken."""
    row = conn.execute(
        "SELECT session_id, context_json FROM session_snapshots WHERE snapshot_id = ?",
        (snapshot_pos,),
    ).fetchone()
    if row is None or row[0] != session_id:
        raise ApplyError(f"restore from snapshot {snapshot_pos}, not a snapshot of this session")
    ctx = _context_decoder.decode(row[1])
    conn.execute(
        "INSERT INTO sessions (session_id, created_at, updated_at, model_id, model_name, title, "
        "last_activity, status, idle_timeout_seconds, hard_timeout_seconds, expires_at, "
        "last_event_pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            session_id,
            ctx.created_at,
            ctx.created_at,
            ctx.model_id,
            ctx.model_name,
            ctx.title,
            ctx.created_at,
            # The status it had; the restore's own update makes it active.
            ctx.status,
            ctx.idle_timeout_seconds,
            ctx.hard_timeout_seconds,
            ctx.expires_at,
            snapshot_pos,
        ),
    )
    conn.executemany(
        "INSERT INTO session_metadata (metadata_id, session_id, key, value) VALUES (?, ?, ?, ?)",
        [(m.metadata_id, session_id, m.key, m.value) for m in ctx.metadata],
    )
    # Inserted in seq order, so the triggers rebuild the counters exactly as the
    # incremental path did (the same additions, in the same order).
    conn.executemany(INSERT_MESSAGE_SQL, [m.row(session_id) for m in ctx.messages])
    # Their ids are older than the batch, so fill_fts would not see them: index them now.
    conn.execute(RESTORED_FTS_SQL, (session_id,))


def _deleted(conn: sqlite3.Connection, e: SessionDeleted) -> None:
    # Messages, metadata and timeouts go by ON DELETE CASCADE (their triggers clean the
    # full-text index); snapshots have no foreign key and stay.
    cur = conn.execute("DELETE FROM sessions WHERE session_id = ?", (e.session_id,))
    if cur.rowcount != 1:
        raise ApplyError("delete of an unknown (or already deleted) session", e.session_id)
