"""The read API (projector.queries) on its own: listing, transcripts, search, stats."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journal import Journal
from projector import connect, replay
from projector.queries import (
    QueryError,
    SearchSyntaxError,
    SessionNotFound,
    count_matches,
    get_transcript,
    list_sessions,
    parse_since,
    plain_query,
    search,
    search_sessions,
    usage_stats,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(log, durability="none") as j:
        a = j.create_session("gpt-4o", "GPT-4o", "Paris", session_id="a", at=T0)
        j.append_message(a, "user", "Where to eat croissants?", tokens_used=5, at=T0)
        j.append_message(a, "assistant", "Try the Marais bakeries.", tokens_used=7,
                         duration_seconds=1.5, at=T0 + timedelta(minutes=1))  # fmt: skip
        j.set_metadata(a, "channel", "web")
        b = j.create_session("claude", "Claude", "SQL", session_id="b",
                             at=T0 + timedelta(days=1))  # fmt: skip
        j.append_message(b, "user", "Index the messages table?", tokens_used=3,
                         metadata={"client": "cli"}, at=T0 + timedelta(days=1))  # fmt: skip
        j.archive(b)
        c = j.create_session("gpt-4o", "GPT-4o", "Empty", session_id="c",
                             at=T0 + timedelta(days=2))  # fmt: skip
        j.delete_session(c)
    replay(log, db)
    connection = connect(db)
    yield connection
    connection.close()


def test_list_sessions_orders_filters_and_limits(conn: sqlite3.Connection) -> None:
    assert [s.session_id for s in list_sessions(conn)] == ["b", "a"]  # c was deleted
    assert [s.session_id for s in list_sessions(conn, status="archived")] == ["b"]
    assert [s.session_id for s in list_sessions(conn, model="GPT-4o")] == ["a"]
    assert [s.session_id for s in list_sessions(conn, model="claude")] == ["b"]
    assert [s.session_id for s in list_sessions(conn, since="2026-03-02")] == ["b"]
    assert [s.session_id for s in list_sessions(conn, limit=1)] == ["b"]
    a = list_sessions(conn, model="gpt-4o")[0]
    assert (a.message_count, a.total_tokens, a.total_duration_seconds) == (2, 12, 1.5)
    with pytest.raises(QueryError, match="status must be one of"):
        list_sessions(conn, status="gone")


def test_transcript(conn: sqlite3.Connection) -> None:
    t = get_transcript(conn, "a")
    assert t.session.title == "Paris" and t.metadata == {"channel": "web"}
    assert [(m.seq, m.role, m.tokens_used) for m in t.messages] == [
        (1, "user", 5),
        (2, "assistant", 7),
    ]
    assert get_transcript(conn, "b").messages[0].metadata == {"client": "cli"}
    with pytest.raises(SessionNotFound, match="'c'"):
        get_transcript(conn, "c")


def test_search_ranks_and_highlights(conn: sqlite3.Connection) -> None:
    (hit,) = search(conn, "croissants")
    assert (hit.session_id, hit.seq, hit.role) == ("a", 1, "user")
    assert "**croissants**" in hit.snippet
    assert [h.session_id for h in search(conn, "index messages")] == ["b"]
    assert search(conn, "croissants bakeries") == []  # every word must be in one message
    assert [h.seq for h in search(conn, "marais OR croissants", fts_syntax=True)] != []
    assert [h.seq for h in search(conn, "bak*", fts_syntax=True)] == [2]
    assert search(conn, "croissants", limit=0) == []


@pytest.mark.parametrize(
    "hostile", ["'; DROP TABLE messages; --", '" OR 1=1 --', "NEAR(", "a AND", "*", "x:y"]
)
def test_hostile_plain_queries_are_just_words(conn: sqlite3.Connection, hostile: str) -> None:
    try:
        search(conn, hostile)
    except SearchSyntaxError as exc:
        assert "nothing to search for" in str(exc)
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 3


@pytest.mark.parametrize("fts_syntax", [False, True])
@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("paris\ud800", "the search query holds a lone surrogate"),
        ("paris\x00louvre", "the search query holds a NUL character at 5"),
    ],
)
def test_a_query_that_is_not_text_is_refused_in_its_own_words(
    conn: sqlite3.Connection, query: str, reason: str, fts_syntax: bool
) -> None:
    with pytest.raises(SearchSyntaxError, match=reason):
        search(conn, query, fts_syntax=fts_syntax)
    with pytest.raises(SearchSyntaxError, match=reason):
        count_matches(conn, query, fts_syntax=fts_syntax)


def test_fts_syntax_errors_are_named(conn: sqlite3.Connection) -> None:
    with pytest.raises(SearchSyntaxError, match="not valid FTS5 syntax"):
        search(conn, '"unbalanced', fts_syntax=True)
    with pytest.raises(SearchSyntaxError, match="nothing to search for"):
        plain_query("  ...  ")


def test_a_title_or_model_name_is_not_a_message_hit(conn: sqlite3.Connection) -> None:
    """Session "a" is titled Paris and runs GPT-4o; none of its messages says either."""
    assert search(conn, "paris") == [] and search(conn, "gpt") == []
    assert count_matches(conn, "paris") == 0
    assert [s.session_id for s in search_sessions(conn, "paris")] == ["a"]
    assert [s.session_id for s in search_sessions(conn, "GPT 4o")] == ["a"]
    assert [s.session_id for s in search_sessions(conn, "claude sql")] == ["b"]
    assert search_sessions(conn, "paris claude") == []  # every word, as for messages
    assert search_sessions(conn, "empty") == []  # deleted


def test_session_search_takes_like_wildcards_as_letters(conn: sqlite3.Connection) -> None:
    with pytest.raises(SearchSyntaxError, match="nothing to search for"):
        search_sessions(conn, "%")
    assert search_sessions(conn, "gpt_4o") == []  # "_" is a letter here, not "any one"


def test_renaming_a_session_leaves_its_messages_hits_alone(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(log, durability="none") as j:
        j.create_session("m", "M", "Old title", session_id="s", first_message="hello there")
        j.rename("s", "Lisbon")
    replay(log, db)
    conn = connect(db)
    try:
        assert search(conn, "lisbon") == [] and search(conn, "old") == []
        assert [h.seq for h in search(conn, "hello")] == [1]
        assert [s.title for s in search_sessions(conn, "lisbon")] == ["Lisbon"]
    finally:
        conn.close()


def test_counts_and_limits(conn: sqlite3.Connection) -> None:
    assert count_matches(conn, "the") == 2  # "Try the Marais…", "Index the messages…"
    assert len(search(conn, "the", limit=1)) == 1
    assert len(search(conn, "the", limit=None)) == 2
    assert count_matches(conn, "marais OR croissants", fts_syntax=True) == 2
    assert len(list_sessions(conn, limit=None)) == 2
    assert [s.session_id for s in search_sessions(conn, "s", limit=None)] == ["b", "a"]
    assert len(search_sessions(conn, "s", limit=1)) == 1


def test_usage_stats_per_model_and_day(conn: sqlite3.Connection) -> None:
    by_model = {r.key: r for r in usage_stats(conn)}
    assert (by_model["GPT-4o"].sessions, by_model["GPT-4o"].messages) == (1, 2)
    assert by_model["GPT-4o"].tokens == 12 and by_model["GPT-4o"].duration_seconds == 1.5
    assert by_model["Claude"].messages == 1
    by_day = usage_stats(conn, by="day")
    assert [(r.key, r.messages) for r in by_day] == [("2026-03-01", 2), ("2026-03-02", 1)]
    assert [r.key for r in usage_stats(conn, by="day", since="2026-03-02")] == ["2026-03-02"]


def test_parse_since_forms() -> None:
    assert parse_since("2026-03-02") == "2026-03-02T00:00:00.000000Z"
    assert parse_since("2026-03-02T10:00:00+02:00") == "2026-03-02T08:00:00.000000Z"
    assert parse_since("7d") < parse_since("1h") < parse_since("1m")
    with pytest.raises(QueryError, match="use a date"):
        parse_since("last week")
