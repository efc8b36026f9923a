"""Applying one event to the projection: one function per event type.

The projector inserts and updates facts taken from the event, with the values
``projector.rules.session_rows`` gives (a new session's row, the columns each event sets, its
deadlines); the triggers of ``schema/30_triggers.sql`` keep the counters,
``last_activity``/``updated_at`` and the status after a message, the timeout mirror, the
warning's reset on activity, the ``pre_archive`` snapshot and the full-text index's
deletions (session_rows.py says which rule lives where). Every time stored is the event's
(``event.when``: ``at`` for imported history, else ``ts``) and every row id comes from the
log, so applying the same events always yields the same rows.

``session_restored`` of a deleted session first brings it back from its ``pre_delete``
snapshot, messages included (same message ids and seqs); ``session_deleted`` removes the
session's rows but not its snapshots. ``session_forgotten`` removes every row of its
session, snapshots included (``projector.forgetting``); a ``redacted`` record, what is left
of a forgotten session's event, changes nothing.

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
from typing import Any

import msgspec

from journal import events as ev
from projector.forgetting import forget
from projector.rules import session_rows as rules
from projector.rules.message_rows import (
    INSERT_MESSAGE_SQL,
    SnapshotContext,
    SnapshotMessage,
    SnapshotMetadata,
    message_row,
)
from projector.rules.session_rows import ApplyError

INSERT_SESSION_SQL = (
    f"INSERT INTO sessions ({', '.join(rules.SESSION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(rules.SESSION_COLUMNS))})"
)
# A repeated registration changes nothing, as in journal/state.py.
INSERT_MODEL_SQL = (
    "INSERT INTO models (model_id, model_name, provider, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (model_id) DO NOTHING"
)
INSERT_METADATA_SQL = (
    "INSERT INTO session_metadata (metadata_id, session_id, key, value) VALUES (?, ?, ?, ?)"
)

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


def apply_event(conn: sqlite3.Connection, event: ev.AnyEvent) -> None:
    """Apply one event inside the caller's transaction; raises ApplyError or sqlite3.Error."""
    match event:
        case ev.ModelRegistered():
            conn.execute(
                INSERT_MODEL_SQL, (event.model_id, event.model_name, event.provider, event.when)
            )
        case ev.SessionCreated():
            _session_created(conn, event)
        case ev.MessageAppended():
            _message_appended(conn, event)
        case ev.SessionMetadataSet():
            _metadata_set(conn, event)
        case ev.TimeoutWarning():
            _timeout_warning(conn, event)
        case ev.SessionSnapshotted():
            _snapshotted(conn, event)
        case ev.SessionRestored():
            _restored(conn, event)
        case ev.SessionDeleted():
            _deleted(conn, event)
        case ev.MessagesTruncated():
            _truncated(conn, event)
        case ev.SessionForgotten():
            forget(conn, event.positions)
        case ev.Redacted():
            pass  # a forgotten session's record: nothing of it is projected
        case _:  # the events that only set columns of their session (rules.Change)
            # On archiving, the create_snapshot_on_archive trigger takes the pre_archive
            # snapshot, with snapshot_id = last_event_pos = this event's pos.
            _update(conn, event, rules.changes(event))


def _session_created(conn: sqlite3.Connection, e: ev.SessionCreated) -> None:
    model = conn.execute(
        "SELECT model_name FROM models WHERE model_id = ?", (e.model_id,)
    ).fetchone()
    if model is None:
        raise ApplyError(f"session uses model {e.model_id!r}, never registered", e.session_id)
    try:
        conn.execute(INSERT_SESSION_SQL, rules.created_row(e, model[0]))
    except sqlite3.IntegrityError as exc:
        raise ApplyError(f"session created twice ({exc})", e.session_id) from exc


def _message_appended(conn: sqlite3.Connection, e: ev.MessageAppended) -> None:
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


def _truncated(conn: sqlite3.Connection, e: ev.MessagesTruncated) -> None:
    # The delete triggers take the withdrawn messages out of the full-text index; the
    # counters are then set from the messages kept (rules.truncated).
    conn.execute(rules.WITHDRAW_SQL, (e.session_id, e.keep_through_seq))
    kept = conn.execute(rules.KEPT_SQL, (e.session_id,))
    _update(conn, e, rules.truncated(e, rules.kept_totals(kept)))


def _metadata_set(conn: sqlite3.Connection, e: ev.SessionMetadataSet) -> None:
    _update(conn, e, rules.changes(e))
    if e.value is None:
        conn.execute(
            "DELETE FROM session_metadata WHERE session_id = ? AND key = ?", (e.session_id, e.key)
        )
        return
    # The row keeps the id (pos) of the event that first set the key.
    conn.execute(
        f"{INSERT_METADATA_SQL} ON CONFLICT (session_id, key) DO UPDATE SET value = excluded.value",
        (e.pos, e.session_id, e.key, e.value),
    )


