"""The write commands: append, snapshot, restore, archive, expire, import-legacy,
repair-line-endings. They change the log; ``replay`` or ``watch`` bring the database up to
date."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import click

from journal import Journal, Receipt
from projector.cli.notes import being_watched, to_run
from projector.cli.streams import log_files_only
from projector.cli.support import (
    emit_json,
    get_paths,
    json_option,
    paths_with_log,
    progress_bar,
    seconds_option,
)
from projector.queries import parse_time
from projector.watch import projection_lock


def print_receipts(ctx: click.Context, receipts: list[Any], as_json: bool) -> None:
    if as_json:
        emit_json([r._asdict() for r in receipts])
        return
    for r in receipts:
        seq = f" seq {r.seq}" if r.seq is not None else ""
        dup = " (already recorded)" if r.duplicate else ""
        click.echo(f"pos {r.pos}: {r.event_id} session {r.session_id}{seq}{dup}")
    if not being_watched(get_paths(ctx).db):  # else the live projector is on it already
        click.echo(
            f"Run `{to_run(get_paths(ctx), 'replay')}` (or keep `watch` running) to update "
            "the database.",
            err=True,
        )


@click.command()
@click.argument("source", type=click.File("rb"), default="-")
@json_option
@click.pass_context
def append(ctx: click.Context, source: Any, as_json: bool) -> None:
    """Append JSON lines from SOURCE (a file, or - for stdin) as one atomic group.

    Each line has the log's shape without pos, v, ts and crc; "id" (an idempotency key)
    and "at" (when it happened) are optional. The whole input is validated first: one bad
    line and nothing is written.
    """
    from projector.cli.ingest import append_events, parse_lines

    name = getattr(source, "name", "<stdin>")
    label = "<stdin>" if name == "<stdin>" else str(name)
    if label == "<stdin>" and source.isatty():
        click.echo(
            "Reading events from the terminal, one JSON object a line; Ctrl-D ends.", err=True
        )
    events = parse_lines(source, label)
    if not events:
        if as_json:
            emit_json([])
        else:
            click.echo(f"Nothing appended: {label} holds no events.", err=True)
        return
    with Journal.open(get_paths(ctx).log) as j:
        receipts = append_events(j, events)
    print_receipts(ctx, receipts, as_json)


@click.command()
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
    with Journal.open(paths_with_log(ctx).log) as j:
        print_receipts(ctx, [j.snapshot(session_id, reason, note=note)], as_json)


@click.command()
@click.argument("session_id")
@click.option(
    "--keep-through",
    "keep_through_seq",
    type=click.IntRange(min=0),
    required=True,
    help="The seq of the last message to keep (0: withdraw them all).",
)
@click.option("--reason", help="Why, kept in the log with the withdrawal.")
@json_option
@click.pass_context
def truncate(
    ctx: click.Context, session_id: str, keep_through_seq: int, reason: str | None, as_json: bool
) -> None:
    """Withdraw a session's messages after a seq: the log keeps them (see ``rebuild
    --until``), the database drops them, and the next message reuses the seq after it."""
    with Journal.open(paths_with_log(ctx).log) as j:
        receipt = j.truncate(session_id, keep_through_seq, reason=reason)
        print_receipts(ctx, [receipt], as_json)


def _session_command(
    name: str, help_text: str, write: Callable[[Journal, str], Receipt]
) -> click.Command:
    """A command that writes one event about SESSION_ID: ``write(journal, session_id)``."""

    @click.command(name, help=help_text)
    @click.argument("session_id")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, session_id: str, as_json: bool) -> None:
        with Journal.open(paths_with_log(ctx).log) as j:
            print_receipts(ctx, [write(j, session_id)], as_json)

    return command


restore = _session_command(
    "restore",
    "Reopen an idle, expired, archived or deleted session with fresh deadlines.",
    Journal.restore,
)
archive = _session_command(
    "archive", "Archive a session (its pre_archive snapshot is kept).", Journal.archive
)


@click.command()
@click.option("--now", "now_text", help="Decide as of this time (default: now).")
@seconds_option(
    "--warn-before", 300.0, 0, "Seconds before a deadline at which a timeout_warning is written."
)
@json_option
@click.pass_context
def expire(ctx: click.Context, now_text: str | None, warn_before: float, as_json: bool) -> None:
    """Record the timeouts that are due: warnings, idle sessions, expired sessions."""
    now = None
    if now_text is not None:
        try:
            now = parse_time(now_text)
        except ValueError:
            raise click.BadParameter(
                "use a time such as 2026-11-26T10:00:00Z", param_hint="--now"
            ) from None
    with Journal.open(paths_with_log(ctx).log) as j:
        receipts = j.expire_due(now, warn_before_seconds=warn_before)
    if not receipts and not as_json:
        click.echo("Nothing is due.")
        return
    print_receipts(ctx, receipts, as_json)


@click.command("import-legacy")
@click.argument("old_db", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the report; write nothing.")
@json_option
@click.pass_context
def import_legacy(ctx: click.Context, old_db: str, dry_run: bool, as_json: bool) -> None:
    """Import an old AI-router sessions database (opened read-only), losing nothing.

    Prints what was found (counter mismatches, orphans, gaps, invalid rows) and how each
    was kept, then replays and verifies. Running it again appends nothing.
    """
    from projector.legacy.importer import import_legacy as do_import
    from projector.legacy.report import format_report

    paths = get_paths(ctx)
    log_files_only(paths, "import-legacy")
    # A dry run writes nothing, the database included: it need not keep watch away.
    with contextlib.nullcontext() if dry_run else projection_lock(paths.log, paths.db):
        report = do_import(
            old_db, paths.log, paths.db, dry_run=dry_run, progress=progress_bar("import")
        )
    if as_json:
        emit_json(report.to_builtins())
    else:
        click.echo(format_report(report))
    if not report.ok:
        ctx.exit(1)


@click.command("repair-line-endings")
@json_option
@click.pass_context
def repair_line_endings(ctx: click.Context, as_json: bool) -> None:
    """Convert a log whose line endings became CR LF (an editor, a checkout) back to LF.

    Every line must be a valid record once its CR is removed, or nothing is changed. The
    converted log replaces the original in one rename; writers open it again.
    """
    from journal.repair import repair_line_endings as repair

    paths = paths_with_log(ctx)
    log_files_only(paths, "repair-line-endings")
    log = paths.log
    changed = repair(log)
    if as_json:
        emit_json({"log": log, "converted": changed})
        return
    click.echo(
        f"{log}: {changed} line endings converted from CR LF to LF"
        if changed
        else f"{log}: no CR LF line endings; nothing changed"
    )
