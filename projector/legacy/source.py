"""Reading an old AI-router sessions database, read-only, for ``import-legacy``.

The old app wrote SQLite directly (the seed's "current" schema, perhaps changed by the
seed's migration script). This module opens such a file with ``mode=ro`` (never
``immutable=1``: a live writer may still be using it), reads every row of the tables the
import knows inside one read transaction (a consistent view even while the old app
writes), and groups them by session. It never writes: the file's bytes stay unchanged.
SQLite's integrity check of the file runs beside that reading, in a read transaction of
its own: a file another app writes to meanwhile may be checked as of a later moment than
its rows were read (the report's SHA-256 comparison tells whether it changed at all).

Values are kept exactly as SQLite returns them, whatever the declared column type: a
``content`` may be NULL, an integer, a float, a BLOB, or TEXT that is not valid UTF-8 (kept
as ``BadText``, the raw bytes). Missing tables and columns read as absent/NULL and are
listed in the report.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from projector.db import readonly_uri
from projector.errors import FileRefused

# The tables the import reads, and the columns it knows in each (others are kept too).
KNOWN_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "sessions": (
        "session_id",
        "created_at",
        "updated_at",
        "model_id",
        "model_name",
        "title",
        "message_count",
        "total_tokens",
        "total_duration_seconds",
        "last_activity",
    ),
    "messages": (
        "message_id",
        "session_id",
        "sequence_number",
        "role",
        "content",
        "timestamp",
        "tokens_used",
        "duration_seconds",
        "metadata",
    ),
    "session_metadata": ("metadata_id", "session_id", "key", "value"),
    "session_timeouts": ("session_id", "idle_timeout_seconds", "hard_timeout_seconds"),
    "session_snapshots": ("snapshot_id", "session_id"),
    "models": ("model_id", "model_name", "provider"),
}
# Tables derived from the others (rebuilt by the projection), so not imported as data.
DERIVED_TABLES: Final = frozenset({"sessions_fts", "sqlite_sequence"})


class LegacyImportError(FileRefused):
    """The old database cannot be read; nothing was written."""

    OUTCOME = "nothing was written"


class BadText(bytes):
    """A TEXT value that is not valid UTF-8: its raw bytes."""


def _text(raw: bytes) -> str | BadText:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return BadText(raw)


Row = dict[str, Any]


@dataclass
class OldSession:
    """One session of the old database with everything that belongs to it.

    ``row`` is None for a session id that only orphaned rows mention.
    """

    key: Any  # the old session_id value, exactly as stored (None for NULL)
    rowid: int | None
    row: Row | None
    messages: list[Row] = field(default_factory=list)
    metadata: list[Row] = field(default_factory=list)
    timeouts: list[Row] = field(default_factory=list)
    snapshots: list[Row] = field(default_factory=list)
    duplicate_of: Any = None  # a second sessions row with an id already seen


@dataclass
class OldDatabase:
    """Everything read from the old file, plus what its schema looks like."""

    path: str
    size: int
    sha256: str
    integrity: list[str]
    tables: dict[str, list[str]]  # table -> its columns, in order
    missing_columns: dict[str, list[str]]
    other_tables: dict[str, int]  # tables the import does not know -> row count
    sessions: list[OldSession]
    models: list[Row]
    counts: dict[str, int]
    unlinked: dict[str, int]  # rows whose session_id is NULL, by table

    @property
    def variant(self) -> str:
        """``migrated``, ``pre-enhancement`` or ``partial`` (some known column missing)."""
        migrated = "session_timeouts" in self.tables or "status" in self.tables.get("sessions", [])
        if any(self.missing_columns.values()) or "messages" not in self.tables:
            return "partial (migrated)" if migrated else "partial"
        return "migrated" if migrated else "pre-enhancement"

    @property
    def has_fts(self) -> bool:
        return "sessions_fts" in self.tables


def file_digest(path: str) -> str:
    """SHA-256 of the file's bytes (the report shows the source was left unchanged)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _open(path: str) -> sqlite3.Connection:
    if not os.path.lexists(path):
        raise LegacyImportError(path, "no such file")
    if os.path.isdir(path):
        raise LegacyImportError(path, "is a directory, not a SQLite database")
    if not os.access(path, os.R_OK):
        raise LegacyImportError(path, "cannot be read (permission denied)")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as exc:
        raise LegacyImportError(path, f"cannot be read ({exc.strerror})") from exc
    if header != b"SQLite format 3\x00":
        raise LegacyImportError(path, "is not a SQLite database (no SQLite header)")
    uri = readonly_uri(path)
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise LegacyImportError(path, f"cannot be opened as SQLite ({exc})") from exc
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise LegacyImportError(path, f"cannot be opened as SQLite ({exc})") from exc
    return conn


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _rows(conn: sqlite3.Connection, table: str) -> list[tuple[int | None, Row]]:
    """Every row in rowid order as (rowid, {column: value}); rowid None (and the table's
    own order) for a WITHOUT ROWID table.

    TEXT is decoded by SQLite's own UTF-8 decoding, unless the table holds TEXT that is
    not UTF-8: then it is read again, every value through ``_text`` (which keeps such
    text as ``BadText``), several times slower.
    """
    cols = [str(r[1]) for r in conn.execute(f"PRAGMA table_info({_quote(table)})")]
    select = ", ".join(_quote(c) for c in cols)
    try:
        conn.execute(f"SELECT _rowid_ FROM {_quote(table)} LIMIT 0")
        query, with_rowid = f"SELECT _rowid_, {select} FROM {_quote(table)} ORDER BY _rowid_", 1
    except sqlite3.OperationalError:
        query, with_rowid = f"SELECT {select} FROM {_quote(table)}", 0
    try:
        return _fetch(conn.execute(query), cols, with_rowid)
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    conn.text_factory = _text
    try:
        return _fetch(conn.execute(query), cols, with_rowid)
    finally:
        conn.text_factory = str


