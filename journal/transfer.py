"""A whole log moved between backends byte for byte: ``export-log`` and ``import-log --exact``.

``log_bytes`` yields a log's records exactly as it holds them: a file's lines (across its
segments, up to a torn tail, which is no record yet) or a stream's messages. ``append_log``
appends such a file to an empty log, positions and all, every line checked first. So a
journal started on a file moves to a JetStream stream (and back) with every event
unchanged, and a projection of either verifies against the other.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Final

from msgspec import UNSET

from journal.errors import InvalidValue, LogError
from journal.log import START, FileSource, LogBackend
from journal.log.segments import LogView
from journal.log.urls import is_stream_url, nats_extra

EXPORT_CHUNK: Final = 1 << 20
# Records per append, in bytes: well under a server's max_payload (1 MiB by default), so
# that a stream takes each append as one message.
APPEND_BYTES: Final = 256 * 1024


def log_bytes(log: str) -> Iterator[bytes]:
    """The records of the log ``log`` names, in order, in chunks of whole records."""
    if is_stream_url(log):
        with nats_extra(log):
            from journal.log.jetstream import JetStreamLog
        stream = JetStreamLog(log)
        try:
            for batch in stream.messages(0, 0):
                yield b"".join(payload for _, payload, _ in batch)
        finally:
            stream.close()
        return
    reading = FileSource(log).read_state()  # checked as a writer checks it
    with LogView(log) as view:
        start = 0
        for _event, end in reading:
            if end - start >= EXPORT_CHUNK:
                yield view.pread(end - start, start)
                start = end
        if reading.end > start:
            yield view.pread(reading.end - start, start)


def _units(path: str) -> Iterator[list[bytes]]:
    """The file's records as units (a record, or a whole group), each line checked; the
    file must be a whole log: positions 1, 2, … and nothing torn at its end."""
    if not os.path.isfile(path):
        raise InvalidValue(f"{path}: no such log file")
    reading = FileSource(path).read_state()
    unit: list[bytes] = []
    with LogView(path) as view:
        start = 0
        for event, end in reading:
            unit.append(view.pread(end - start, start))
            start = end
            if event.grp is UNSET or event.grp[0] == event.grp[1]:
                yield unit
                unit = []
    if reading.torn is not None:
        raise InvalidValue(
            f"{path}: an incomplete record at byte offset {reading.torn.offset} "
            f"(line {reading.torn.line}): {reading.torn.reason}"
        )


def check_whole_log(path: str) -> None:
    """Read the log file ``path`` through: InvalidValue or CorruptLog, naming the line,
    unless every record is whole and in place (before anything is opened to append)."""
    for _ in _units(path):
        pass


def append_log(target: LogBackend, path: str) -> int:
    """Append the records of the log file ``path`` (``check_whole_log`` first) to
    ``target``, which must be empty, exactly as they are; returns how many. ``LogError``
    if ``target`` holds records already."""
    with target.exclusive():
        end = target.end(START)
        if end != START:
            raise LogError(
                f"{target.name}: the log already holds records; an exact import (positions "
                "and all) needs an empty log; without --exact each record is appended anew",
                path=target.name,
            )
        count, pending, size = 0, list[bytes](), 0
        for unit in itertools.chain(_units(path), [[]]):  # the empty unit sends the rest
            unit_size = sum(map(len, unit))
            if pending and (not unit or size + unit_size > APPEND_BYTES):
                token, end = target.append(pending, end)
                target.wait_durable(token)
                count, pending, size = count + len(pending), [], 0
            pending += unit
            size += unit_size
    return count
