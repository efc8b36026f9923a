"""``session-journal``: the command line, thin over the library.

Each command parses its options, calls one library function and prints the result, as a
table for people or, with ``--json``, as stable JSON for scripts. Errors become one line on
stderr in one place (``_Group.invoke``): exit 2 for bad input or usage, 1 for integrity or
I/O problems; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click
import msgspec

from journal import Journal
from journal.errors import (
    CorruptLog,
    DurabilityError,
    JournalError,
    LogWriteError,
)
from journal.events import format_ts, parse_ts
from projector import render
from projector.watch import projection_lock

F = TypeVar("F", bound=Callable[..., Any])

# Errors that mean "the data or the disk is in trouble", not "you typed something wrong".
_INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (
    CorruptLog,
    DurabilityError,
    LogWriteError,
    sqlite3.DatabaseError,
)


class _Group(click.Group):
    """Turns library errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (JournalError, OSError, sqlite3.Error) as exc:
            if ctx.meta.get("debug"):
                raise
            code = 1 if isinstance(exc, _INTEGRITY_ERRORS) else 2
            message = str(exc)
            if isinstance(exc, OSError) and exc.filename:
                message = f"{exc.filename}: {exc.strerror}"
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)


class _Paths(msgspec.Struct):
    log: str
    db: str


def _paths(ctx: click.Context) -> _Paths:
    paths = ctx.find_object(_Paths)
    assert paths is not None
    return paths


def _paths_with_log(ctx: click.Context) -> _Paths:
    """The paths, for a command that reads the log: a missing log is a mistake, not an
    empty history (projecting "nothing" would empty the database)."""
    paths = _paths(ctx)
    if not os.path.exists(paths.log):
        _fail(f"{paths.log}: no such log (use --log or SESSION_JOURNAL_LOG)")
    return paths


def _emit_json(obj: Any) -> None:
    click.echo(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode())


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON (stable keys) instead of text."
    )(fn)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def _read_db(ctx: click.Context) -> Iterator[sqlite3.Connection]:
    """Open the projection for reading; say so plainly if it does not exist yet."""
    from projector import connect

    db = _paths(ctx).db
    if not os.path.exists(db):
        _fail(f"{db}: no database yet; run `session-journal replay` (or `demo`) first")
    conn = connect(db)
    try:
        yield conn
    finally:
        conn.close()


def _invoked_as() -> str:
    """How to run this command again: its name if that is on PATH, else the path used."""
    name = os.path.basename(sys.argv[0]) or "session-journal"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(sys.argv[0]):
        return name
    return sys.argv[0] if os.sep in sys.argv[0] else "session-journal"


