"""The read commands: sessions, show, search, stats, export. They only read the database."""

from __future__ import annotations

import sys
from typing import Any, cast

import click

from projector.cli import render
from projector.cli.export import to_jsonl, to_markdown
from projector.cli.notes import note_more, one_more, to_run
from projector.cli.support import (
    emit_json,
    fail,
    get_paths,
    json_option,
    json_text,
    print_sessions,
    read_db,
)
from projector.queries import (
    STATUSES,
    SearchHit,
    SessionSummary,
    count_matches,
    get_transcript,
    list_sessions,
    search_sessions,
    usage_stats,
)
from projector.queries import search as do_search


@click.command()
@click.option(
    "--status",
    type=click.Choice(STATUSES),
    help="Only sessions in this state.",
)
@click.option("--model", help="Only sessions of this model (id or name).")
@click.option("--since", help="Active since a date, time or span (2026-11-01, 12h, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0), help="0 shows all.")
@json_option
@click.pass_context
def sessions(
    ctx: click.Context,
    status: str | None,
    model: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List sessions, most recently active first."""
    shown = limit or None
    with read_db(ctx) as conn:
        rows = list_sessions(conn, status=status, model=model, since=since, limit=one_more(shown))
    print_sessions_or_json(rows[:shown], as_json)
    if len(rows) > len(rows[:shown]):
        note_more("sessions", shown, None)


@click.command()
@click.argument("session_id")
@json_option
@click.pass_context
def show(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Print a session's transcript."""
    with read_db(ctx) as conn:
        t = get_transcript(conn, session_id)
    if as_json:
        emit_json(t)
        return
    s = t.session
    click.echo(click.style(s.title or "(untitled)", bold=True))
    click.echo(
        f"{s.session_id} · {s.model_name or s.model_id} · {s.status} · "
        f"{s.message_count} messages · {render.human_tokens(s.total_tokens)} tokens · "
        f"started {render.short_time(s.created_at)}"
    )
    for key, value in t.metadata.items():
        click.echo(f"  {key}: {value}")
    for m in t.messages:
        extra = ", ".join(
            x
            for x in (
                f"{m.tokens_used} tokens" if m.tokens_used is not None else "",
                render.human_duration(m.duration_seconds),
            )
            if x
        )
        click.echo(
            "\n"
            + click.style(f"#{m.seq} {m.role}", bold=True)
            + f"  {render.short_time(m.timestamp)}"
            + (f"  ({extra})" if extra else "")
            + (f"  answering {m.tool_call_id}" if m.tool_call_id else "")
        )
        if m.content:
            click.echo(m.content)
        for call in m.tool_calls or ():
            click.echo(f"→ {call.name}({call.arguments})  [{call.id}]")


@click.command()
@click.argument("words", nargs=-1, required=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0), help="0 shows all.")
@click.option(
    "--fts",
    "fts_syntax",
    is_flag=True,
    help="Pass WORDS to SQLite FTS5 as written (phrases, OR, NOT, prefix*).",
)
@click.option(
    "--sessions",
    "in_sessions",
    is_flag=True,
    help="Find sessions whose title or model name holds WORDS, instead of messages.",
)
@json_option
@click.pass_context
def search(
    ctx: click.Context,
    words: tuple[str, ...],
    limit: int,
    fts_syntax: bool,
    in_sessions: bool,
    as_json: bool,
) -> None:
    """Find messages whose own text holds every one of WORDS, best matches first.

    A session whose title or model name holds the words is listed apart, under its own
    heading (--sessions lists only those).
    """
    if in_sessions and fts_syntax:
        fail("--sessions and --fts: session names are searched for plain words only")
    query = " ".join(words)
    shown = limit or None
    with read_db(ctx) as conn:
        if in_sessions:
            found = search_sessions(conn, query, limit=one_more(shown))
        else:
            hits = do_search(conn, query, limit=shown, fts_syntax=fts_syntax)
            total = count_matches(conn, query, fts_syntax=fts_syntax) if shown else len(hits)
            named = [] if fts_syntax or as_json else search_sessions(conn, query, limit=6)
    if in_sessions:
        print_sessions_or_json(found[:shown], as_json)
        if len(found) > len(found[:shown]):
            note_more("sessions", shown, None)
        return
    if as_json:
        emit_json(hits)
    else:
        print_hits(hits, query)
        if named:
            click.echo("\nSessions with these words in their title or model name:")
            for n in named[:5]:
                click.echo(
                    f"  {n.session_id} · {render.shorten(n.title, 40)} · "
                    f"{n.model_name or n.model_id}"
                )
            if len(named) > 5:
                more = to_run(get_paths(ctx), "search", "--sessions", *words)
                click.echo(f"  … more: `{more}`")
    if total > len(hits):
        note_more("messages", len(hits), total)


def print_sessions_or_json(rows: list[SessionSummary], as_json: bool) -> None:
    if as_json:
        emit_json(rows)
    else:
        print_sessions(rows)


def print_hits(hits: list[SearchHit], query: str) -> None:
    if not hits:
        click.echo(f"No message holds {query!r}.")
    for h in hits:
        click.echo(
            click.style(f"{h.session_id} #{h.seq}", bold=True)
            + f" {h.role} · {render.shorten(h.title, 40)} · "
            f"{render.short_time(h.timestamp)}"
        )
        snippet = " ".join(h.snippet.split())
        # Bold on a terminal; the ** markers stay when piped, so hits remain visible.
        click.echo("  " + (render.highlight(snippet) if sys.stdout.isatty() else snippet))


@click.command()
@click.option("--by", type=click.Choice(["model", "day"]), default="model", show_default=True)
@click.option("--since", help="Only messages since a date, time or span (2026-11-01, 7d).")
@json_option
@click.pass_context
def stats(ctx: click.Context, by: str, since: str | None, as_json: bool) -> None:
    """Sessions, messages, tokens and model time per model or per day."""
    with read_db(ctx) as conn:
        rows = usage_stats(conn, by="day" if by == "day" else "model", since=since)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("No messages.")
        return
    total = (
        sum(r.sessions for r in rows),
        sum(r.messages for r in rows),
        sum(r.tokens for r in rows),
        sum(r.duration_seconds for r in rows),
    )
    body = [
        (
            r.key,
            r.sessions,
            r.messages,
            render.human_tokens(r.tokens),
            render.human_duration(r.duration_seconds),
        )
        for r in rows
    ]
    body.append(
        (
            "TOTAL",
            total[0],
            total[1],
            render.human_tokens(total[2]),
            render.human_duration(total[3]),
        )
    )
    click.echo(
        render.table(
            body, (by.upper(), "SESSIONS", "MESSAGES", "TOKENS", "MODEL TIME"), right=(1, 2, 3, 4)
        )
    )


@click.command()
@click.argument("session_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "jsonl"]),
    help="markdown (the default) or jsonl.",
)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to this file instead of stdout.",
)
@json_option
@click.pass_context
def export(
    ctx: click.Context, session_id: str, fmt: str | None, output: Any, as_json: bool
) -> None:
    """Export a session as Markdown, as JSON lines (one message a line) or, with --json,
    as one JSON document (the shape of `show --json`)."""
    if as_json and fmt is not None:
        fail("--json and --format: give one of them (--json is one JSON document)")
    with read_db(ctx) as conn:
        t = get_transcript(conn, session_id)
    if as_json:
        output.write(json_text(t) + "\n")
    else:
        output.write(to_jsonl(t) if fmt == "jsonl" else to_markdown(t))


@click.command("datasette-config")
@click.option(
    "--for",
    "flavour",
    type=click.Choice(["auto", "0.65", "1.0"]),
    default="auto",
    show_default=True,
    help="The Datasette version to write for; auto reads the installed one.",
)
@json_option
@click.pass_context
def datasette_config(ctx: click.Context, flavour: str, as_json: bool) -> None:
    """Print a Datasette configuration for the database, as JSON.

    Facets on status and model, full-text search on messages, a transcript and a
    usage-by-day query; bookkeeping tables hidden. Datasette 0.65 takes it as metadata
    (datasette sessions.db -m FILE), 1.0 as its configuration (-c FILE). The output is
    JSON with or without --json.
    """
    from projector.cli.datasette_config import Flavour, installed_flavour
    from projector.cli.datasette_config import datasette_config as build

    chosen = installed_flavour() if flavour == "auto" else cast(Flavour, flavour)
    with read_db(ctx):  # the configuration is for a projection: refuse anything else
        pass
    emit_json(build(get_paths(ctx).db, chosen))
