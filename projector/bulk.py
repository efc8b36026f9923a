"""The bulk path of rebuild: the whole log folded in Python, rows written in bulk.

``bulk_load`` fills a new, empty database (``create_schema`` just ran on it) with the very
rows the incremental path (``catch_up`` through the triggers) would produce, faster:

* sessions, their timeout rows, metadata and models are kept in Python while the log is
  read and written once at the end; the counters are computed with the triggers'
  arithmetic, in the same order (``total + COALESCE(d, 0)`` per message, in log order; a
  restored session re-adds its messages in seq order from zero, as the triggers do), so
  even ``total_duration_seconds`` is the same float, bit for bit;
* messages go to the database in bounded batches with ``executemany`` while the triggers
  and secondary indexes are absent (dropped at the start, created again at the end from
  their own ``sqlite_master`` text, so the schema ends up the same), foreign keys off
  (every reference is checked in Python instead);
* the rare events that read messages back (a snapshot, an archive's ``pre_archive``
  snapshot, a deletion, a restore) flush the pending messages first, then use the rows;
* the full-text index is filled once at the end from messages joined with their session.

Whatever the bulk path cannot apply (an event the projection refuses, a bad line) raises:
rebuild then starts over on the incremental path, which reports it precisely. The tests
prove the two paths equal row for row (``canonical_hash``) on random workloads.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import msgspec
from msgspec import UNSET

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
)
from journal.log import LogReader
from projector.apply import (
    _MESSAGES_CUT,
    FTS_FILL_SQL,
    RESTORED_FTS_SQL,
    SNAPSHOT_MESSAGES_SQL,
    ApplyError,
    SnapshotContext,
    SnapshotMessage,
    SnapshotMetadata,
    _plus_seconds,
    _snapshot_encoder,
)
from projector.db import Checkpoint, write_checkpoint
from projector.reading import Until, line_hash, read_bytes

# Pending messages are written when either bound is reached: memory stays flat however
# long the log is.
FLUSH_ROWS: Final = 2_000
FLUSH_BYTES: Final = 2**20

INSERT_MESSAGE: Final = (
    "INSERT INTO messages (message_id, session_id, sequence_number, role, content, "
    "timestamp, tokens_used, duration_seconds, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

# The create_snapshot_on_archive trigger's row, its context_json built by pre_archive_json.
ARCHIVE_SNAPSHOT_SQL: Final = (
    "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
    "message_count, total_tokens, context_json, created_at) "
    "VALUES (?, ?, 'pre_archive', ?, ?, ?, CAST(? AS TEXT), ?)"
)
# The same rows with their context_json last, as text of the given length, written after
# the insert (_insert_streamed).
ARCHIVE_SNAPSHOT_STREAMED_SQL: Final = (
    "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
    "message_count, total_tokens, created_at, context_json) "
    "VALUES (?, ?, 'pre_archive', ?, ?, ?, ?, CAST(zeroblob(?) AS TEXT))"
)
_ZEROS: Final = "CAST(zeroblob(?) AS TEXT)"
SNAPSHOT_STREAMED_SQL: Final = (
    "INSERT INTO session_snapshots (snapshot_id, session_id, snapshot_type, snapshot_at, "
    "message_count, total_tokens, note, created_at, context_json) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, CAST(zeroblob(?) AS TEXT))"
)
SNAPSHOT_MESSAGES_AFTER_SQL: Final = (
    "SELECT message_id, sequence_number, role, content, timestamp, tokens_used, "
    "duration_seconds, metadata FROM messages WHERE session_id = ? AND sequence_number > ? "
    "ORDER BY sequence_number"
)
ARCHIVE_MESSAGES_SQL: Final = (
    "SELECT role, content, timestamp, tokens_used FROM messages WHERE session_id = ? "
    "ORDER BY sequence_number"
)
_encoder = msgspec.json.Encoder()

# The full-text rows of a new database: FTS_FILL_SQL's, all of them (nothing is indexed
# yet), in the same order.
FRESH_FTS_FILL_SQL: Final = (
    "INSERT INTO sessions_fts (rowid, session_id, title, content, model_name) "
    "SELECT m.message_id, m.session_id, s.title, m.content, s.model_name "
    "FROM messages AS m JOIN sessions AS s ON s.session_id = m.session_id "
    "ORDER BY m.message_id"
)


class _LazyContext(msgspec.Struct, frozen=True):
    """SnapshotContext with its messages left undecoded (each a slice of the text)."""

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
    messages: list[msgspec.Raw]
    snapshot_reason: str
    snapshot_time: str


_lazy_context_decoder = msgspec.json.Decoder(_LazyContext)
_message_decoder = msgspec.json.Decoder(SnapshotMessage)
FRESH_FTS_SETTING: Final = "INSERT INTO sessions_fts (sessions_fts, rank) VALUES (?, ?)"
FTS5_DEFAULT_AUTOMERGE: Final = 4


Spill = Callable[[bytearray], None]
# A value being built is handed on (and its buffer emptied) whenever it reaches this size.
SPILL_BYTES: Final = 2**20


def pre_archive_json(
    session_id: str,
    title: str | None,
    model_id: str | None,
    model_name: str | None,
    message_count: int,
    total_tokens: int,
    created_at: str,
    messages: Iterable[Sequence[Any]],
) -> bytearray:
    """The bytes of the create_snapshot_on_archive trigger's ``json_object(...)``, built in
    one buffer as the ``(role, content, timestamp, tokens)`` rows stream past (SQLite's
    json functions hold a long session several times over). SQLite's JSON text and
    msgspec's agree: compact, the same escapes (tests/test_bulk_rebuild.py checks every
    character), integers in decimal, null for NULL."""
    out = bytearray()
    _pre_archive_into(
        out, session_id, title, model_id, model_name, message_count, total_tokens,
        created_at, messages, None,
    )  # fmt: skip
    return out


def _pre_archive_into(
    out: bytearray,
    session_id: str,
    title: str | None,
    model_id: str | None,
    model_name: str | None,
    message_count: int,
    total_tokens: int,
    created_at: str,
    messages: Iterable[Sequence[Any]],
    spill: Spill | None,
) -> None:
    """``pre_archive_json`` into ``out``, the buffer handed to ``spill`` (which empties it)
    as it grows, if given; the last piece is left in ``out``."""
    into = _encoder.encode_into
    for key, value in (
        (b'{"session_id":', session_id),
        (b',"title":', title),
        (b',"model_id":', model_id),
        (b',"model_name":', model_name),
        (b',"message_count":', message_count),
        (b',"total_tokens":', total_tokens),
        (b',"created_at":', created_at),
    ):
        out += key
        into(value, out, -1)
    out += b',"messages":['
    sep = b""
    for role, content, timestamp, tokens in messages:
        out += sep
        sep = b","
        out += b'{"role":'
        into(role, out, -1)
        out += b',"content":'
        into(content, out, -1)
        out += b',"timestamp":'
        into(timestamp, out, -1)
        out += b',"tokens":'
        into(tokens, out, -1)
        out += b"}"
        if spill is not None and len(out) >= SPILL_BYTES:
            spill(out)
    out += b"]}"


def _snapshot_into(
    out: bytearray,
    head: SnapshotContext,
    rows: Iterable[Sequence[Any]],
    spill: Spill,
    earlier: Callable[[bytearray, Spill], bool] | None = None,
) -> tuple[int, int]:
    """``apply.snapshot_json(head, rows)``, the same bytes, handed to ``spill`` piece by
    piece, the last left in ``out`` (tests/test_bulk_rebuild.py compares the two).
    ``earlier``, if given, writes the encoded messages before ``rows`` (without brackets;
    True if there were any). Returns where the messages start and the length of what
    follows them."""
    whole = encode_json(head)
    cut = whole.rindex(_MESSAGES_CUT) + 13  # up to and including ',"messages":['
    out += whole[:cut]
    sep = earlier(out, spill) if earlier is not None else False
    encode_into = _snapshot_encoder.encode_into
    for r in rows:
        if sep:
            out += b","
        sep = True
        encode_into(SnapshotMessage(*r), out, -1)
        if len(out) >= SPILL_BYTES:
            spill(out)
    tail = whole[cut:]  # from the closing bracket on
    out += tail
    return cut, len(tail)


def _copy_text(
    conn: sqlite3.Connection, rowid: int, start: int, end: int, out: bytearray, spill: Spill
) -> bool:
    """Bytes ``start:end`` of a snapshot's context_json into ``out``; True if any."""
    if end <= start:
        return False
    with conn.blobopen("session_snapshots", "context_json", rowid, readonly=True) as blob:
        blob.seek(start)
        left = end - start
        while left:
            chunk = blob.read(min(left, SPILL_BYTES))
            if not chunk:
                raise ApplyError(f"snapshot {rowid} is shorter than when it was written")
            out += chunk
            left -= len(chunk)
            if len(out) >= SPILL_BYTES:
                spill(out)
    return True