def _progress(label: str) -> Callable[[int, int], None] | None:
    """A click progress bar over bytes of the log, only on a terminal."""
    if not sys.stderr.isatty():
        return None
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
            state["bar"], state["done"] = bar, 0
        bar.update(done - state["done"])
        state["done"] = done
        if done >= total:
            bar.__exit__(None, None, None)

    return update


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--log",
    "log_path",
    envvar="SESSION_JOURNAL_LOG",
    default="sessions.jsonl",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The event log (env SESSION_JOURNAL_LOG).",
)
@click.option(
    "--db",
    "db_path",
    envvar="SESSION_JOURNAL_DB",
    default="sessions.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The SQLite projection (env SESSION_JOURNAL_DB).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="session-journal")
@click.pass_context
def main(ctx: click.Context, log_path: str, db_path: str, debug: bool) -> None:
    """Keep AI-router chat sessions in an append-only log, projected into SQLite.

    Writers append to the log (the only source of truth); `replay` or `watch` keep
    sessions.db current; the read commands query sessions.db.
    """
    ctx.obj = _Paths(log_path, db_path)
    ctx.meta["debug"] = debug


# -- keeping the projection current -------------------------------------------------------
@main.command()
@json_option
@click.pass_context
def demo(ctx: click.Context, as_json: bool) -> None:
    """Write a realistic set of demo sessions, project and verify them.

    Safe to run twice: the second run finds the demo sessions and writes nothing.
    """
    from projector import replay, verify
    from projector.demo import write_demo

    paths = _paths(ctx)
    result = write_demo(paths.log)
    with projection_lock(paths.db):
        replay(paths.log, paths.db)
        report = verify(paths.log, paths.db)
    if as_json:
        _emit_json(
            {
                "log": paths.log,
                "db": paths.db,
                "written": result.written,
                "sessions": result.sessions,
                "events": result.events,
                "verify_ok": report.ok,
            }
        )
        return
    if result.written:
        click.echo(
            f"Wrote {result.events} events for {len(result.sessions)} demo sessions to {paths.log}."
        )
    else:
        click.echo(f"The demo sessions are already in {paths.log}; nothing written.")
    click.echo(f"Projected into {paths.db}; verify: {'ok' if report.ok else 'PROBLEMS'}.\n")
    with _read_db(ctx) as conn:
        _print_sessions(_list(conn, None, None, None, 20))
    me = _invoked_as()
    tries = [
        "show demo-paris-trip",
        "search croissants",
        "stats --by day",
        "sessions --status archived",
        "verify",
    ]
    click.echo("\nTry next:\n" + "".join(f"  {me} {t}\n" for t in tries), nl=False)
    click.echo(f"  sqlite3 {paths.db} 'SELECT * FROM session_statistics'")
    if not report.ok:
        ctx.exit(1)


@main.command()
@json_option
@click.pass_context
def replay(ctx: click.Context, as_json: bool) -> None:
    """Catch the database up with the log from its checkpoint."""
    from projector import replay as do_replay

    paths = _paths_with_log(ctx)
    with projection_lock(paths.db):
        result = do_replay(paths.log, paths.db, progress=_progress("replay"))
    if as_json:
        _emit_json(result)
        return
    click.echo(
        f"Applied {result.events_applied} events; {paths.db} is at position {result.last_pos}."
    )
    if result.rebuilt:
        click.echo(
            "The database did not match the log (schema version or a log replaced "
            "below its checkpoint), so it was rebuilt from the log."
        )
    if result.torn is not None:
        click.echo(
            f"Stopped before {result.torn.length} bytes at the end of the log that are "
            f"not whole records yet ({result.torn.reason})."
        )


def _parse_until(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return format_ts(
            parse_ts(text)
            if text.endswith("Z") and "." in text
            else datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
        )
    except ValueError:
        raise click.BadParameter(
            "use a position (1234) or a time (2026-11-26T10:00:00Z)", param_hint="--until"
        ) from None


@main.command()
@click.option("--until", help="Stop at this position or recorded time (the state as of then).")
@json_option
@click.pass_context
def rebuild(ctx: click.Context, until: str | None, as_json: bool) -> None:
    """Project the whole log into a new database, check it, then swap it in."""
    from projector import rebuild as do_rebuild

    paths = _paths_with_log(ctx)
    until_value = _parse_until(until)
    with projection_lock(paths.db):
        result = do_rebuild(paths.log, paths.db, until=until_value, progress=_progress("rebuild"))
    if as_json:
        _emit_json(result)
        return
    click.echo(
        f"Rebuilt {paths.db}: {result.events_applied} events, up to position {result.last_pos}."
    )


@main.command()
@json_option
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Prove the database matches the log; exit 1 if any problem is found."""
    from projector import verify as do_verify

    paths = _paths_with_log(ctx)
    report = do_verify(paths.log, paths.db, progress=_progress("verify"))
    if as_json:
        _emit_json({"ok": report.ok, **msgspec.to_builtins(report)})
    elif report.ok:
        click.echo(f"ok: {paths.db} matches {paths.log}")
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo(f"{len(report.problems)} problem(s) found")
    if not report.ok:
        ctx.exit(1)


@main.command()
@click.option(
    "--poll-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.01),
    help="Seconds between polls of the log (the backstop for missed file events).",
)
@click.option("--verbose", "-v", is_flag=True, help="A line per batch: events and lag.")
@click.pass_context
def watch(ctx: click.Context, poll_interval: float, verbose: bool) -> None:
    """Keep the database current as the log grows (Ctrl-C stops cleanly)."""
    from projector.watch import run_watch

    paths = _paths(ctx)
    run_watch(
        paths.log,
        paths.db,
        poll_interval=poll_interval,
        echo=(lambda line: click.echo(line, err=True)) if verbose else None,
    )


# -- reading -----------------------------------------------------------------------------
def _list(
    conn: sqlite3.Connection, status: str | None, model: str | None, since: str | None, limit: int
) -> list[Any]:
    from projector.queries import list_sessions

    return list_sessions(conn, status=status, model=model, since=since, limit=limit)


def _print_sessions(rows: list[Any]) -> None:
    if not rows:
        click.echo("No sessions.")
        return
    click.echo(
        render.table(
            [
                (
                    r.session_id,
                    render.shorten(r.title, 32),
                    r.model_name or r.model_id,
                    r.status,
                    r.message_count,
                    render.human_tokens(r.total_tokens),
                    render.short_time(r.last_activity),
                )
                for r in rows
            ],
            ("ID", "TITLE", "MODEL", "STATUS", "MSGS", "TOKENS", "LAST ACTIVITY"),
            right=(4, 5),
        )
    )


@main.command()
@click.option(
    "--status",
    type=click.Choice(["active", "idle", "paused", "archived", "expired"]),
    help="Only sessions in this state.",
)
@click.option("--model", help="Only sessions of this model (id or name).")
@click.option("--since", help="Active since a date, time or span (2026-11-01, 12h, 7d).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(0))
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
    with _read_db(ctx) as conn:
        rows = _list(conn, status, model, since, limit)
    if as_json:
        _emit_json(rows)
    else:
        _print_sessions(rows)


@main.command()
@click.argument("session_id")
@json_option
@click.pass_context
def show(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Print a session's transcript."""
    from projector.queries import get_transcript

    with _read_db(ctx) as conn:
        t = get_transcript(conn, session_id)
    if as_json:
        _emit_json(t)
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
        )
        click.echo(m.content)


@main.command()
@click.argument("words", nargs=-1, required=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(0))
@click.option(
    "--fts",
    "fts_syntax",
    is_flag=True,
    help="Pass WORDS to SQLite FTS5 as written (phrases, OR, NOT, prefix*).",
)
@json_option
@click.pass_context
def search(
    ctx: click.Context, words: tuple[str, ...], limit: int, fts_syntax: bool, as_json: bool
) -> None:
    """Find messages containing every one of WORDS, best matches first."""
    query = " ".join(words)
    from projector.queries import search as do_search

    with _read_db(ctx) as conn:
        hits = do_search(conn, query, limit=limit, fts_syntax=fts_syntax)
    if as_json:
        _emit_json(hits)
        return
    if not hits:
        click.echo("No matches.")
    for h in hits:
        click.echo(
            click.style(f"{h.session_id} #{h.seq}", bold=True)
            + f" {h.role} · {render.shorten(h.title, 40)} · "
            f"{render.short_time(h.timestamp)}"
        )
        snippet = " ".join(h.snippet.split())
        # Bold on a terminal; the ** markers stay when piped, so hits remain visible.
        click.echo("  " + (render.highlight(snippet) if sys.stdout.isatty() else snippet))


@main.command()
@click.option("--by", type=click.Choice(["model", "day"]), default="model", show_default=True)
@click.option("--since", help="Only messages since a date, time or span (2026-11-01, 7d).")
@json_option
@click.pass_context
def stats(ctx: click.Context, by: str, since: str | None, as_json: bool) -> None:
    """Sessions, messages, tokens and model time per model or per day."""
    from projector.queries import usage_stats

    with _read_db(ctx) as conn:
        rows = usage_stats(conn, by="day" if by == "day" else "model", since=since)
    if as_json:
        _emit_json(rows)
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


@main.command()
@click.argument("session_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["markdown", "jsonl"]),
    default="markdown",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="Write to this file instead of stdout.",
)
@click.pass_context
def export(ctx: click.Context, session_id: str, fmt: str, output: Any) -> None:
    """Export a session as Markdown or as JSON lines (one message a line)."""
    from projector.export import to_jsonl, to_markdown
    from projector.queries import get_transcript

    with _read_db(ctx) as conn:
        t = get_transcript(conn, session_id)
    output.write(to_markdown(t) if fmt == "markdown" else to_jsonl(t))


# -- writing -----------------------------------------------------------------------------
def _receipt_out(receipts: list[Any], as_json: bool) -> None:
    if as_json:
        _emit_json([r._asdict() for r in receipts])
        return
    for r in receipts:
        seq = f" seq {r.seq}" if r.seq is not None else ""
        dup = " (already recorded)" if r.duplicate else ""
        click.echo(f"pos {r.pos}: {r.event_id} session {r.session_id}{seq}{dup}")
    click.echo(
        "Run `session-journal replay` (or keep `watch` running) to update the database.", err=True
    )


@main.command()
@click.argument("source", type=click.File("rb"), default="-")
@json_option
@click.pass_context
def append(ctx: click.Context, source: Any, as_json: bool) -> None:
    """Append JSON lines from SOURCE (a file, or - for stdin) as one atomic group.

    Each line has the log's shape without pos, v, ts and crc; "id" (an idempotency key)
    and "at" (when it happened) are optional. The whole input is validated first: one bad
    line and nothing is written.
    """
    from projector.ingest import append_events, parse_lines

    name = getattr(source, "name", "<stdin>")
    events = parse_lines(source, "<stdin>" if name == "<stdin>" else str(name))
    with Journal.open(_paths(ctx).log) as j:
        receipts = append_events(j, events)
    _receipt_out(receipts, as_json)


@main.command()
@click.argument("session_id")
@click.option(
    "--reason",
    type=click.Choice(["checkpoint", "timeout_warning", "pre_archive", "pre_delete"]),
    default="checkpoint",
    show_default=True,
)
@click.option("--note", help="A note stored with the snapshot.")
@json_option
@click.pass_context
def snapshot(
    ctx: click.Context, session_id: str, reason: str, note: str | None, as_json: bool
) -> None:
    """Record a snapshot of a session and its messages as of now."""
    with Journal.open(_paths(ctx).log) as j:
        _receipt_out([j.snapshot(session_id, reason, note=note)], as_json)


@main.command()
@click.argument("session_id")
@json_option
@click.pass_context
def restore(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Reopen an idle, expired, archived or deleted session with fresh deadlines."""
    with Journal.open(_paths(ctx).log) as j:
        _receipt_out([j.restore(session_id)], as_json)


@main.command()
@click.argument("session_id")
@json_option
@click.pass_context
def archive(ctx: click.Context, session_id: str, as_json: bool) -> None:
    """Archive a session (its pre_archive snapshot is kept)."""
    with Journal.open(_paths(ctx).log) as j:
        _receipt_out([j.archive(session_id)], as_json)


@main.command()
@click.option("--now", "now_text", help="Decide as of this time (default: now).")
@click.option(
    "--warn-before",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Seconds before a deadline at which a timeout_warning is written.",
)
@json_option
@click.pass_context
def expire(ctx: click.Context, now_text: str | None, warn_before: float, as_json: bool) -> None:
    """Record the timeouts that are due: warnings, idle sessions, expired sessions."""
    now = None
    if now_text is not None:
        try:
            now = datetime.fromisoformat(now_text.replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(
                "use a time such as 2026-11-26T10:00:00Z", param_hint="--now"
            ) from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    with Journal.open(_paths(ctx).log) as j:
        receipts = j.expire_due(now, warn_before_seconds=warn_before)
    if not receipts and not as_json:
        click.echo("Nothing is due.")
        return
    _receipt_out(receipts, as_json)


@main.command("import-legacy")
@click.argument("old_db", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the report; write nothing.")
@json_option
@click.pass_context
def import_legacy(ctx: click.Context, old_db: str, dry_run: bool, as_json: bool) -> None:
    """Import an old AI-router sessions database (opened read-only), losing nothing.

    Prints what was found (counter mismatches, orphans, gaps, invalid rows) and how each
    was kept, then replays and verifies. Running it again appends nothing.
    """
    from projector.legacy import import_legacy as do_import
    from projector.legacy_report import format_report

    paths = _paths(ctx)
    with projection_lock(paths.db):
        report = do_import(
            old_db, paths.log, paths.db, dry_run=dry_run, progress=_progress("import")
        )
    if as_json:
        _emit_json(report.to_builtins())
    else:
        click.echo(format_report(report))
    if not report.ok:
        ctx.exit(1)
