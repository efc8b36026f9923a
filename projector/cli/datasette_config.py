"""A Datasette configuration that makes the projection browsable out of the box.

Datasette opens the database read-only, so it runs beside ``watch``. The configuration
names facets (sessions by status and model, messages by role), full-text search on
``messages`` (the index, ``sessions_fts``, is a table of its own keyed by ``message_id``:
Datasette finds it only when told, with ``fts_table`` and ``fts_pk``), two canned queries
(a session's transcript, usage by day) and hides the bookkeeping tables.

Datasette 0.65 reads all of this from its metadata file (``-m``); from 1.0 the table
options and queries move to ``datasette.yaml`` (``-c``), and only titles stay metadata.
Both accept JSON, which is what this module writes. Datasette itself is not imported:
only its installed version is read, to choose the format.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

from projector.errors import DatasetteVersionError

Flavour = Literal["0.65", "1.0"]
FLAVOURS: Final = ("0.65", "1.0")

TRANSCRIPT_SQL: Final = """SELECT sequence_number, role, content, tool_calls, tool_call_id,
  timestamp, tokens_used, duration_seconds
FROM messages
WHERE session_id = :session_id
ORDER BY sequence_number"""

USAGE_BY_DAY_SQL: Final = """SELECT substr(m.timestamp, 1, 10) AS day,
  s.model_id AS model,
  COUNT(DISTINCT m.session_id) AS sessions,
  COUNT(*) AS messages,
  COALESCE(SUM(m.tokens_used), 0) AS tokens,
  ROUND(COALESCE(SUM(m.duration_seconds), 0), 3) AS model_seconds
FROM messages AS m JOIN sessions AS s ON s.session_id = m.session_id
GROUP BY day, model
ORDER BY day, model"""

# The full-text index and its shadow tables, and the projector's own bookkeeping.
HIDDEN_TABLES: Final = (
    "sessions_fts",
    "sessions_fts_config",
    "sessions_fts_content",
    "sessions_fts_data",
    "sessions_fts_docsize",
    "sessions_fts_idx",
    "projector_checkpoint",
    "projector_quarantine",
)


def installed_flavour() -> Flavour:
    """The configuration format of the Datasette installed here."""
    try:
        version = metadata.version("datasette")
    except metadata.PackageNotFoundError:
        raise DatasetteVersionError(
            "Datasette is not installed here (pip install 'session-journal[datasette]'); "
            "or name its version with --for 0.65 or --for 1.0"
        ) from None
    major = re.match(r"(\d+)", version)
    if major is None:
        raise DatasetteVersionError(
            f"Datasette's version {version!r} is not one this command knows; "
            "name the format with --for 0.65 or --for 1.0"
        )
    return "0.65" if int(major.group(1)) == 0 else "1.0"


def database_name(db_path: str) -> str:
    """The name Datasette gives a database file: its file name without the extension."""
    return Path(db_path).stem


def database_settings() -> dict[str, Any]:
    """Table options and canned queries of the projection (the same in both formats)."""
    tables: dict[str, Any] = {
        "sessions": {
            "facets": ["status", "model_id"],
            "sort_desc": "last_activity",
            "label_column": "title",
        },
        "messages": {
            "fts_table": "sessions_fts",
            "fts_pk": "message_id",
            "facets": ["role"],
            "sort": "message_id",
        },
        "models": {"label_column": "model_name"},
    }
    tables.update({name: {"hidden": True} for name in HIDDEN_TABLES})
    return {
        "tables": tables,
        "queries": {
            "transcript": {"title": "A session's transcript", "sql": TRANSCRIPT_SQL},
            "usage_by_day": {"title": "Usage by day and model", "sql": USAGE_BY_DAY_SQL},
        },
    }


def datasette_config(db_path: str, flavour: Flavour) -> dict[str, Any]:
    """The configuration for ``datasette DB -m FILE`` (0.65) or ``-c FILE`` (1.0)."""
    databases = {database_name(db_path): database_settings()}
    if flavour == "0.65":
        return {"title": "Session journal", "databases": databases}
    return {"databases": databases}