def _insert_streamed(
    conn: sqlite3.Connection,
    sql: str,
    params: Sequence[Any],
    rowid: int,
    build: Callable[[bytearray, Spill], Any],
) -> int:
    """Insert a ``session_snapshots`` row whose ``context_json`` ``build`` writes.

    A long session's context is not held as one value in Python, then bound (a copy),
    cast and made into a record (copies again): once it outgrows SPILL_BYTES it is built
    piece by piece into a temporary file, the row inserted with text of the exact length
    (``sql`` takes it as its last parameter: ``CAST(zeroblob(?) AS TEXT)``), and the
    pieces copied into that text through incremental blob I/O. The value is the same
    text, typed TEXT. A shorter value is bound as it is (``CAST(? AS TEXT)``)."""
    out = bytearray()
    spool: Any = None
    size = 0

    def spill(piece: bytearray) -> None:
        nonlocal spool, size
        if spool is None:
            spool = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - closed below
        spool.write(piece)
        size += len(piece)
        del piece[:]

    try:
        build(out, spill)
        if spool is None:  # a short value: bound as it is
            conn.execute(sql.replace(_ZEROS, "CAST(? AS TEXT)"), (*params, out))
            return len(out)
        spill(out)
        conn.execute(sql, (*params, size))
        spool.seek(0)
        with conn.blobopen("session_snapshots", "context_json", rowid) as blob:
            while chunk := spool.read(SPILL_BYTES):
                blob.write(chunk)
    finally:
        if spool is not None:
            spool.close()
    return size


