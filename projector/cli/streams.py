"""A log in a JetStream stream on the command line (``--log nats://…``).

The commands that write (``append``, ``archive``, ``expire``, ``forget``…) open the
stream itself, as ``Journal.open(url)`` does. The commands that project it (``replay``,
``rebuild``, ``verify``, ``watch``) work on the node's copy of the stream beside its
database (``journal.log.stream_copy``), brought up to date first: every node keeps its
own copy and its own projection. The commands that rewrite a log file in place
(``retain``, ``repair-line-endings``) or build one (``demo``, ``import-legacy``) are for
log files only.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from journal.log.urls import is_stream_url, nats_extra
from projector.cli.notes import Paths
from projector.cli.support import fail

if TYPE_CHECKING:
    from journal.log.stream_copy import StreamCopy


@contextmanager
def stream_copy(paths: Paths) -> Iterator[StreamCopy]:
    """The node's copy of the stream ``paths.log``, kept beside ``paths.db``."""
    with nats_extra(paths.log):
        from journal.log.stream_copy import StreamCopy, copy_path
    with StreamCopy(paths.log, copy_path(paths.db)) as copy:
        yield copy


def projected_log(paths: Paths, *, check_all: bool = False) -> str:
    """The log file to project into ``paths.db``: ``--log`` itself, or for a stream the
    node's copy of it, brought up to date first (with ``check_all``, every message it
    holds compared with the stream's: what ``verify`` proves the database against)."""
    if not is_stream_url(paths.log):
        return paths.log
    with stream_copy(paths) as copy:
        copy.sync(check_all=check_all)
    return copy.path


def log_files_only(paths: Paths, command: str) -> None:
    """Refuse ``command`` on a stream: it rewrites or builds a log file."""
    if is_stream_url(paths.log):
        fail(
            f"{paths.log}: `{command}` works on a log file only; it is not available on a "
            "log in a JetStream stream"
        )
