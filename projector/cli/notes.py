"""What the command line says beside the data: notes on stderr (a database behind its
log, more rows than shown, the replay hint while `watch` runs) and the library's advice
spelled as commands to run."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sqlite3
import sys
from typing import Final

import click
import msgspec

from journal.log.segments import log_size


class Paths(msgspec.Struct):
    """The global --log and --db options."""

    log: str
    db: str


def invoked_as() -> str:
    """How to run this command again: its name if that is on PATH, else the path used."""
    name = os.path.basename(sys.argv[0]) or "session-journal"
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(sys.argv[0]):
        return name
    return sys.argv[0] if os.sep in sys.argv[0] else "session-journal"


# The global options a suggested command must repeat when they differ from what the
# command would find by itself: (option, field of Paths, environment variable, default).
_PATH_OPTIONS: Final = (
    ("--log", "log", "SESSION_JOURNAL_LOG", "sessions.jsonl"),
    ("--db", "db", "SESSION_JOURNAL_DB", "sessions.db"),
)


def to_run(paths: Paths | None, *words: str) -> str:
    """A command to suggest: this program, then the --log and --db in use unless it would
    find them by itself (environment or default), then ``words``; quoted for a shell."""
    parts = [invoked_as()]
    for option, field, env, default in _PATH_OPTIONS if paths is not None else ():
        value = getattr(paths, field)
        if value != os.environ.get(env, default):
            parts += [option, value]
    return " ".join(shlex.quote(p) for p in [*parts, *words])


# The library's messages name its Python calls; on the command line the same advice is a
# command. Each pattern is the library's own wording (journal/errors.py, validation.py).
_PYTHON_ADVICE: Final = (
    (re.compile(r"restore\('([^']*)'\)"), "`{restore}`"),
    (
        re.compile(r"session '([^']*)' was deleted; restore\(\)"),
        "session '\\1' was deleted; `{restore}`",
    ),
    (
        re.compile(r", e\.g\. str\(uuid\.uuid4\(\)\)"),
        " such as 0b1f6c2e-8d3a-4e5b-9c7d-1a2b3c4d5e6f",
    ),
)


def in_cli_terms(message: str, paths: Paths | None) -> str:
    """A library error's message, with its advice spelled as commands to run."""
    for pattern, replacement in _PYTHON_ADVICE:

        def spelled(match: re.Match[str], replacement: str = replacement) -> str:
            text = match.expand(replacement)
            if "{restore}" in text:
                text = text.replace("{restore}", to_run(paths, "restore", match.group(1)))
            return text

        message = pattern.sub(spelled, message)
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


def note_if_stale(conn: sqlite3.Connection, paths: Paths) -> None:
    """Say on stderr when what a read command shows may not be what the log holds: the
    database was built by another version (its tables may differ: `replay` rebuilds it),
    events were appended since the last replay, or the log is not the one the database
    was projected from. About the log: quiet while a live projector keeps the database
    current, and when the log is not here to compare with."""
    from projector.db import read_checkpoint, schema_version, user_version
    from projector.errors import CheckpointMismatch
    from projector.sync.catchup import check_checkpoint

    replay = to_run(paths, "replay")
    try:
        if user_version(conn) != schema_version():
            click.echo(
                f"note: {paths.db} was built by another version of this tool, so what is "
                f"shown may be wrong: `{replay}` rebuilds it",
                err=True,
            )
            return
    except sqlite3.Error:
        return  # the command itself reports what is wrong with the database
    if not os.path.exists(paths.log) or being_watched(paths.db):
        return
    try:
        cp = read_checkpoint(conn)
        check_checkpoint(paths.log, cp)
        behind = log_size(paths.log) > cp.log_offset
    except CheckpointMismatch:
        click.echo(
            f"note: {paths.db} was not projected from {paths.log} as it is now "
            f"(another log, or one cut short): `{replay}` rebuilds it",
            err=True,
        )
        return
    except (OSError, sqlite3.Error):
        return  # the command itself reports what is wrong with the database
    if behind:
        click.echo(
            f"note: {paths.db} is behind {paths.log}: events appended since its last "
            f"replay are not shown (`{replay}` brings them in)",
            err=True,
        )


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