class _Session:
    """A live session: its ``sessions`` row, its ``session_timeouts`` warning state and
    its metadata (key -> [metadata_id, value])."""

    __slots__ = (
        "created_at", "expires_at", "hard", "idle", "last_activity", "last_event_pos",
        "message_count", "metadata", "model_id", "model_name", "session_id", "snap",
        "status", "title", "total_duration_seconds", "total_tokens", "updated_at",
        "warning_at", "warning_sent",
    )  # fmt: skip

    def __init__(
        self,
        session_id: str,
        created_at: str,
        model_id: str | None,
        model_name: str | None,
        title: str | None,
        status: str,
        idle: int | None,
        hard: int | None,
        expires_at: str | None,
        last_event_pos: int,
    ) -> None:
        self.session_id = session_id
        self.created_at = created_at
        self.updated_at = created_at
        self.model_id = model_id
        self.model_name = model_name
        self.title = title
        self.message_count = 0
        self.total_tokens = 0
        self.total_duration_seconds = 0.0
        self.last_activity = created_at
        self.status = status
        self.idle = idle
        self.hard = hard
        self.expires_at = expires_at
        self.last_event_pos = last_event_pos
        self.warning_sent = 0
        self.warning_at: str | None = None
        self.metadata: dict[str, list[Any]] = {}
        # The last snapshot this fold wrote of the session: (snapshot_id, message_count,
        # start, end of its messages in context_json). Messages are only ever appended
        # while this object lives (a deletion ends it, a restore makes a new one), so the
        # next snapshot copies those bytes and encodes only the messages after them.
        self.snap: tuple[int, int, int, int] | None = None

    def session_row(self) -> tuple[Any, ...]:
        return (
            self.session_id, self.created_at, self.updated_at, self.model_id, self.model_name,
            self.title, self.message_count, self.total_tokens, self.total_duration_seconds,
            self.last_activity, self.status, self.idle, self.hard, self.expires_at,
            self.last_event_pos,
        )  # fmt: skip

    def timeouts_row(self) -> tuple[Any, ...]:
        return (
            self.session_id, self.idle, self.hard, self.created_at, self.last_activity,
            self.expires_at, self.warning_sent, self.warning_at,
        )  # fmt: skip


