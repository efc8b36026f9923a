"""Retention: archive the sessions that ended before a time, then forget them.

An ended session is archived, expired or deleted (``lifecycle.ENDED_STATUSES``), and has
been since before the cut-off. Its records are copied, as checksummed log lines, into an
archive file, which is written under a temporary name, fsynced, read back and checked,
then renamed into place, so nothing leaves the log before its copy is durable elsewhere.
Only then are the sessions forgotten (``Journal.forget_many``), and only if the log still
holds exactly the records copied. ``Journal.reappend`` (``session-journal import-log``)
brings an archive back.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import journal.events as ev
from journal.forgetting import Ranges, as_ranges
from journal.lifecycle import ENDED_STATUSES
from journal.log import LogSource
from journal.log.files import new_file
from journal.state import JournalState
from journal.writer import Journal

# Sessions forgotten per atomic group: one session_forgotten record each.
_PER_GROUP = 256


@dataclass
class RetentionReport:
    """What ``retain`` moved (or, in a dry run, would move)."""

    closed_before: str
    archive: str
    dry_run: bool
    sessions: list[str] = field(default_factory=list)
    events: int = 0
    bytes: int = 0


def ended_before(log: LogSource, cutoff: str) -> list[str]:
    """The sessions that ended before ``cutoff`` (a log timestamp) and stayed ended, in
    the order they ended. The log is folded whole, the state kept for every session."""
    state = JournalState()
    ended_at: dict[str, str] = {}
    for event, _ in log.read_state():
        state.apply(event)
        session_id: str = getattr(event, "session_id", "")
        s = state.sessions.get(session_id)
        if s is None:  # not a session's event (or one forgotten since)
            continue
        if s.status in ENDED_STATUSES:
            ended_at.setdefault(session_id, event.when)  # the time it ended
        else:
            ended_at.pop(session_id, None)  # open (again)
    return [sid for sid, when in ended_at.items() if when < cutoff and sid in state.sessions]


def _session_lines(log: LogSource, wanted: set[str]) -> Iterator[tuple[str, int, bytes]]:
    """(session id, pos, checksummed line) of every record of the wanted sessions."""
    for event, _ in log.read():
        session_id = getattr(event, "session_id", None)
        if session_id in wanted:
            yield session_id, event.pos, ev.encode_line(event)


def write_archive(log: LogSource, session_ids: list[str], path: str) -> dict[str, Ranges]:
    """Copy the sessions' records to a new file at ``path``, durably; the positions copied.

    Refuses a ``path`` that exists. The copy is checked after it is written (every line
    whole and of one of the sessions) before it takes its name.
    """
    copied: dict[str, list[int]] = {sid: [] for sid in session_ids}
    with new_file(path, "retention writes a new archive only") as (out, part):
        for session_id, pos, line in _session_lines(log, set(session_ids)):
            out.write(line)
            copied[session_id].append(pos)
        out.flush()
        _check_archive(part, copied)
    return {sid: as_ranges(positions) for sid, positions in copied.items()}


def _check_archive(path: str, copied: dict[str, list[int]]) -> None:
    """Read the archive back: each line a whole record of the sessions copied, all there."""
    with open(path, "rb") as f:
        found = [ev.decode_line(line.rstrip(b"\n")) for line in f]
    expected = sorted(pos for positions in copied.values() for pos in positions)
    if sorted(e.pos for e in found) != expected or any(
        getattr(e, "session_id", None) not in copied for e in found
    ):
        raise OSError(f"{path}: the archive read back differs from what was written")


def retain(journal: Journal, closed_before: str, archive: str, dry_run: bool) -> RetentionReport:
    """Archive the sessions ended before ``closed_before`` to ``archive``, then forget
    them from the log (a dry run only counts them)."""
    report = RetentionReport(closed_before, archive, dry_run)
    log = journal.source
    report.sessions = ended_before(log, closed_before)
    if not report.sessions:
        return report
    if dry_run:
        for _sid, _pos, line in _session_lines(log, set(report.sessions)):
            report.events += 1
            report.bytes += len(line)
        return report
    copied = write_archive(log, report.sessions, archive)
    report.events = sum(last - first + 1 for r in copied.values() for first, last in r)
    report.bytes = os.path.getsize(archive)
    for start in range(0, len(report.sessions), _PER_GROUP):
        chunk = report.sessions[start : start + _PER_GROUP]
        journal.forget_many(chunk, expected={sid: copied[sid] for sid in chunk})
    return report
