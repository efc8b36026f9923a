"""The read API over the projection: list and filter sessions, a transcript, search, stats.

What the CLI prints, and what a host app can call instead of writing SQL. Every function
takes an open connection (``projector.connect``) and returns typed, JSON-ready structs.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, date, datetime
from typing import Any, Literal

import msgspec

from journal.errors import InvalidValue, JournalError
from journal.events import ToolCall, format_ts
from journal.validation import check_encodable


class QueryError(JournalError):
    """A query that cannot be answered as asked."""


class SessionNotFound(QueryError):
    """No session with that id in the projection."""

    def __init__(self, session_id: str) -> None:
        super().__init__(
            f"no session {session_id!r} in the database (deleted, never created, "
            "or the database is behind the log: run `session-journal replay`)"
        )
        self.session_id = session_id


class SearchSyntaxError(QueryError):
    """A full-text query that SQLite's FTS5 cannot parse."""


class SessionSummary(msgspec.Struct, frozen=True):
    """One row of the session list."""

    session_id: str
    title: str | None
    model_id: str | None
    model_name: str | None
    status: str
    message_count: int
    total_tokens: int
    total_duration_seconds: float
    created_at: str
    last_activity: str | None


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message of a transcript.

    ``raw`` is the provider's item exactly as the log holds it (JSON text, the same
    string); the fields with defaults are left out of JSON output when absent.
    """

    seq: int
    role: str
    content: str
    timestamp: str
    tokens_used: int | None
    duration_seconds: float | None
    metadata: dict[str, Any] | None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    raw: str | None = None


_tool_calls_decoder = msgspec.json.Decoder(list[ToolCall])


class Transcript(msgspec.Struct, frozen=True):
    """A session, its metadata and its messages in order."""

    session: SessionSummary
    metadata: dict[str, str | None]
    messages: list[Message]


class SearchHit(msgspec.Struct, frozen=True):
    """A message whose own text matches a search, best first; ``snippet`` (of that text)
    marks hits with ``**``; ``title`` is its session's, for display only."""

    session_id: str
    title: str | None
    seq: int
    role: str
    timestamp: str
    snippet: str
    rank: float


class UsageRow(msgspec.Struct, frozen=True):
    """Usage totals for one model or one day."""

    key: str
    sessions: int
    messages: int
    tokens: int
    duration_seconds: float


_SUMMARY_COLUMNS = (
    "session_id, title, model_id, model_name, status, message_count, "
    "total_tokens, total_duration_seconds, created_at, last_activity"
)
STATUSES = ("active", "idle", "paused", "archived", "expired")


def _summary(row: sqlite3.Row | tuple[Any, ...]) -> SessionSummary:
    (sid, title, model_id, model_name, status, count, tokens, duration, created, last) = tuple(row)
    return SessionSummary(
        sid,
        title,
        model_id,
        model_name,
        status,
        count or 0,
        tokens or 0,
        float(duration or 0.0),
        created,
        last,
    )


def parse_time(text: str) -> datetime:
    """An ISO 8601 time as a person types it: ``Z`` or an offset, else UTC.

    Raises ValueError if it is not one, or if it lies outside the years 1 to 9999 in UTC.
    """
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)  # the same instant; every caller works in UTC
    except OverflowError:
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


def parse_since(text: str, option: str = "--since") -> str:
    """A date (2026-11-01), an RFC 3339 time, or a span back from now (90m, 12h, 7d);
    ``option`` names it in the error."""
    span = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if span:
        seconds = int(span.group(1)) * {"m": 60, "h": 3600, "d": 86400}[span.group(2)]
        return format_ts(datetime.fromtimestamp(datetime.now(UTC).timestamp() - seconds, UTC))
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return format_ts(datetime(d.year, d.month, d.day, tzinfo=UTC))
        moment = parse_time(text)
    except ValueError:
        raise QueryError(
            f"{option} {text!r}: use a date (2026-11-01), a time "
            "(2026-11-01T09:30:00Z) or a span (90m, 12h, 7d)"
        ) from None
    return format_ts(moment)


def list_sessions(
    conn: sqlite3.Connection,
    *,
    status: str | None = None,
    model: str | None = None,
    since: str | None = None,
    limit: int | None = 50,
) -> list[SessionSummary]:
    """Sessions by last activity, newest first; ``since`` filters on last activity;
    ``limit`` None for all."""
    if status is not None and status not in STATUSES:
        raise QueryError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if model is not None:
        where.append("(model_id = ? OR model_name = ?)")
        args += [model, model]
    if since is not None:
        where.append("COALESCE(last_activity, created_at) >= ?")
        args.append(parse_since(since))
    sql = f"SELECT {_SUMMARY_COLUMNS} FROM sessions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY COALESCE(last_activity, created_at) DESC, session_id LIMIT ?"
    return [_summary(r) for r in conn.execute(sql, [*args, _sql_limit(limit)])]


def _sql_limit(limit: int | None) -> int:
    """LIMIT's argument: SQLite reads a negative one as no limit."""
    return -1 if limit is None else max(limit, 0)


