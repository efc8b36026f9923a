"""A fingerprint of the projection's contents, for determinism tests and crash harnesses.

Two databases with the same ``canonical_hash`` hold the same rows: every table of the
projection (bookkeeping included) read in primary-key order, and the full-text index by
its content (its shadow tables are an implementation detail: segments merge differently
depending on how rows arrived). verify's ``integrity_checked_at``/``integrity_status``
are left out: they record when verify last ran, by the wall clock.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from typing import Final

from journal.events import encode_json
from projector.db import readonly_uri

EXCLUDED_COLUMNS: Final = {("sessions", "integrity_checked_at"), ("sessions", "integrity_status")}
_FTS: Final = "sessions_fts"


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE ? ORDER BY name",
        (f"{_FTS}_%",),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def canonical_hash(db: str | os.PathLike[str] | sqlite3.Connection) -> str:
    """SHA-256 over the projection's rows; equal hashes mean equal contents."""
    if isinstance(db, sqlite3.Connection):
        return _hash(db)
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        return _hash(conn)
    finally:
        conn.close()


def _hash(conn: sqlite3.Connection) -> str:
    h = hashlib.sha256()
    for table in _tables(conn):
        info = conn.execute(f"PRAGMA table_info({_quote(table)})").fetchall()
        columns = [str(c[1]) for c in info if (table, str(c[1])) not in EXCLUDED_COLUMNS]
        if table == _FTS:
            select = f"SELECT rowid, {', '.join(map(_quote, columns))} FROM {_FTS} ORDER BY rowid"
        else:
            pk = [str(c[1]) for c in sorted(info, key=lambda c: int(c[5])) if int(c[5]) > 0]
            order = ", ".join(map(_quote, pk or ["rowid"]))
            select = (
                f"SELECT {', '.join(map(_quote, columns))} FROM {_quote(table)} ORDER BY {order}"
            )
        h.update(encode_json([table, columns]) + b"\n")
        for row in conn.execute(select):
            h.update(encode_json(list(row)) + b"\n")
    return h.hexdigest()