def _unknown(e: AnyEvent, session_id: str) -> ApplyError:
    return ApplyError(
        f"{type(e).__struct_config__.tag} for an unknown (or deleted) session", session_id
    )


class _Loader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.models: dict[str, tuple[str, str | None, str]] = {}
        self.sessions: dict[str, _Session | None] = {}
        self.pending: list[tuple[Any, ...]] = []
        self.pending_bytes = 0
        self._restored_ids: set[str] = set()

    # -- hooks: a new database keeps everything here until finish() ----------------------
    def _get(self, session_id: str) -> _Session | None:
        return self.sessions.get(session_id)

    def _model(self, model_id: str) -> tuple[str, str | None, str] | None:
        return self.models.get(model_id)

    def _new_model(self, model_id: str, model: tuple[str, str | None, str]) -> None:
        self.models[model_id] = model

    def _born(self, s: _Session) -> None:
        pass

    def _metadata_changed(self, s: _Session) -> None:
        pass

    def _renamed(self, s: _Session) -> None:
        pass

    def _gone(self, session_id: str) -> None:
        del self.sessions[session_id]
        self.flush()
        self.conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))

    # -- messages ----------------------------------------------------------------------
    def flush(self) -> None:
        if self.pending:
            self.conn.executemany(INSERT_MESSAGE, self.pending)
            self.pending = []
            self.pending_bytes = 0

    def _add_message(self, s: _Session, row: tuple[Any, ...], size: int) -> None:
        """The counter trigger's arithmetic and the activity trigger's reset, then the row."""
        s.message_count += 1
        tokens, duration, when = row[6], row[7], row[5]
        s.total_tokens += tokens if tokens is not None else 0
        s.total_duration_seconds += duration if duration is not None else 0
        s.last_activity = when
        s.updated_at = when
        s.last_event_pos = row[0]
        if s.status == "idle" or s.status == "paused":
            s.status = "active"
        s.warning_sent = 0
        s.warning_at = None
        self.pending.append(row)
        self.pending_bytes += size
        if self.pending_bytes >= FLUSH_BYTES or len(self.pending) >= FLUSH_ROWS:
            self.flush()

    # -- events ------------------------------------------------------------------------
    def apply(self, e: AnyEvent) -> None:
        if type(e) is MessageAppended:
            s = self.sessions.get(e.session_id) or self._get(e.session_id)
            if s is None:
                raise ApplyError("message for an unknown (or deleted) session", e.session_id)
            if e.seq != s.message_count + 1:
                raise ApplyError(f"message seq {e.seq} after seq {s.message_count}", e.session_id)
            content = e.content
            self._add_message(
                s,
                (
                    e.pos,
                    e.session_id,
                    e.seq,
                    e.role,
                    content,
                    e.when,
                    e.tokens_used,
                    e.duration_seconds,
                    None if e.metadata is None else encode_json(e.metadata).decode(),
                ),
                len(content),
            )
            return
        match e:
            case ModelRegistered():
                if self._model(e.model_id) is None:
                    self._new_model(e.model_id, (e.model_name, e.provider, e.when))
            case SessionCreated():
                model = self._model(e.model_id)
                if model is None:
                    raise ApplyError(
                        f"session uses model {e.model_id!r}, never registered", e.session_id
                    )
                if self._get(e.session_id) is not None:
                    raise ApplyError("session created twice", e.session_id)
                s = self.sessions[e.session_id] = _Session(
                    e.session_id,
                    e.when,
                    e.model_id,
                    e.model_name if e.model_name is not None else model[0],
                    e.title,
                    "active",
                    e.idle_timeout_seconds,
                    e.hard_timeout_seconds,
                    _plus_seconds(e.when, e.hard_timeout_seconds),
                    e.pos,
                )
                self._born(s)
            case SessionMetadataSet():
                s = self._touch(e, e.session_id)
                self._metadata_changed(s)
                if e.value is None:
                    s.metadata.pop(e.key, None)
                elif e.key in s.metadata:
                    s.metadata[e.key][1] = e.value
                else:
                    s.metadata[e.key] = [e.pos, e.value]
            case SessionRenamed():
                s = self._touch(e, e.session_id)
                s.title = e.title
                self._renamed(s)
            case SessionPaused():
                self._touch(e, e.session_id).status = "paused"
            case SessionResumed():
                s = self._touch(e, e.session_id)
                s.status = "active"
                self._activity(s, e.when)
            case TimeoutWarning():
                s = self._get(e.session_id)
                if s is None:
                    raise ApplyError(
                        "timeout warning for an unknown (or deleted) session", e.session_id
                    )
                s.warning_sent = 1
                s.warning_at = e.when
            case SessionTimedOut():
                self._touch(e, e.session_id).status = "idle" if e.kind == "idle" else "expired"
            case SessionArchived():
                s = self._touch(e, e.session_id)
                old, s.status = s.status, "archived"
                if old != "archived":
                    self._archive_snapshot(s)
            case SessionSnapshotted():
                self._snapshotted(e)
            case SessionRestored():
                self._restored(e)
            case SessionDeleted():
                if self._get(e.session_id) is None:
                    raise ApplyError(
                        "delete of an unknown (or already deleted) session", e.session_id
                    )
                self._gone(e.session_id)
            case _:  # pragma: no cover - every event type is handled above
                raise AssertionError(f"unhandled event {e!r}")

    def _touch(self, e: AnyEvent, session_id: str) -> _Session:
        """``apply._update``'s stamps: updated_at and last_event_pos from the event."""
        s = self._get(session_id)
        if s is None:
            raise _unknown(e, session_id)
        s.updated_at = e.when
        s.last_event_pos = e.pos
        return s

    @staticmethod
    def _activity(s: _Session, when: str) -> None:
        s.last_activity = when
        s.warning_sent = 0
        s.warning_at = None

    def _archive_snapshot(self, s: _Session) -> None:
        self.flush()
        rows = self.conn.execute(ARCHIVE_MESSAGES_SQL, (s.session_id,))
        _insert_streamed(
            self.conn,
            ARCHIVE_SNAPSHOT_STREAMED_SQL,
            (s.last_event_pos, s.session_id, s.updated_at, s.message_count, s.total_tokens,
             s.updated_at),
            s.last_event_pos,
            lambda out, spill: _pre_archive_into(
                out, s.session_id, s.title, s.model_id, s.model_name, s.message_count,
                s.total_tokens, s.created_at, rows, spill,
            ),
        )  # fmt: skip

    def _snapshotted(self, e: SessionSnapshotted) -> None:
        s = self._get(e.session_id)
        if s is None:
            raise ApplyError("snapshot of an unknown (or deleted) session", e.session_id)
        self.flush()
        head = SnapshotContext(
            session_id=s.session_id,
            title=s.title,
            model_id=s.model_id,
            model_name=s.model_name,
            created_at=s.created_at,
            status=s.status,
            message_count=s.message_count,
            total_tokens=s.total_tokens,
            total_duration_seconds=s.total_duration_seconds,
            idle_timeout_seconds=s.idle,
            hard_timeout_seconds=s.hard,
            expires_at=s.expires_at,
            last_activity=s.last_activity,
            metadata=[SnapshotMetadata(m[0], key, m[1]) for key, m in sorted(s.metadata.items())],
            messages=[],
            snapshot_reason=e.reason,
            snapshot_time=e.when,
        )
        conn, prev = self.conn, s.snap
        earlier: Callable[[bytearray, Spill], bool] | None = None
        if prev is None:
            rows = conn.execute(SNAPSHOT_MESSAGES_SQL, (s.session_id,))
        else:
            rows = conn.execute(SNAPSHOT_MESSAGES_AFTER_SQL, (s.session_id, prev[1]))
            earlier = functools.partial(_copy_text, conn, prev[0], prev[2], prev[3])
        where: list[tuple[int, int]] = []
        size = _insert_streamed(
            conn,
            SNAPSHOT_STREAMED_SQL,
            (e.pos, s.session_id, e.reason, e.when, s.message_count, s.total_tokens, e.note,
             e.when),
            e.pos,
            lambda out, spill: where.append(_snapshot_into(out, head, rows, spill, earlier)),
        )  # fmt: skip
        start, tail = where[0]
        s.snap = (e.pos, s.message_count, start, size - tail)

    def _restored(self, e: SessionRestored) -> None:
        s = self._get(e.session_id)
        if s is None:
            if e.snapshot_pos is None:
                raise ApplyError(
                    "restore of a deleted session without a snapshot_pos", e.session_id
                )
            s = self._recreate(e.session_id, e.snapshot_pos)
        s.status = "active"
        self._activity(s, e.when)
        s.expires_at = _plus_seconds(e.when, s.hard)
        s.updated_at = e.when
        s.last_event_pos = e.pos

    def _recreate(self, session_id: str, snapshot_pos: int) -> _Session:
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
        ctx = _lazy_context_decoder.decode(row[1])
        del row
        if ctx.model_id is not None and self._model(ctx.model_id) is None:
            raise ApplyError(f"restore of a session on model {ctx.model_id!r}, not registered")
        s = _Session(
            session_id,
            ctx.created_at,
            ctx.model_id,
            ctx.model_name,
            ctx.title,
            ctx.status,
            ctx.idle_timeout_seconds,
            ctx.hard_timeout_seconds,
            ctx.expires_at,
            snapshot_pos,
        )
        self.sessions[session_id] = s
        self._born(s)
        self._metadata_changed(s)
        self._restored_ids.add(session_id)
        for md in ctx.metadata:
            if md.key in s.metadata:
                raise ApplyError("a snapshot with a metadata key twice", session_id)
            s.metadata[md.key] = [md.metadata_id, md.value]
        decode_message = _message_decoder.decode
        for raw in ctx.messages:
            m = decode_message(raw)
            if m.sequence_number != s.message_count + 1:
                raise ApplyError("a snapshot whose seqs are not gapless", session_id)
            self._add_message(
                s,
                (
                    m.message_id,
                    session_id,
                    m.sequence_number,
                    m.role,
                    m.content,
                    m.timestamp,
                    m.tokens,
                    m.duration_seconds,
                    m.metadata,
                ),
                len(m.content),
            )
        return s

    # -- the end -----------------------------------------------------------------------
    def live(self) -> list[_Session]:
        return [s for s in self.sessions.values() if s is not None]

    def finish(self) -> None:
        self.flush()
        c = self.conn
        live = self.live()
        c.executemany(
            "INSERT INTO models (model_id, model_name, provider, created_at) VALUES (?, ?, ?, ?)",
            [(mid, *m) for mid, m in self.models.items()],
        )
        c.executemany(
            "INSERT INTO sessions (session_id, created_at, updated_at, model_id, model_name, "
            "title, message_count, total_tokens, total_duration_seconds, last_activity, status, "
            "idle_timeout_seconds, hard_timeout_seconds, expires_at, last_event_pos) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [s.session_row() for s in live],
        )
        c.executemany(
            "INSERT INTO session_timeouts (session_id, idle_timeout_seconds, "
            "hard_timeout_seconds, created_at, last_activity, expires_at, timeout_warning_sent, "
            "warning_sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [s.timeouts_row() for s in live],
        )
        c.executemany(
            "INSERT INTO session_metadata (metadata_id, session_id, key, value) "
            "VALUES (?, ?, ?, ?)",
            [(m[0], s.session_id, key, m[1]) for s in live for key, m in s.metadata.items()],
        )
        # The index is empty and every message is new: no per-row existence check. Its
        # segments are not merged while it fills (each merge would rewrite them again and
        # again); the setting is put back to FTS5's default afterwards.
        c.execute(FRESH_FTS_SETTING, ("automerge", 0))
        c.execute(FRESH_FTS_FILL_SQL)
        c.execute(FRESH_FTS_SETTING, ("automerge", FTS5_DEFAULT_AUTOMERGE))


