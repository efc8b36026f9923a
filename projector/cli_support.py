"""What the command line's modules share: paths from the global options, JSON output,
one-line errors, progress bars and the session table."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn, TypeVar

import click
import msgspec

from projector import render

F = TypeVar("F", bound=Callable[..., Any])


class Paths(msgspec.Struct):
    """The global --log and --db options."""

    log: str
    db: str


def get_paths(ctx: click.Context) -> Paths:
    """The --log and --db the group was given."""
    paths = ctx.find_object(Paths)
    assert paths is not None
    return paths


def paths_with_log(ctx: click.Context) -> Paths:
    """The paths, for a command that reads the log: a missing log is a mistake, not an
    empty history (projecting "nothing" would empty the database)."""
    paths = get_paths(ctx)
    if not os.path.exists(paths.log):
        fail(f"{paths.log}: no such log (use --log or SESSION_JOURNAL_LOG)")
    return paths


def json_text(obj: Any) -> str:
    """``obj`` (structs, dataclasses, builtins) as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(obj), indent=2).decode()


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON."""
    click.echo(json_text(obj))


def json_option(fn: F) -> F:
    """The ``--json`` flag every command that prints data takes, after its name or, as a
    global option, before it."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        callback=lambda ctx, _param, value: bool(value or ctx.meta.get("json")),
        help="Print JSON (stable keys) instead of text.",
    )(fn)


def prints_data(command: click.Command) -> bool:
    """Whether ``command`` takes --json (it prints data)."""
    return any(param.name == "as_json" for param in command.params)


def _set_path(field: str) -> Callable[[click.Context, click.Parameter, str | None], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(get_paths(ctx), field, value)

    return callback


def refuse_json(command: str | None) -> NoReturn:
    """--json given to a command that prints no data (before or after its name)."""
    fail(f"--json: `{command}` prints no data, so it has no JSON form")


def _refuse_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        refuse_json(ctx.info_name)


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["debug"] = True


def add_global_options(command: click.Command) -> None:
    """Let ``command`` take --log, --db and --debug after its name too (the group's own
    options come before it): a person adds an option at the end of the line they typed.
    Given in both places, the one after the command wins."""
    if not prints_data(command):
        command.params.append(
            click.Option(
                ["--json", "json_after"],
                is_flag=True,
                expose_value=False,
                hidden=True,
                callback=_refuse_json,
            )
        )
    command.params += [
        click.Option(
            ["--log", "log_after"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_set_path("log"),
            help="The event log (as before the command).",
        ),
        click.Option(
            ["--db", "db_after"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_set_path("db"),
            help="The SQLite projection (as before the command).",
        ),
        click.Option(
            ["--debug", "debug_after"],
            is_flag=True,
            expose_value=False,
            callback=_set_debug,
            help="Show tracebacks on errors.",
        ),
    ]


# The exit status of a command whose reader went away, as git's and grep's when SIGPIPE
# ends them (128 + 13): quiet, yet a pipeline under `set -o pipefail` still sees it.
PIPE_CLOSED_EXIT: Final = 141


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader closed the pipe, so that nothing more,
    not even the interpreter's last flush at exit, complains about it."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a test's capture): nothing will flush it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


# The library's messages name its Python calls; on the command line the same advice is a
# command. Each pattern is the library's own wording (journal/errors.py, validation.py).
_PYTHON_ADVICE: Final = (
    (re.compile(r"restore\('([^']*)'\)"), "`{me} restore \\1`"),
    (
        re.compile(r"session '([^']*)' was deleted; restore\(\)"),
        "session '\\1' was deleted; `{me} restore \\1`",
    ),
    (
        re.compile(r", e\.g\. str\(uuid\.uuid4\(\)\)"),
        " such as 0b1f6c2e-8d3a-4e5b-9c7d-1a2b3c4d5e6f",
    ),
)


def in_cli_terms(message: str) -> str:
    """A library error's message, with its advice spelled as commands to run."""
    me = invoked_as()
    for pattern, replacement in _PYTHON_ADVICE:
        message = pattern.sub(replacement.replace("{me}", me), message)
    return message


def being_watched(db: str) -> bool:
    """Whether a live projector (or a replay) is projecting into ``db`` now: the process
    whose pid its lock file holds (the last one to take it) is another one, alive. Read
    without taking the lock, which would make a `watch` starting at that instant think
    the database taken; a pid reused since only leaves out a hint."""
    from projector.watch import lock_path

    try:
        with open(lock_path(db), encoding="ascii", errors="replace") as f:
            pid = int(f.read(32).strip() or 0)
    except (OSError, ValueError):
        return False
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # alive, run by someone else
    return True


def fail(message: str, code: int = 2) -> NoReturn:
    """One line on stderr, then exit (2: bad input or usage)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def read_db(ctx: click.Context) -> Iterator[sqlite3.Connection]:
    """Open the projection for reading; say so plainly if it does not exist yet."""
    from projector import connect

    db = get_paths(ctx).db
    if not os.path.exists(db):
        fail(f"{db}: no database yet; run `session-journal replay` (or `demo`) first")
    conn = connect(db)
    try:
        note_if_behind(conn, get_paths(ctx))
        yield conn
    finally:
        conn.close()


def note_if_behind(conn: sqlite3.Connection, paths: Paths) -> None:
    """Say on stderr when what a read command shows is not all the log holds: events were
    appended since the last replay, or the log is not the one the database was projected
    from. Quiet while a live projector keeps the database current, and when the log is
    not here to compare with."""
    from projector.catchup import check_checkpoint
    from projector.db import read_checkpoint
    from projector.errors import CheckpointMismatch

    if not os.path.exists(paths.log) or being_watched(paths.db):
        return
    me = invoked_as()
    try:
        cp = read_checkpoint(conn)
        check_checkpoint(paths.log, cp)
        behind = os.path.getsize(paths.log) > cp.log_offset
    except CheckpointMismatch:
        click.echo(
            f"note: {paths.db} was not projected from {paths.log} as it is now "
            f"(another log, or one cut short): `{me} replay` rebuilds it",
            err=True,
        )
        return
    except (OSError, sqlite3.Error):
        return  # the command itself reports what is wrong with the database
    if behind:
        click.echo(
            f"note: {paths.db} is behind {paths.log}: events appended since its last "
            f"replay are not shown (`{me} replay` brings them in)",
            err=True,
        )


def invoked_as() -> str:
    """How to run this command again: its name if that is on PATH, else the path used."""
    name = os.path.basename(sys.argv[0]) or "session-journal"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(sys.argv[0]):
        return name
    return sys.argv[0] if os.sep in sys.argv[0] else "session-journal"


def progress_bar(label: str) -> Callable[[int, int], None] | None:
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


def one_more(limit: int | None) -> int | None:
    """The rows to ask for to learn whether more exist than ``limit`` (None: all)."""
    return None if limit is None else limit + 1


def note_more(what: str, shown: int | None, total: int | None) -> None:
    """Say that the output stops short of all there is. On stderr: stdout stays the data
    alone, for `| wc -l` and for JSON."""
    told = (
        f"Showing {shown} of {total} {what}"
        if total is not None
        else (f"More {what} exist than the {shown} shown")
    )
    click.echo(f"{told}; --limit N shows more, --limit 0 all.", err=True)


def print_sessions(rows: list[Any]) -> None:
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
