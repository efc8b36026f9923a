"""The bulk path of rebuild: the whole log folded in Python, rows written in bulk.

``projector.sync.bulk_load`` fills a new, empty database (``create_schema`` just ran on it)
with the very rows the incremental path (``catch_up`` through the triggers) would produce,
faster, through this module's ``Loader``:

* sessions, their timeout rows, metadata and models are kept in Python while the log is
  read and written once at the end (but past SESSIONS_IN_MEMORY sessions, the least
  recently changed are written earlier and read back if needed:
  ``projector.sync.bulk_sessions``); the counters are computed with the triggers'
  arithmetic, in the same order (``total + COALESCE(d, 0)`` per message, in log order; a
  restored session re-adds its messages in seq order from zero, as the triggers do), so
  even ``total_duration_seconds`` is the same float, bit for bit;
* messages go to the database in bounded batches with ``executemany`` while the triggers
  and secondary indexes are absent (dropped at the start, created again at the end from
  their own ``sqlite_master`` text, so the schema ends up the same), foreign keys off
  (every reference is checked in Python instead);
* the rare events that read messages back (a snapshot, an archive's ``pre_archive``
  snapshot, a deletion, a restore) flush the pending messages first, then use the rows;
* the full-text index is filled once at the end from messages joined with their session;
* a ``redacted`` record projects nothing, and a forgetting of a session nothing was folded
  of (its records redacted before they were read) has nothing to do.

What each event does to a session is ``projector.rules.session_rows``'s, as on the
incremental path; the rules the triggers carry out there are followed here through the same
definitions.

Whatever the bulk path cannot apply (an event the projection refuses, a bad line) raises:
rebuild then starts over on the incremental path, which reports it precisely. The tests
prove the two paths equal row for row (``canonical_hash``) on random workloads.
"""

from __future__ import annotations

import functools
import operator
import sqlite3
from typing import Any, Final

from journal import events as ev
from projector.forgetting import listed, rows_at
from projector.rules import session_rows as rules
from projector.rules.apply import (
    INSERT_MODEL_SQL,
    SNAPSHOT_SESSION_FIELDS,
    snapshot_head,
    unknown_session,
)
from projector.rules.message_rows import (
    INSERT_MESSAGE_SQL,
    SnapshotMetadata,
    message_row,
)
from projector.rules.session_rows import NOT_WARNED, ApplyError, status_after_message
from projector.sync.bulk_sessions import (
    SESSIONS_IN_MEMORY,
    FoldSession,
    delete_rows,
    last_change,
    load_session,
    write_sessions,
)
from projector.sync.bulk_snapshots import (
    ARCHIVE_MESSAGES_SQL,
    ARCHIVE_SNAPSHOT_STREAMED_SQL,
    SNAPSHOT_MESSAGES_AFTER_SQL,
    SNAPSHOT_STREAMED_SQL,
    copy_text,
    insert_streamed,
    lazy_context_decoder,
    message_decoder,
    pre_archive_into,
    snapshot_into,
)

# Pending messages are written when either bound is reached: memory stays flat however
# long the log is.
FLUSH_ROWS: Final = 2_000
FLUSH_BYTES: Final = 2**20

INSERT_MESSAGE: Final = INSERT_MESSAGE_SQL


def _row_size(row: tuple[Any, ...]) -> int:
    """What a pending message row weighs against FLUSH_BYTES: every column that can be
    large (its text, metadata, tool calls and raw item), so memory stays flat whatever
    a message carries."""
    _, _, _, _, content, _, _, _, metadata, tool_calls, _, raw = row
    return (
        len(content)
        + (0 if metadata is None else len(metadata))
        + (0 if tool_calls is None else len(tool_calls))
        + (0 if raw is None else len(raw))
    )


# The full-text rows of the messages after a pos: FTS_FILL_SQL's, in the same order,
# without its per-row existence check: on the bulk path no message after the batch's
# starting pos is indexed before the batch ends (rebuild's index is empty; a catch-up
# batch indexes its messages only in finish(), and a restored session's older messages
# have ids before that pos).
FTS_FILL_NEW_SQL: Final = (
    "INSERT INTO sessions_fts (rowid, session_id, content) "
    "SELECT m.message_id, m.session_id, m.content FROM messages AS m "
    "WHERE m.message_id > ? ORDER BY m.message_id"
)
FTS_SETTING: Final = "INSERT INTO sessions_fts (sessions_fts, rank) VALUES (?, ?)"
FTS5_DEFAULT_AUTOMERGE: Final = 4
# The terms FTS5 gathers in memory before writing them out as a segment: 1 MiB by default.
# Filled with a larger buffer, the index gets fewer, larger segments to write and merge.
FTS5_DEFAULT_HASHSIZE: Final = 2**20
BULK_FTS_HASHSIZE: Final = 8 * 2**20