SESSION_COLUMNS: Final = (
    "session_id, created_at, updated_at, model_id, model_name, title, message_count, "
    "total_tokens, total_duration_seconds, last_activity, status, idle_timeout_seconds, "
    "hard_timeout_seconds, expires_at, last_event_pos"
)


class CatchUpLoader(_Loader):
    """The fold on a database that already holds part of the log (one batch of catch-up,
    triggers dropped inside its transaction). Sessions and models are read on first use;
    a session's row is inserted when it is created (so the foreign keys hold at every
    step) and given its final values at the end; a deletion deletes at once (the cascade
    removes its rows; its full-text rows are removed first, as the messages_ad trigger
    would)."""

    def __init__(self, conn: sqlite3.Connection, after_pos: int) -> None:
        super().__init__(conn)
        self.after_pos = after_pos
        self._meta_dirty: set[str] = set()
        self._titles: set[str] = set()

    def _get(self, session_id: str) -> _Session | None:
        if session_id in self.sessions:
            return self.sessions[session_id]
        row = self.conn.execute(
            f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        if row is None:
            self.sessions[session_id] = None
            return None
        s = _Session(row[0], row[1], row[3], row[4], row[5], row[10], row[11], row[12],
                     row[13], row[14])  # fmt: skip
        s.updated_at, s.message_count, s.total_tokens = row[2], row[6], row[7]
        s.total_duration_seconds, s.last_activity = row[8], row[9]
        warning = self.conn.execute(
            "SELECT timeout_warning_sent, warning_sent_at FROM session_timeouts "
            "WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if warning is not None:
            s.warning_sent, s.warning_at = warning
        for metadata_id, key, value in self.conn.execute(
            "SELECT metadata_id, key, value FROM session_metadata WHERE session_id = ?",
            (session_id,),
        ):
            s.metadata[key] = [metadata_id, value]
        self.sessions[session_id] = s
        return s

    def _model(self, model_id: str) -> tuple[str, str | None, str] | None:
        model = self.models.get(model_id)
        if model is None:
            row = self.conn.execute(
                "SELECT model_name, provider, created_at FROM models WHERE model_id = ?",
                (model_id,),
            ).fetchone()
            if row is not None:
                model = self.models[model_id] = (row[0], row[1], row[2])
        return model

    def _new_model(self, model_id: str, model: tuple[str, str | None, str]) -> None:
        self.models[model_id] = model
        self.conn.execute(
            "INSERT INTO models (model_id, model_name, provider, created_at) VALUES (?, ?, ?, ?)",
            (model_id, *model),
        )

    def _born(self, s: _Session) -> None:
        self.conn.execute(
            f"INSERT INTO sessions ({SESSION_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            s.session_row(),
        )
        self.conn.execute(
            "INSERT INTO session_timeouts (session_id, idle_timeout_seconds, "
            "hard_timeout_seconds, created_at, last_activity, expires_at, timeout_warning_sent, "
            "warning_sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            s.timeouts_row(),
        )

    def _metadata_changed(self, s: _Session) -> None:
        self._meta_dirty.add(s.session_id)

    def _renamed(self, s: _Session) -> None:
        self._titles.add(s.session_id)

    def _gone(self, session_id: str) -> None:
        self.sessions[session_id] = None
        self._restored_ids.discard(session_id)
        self.flush()
        self.conn.execute(
            "DELETE FROM sessions_fts WHERE rowid IN "
            "(SELECT message_id FROM messages WHERE session_id = ?)",
            (session_id,),
        )
        self.conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    def finish(self) -> None:
        self.flush()
        c = self.conn
        live = self.live()
        c.executemany(
            "UPDATE sessions SET created_at = ?, updated_at = ?, model_id = ?, model_name = ?, "
            "title = ?, message_count = ?, total_tokens = ?, total_duration_seconds = ?, "
            "last_activity = ?, status = ?, idle_timeout_seconds = ?, "
            "hard_timeout_seconds = ?, expires_at = ?, last_event_pos = ? WHERE session_id = ?",
            [(*r[1:], r[0]) for r in (s.session_row() for s in live)],
        )
        c.executemany(
            "UPDATE session_timeouts SET idle_timeout_seconds = ?, hard_timeout_seconds = ?, "
            "created_at = ?, last_activity = ?, expires_at = ?, timeout_warning_sent = ?, "
            "warning_sent_at = ? WHERE session_id = ?",
            [(*r[1:], r[0]) for r in (s.timeouts_row() for s in live)],
        )
        for sid in sorted(self._meta_dirty):
            s = self.sessions.get(sid)
            if s is None:
                continue
            c.execute("DELETE FROM session_metadata WHERE session_id = ?", (sid,))
            c.executemany(
                "INSERT INTO session_metadata (metadata_id, session_id, key, value) "
                "VALUES (?, ?, ?, ?)",
                [(m[0], sid, key, m[1]) for key, m in s.metadata.items()],
            )
        # Renames: the index rows already there take the new title (sessions_au's work).
        for sid in sorted(self._titles):
            s = self.sessions.get(sid)
            if s is not None:
                c.execute(
                    "UPDATE sessions_fts SET title = ?, model_name = ? WHERE rowid IN "
                    "(SELECT message_id FROM messages WHERE session_id = ?)",
                    (s.title, s.model_name, sid),
                )
        c.execute(FTS_FILL_SQL, (self.after_pos,))
        # A restored session's messages keep their old ids: index them too.
        for sid in sorted(self._restored_ids):
            c.execute(RESTORED_FTS_SQL, (sid,))


def _deferred_objects(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """The triggers and secondary indexes (``type``, ``name``, ``sql``), in schema order."""
    return [
        (str(t), str(n), str(sql))
        for t, n, sql in conn.execute(
            "SELECT type, name, sql FROM sqlite_master "
            "WHERE type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY rowid"
        )
    ]


Observer = Callable[[AnyEvent], None]
Progress = Callable[[int, int], None]


class BulkResult:
    """What ``bulk_load`` applied: the same figures as ``catch_up``'s result."""

    def __init__(self, applied: int, cp: Checkpoint, torn: Any) -> None:
        self.events_applied = applied
        self.checkpoint = cp
        self.torn = torn


def bulk_load(
    conn: sqlite3.Connection,
    log_path: str | os.PathLike[str],
    *,
    until: Until | None = None,
    progress: Progress | None = None,
    observer: Observer | None = None,
) -> BulkResult:
    """Project the log (or its prefix) into ``conn``, a database with a fresh schema.

    One transaction; raises (leaving ``conn`` to be thrown away) ApplyError for an event
    the projection refuses, CorruptLog for a bad line, sqlite3.Error for a row a
    constraint refuses.
    """
    path = os.fspath(log_path)
    total = os.path.getsize(path) if os.path.exists(path) else 0
    deferred = _deferred_objects(conn)
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    for kind, name, _sql in deferred:
        conn.execute(f'DROP {kind.upper()} "{name}"')
    loader = _Loader(conn)
    apply = loader.apply
    reader = LogReader(path)
    records = iter(reader)
    applied = 0
    last: tuple[AnyEvent, int, int] | None = None  # event, start, end of the last line
    group: list[tuple[AnyEvent, int, int]] = []
    start = 0
    next_progress = 0
    for event, end in records:
        grp = event.grp
        if grp is not UNSET and grp[0] != grp[1]:
            group.append((event, start, end))
            start = end
            continue
        if group:
            group.append((event, start, end))
            if until is not None and not _includes(until, event):
                break
            for member, _s, _e in group:
                apply(member)
                if observer is not None:
                    observer(member)
            applied += len(group)
            last = group[-1]
            group = []
        else:
            if until is not None and not _includes(until, event):
                break
            apply(event)
            if observer is not None:
                observer(event)
            applied += 1
            last = (event, start, end)
        start = end
        if progress is not None and applied >= next_progress:
            next_progress = applied + 20_000
            progress(end, max(total, end))
    records.close()  # type: ignore[attr-defined]
    loader.finish()
    for _kind, _name, sql in deferred:
        conn.execute(sql)
    cp = Checkpoint(0, 0, 0, "")
    if last is not None:
        event, line_start, line_end = last
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = read_bytes(fd, line_start, line_end)
        finally:
            os.close(fd)
        cp = Checkpoint(line_end, event.pos, line_start, line_hash(data))
        write_checkpoint(conn, cp)
    conn.execute("COMMIT")
    conn.execute("PRAGMA foreign_keys = ON")
    if progress is not None and last is not None:
        progress(cp.log_offset, max(total, cp.log_offset))
    return BulkResult(applied, cp, reader.torn)


def _includes(until: Until, last: AnyEvent) -> bool:
    if until.pos is not None and last.pos > until.pos:
        return False
    return not (until.ts is not None and last.ts > until.ts)
