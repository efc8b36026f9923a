"""Snapshot contexts of the bulk path, built piece by piece and streamed into SQLite.

A snapshot's ``context_json`` holds the session and all its messages, so a long session's
text is large. These functions build it as the rows stream past, hand it on in pieces of
at most about SPILL_BYTES, and write it through incremental blob I/O, so that no value
the size of a whole history is held in Python. The bytes are exactly those of the
incremental path (``apply.snapshot_json`` and the ``create_snapshot_on_archive``
trigger's ``json_object``): tests/test_bulk_rebuild.py compares them.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeVar

import msgspec

from projector.rules.apply import MESSAGES_CLOSE, MESSAGES_OPEN, snapshot_json_into
from projector.rules.message_rows import SnapshotContext, SnapshotMessage
from projector.rules.session_rows import ApplyError

# The create_snapshot_on_archive trigger's row (its context_json built by
# pre_archive_into), context_json last, as text of the given length written after the
# insert (insert_streamed).
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
    "duration_seconds, metadata, tool_calls, tool_call_id, raw FROM messages "
    "WHERE session_id = ? AND sequence_number > ? "
    "ORDER BY sequence_number"
)
ARCHIVE_MESSAGES_SQL: Final = (
    "SELECT role, content, timestamp, tokens_used FROM messages WHERE session_id = ? "
    "ORDER BY sequence_number"
)
_encoder = msgspec.json.Encoder()


lazy_context_decoder = msgspec.json.Decoder(SnapshotContext[msgspec.Raw])
message_decoder = msgspec.json.Decoder(SnapshotMessage)


Spill = Callable[[bytearray], None]
# A value being built is handed on (and its buffer emptied) whenever it reaches this size.
SPILL_BYTES: Final = 2**20


def pre_archive_into(
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
    """The bytes of the create_snapshot_on_archive trigger's ``json_object(...)``, built
    into ``out`` as the ``(role, content, timestamp, tokens)`` rows stream past (SQLite's
    json functions hold a long session several times over); ``out`` is handed to
    ``spill`` (which empties it) as it grows, if ``spill`` is given, the last piece left
    in it. SQLite's JSON text and msgspec's agree: compact, the same escapes
    (tests/test_bulk_rebuild.py checks every character), integers in decimal, null for
    NULL."""
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


def snapshot_into(
    out: bytearray,
    head: SnapshotContext[SnapshotMessage],
    rows: Iterable[Sequence[Any]],
    spill: Spill,
    earlier: Callable[[bytearray, Spill], bool] | None = None,
) -> tuple[int, int]:
    """``apply.snapshot_json(head, rows)``, the same bytes, handed to ``spill`` piece by
    piece, the last left in ``out`` (``apply.snapshot_json_into``, which see)."""

    def spill_when_full(buffer: bytearray) -> None:
        if len(buffer) >= SPILL_BYTES:
            spill(buffer)

    def write_earlier(buffer: bytearray) -> bool:
        assert earlier is not None
        return earlier(buffer, spill)

    before = None if earlier is None else write_earlier
    return snapshot_json_into(out, head, rows, spill_when_full, before)


def copy_text(
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


Built = TypeVar("Built")


def insert_streamed(
    conn: sqlite3.Connection,
    sql: str,
    params: Sequence[Any],
    rowid: int,
    build: Callable[[bytearray, Spill], Built],
) -> tuple[int, Built]:
    """Insert a ``session_snapshots`` row whose ``context_json`` ``build`` writes; returns
    the text's length and what ``build`` returned.

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
        built = build(out, spill)
        if spool is None:  # a short value: bound as it is
            conn.execute(sql.replace(_ZEROS, "CAST(? AS TEXT)"), (*params, out))
            return len(out), built
        spill(out)
        conn.execute(sql, (*params, size))
        spool.seek(0)
        with conn.blobopen("session_snapshots", "context_json", rowid) as blob:
            while chunk := spool.read(SPILL_BYTES):
                blob.write(chunk)
    finally:
        if spool is not None:
            spool.close()
    return size, built


_LAST_MESSAGE: Final = b'{"message_id":'
# How far into a stored context its messages are looked for, from either end.
_SPAN_SEARCH: Final = 64 * 1024


def messages_span(conn: sqlite3.Connection, snapshot_id: int) -> tuple[int, int, int] | None:
    """Where the messages of a stored snapshot context (``apply.snapshot_json``'s text)
    are: ``(start, end, message_id of the last)``, the bytes between its brackets; None
    if it holds none or they are not near enough to its ends to be found cheaply.

    The markers cannot occur inside a JSON string (a quote in one is escaped), so the
    first ``,"messages":[`` and the last ``],"snapshot_reason":`` are the real ones."""
    with conn.blobopen("session_snapshots", "context_json", snapshot_id, readonly=True) as blob:
        size = len(blob)
        head = blob.read(min(size, _SPAN_SEARCH))
        at = head.find(MESSAGES_OPEN)
        if at < 0:
            return None
        start = at + len(MESSAGES_OPEN)
        tail_from = max(start, size - _SPAN_SEARCH)
        blob.seek(tail_from)
        tail = blob.read(size - tail_from)
    close = tail.rfind(MESSAGES_CLOSE)
    last = tail.rfind(_LAST_MESSAGE, 0, max(close, 0))
    if close < 0 or last < 0:
        return None
    digits = tail[last + len(_LAST_MESSAGE) :].split(b",", 1)[0]
    if not digits.isdigit():
        return None
    return start, tail_from + close, int(digits)
