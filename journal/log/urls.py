"""Telling a log kept in a JetStream stream (a ``nats://`` URL) from a log file, and what
to install when the ``nats`` extra that reaches such a log is missing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from journal.errors import InvalidValue

STREAM_SCHEME: Final = "nats://"


def is_stream_url(log: object) -> bool:
    """Whether ``log`` names a log in a JetStream stream rather than a file."""
    return isinstance(log, str) and log.startswith(STREAM_SCHEME)


@contextmanager
def nats_extra(url: str) -> Iterator[None]:
    """Around the import of a module that needs nats-py: InvalidValue naming the extra to
    install if it is missing."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if exc.name != "nats":
            raise
        raise InvalidValue(
            f"{url}: a nats:// log needs the nats extra: pip install 'session-journal[nats]'"
        ) from None
