"""The commands that take sessions out: ``forget`` (one session, for good), ``retain``
(archive the sessions that ended long ago, then forget them), ``import-log`` (bring an
archive back) and ``export-log`` (the whole log, byte for byte, which ``import-log
--exact`` appends to an empty log, of either kind). Each forgetting also purges the
database named by ``--db``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from journal import Journal, UnknownSession
from journal.events import LineError, decode_line
from journal.retention import retain as do_retain
from journal.validation import MAX_GROUP_EVENTS
from projector.cli.notes import Paths, being_watched, to_run
from projector.cli.streams import log_files_only, projected_log
from projector.cli.support import (
    emit_json,
    fail,
    get_paths,
    json_option,
    paths_with_log,
    progress_bar,
)
from projector.cli.write import print_receipts
from projector.queries import QueryError, parse_since
from projector.watch import projection_lock


def _on_terminal() -> bool:
    return sys.stdin.isatty()


def _confirm(yes: bool, question: str) -> None:
    """Ask on a terminal; without one, only ``--yes`` goes on."""
    if yes:
        return
    if not _on_terminal():
        fail("refusing to forget without --yes: there is no terminal to confirm on")
    click.confirm(question, abort=True, err=True)


def _purge_database(paths: Paths, session_ids: list[str]) -> str:
    """Bring the database past the forgettings (which purges their sessions), purge any
    row of these ids a run cut short left, and scrub the files; says what was done."""
    from projector import replay
    from projector.db import connect
    from projector.forgetting import purge_session, scrub_database

    if not os.path.exists(paths.db):
        return f"{paths.db}: no database to purge."
    if being_watched(paths.db):
        return f"{paths.db}: the `watch` running on it purges it when it reads the forgetting."
    log = projected_log(paths)  # a stream's: the node's copy, which forgets it too
    with projection_lock(log, paths.db):
        replay(log, paths.db, progress=progress_bar("replay"))
        conn = connect(paths.db)
        try:
            with conn:
                for session_id in session_ids:
                    purge_session(conn, session_id)
            done = scrub_database(conn)
        finally:
            conn.close()
    if not done:
        return (
            f"{paths.db}: purged; a reader holds its write-ahead log, which still holds old "
            f"pages: run `{to_run(paths, 'replay')}` once it is closed."
        )
    return f"{paths.db}: purged, nothing of it left in the database's files."


@click.command()
@click.argument("session_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@click.pass_context
def forget(ctx: click.Context, session_id: str, yes: bool, as_json: bool) -> None:
    """Erase a session from the log and the database for good (a person's right to
    erasure): no byte of its id, title, messages, metadata or snapshots is left in any file
    session-journal keeps. Every other event keeps its position and id; a record that a
    forgetting happened (holding nothing of the session) is appended. Run it again after
    an interruption: it completes the forgetting."""
    paths = paths_with_log(ctx)
    _confirm(
        yes,
        f"Forget session {session_id!r}: erase it from {paths.log} and {paths.db} for good?",
    )
    with Journal.open(paths.log) as j:
        try:
            receipt = j.forget(session_id)
        except UnknownSession:
            receipt = None  # never created, or forgotten by a run cut short since
    database = _purge_database(paths, [session_id])
    if as_json:
        emit_json({"forgotten": receipt._asdict() if receipt else None, "database": database})
        return
    if receipt is None:
        click.echo(f"No session {session_id!r} in {paths.log}: nothing of it left to forget.")
    else:
        click.echo(f"pos {receipt.pos}: session forgotten; its records in the log are redacted.")
    click.echo(database)


@click.command()
@click.option(
    "--closed-before",
    "closed_before",
    required=True,
    help="Sessions archived, expired or deleted before this: a span back from now "
    "(180d, 12h) or a time.",
)
@click.option(
    "--to",
    "archive",
    required=True,
    type=click.Path(dir_okay=False),
    help="The archive to write (JSON lines, as in the log); must not exist.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would move.")
@json_option
@click.pass_context
def retain(
    ctx: click.Context, closed_before: str, archive: str, dry_run: bool, as_json: bool
) -> None:
    """Move the sessions that ended before a time out of the log: archive them to a new
    file (durable before anything is forgotten; `import-log` brings it back), then forget
    them from the log and the database."""
    paths = paths_with_log(ctx)
    log_files_only(paths, "retain")
    try:
        cutoff = parse_since(closed_before, "--closed-before")
    except QueryError as exc:
        fail(str(exc))
    with Journal.open(paths.log) as j:
        report = do_retain(j, cutoff, archive, dry_run)
    database = "" if dry_run or not report.sessions else _purge_database(paths, report.sessions)
    if as_json:
        emit_json({**report.__dict__, "sessions": len(report.sessions), "database": database})
        return
    verb = "Would move" if dry_run else "Moved"
    click.echo(
        f"{verb} {len(report.sessions)} sessions ended before {cutoff} "
        f"({report.events} events, {report.bytes} bytes)"
        + ("." if dry_run or not report.sessions else f" to {archive}; forgotten from the log.")
    )
    if database:
        click.echo(database)


@click.command("export-log")
@click.argument("dest", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@json_option
@click.pass_context
def export_log(ctx: click.Context, dest: str, as_json: bool) -> None:
    """Print the whole log byte for byte (a file's lines, a stream's messages), or write
    it to a new file DEST: with `import-log --exact` it moves a journal to an empty log
    of another kind."""
    from journal.log.files import new_file
    from journal.transfer import log_bytes

    log = paths_with_log(ctx).log
    if dest == "-":
        if as_json:
            fail("--json: `export-log` prints the log itself; give it a DEST file to write")
        for chunk in log_bytes(log):
            sys.stdout.buffer.write(chunk)
        return
    records = size = 0
    with new_file(dest, "export-log writes a new file only") as (out, _part):
        for chunk in log_bytes(log):
            out.write(chunk)
            records, size = records + chunk.count(b"\n"), size + len(chunk)
    if as_json:
        emit_json({"log": log, "to": dest, "records": records, "bytes": size})
        return
    click.echo(f"Exported {records} records ({size} bytes) of {log} to {dest}.")


@click.command("import-log")
@click.argument("source", type=click.File("rb"))
@click.option(
    "--exact",
    is_flag=True,
    help="Append the records as they are, positions included, to an empty log "
    "(SOURCE must be a whole log, as export-log prints it).",
)
@json_option
@click.pass_context
def import_log(ctx: click.Context, source: Any, exact: bool, as_json: bool) -> None:
    """Append the records of SOURCE (an archive `retain` wrote, or a log) to the log: each
    keeps its event id and the time it happened, and gets a new position. Every line is
    checked first: one bad line and nothing is written. A run cut short can be run again
    (records already imported are skipped). With --exact, the log must be empty and each
    record is appended byte for byte."""
    if exact:
        # Standard input has no file name (or "<stdin>"): an exact import reads a file.
        name = getattr(source, "name", None)
        if not isinstance(name, str) or not os.path.isfile(name):
            fail("import-log --exact reads a log file, not standard input")
        _import_exact(ctx, name, as_json)
        return
    events = []
    offset = 0
    for number, line in enumerate(source, 1):
        try:
            events.append(decode_line(line.rstrip(b"\n")))
        except LineError as exc:
            fail(
                f"{source.name}: line {number} (byte offset {offset}): {exc.reason}; "
                "nothing was written"
            )
        offset += len(line)
    receipts = []
    with Journal.open(get_paths(ctx).log) as j:
        for start in range(0, len(events), MAX_GROUP_EVENTS):
            receipts.extend(j.reappend(events[start : start + MAX_GROUP_EVENTS]))
    if as_json:
        print_receipts(ctx, receipts, as_json)
        return
    fresh = sum(not r.duplicate for r in receipts)
    click.echo(f"Imported {fresh} events ({len(receipts) - fresh} were in the log already).")


def _import_exact(ctx: click.Context, source: str, as_json: bool) -> None:
    from journal.transfer import append_log, check_whole_log
    from journal.writer import open_backend

    check_whole_log(source)  # before the log is opened (a file log would be created)
    log = get_paths(ctx).log
    target = open_backend(log)
    try:
        count = append_log(target, source)
    finally:
        target.close()
    if as_json:
        emit_json({"log": log, "imported": count})
        return
    click.echo(f"Imported {count} records into {log}, byte for byte.")