def _fetch(cur: sqlite3.Cursor, cols: list[str], with_rowid: int) -> list[tuple[int | None, Row]]:
    if with_rowid:
        return [(values[0], dict(zip(cols, values[1:], strict=True))) for values in cur]
    return [(None, dict(zip(cols, values, strict=True))) for values in cur]


def read_database(path: str) -> OldDatabase:
    """Read the whole old database, read-only. Raises LegacyImportError if it cannot."""
    path = os.fspath(path)
    conn = _open(path)
    try:
        # SQLite's integrity check of the file and its SHA-256 let go of the GIL: on a
        # thread of their own they run beside the reading of the rows, which is Python.
        with ThreadPoolExecutor(1, thread_name_prefix="legacy-check") as pool:
            return _read(conn, path, pool.submit(_check_file, path))
    except sqlite3.DatabaseError as exc:
        raise LegacyImportError(path, f"cannot be read as SQLite ({exc})") from exc
    finally:
        conn.close()


def _check_file(path: str) -> tuple[list[str], str]:
    """SQLite's integrity check of the file, on a connection of its own, and its SHA-256."""
    conn = _open(path)
    try:
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()
    return integrity, file_digest(path)


def _tables(conn: sqlite3.Connection, path: str) -> dict[str, list[str]]:
    """The old file's tables and their columns; refuses a file with no sessions to import."""
    names = [
        str(r[0])
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    tables = {
        n: [str(r[1]) for r in conn.execute(f"PRAGMA table_info({_quote(n)})")]
        for n in names
        if not n.startswith("sessions_fts_")
    }
    if "sessions" not in tables:
        raise LegacyImportError(path, "has no sessions table; is it an AI-router sessions file?")
    for table in ("sessions", "messages", "session_metadata", "session_timeouts"):
        if table in tables and "session_id" not in tables[table]:
            raise LegacyImportError(path, f"table {table} has no session_id column")
    return tables


def _read(
    conn: sqlite3.Connection, path: str, checked: Future[tuple[list[str], str]]
) -> OldDatabase:
    size = os.path.getsize(path)
    # One read transaction: a consistent view even if the old app is writing.
    conn.execute("BEGIN")
    tables = _tables(conn, path)
    missing: dict[str, list[str]] = {
        t: [c for c in KNOWN_COLUMNS[t] if c not in tables[t]]
        for t in ("sessions", "messages", "session_metadata")
        if t in tables
    }
    other = {}
    for n in tables:
        if n not in KNOWN_COLUMNS and n not in DERIVED_TABLES:
            other[n] = int(conn.execute(f"SELECT count(*) FROM {_quote(n)}").fetchone()[0])

    by_key: dict[Any, OldSession] = {}
    sessions: list[OldSession] = []
    for rowid, row in _rows(conn, "sessions"):
        key = row["session_id"]
        s = OldSession(key=key, rowid=rowid, row=row)
        if key is None or key in by_key:
            s.duplicate_of = key  # None for a NULL id: that row is not a second one
        else:
            by_key[key] = s
        sessions.append(s)

    unlinked: dict[str, int] = {}
    counts: dict[str, int] = {"sessions": len(sessions)}

    def owner(table: str, key: Any) -> OldSession:
        s = by_key.get(key)
        if s is None:  # an orphan: a session id no sessions row has
            s = OldSession(key=key, rowid=None, row=None)
            by_key[key] = s
            sessions.append(s)
        if key is None:
            unlinked[table] = unlinked.get(table, 0) + 1
        return s

    plan = (
        ("messages", "messages"),
        ("session_metadata", "metadata"),
        ("session_timeouts", "timeouts"),
        ("session_snapshots", "snapshots"),
    )
    for table, attr in plan:
        counts[table] = 0
        if table not in tables:
            continue
        for rowid, row in _rows(conn, table):
            row["_rowid_"] = rowid
            counts[table] += 1
            if "session_id" not in row:
                row["session_id"] = None
            getattr(owner(table, row["session_id"]), attr).append(row)
    models: list[Row] = []
    if "models" in tables and "model_id" in tables["models"]:
        models = [row for _, row in _rows(conn, "models")]
    counts["models"] = len(models)
    conn.execute("COMMIT")
    integrity, digest = checked.result()
    return OldDatabase(
        path=path,
        size=size,
        sha256=digest,
        integrity=integrity,
        tables=tables,
        missing_columns=missing,
        other_tables=other,
        sessions=sessions,
        models=models,
        counts=counts,
        unlinked=unlinked,
    )
