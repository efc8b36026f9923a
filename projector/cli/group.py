"""``session-journal``: the command line, thin over the library.

Each command parses its options, calls one library function and prints the result, as a
table for people or, with ``--json``, as stable JSON for scripts. Errors become one line on
stderr in one place (``_Group.invoke``): exit 2 for bad input or usage, 1 for integrity or
I/O problems; ``--debug`` shows the traceback instead. This module holds the group and the
commands that keep the projection current; ``read`` and ``write`` hold the others.
"""

from __future__ import annotations

import shlex
import sqlite3
import sys
from typing import TYPE_CHECKING, Any

import click
import msgspec

from journal.errors import (
    CorruptLog,
    DurabilityError,
    JournalError,
    LogWriteError,
)
from journal.events import format_ts
from journal.log.urls import is_stream_url
from projector.cli import erase as cli_erase
from projector.cli import read as cli_read
from projector.cli import write as cli_write
from projector.cli.notes import Paths, in_cli_terms, to_run
from projector.cli.streams import log_files_only, projected_log, stream_copy
from projector.cli.support import (
    PIPE_CLOSED_EXIT,
    add_global_options,
    emit_json,
    get_paths,
    json_option,
    path_options,
    paths_with_log,
    print_sessions,
    prints_data,
    progress_bar,
    read_db,
    refuse_json,
    seconds_option,
    silence_stdout,
)
from projector.errors import InvariantViolation
from projector.queries import list_sessions, parse_time
from projector.watch import projection_lock

if TYPE_CHECKING:
    from projector.checks.verify import VerifyReport