def get_session(conn: sqlite3.Connection, session_id: str) -> SessionSummary:
    row = conn.execute(
        f"SELECT {_SUMMARY_COLUMNS} FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    if row is None:
        raise SessionNotFound(session_id)
    return _summary(row)


def get_transcript(conn: sqlite3.Connection, session_id: str) -> Transcript:
    """The session with its metadata and every message in seq order."""
    session = get_session(conn, session_id)
    metadata = dict(
        conn.execute(
            "SELECT key, value FROM session_metadata WHERE session_id = ? ORDER BY key",
            (session_id,),
        ).fetchall()
    )
    messages = [
        Message(
            seq,
            role,
            content,
            ts,
            tokens,
            duration,
            None if meta is None else msgspec.json.decode(meta),
            None if calls is None else _tool_calls_decoder.decode(calls),
            call_id,
            raw,
        )
        for seq, role, content, ts, tokens, duration, meta, calls, call_id, raw in conn.execute(
            "SELECT sequence_number, role, content, timestamp, tokens_used, duration_seconds,"
            " metadata, tool_calls, tool_call_id, raw FROM messages WHERE session_id = ?"
            " ORDER BY sequence_number",
            (session_id,),
        )
    ]
    return Transcript(session, metadata, messages)


def plain_query(text: str) -> str:
    """Words typed by a person as an FTS5 query: every word must appear (any order)."""
    words = re.findall(r"\w+", text)
    if not words:
        raise SearchSyntaxError(f"nothing to search for in {text!r}")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


def _fts_match(query: str, fts_syntax: bool) -> str:
    try:
        check_encodable("the search query", query)
    except InvalidValue as exc:  # SQLite would cut the text at a NUL, or fail to encode it
        raise SearchSyntaxError(str(exc)) from None
    return query if fts_syntax else plain_query(query)


def _run_fts(
    conn: sqlite3.Connection, query: str, fts_syntax: bool, sql: str, args: tuple[Any, ...]
) -> list[Any]:
    try:
        return conn.execute(sql, (_fts_match(query, fts_syntax), *args)).fetchall()
    except sqlite3.OperationalError as exc:
        # The statement is fixed and valid: in FTS mode an error can only come from the
        # user's query (unterminated string, unknown column, stray operator…).
        if not fts_syntax:
            raise
        raise SearchSyntaxError(
            f"search query {query!r} is not valid FTS5 syntax ({exc}); "
            "leave out --fts to search for plain words"
        ) from None


def search(
    conn: sqlite3.Connection, query: str, *, limit: int | None = 20, fts_syntax: bool = False
) -> list[SearchHit]:
    """Messages whose own text matches ``query``, best first (FTS5 bm25 rank); ``limit``
    None for all.

    Plain words just work; ``fts_syntax=True`` passes the query to FTS5 as written
    (phrases, ``OR``, ``NOT``, ``prefix*``, ``NEAR``). A session's title or model name is
    not a message's text: ``search_sessions`` finds those.
    """
    rows = _run_fts(
        conn,
        query,
        fts_syntax,
        "SELECT m.session_id, s.title, m.sequence_number, m.role, m.timestamp,"
        " snippet(sessions_fts, 1, '**', '**', '…', 12), sessions_fts.rank"
        " FROM sessions_fts JOIN messages m ON m.message_id = sessions_fts.rowid"
        " JOIN sessions s ON s.session_id = m.session_id"
        " WHERE sessions_fts MATCH ? ORDER BY sessions_fts.rank LIMIT ?",
        (_sql_limit(limit),),
    )
    return [SearchHit(*r) for r in rows]


def count_matches(conn: sqlite3.Connection, query: str, *, fts_syntax: bool = False) -> int:
    """How many messages ``search`` would find without a limit."""
    rows = _run_fts(
        conn, query, fts_syntax, "SELECT COUNT(*) FROM sessions_fts WHERE sessions_fts MATCH ?", ()
    )
    return int(rows[0][0])


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def search_sessions(
    conn: sqlite3.Connection, query: str, *, limit: int | None = 20
) -> list[SessionSummary]:
    """Sessions whose title, model name or model id holds every word of ``query`` (as
    ``search``'s plain words; any case for ASCII letters), most recently active first.

    Sessions are few next to messages: a scan of them needs no index of its own, so a
    rename touches nothing but its session's row.
    """
    plain_query(query)  # the same refusal of a query without words
    words = re.findall(r"\w+", query)
    where = " AND ".join(
        "(title LIKE ? ESCAPE '\\' OR model_name LIKE ? ESCAPE '\\' OR model_id LIKE ? ESCAPE '\\')"
        for _ in words
    )
    args = [_like_pattern(w) for w in words for _ in range(3)]
    sql = (
        f"SELECT {_SUMMARY_COLUMNS} FROM sessions WHERE {where}"
        " ORDER BY COALESCE(last_activity, created_at) DESC, session_id LIMIT ?"
    )
    return [_summary(r) for r in conn.execute(sql, [*args, _sql_limit(limit)])]


def usage_stats(
    conn: sqlite3.Connection, by: Literal["model", "day"] = "model", since: str | None = None
) -> list[UsageRow]:
    """Sessions, messages, tokens and model time per model or per day (of the messages)."""
    key = "COALESCE(s.model_name, s.model_id)" if by == "model" else "substr(m.timestamp, 1, 10)"
    args: list[Any] = []
    where = ""
    if since is not None:
        where = "WHERE m.timestamp >= ?"
        args.append(parse_since(since))
    rows = conn.execute(
        f"SELECT {key} AS k, COUNT(DISTINCT m.session_id), COUNT(*),"
        " COALESCE(SUM(m.tokens_used), 0), COALESCE(SUM(m.duration_seconds), 0.0)"
        f" FROM messages m JOIN sessions s ON s.session_id = m.session_id {where}"
        " GROUP BY k ORDER BY k",
        args,
    ).fetchall()
    return [
        UsageRow(str(k), n_sessions, n_messages, tokens, float(duration))
        for k, n_sessions, n_messages, tokens, duration in rows
    ]
