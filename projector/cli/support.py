"""What the command line's modules share: the global options (before or after a
command's name), JSON output, one-line errors, a closed pipe, progress bars and the
session table."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final, NoReturn, TypeVar

import click
import msgspec

from journal.log.urls import is_stream_url
from projector.cli import render
from projector.cli.notes import Paths, note_if_stale, to_run

F = TypeVar("F", bound=Callable[..., Any])


def get_paths(ctx: click.Context) -> Paths:
    """The --log and --db the group was given."""
    paths = ctx.find_object(Paths)
    assert paths is not None
    return paths


def paths_with_log(ctx: click.Context) -> Paths:
    """The paths, for a command that reads the log: a missing log is a mistake, not an
    empty history (projecting "nothing" would empty the database)."""
    paths = get_paths(ctx)
    if not is_stream_url(paths.log) and not os.path.exists(paths.log):
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


def seconds_option(flag: str, default: float, minimum: float, help_text: str) -> Callable[[F], F]:
    """An option giving a number of seconds, at least ``minimum``; its default is shown."""
    return click.option(
        flag, default=default, show_default=True, type=click.FloatRange(minimum), help=help_text
    )


def prints_data(command: click.Command) -> bool:
    """Whether ``command`` takes --json (it prints data)."""
    return any(param.name == "as_json" for param in command.params)


# The paths every command may take, as (name, environment variable, default, what it is).
PATH_OPTIONS: Final = (
    (
        "log",
        "SESSION_JOURNAL_LOG",
        "sessions.jsonl",
        "The event log: a file, or nats://… for a stream",
    ),
    ("db", "SESSION_JOURNAL_DB", "sessions.db", "The SQLite projection"),
)


def path_options(fn: F) -> F:
    """The group's --log and --db (given before a command's name)."""
    for name, env, default, what in reversed(PATH_OPTIONS):
        fn = click.option(
            f"--{name}",
            f"{name}_path",
            envvar=env,
            default=default,
            show_default=True,
            type=click.Path(dir_okay=False),
            help=f"{what} (env {env}).",
        )(fn)
    return fn


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
        *(
            click.Option(
                [f"--{name}", f"{name}_after"],
                type=click.Path(dir_okay=False),
                expose_value=False,
                callback=_set_path(name),
                help=f"{what} (as before the command).",
            )
            for name, _env, _default, what in PATH_OPTIONS
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
        replay, demo = to_run(get_paths(ctx), "replay"), to_run(get_paths(ctx), "demo")
        fail(f"{db}: no database yet; run `{replay}` (or `{demo}`) first")
    conn = connect(db)
    try:
        note_if_stale(conn, get_paths(ctx))
        yield conn
    finally:
        conn.close()


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