# Errors that mean "the data or the disk is in trouble", not "you typed something wrong".
_INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (
    CorruptLog,
    DurabilityError,
    LogWriteError,
    InvariantViolation,
    sqlite3.DatabaseError,
)
# OSErrors that name a path the user gave wrongly; any other is the disk's trouble (exit 1).
_PATH_ERRORS: tuple[type[OSError], ...] = (
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _exit_code(exc: BaseException) -> int:
    """1 when the data or the disk is in trouble, 2 when the input was wrong."""
    if isinstance(exc, _INTEGRITY_ERRORS):
        return 1
    if isinstance(exc, OSError) and not isinstance(exc, _PATH_ERRORS):
        return 1
    return 2


class _Group(click.Group):
    """Turns library errors into one line on stderr and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            finally:
                # Output still buffered would meet a closed pipe at exit, out of reach.
                sys.stdout.flush()
        except BrokenPipeError:
            # The reader has what it wanted (`| head`): end quietly, as git and grep do.
            silence_stdout()
            ctx.exit(PIPE_CLOSED_EXIT)
        except (JournalError, OSError, sqlite3.Error) as exc:
            if ctx.meta.get("debug"):
                raise
            code = _exit_code(exc)
            message = in_cli_terms(str(exc), ctx.find_object(Paths))
            if isinstance(exc, OSError) and exc.filename:
                message = f"{exc.filename}: {exc.strerror}"
            elif isinstance(exc, OSError):
                # No file named: the output itself (a full disk behind `> file`), an I/O
                # problem, not the user's input.
                code, message = 1, f"cannot write the output: {exc.strerror or exc}"
            click.echo(f"error: {message}", err=True)
            ctx.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@path_options
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (for the commands that print data)."
)
@click.version_option(package_name="session-journal")
@click.pass_context
def main(ctx: click.Context, log_path: str, db_path: str, debug: bool, as_json: bool) -> None:
    """Keep AI-router chat sessions in an append-only log, projected into SQLite.

    Writers append to the log (the only source of truth); `replay` or `watch` keep
    sessions.db current; the read commands query sessions.db. The options above may also
    follow the command's name.
    """
    ctx.obj = Paths(log_path, db_path)
    ctx.meta["debug"] = debug
    ctx.meta["json"] = as_json
    command = main.commands.get(ctx.invoked_subcommand or "")
    if as_json and command is not None and not prints_data(command):
        refuse_json(ctx.invoked_subcommand)


# -- keeping the projection current -------------------------------------------------------
@main.command()
@json_option
@click.pass_context
def demo(ctx: click.Context, as_json: bool) -> None:
    """Write a realistic set of demo sessions, project and verify them.

    Safe to run twice: the second run finds the demo sessions and writes nothing.
    """
    from projector import replay, verify
    from projector.cli.demo import write_demo

    paths = get_paths(ctx)
    log_files_only(paths, "demo")
    result = write_demo(paths.log)
    with projection_lock(paths.log, paths.db):
        replay(paths.log, paths.db)
        report = verify(paths.log, paths.db)
    if as_json:
        emit_json(
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
    with read_db(ctx) as conn:
        print_sessions(list_sessions(conn, limit=20))
    tries = [
        "show demo-paris-trip",
        "search croissants",
        "stats --by day",
        "sessions --status archived",
        "verify",
    ]
    click.echo(
        "\nTry next:\n" + "".join(f"  {to_run(paths, *t.split())}\n" for t in tries), nl=False
    )
    click.echo(f"  sqlite3 {shlex.quote(paths.db)} 'SELECT * FROM session_statistics'")
    if not report.ok:
        ctx.exit(1)


@main.command()
@json_option
@click.pass_context
def replay(ctx: click.Context, as_json: bool) -> None:
    """Catch the database up with the log from its checkpoint."""
    from projector import replay as do_replay

    paths = paths_with_log(ctx)
    log = projected_log(paths)
    with projection_lock(log, paths.db):
        result = do_replay(log, paths.db, progress=progress_bar("replay"))
    if as_json:
        emit_json(result)
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
    if result.scrub_pending:
        click.echo(
            "A forgotten session's old pages are still in the database's write-ahead log: "
            "a reader holds it. Run replay again once it is closed."
        )


def _parse_until(text: str | None) -> int | str | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return format_ts(parse_time(text))
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

    paths = paths_with_log(ctx)
    until_value = _parse_until(until)
    log = projected_log(paths)
    with projection_lock(log, paths.db):
        result = do_rebuild(log, paths.db, until=until_value, progress=progress_bar("rebuild"))
    if as_json:
        emit_json(result)
        return
    click.echo(
        f"Rebuilt {paths.db}: {result.events_applied} events, up to position {result.last_pos}."
    )


@main.command()
@click.option(
    "--strict",
    is_flag=True,
    help="Also exit 1 when the database is behind the log (events not projected yet).",
)
@json_option
@click.pass_context
def verify(ctx: click.Context, strict: bool, as_json: bool) -> None:
    """Prove the database matches the log; exit 1 if any problem is found.

    The proof reaches as far as the database's checkpoint: events appended to the log
    since then are counted, not checked (`replay` projects them). With --strict a
    database behind its log fails too.
    """
    from projector import verify as do_verify

    paths = paths_with_log(ctx)
    log = projected_log(paths, check_all=True)
    report = do_verify(log, paths.db, progress=progress_bar("verify"))
    if as_json:
        emit_json(
            {"ok": report.ok, **msgspec.to_builtins(report), "unprojected": report.unprojected}
        )
    else:
        for problem in report.problems:
            click.echo(f"problem: {problem}")
        click.echo(_verify_summary(paths, report))
    if not report.ok or (strict and report.unprojected):
        ctx.exit(1)


def _verify_summary(paths: Paths, report: VerifyReport) -> str:
    """verify's last line: the verdict and how far the proof reaches."""
    if not report.ok:
        return f"{len(report.problems)} problem(s) found"
    if not report.unprojected:
        return f"ok: {paths.db} matches {paths.log} (all {report.log_last_pos} events)"
    return (
        f"ok up to position {report.checkpoint_pos}: {paths.db} matches {paths.log} that far; "
        f"{report.unprojected} later event(s) of the log are not in the database yet "
        f"(run `{to_run(paths, 'replay')}`)"
    )


@main.command()
@seconds_option(
    "--poll-interval",
    1.0,
    0.01,
    "Seconds between polls of the log (the backstop for missed file events).",
)
@click.option("--verbose", "-v", is_flag=True, help="A line per batch: events and lag.")
@click.pass_context
def watch(ctx: click.Context, poll_interval: float, verbose: bool) -> None:
    """Keep the database current as the log grows (Ctrl-C stops cleanly)."""
    from projector.watch import run_watch

    paths = get_paths(ctx)
    echo = (lambda line: click.echo(line, err=True)) if verbose else None
    if not is_stream_url(paths.log):
        run_watch(paths.log, paths.db, poll_interval=poll_interval, echo=echo)
        return
    with stream_copy(paths) as copy:
        copy.sync()
        run_watch(
            copy.path,
            paths.db,
            poll_interval=poll_interval,
            echo=echo,
            feed=lambda stop: copy.follow(
                stop, poll_interval, say=lambda line: click.echo(line, err=True)
            ),
            name=f"{paths.log} (through {copy.path})",
        )


for _command in (
    cli_read.sessions,
    cli_read.show,
    cli_read.search,
    cli_read.stats,
    cli_read.export,
    cli_read.datasette_config,
    cli_write.append,
    cli_write.snapshot,
    cli_write.restore,
    cli_write.archive,
    cli_write.truncate,
    cli_write.expire,
    cli_write.import_legacy,
    cli_write.repair_line_endings,
    cli_erase.forget,
    cli_erase.retain,
    cli_erase.import_log,
    cli_erase.export_log,
):
    main.add_command(_command)
for _command in main.commands.values():
    add_global_options(_command)