def _timeout_warning(conn: sqlite3.Connection, e: ev.TimeoutWarning) -> None:
    cur = conn.execute(
        "UPDATE session_timeouts SET timeout_warning_sent = ?, warning_sent_at = ? "
        "WHERE session_id = ?",
        (*rules.warned(e.when), e.session_id),
    )
    if cur.rowcount != 1:
        raise ApplyError("timeout warning for an unknown (or deleted) session", e.session_id)


# Columns an event may set (an allow-list: the names are formatted into SQL, the values
# always bound).
_SETTABLE = frozenset(
    {"title", "status", "last_activity", "expires_at", "updated_at", "last_event_pos"}
    | {"message_count", "total_tokens", "total_duration_seconds"}
)


def _update(
    conn: sqlite3.Connection, e: rules.Change | ev.SessionRestored, values: dict[str, Any]
) -> None:
    """Set columns of the event's session (``rules.changes``)."""
    assert _SETTABLE.issuperset(values)
    sets = ", ".join(f"{name} = ?" for name in values)
    cur = conn.execute(
        f"UPDATE sessions SET {sets} WHERE session_id = ?", (*values.values(), e.session_id)
    )
    if cur.rowcount != 1:
        raise unknown_session(e, e.session_id)


def unknown_session(e: ev.AnyEvent, session_id: str) -> ApplyError:
    """The refusal of an event about a session that does not exist (or no longer)."""
    return ApplyError(
        f"{type(e).__struct_config__.tag} for an unknown (or deleted) session", session_id
    )


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
    whole = ev.encode_json(head)
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
        f"SELECT {', '.join(SNAPSHOT_SESSION_FIELDS)} FROM sessions WHERE session_id = ?",
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
    head = snapshot_head(row, metadata, reason, when)
    return snapshot_json(head, conn.execute(SNAPSHOT_MESSAGES_SQL, (session_id,)))


def snapshot_head(
    session: Sequence[Any], metadata: list[SnapshotMetadata], reason: str, when: str
) -> SnapshotContext[SnapshotMessage]:
    """A snapshot's context without its messages; ``session``: the session's
    SNAPSHOT_SESSION_FIELDS, in that order; ``metadata`` in key order."""
    return SnapshotContext(
        **dict(zip(SNAPSHOT_SESSION_FIELDS, session, strict=True)),
        metadata=metadata,
        messages=[],
        snapshot_reason=reason,
        snapshot_time=when,
    )


def _snapshotted(conn: sqlite3.Connection, e: ev.SessionSnapshotted) -> None:
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


def _restored(conn: sqlite3.Connection, e: ev.SessionRestored) -> None:
    row = conn.execute(
        "SELECT hard_timeout_seconds FROM sessions WHERE session_id = ?", (e.session_id,)
    ).fetchone()
    if row is not None:
        hard = row[0]
    elif e.snapshot_pos is None:
        raise ApplyError("restore of a deleted session without a snapshot_pos", e.session_id)
    else:
        hard = _recreate_from_snapshot(conn, e.session_id, e.snapshot_pos)
    _update(conn, e, rules.restored(e, hard))


def _recreate_from_snapshot(
    conn: sqlite3.Connection, session_id: str, snapshot_pos: int
) -> int | None:
    """Bring a deleted session back, rows and ids as they were when the snapshot was
    taken; returns its hard_timeout_seconds."""
    row = conn.execute(
        "SELECT session_id, context_json FROM session_snapshots WHERE snapshot_id = ?",
        (snapshot_pos,),
    ).fetchone()
    if row is None or row[0] != session_id:
        raise ApplyError(f"restore from snapshot {snapshot_pos}, not a snapshot of this session")
    ctx = _context_decoder.decode(row[1])
    conn.execute(INSERT_SESSION_SQL, rules.recreated_row(session_id, ctx, snapshot_pos))
    conn.executemany(
        INSERT_METADATA_SQL, [(m.metadata_id, session_id, m.key, m.value) for m in ctx.metadata]
    )
    # Inserted in seq order, so the triggers rebuild the counters exactly as the
    # incremental path did (the same additions, in the same order).
    conn.executemany(INSERT_MESSAGE_SQL, [m.row(session_id) for m in ctx.messages])
    # Their ids are older than the batch, so fill_fts would not see them: index them now.
    conn.execute(RESTORED_FTS_SQL, (session_id,))
    return ctx.hard_timeout_seconds


def _deleted(conn: sqlite3.Connection, e: ev.SessionDeleted) -> None:
    # Messages, metadata and timeouts go by ON DELETE CASCADE (their triggers clean the
    # full-text index); snapshots have no foreign key and stay.
    cur = conn.execute("DELETE FROM sessions WHERE session_id = ?", (e.session_id,))
    if cur.rowcount != 1:
        raise ApplyError("delete of an unknown (or already deleted) session", e.session_id)