def fill_fts_after(conn: sqlite3.Connection, after_pos: int) -> None:
    """Index every message after ``after_pos`` in one statement (FTS_FILL_NEW_SQL). Its
    segments are not merged while it fills (each merge would rewrite them again and
    again), its term buffer is BULK_FTS_HASHSIZE; both settings are put back to FTS5's
    defaults afterwards, so later writes merge as usual."""
    conn.execute(FTS_SETTING, ("automerge", 0))
    conn.execute(FTS_SETTING, ("hashsize", BULK_FTS_HASHSIZE))
    conn.execute(FTS_FILL_NEW_SQL, (after_pos,))
    conn.execute(FTS_SETTING, ("hashsize", FTS5_DEFAULT_HASHSIZE))
    conn.execute(FTS_SETTING, ("automerge", FTS5_DEFAULT_AUTOMERGE))


# The fields of a FoldSession a snapshot copies.
_snapshot_fields: Final = operator.attrgetter(*SNAPSHOT_SESSION_FIELDS)


class Loader:
    """The fold into a new database. ``cap``: the sessions kept in memory (SESSIONS_IN_MEMORY
    by default; see ``projector.sync.bulk_sessions``)."""

    def __init__(self, conn: sqlite3.Connection, cap: int | None = None) -> None:
        self.conn = conn
        self.models: dict[str, tuple[str, str | None, str]] = {}
        self.sessions: dict[str, FoldSession | None] = {}
        self.pending: list[tuple[Any, ...]] = []
        self.pending_bytes = 0
        self.cap = SESSIONS_IN_MEMORY if cap is None else cap
        self._evicted = False  # whether any session went to the database before finish()

    # -- hooks: a new database keeps its sessions here, or writes the older ones ---------
    def _get(self, session_id: str) -> FoldSession | None:
        s = self.sessions.get(session_id)
        if s is None and self._evicted:
            s = load_session(self.conn, session_id)
            if s is not None:
                self.sessions[session_id] = s
        return s

    def _evict(self) -> None:
        """Write the sessions least recently changed, half of those kept, and drop them."""
        live = sorted(self.live(), key=last_change)
        gone = live[: len(live) - self.cap // 2]
        write_sessions(self.conn, gone)
        for s in gone:
            del self.sessions[s.session_id]
        self._evicted = True

    def _model(self, model_id: str) -> tuple[str, str | None, str] | None:
        return self.models.get(model_id)

    def _new_model(self, model_id: str, model: tuple[str, str | None, str]) -> None:
        self.models[model_id] = model

    def _born(self, s: FoldSession) -> None:
        pass

    def _metadata_changed(self, s: FoldSession) -> None:
        pass

    def _stored_snap(self, s: FoldSession) -> tuple[int, int, int, int] | None:
        """A snapshot already in the database whose messages ``s`` begins with, as
        ``FoldSession.snap``; a new database holds none this fold did not write."""
        return None

    def _gone(self, session_id: str) -> None:
        s = self.sessions.pop(session_id)
        self.flush()
        self.conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
        if s is not None and s.stored:
            delete_rows(self.conn, session_id)

    def _withdraw(self, session_id: str, keep_through_seq: int) -> None:
        """Drop the session's messages after ``keep_through_seq``: rows not yet written
        from the pending ones, the others from the table (the full-text index of a new
        database is filled at the end, from the messages left)."""
        self.pending = [
            row for row in self.pending if row[1] != session_id or row[2] <= keep_through_seq
        ]
        self.conn.execute(rules.WITHDRAW_SQL, (session_id, keep_through_seq))

    # -- messages ----------------------------------------------------------------------
    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(INSERT_MESSAGE, self.pending)
            self.pending = []
            self.pending_bytes = 0

    def _add_message(self, s: FoldSession, row: tuple[Any, ...], size: int) -> None:
        """A message's rule (update_message_count_insert's arithmetic, in its order, and
        session_activity_au's reset: see projector.rules.session_rows), then the row."""
        tokens, duration, when = row[6], row[7], row[5]
        totals = rules.add_message(
            (s.message_count, s.total_tokens, s.total_duration_seconds), tokens, duration
        )
        s.message_count, s.total_tokens, s.total_duration_seconds = totals
        s.recent.append(totals)
        s.last_activity = when
        s.updated_at = when
        s.last_event_pos = row[0]
        s.status = status_after_message(s.status)
        s.timeout_warning_sent, s.warning_sent_at = NOT_WARNED
        self.pending.append(row)
        self.pending_bytes += size
        if self.pending_bytes >= FLUSH_BYTES or len(self.pending) >= FLUSH_ROWS:
            self.flush()

    # -- events ------------------------------------------------------------------------
    def apply(self, e: ev.AnyEvent) -> None:
        if type(e) is ev.MessageAppended:  # most of a log: first, before the match
            self._message(e)
        else:
            self._other(e)
        # Between events, when no FoldSession is held by the code above: any may go.
        if len(self.sessions) > self.cap:
            self._evict()

    def _other(self, e: ev.AnyEvent) -> None:
        """Every event but a message."""
        match e:
            case ev.ModelRegistered():
                if self._model(e.model_id) is None:
                    self._new_model(e.model_id, (e.model_name, e.provider, e.when))
            case ev.SessionCreated():
                self._created(e)
            case ev.SessionMetadataSet():
                self._metadata_set(e)
            case ev.TimeoutWarning():
                s = self._existing(e, e.session_id)
                s.timeout_warning_sent, s.warning_sent_at = rules.warned(e.when)
            case ev.SessionSnapshotted():
                self._snapshotted(e)
            case ev.SessionRestored():
                self._restored(e)
            case ev.SessionDeleted():
                self._existing(e, e.session_id)
                self._gone(e.session_id)
            case ev.MessagesTruncated():
                self._truncated(e)
            case ev.SessionForgotten():
                self._forgotten(e)
            case ev.Redacted():
                pass  # a forgotten session's record: nothing of it is projected
            case ev.MessageAppended():  # pragma: no cover - taken before the match
                self._message(e)
            case _:  # the events that only set columns of their session (rules.Change)
                self._set(self._existing(e, e.session_id), rules.changes(e))

    def _forgotten(self, e: ev.SessionForgotten) -> None:
        """Nothing to do when nothing of the session was folded (its records were redacted
        before this fold read them: the normal case). Otherwise ApplyError: dropping a
        session from the fold and from the rows already written is the per-event path's
        (``projector.forgetting``), which the refusal hands the batch to."""
        self.flush()
        if any(listed(e.positions, s.last_event_pos) for s in self.live()) or rows_at(
            self.conn, e.positions
        ):
            raise ApplyError("a forgotten session already folded: applied event by event")

    def _existing(self, e: ev.AnyEvent, session_id: str) -> FoldSession:
        """The session the event is about; ApplyError if it is unknown or deleted."""
        s = self._get(session_id)
        if s is None:
            raise unknown_session(e, session_id)
        return s

    def _set(self, s: FoldSession, values: dict[str, Any]) -> None:
        """``apply._update``'s: the columns an event sets (``rules.changes``), and what
        the triggers do on that update (the warning's reset on new activity, the
        pre_archive snapshot on entering archived)."""
        old_status = s.status
        for name, value in values.items():
            setattr(s, name, value)
        if "last_activity" in values:  # session_activity_au
            s.timeout_warning_sent, s.warning_sent_at = NOT_WARNED
        if rules.takes_pre_archive(old_status, s.status):
            self._archive_snapshot(s)

    def _message(self, e: ev.MessageAppended) -> None:
        s = self.sessions.get(e.session_id) or self._existing(e, e.session_id)
        if e.seq != s.message_count + 1:
            raise ApplyError(f"message seq {e.seq} after seq {s.message_count}", e.session_id)
        row = message_row(e)
        self._add_message(s, row, _row_size(row))

    def _truncated(self, e: ev.MessagesTruncated) -> None:
        s = self._existing(e, e.session_id)
        keep = e.keep_through_seq
        self._withdraw(e.session_id, keep)
        totals = s.totals_at(keep) if keep <= s.message_count else None
        if totals is None:  # further back than ``recent`` remembers: sum what is kept
            self.flush()
            totals = rules.kept_totals(self.conn.execute(rules.KEPT_SQL, (e.session_id,)))
        self._set(s, rules.truncated(e, totals))
        while s.recent and s.recent[-1][0] > keep:
            s.recent.pop()
        if s.snap is not None and s.snap[1] > keep:
            s.snap = None  # its messages are no longer the first ones of the session

    def _created(self, e: ev.SessionCreated) -> None:
        model = self._model(e.model_id)
        if model is None:
            raise ApplyError(f"session uses model {e.model_id!r}, never registered", e.session_id)
        if self._get(e.session_id) is not None:
            raise ApplyError("session created twice", e.session_id)
        s = self.sessions[e.session_id] = FoldSession(*rules.created_row(e, model[0]))
        self._born(s)

    def _metadata_set(self, e: ev.SessionMetadataSet) -> None:
        s = self._existing(e, e.session_id)
        self._set(s, rules.changes(e))
        self._metadata_changed(s)
        if e.value is None:
            s.metadata.pop(e.key, None)
        elif e.key in s.metadata:
            s.metadata[e.key][1] = e.value
        else:
            s.metadata[e.key] = [e.pos, e.value]

    def _archive_snapshot(self, s: FoldSession) -> None:
        self.flush()
        rows = self.conn.execute(ARCHIVE_MESSAGES_SQL, (s.session_id,))
        insert_streamed(
            self.conn,
            ARCHIVE_SNAPSHOT_STREAMED_SQL,
            (s.last_event_pos, s.session_id, s.updated_at, s.message_count, s.total_tokens,
             s.updated_at),
            s.last_event_pos,
            lambda out, spill: pre_archive_into(
                out, s.session_id, s.title, s.model_id, s.model_name, s.message_count,
                s.total_tokens, s.created_at, rows, spill,
            ),
        )  # fmt: skip

    def _snapshotted(self, e: ev.SessionSnapshotted) -> None:
        s = self._get(e.session_id)
        if s is None:
            raise ApplyError("snapshot of an unknown (or deleted) session", e.session_id)
        self.flush()
        metadata = [SnapshotMetadata(m[0], key, m[1]) for key, m in sorted(s.metadata.items())]
        head = snapshot_head(_snapshot_fields(s), metadata, e.reason, e.when)
        conn, prev = self.conn, s.snap or self._stored_snap(s)
        # The messages after the previous snapshot's (all of them if none: seqs start at 1),
        # that snapshot's copied as they are stored.
        rows = conn.execute(SNAPSHOT_MESSAGES_AFTER_SQL, (s.session_id, prev[1] if prev else 0))
        earlier = functools.partial(copy_text, conn, prev[0], prev[2], prev[3]) if prev else None
        size, (start, tail) = insert_streamed(
            conn,
            SNAPSHOT_STREAMED_SQL,
            (e.pos, s.session_id, e.reason, e.when, s.message_count, s.total_tokens, e.note,
             e.when),
            e.pos,
            lambda out, spill: snapshot_into(out, head, rows, spill, earlier),
        )  # fmt: skip
        s.snap = (e.pos, s.message_count, start, size - tail)

    def _restored(self, e: ev.SessionRestored) -> None:
        s = self._get(e.session_id)
        if s is None:
            if e.snapshot_pos is None:
                raise ApplyError(
                    "restore of a deleted session without a snapshot_pos", e.session_id
                )
            s = self._recreate(e.session_id, e.snapshot_pos)
        self._set(s, rules.restored(e, s.hard_timeout_seconds))

    def _recreate(self, session_id: str, snapshot_pos: int) -> FoldSession:
        """``apply._recreate_from_snapshot``: the row, its metadata, its messages in seq
        order through the triggers' arithmetic."""
        self.flush()
        # The text as bytes (no str of it, no UTF-8 copy of that str), its messages decoded
        # one at a time as they are added: a long session is not held as structs at once.
        row = self.conn.execute(
            "SELECT session_id, CAST(context_json AS BLOB) FROM session_snapshots "
            "WHERE snapshot_id = ?",
            (snapshot_pos,),
        ).fetchone()
        if row is None or row[0] != session_id:
            raise ApplyError(
                f"restore from snapshot {snapshot_pos}, not a snapshot of this session"
            )
        ctx = lazy_context_decoder.decode(row[1])
        del row
        if ctx.model_id is not None and self._model(ctx.model_id) is None:
            raise ApplyError(f"restore of a session on model {ctx.model_id!r}, not registered")
        s = self.sessions[session_id] = FoldSession(
            *rules.recreated_row(session_id, ctx, snapshot_pos)
        )
        self._born(s)
        self._metadata_changed(s)
        for md in ctx.metadata:
            if md.key in s.metadata:
                raise ApplyError("a snapshot with a metadata key twice", session_id)
            s.metadata[md.key] = [md.metadata_id, md.value]
        decode_message = message_decoder.decode
        for raw in ctx.messages:
            m = decode_message(raw)
            if m.sequence_number != s.message_count + 1:
                raise ApplyError("a snapshot whose seqs are not gapless", session_id)
            row = m.row(session_id)
            self._add_message(s, row, _row_size(row))
        return s

    # -- the end -----------------------------------------------------------------------
    def live(self) -> list[FoldSession]:
        return [s for s in self.sessions.values() if s is not None]

    def finish(self) -> None:
        self.flush()
        c = self.conn
        c.executemany(INSERT_MODEL_SQL, [(mid, *m) for mid, m in self.models.items()])
        write_sessions(c, self.live())
        fill_fts_after(c, 0)
