"""What the projection should hold, per session, computed from the log alone.

An independent fold (no SQL) of message counts, tokens and a content hash per live
session. Rebuild checks its fresh database against it and verify the projection;
``message_digest`` is the one definition of a message's bytes for the content hash, used
on both sides (``SessionTally`` chains it). ``LogWitness`` is verify's fold made on the
events a rebuild reads.
``ForgetCheck`` checks that the log holds nothing of a forgotten session but redactions.
"""

from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from msgspec import UNSET

from journal.events import (
    AnyEvent,
    MessageAppended,
    MessagesTruncated,
    Redacted,
    SessionCreated,
    SessionDeleted,
    SessionForgotten,
    SessionRestored,
    SessionSnapshotted,
    encode_json,
)
from journal.log import TornTail
from projector.checks.idcheck import IdCheck
from projector.checks.tallies import SessionTally, SpillFile, SpillMap, tally_map
from projector.forgetting import Positions, listed


def message_digest_input(
    message_id: int,
    seq: int,
    role: str,
    content: str,
    timestamp: str,
    tokens: int | None,
    duration: float | None,
    metadata_json: str | None,
    tool_calls_json: str | None,
    tool_call_id: str | None,
    raw: str | None,
) -> bytes:
    """The bytes a message adds to its session's content hash (its raw item included)."""
    if duration is not None:
        duration += 0.0  # -0.0 in the log is 0.0 in SQLite, which keeps no sign on a zero
    row: list[Any] = [
        message_id, seq, role, content, timestamp, tokens, duration, metadata_json,
        tool_calls_json, tool_call_id, raw,
    ]  # fmt: skip
    return encode_json(row) + b"\n"


class LogTally:
    """Folds events into per-session tallies; mirrors the projection's rules, not its code.

    A chained hash cannot take messages back: a session whose messages are withdrawn
    after seq K > 0 (``messages_truncated``) needs the tally it had at seq K. It is
    remembered after each of a session's last messages (``SessionTally.recent``); further
    back, the session is noted in ``stale`` with the seqs it was cut back to, and
    ``recount`` folds the log again for those sessions only, keeping a copy of their tally
    at each of those seqs (``keep_at``), so memory stays bounded by the sessions, not the
    messages.

    What it keeps of every session the log ever held (its tally, its first position, its
    tally at each snapshot) is in ``SpillMap``s: a bounded number of entries of each in
    memory, the others in a temporary file (``projector.checks.tallies``).
    """

    def __init__(self, *, hashes: bool = True, keep_at: dict[str, set[int]] | None = None) -> None:
        # hashes=False: counts and tokens only (rebuild's checks need no content hash).
        self.hashes = hashes
        self._spill = SpillFile()
        self.sessions = tally_map(self._spill, "sessions")
        self._in_memory = self.sessions.memory  # looked in first, for each message
        # The tally as of each snapshot: a deleted session is restored from one.
        self._at_snapshot: SpillMap[int, tuple[str, SessionTally]] = SpillMap(
            self._spill,
            "snapshots",
            ("session_id", "count", "tokens", "state"),
            lambda saved: (saved[0], *saved[1].row()),
            lambda row: (row[0], SessionTally(*row[1:])),
        )
        self.stale: dict[str, set[int]] = {}
        self._keep_at = keep_at or {}
        self._at_seq: dict[tuple[str, int], SessionTally] = {}
        # Each session's first position, which its forgetting lists: its creation, or
        # (the creation redacted, a later record not yet) the first record left of it.
        self._first_pos: SpillMap[str, int] = SpillMap(
            self._spill, "first_pos", ("pos",), lambda pos: (pos,), lambda row: row[0],
            first_wins=True,
        )  # fmt: skip
        # The forgettings folded, (pos, positions): verify looks for rows left at them.
        self.forgettings: list[tuple[int, Positions]] = []

    def close(self) -> None:
        """Let go of the temporary file (the tallies are gone with it)."""
        self._spill.close()

    def observe(self, event: AnyEvent) -> None:
        if type(event) is MessageAppended:  # the common case first
            sid = event.session_id
            t = self._in_memory.get(sid) or self.sessions.get(sid)
            if t is None:
                t = SessionTally()
                self.sessions.put(sid, t)
                self._first_pos.put(sid, event.pos)
            if self.hashes:
                t.add(
                    event.tokens_used,
                    message_digest_input(
                        event.pos,
                        event.seq,
                        event.role,
                        event.content,
                        event.when,
                        event.tokens_used,
                        event.duration_seconds,
                        None if event.metadata is None else encode_json(event.metadata).decode(),
                        None
                        if event.tool_calls is UNSET
                        else encode_json(event.tool_calls).decode(),
                        None if event.tool_call_id is UNSET else event.tool_call_id,
                        None if event.raw is UNSET else event.raw,
                    ),
                )
            else:
                t.count += 1
                t.tokens += event.tokens_used or 0
            t.remember()
            if self._keep_at and event.seq in self._keep_at.get(sid, ()):
                self._at_seq[sid, event.seq] = t.copy()
            return
        match event:
            case SessionCreated():
                self.sessions.put(event.session_id, SessionTally())
                self._first_pos.put(event.session_id, event.pos)
            case SessionSnapshotted():
                current = self.sessions.get(event.session_id)
                if current is not None:
                    self._at_snapshot.put(event.pos, (event.session_id, current.copy()))
            case SessionDeleted():
                self.sessions.pop(event.session_id)
            case SessionRestored():
                self._restored(event)
            case MessagesTruncated():
                self._truncated(event)
            case SessionForgotten():
                self._forgotten(event)
            case _:
                pass  # other events (a redacted record among them) do not change messages

    def _restored(self, event: SessionRestored) -> None:
        if event.snapshot_pos is None or event.session_id in self.sessions:
            return
        saved = self._at_snapshot.get(event.snapshot_pos)
        if saved is not None and saved[0] == event.session_id:
            self.sessions.put(event.session_id, saved[1].copy())

    def _forgotten(self, event: SessionForgotten) -> None:
        self.forgettings.append((event.pos, event.positions))
        for sid in self._first_pos.where(lambda pos: listed(event.positions, pos)):
            self._first_pos.pop(sid)
            self.sessions.pop(sid)
            self.stale.pop(sid, None)  # nothing of it to count again

    def _truncated(self, event: MessagesTruncated) -> None:
        sid, keep = event.session_id, event.keep_through_seq
        current = self.sessions.get(sid)
        if current is None:
            return
        saved = self._at_seq.get((sid, keep))
        if keep == 0:
            self.sessions.put(sid, SessionTally())
            self.stale.pop(sid, None)  # nothing before it counts any more
        elif saved is not None:
            self.sessions.put(sid, saved.copy())
        elif current.back_to(keep) and sid not in self.stale:
            pass  # the tally it had then: exact
        else:
            # A recount folds the session again, keeping its tally at each of these seqs
            # (every one, so it needs no ``recent`` of its own).
            self.stale.setdefault(sid, set()).add(keep)
            current.count = keep  # exact; tokens and hash need a recount


def recount(events: Iterable[AnyEvent], tally: LogTally) -> None:
    """Fold ``events`` (the log again, up to where ``tally`` stopped) for the sessions
    ``tally`` could not fold alone, and put their tallies right."""
    if not tally.stale:
        return
    again = LogTally(hashes=tally.hashes, keep_at=tally.stale)
    wanted = tally.stale.keys()
    for event in events:
        if getattr(event, "session_id", None) in wanted:
            again.observe(event)
    for sid in wanted:
        t = again.sessions.get(sid)
        if t is not None:
            tally.sessions.put(sid, t)
        else:
            tally.sessions.pop(sid)
    again.close()
    tally.stale = {}


class ForgetCheck:
    """Every position a forgetting lists must hold a ``redacted`` record by the time the
    forgetting is read (the records come before it), and every redacted record must be
    listed by one: anything else is a record the erasure missed, or one blanked without
    a forgetting. Memory grows with the redacted records only (kept as ranges)."""

    def __init__(self) -> None:
        self._redacted: list[list[int]] = []  # ascending [first, last]: positions only grow
        self._listed: list[tuple[int, int]] = []
        # (forgetting's pos, first position it lists that is not redacted, how many are not)
        self.incomplete: list[tuple[int, int, int]] = []

    def observe_all(self, events: Iterable[AnyEvent]) -> None:
        for event in events:
            if type(event) is Redacted:
                last = self._redacted[-1] if self._redacted else None
                if last is not None and last[1] + 1 == event.pos:
                    last[1] = event.pos
                else:
                    self._redacted.append([event.pos, event.pos])
            elif type(event) is SessionForgotten:
                self._listed.extend(event.positions)
                gaps = [g for r in event.positions for g in _gaps(self._redacted, *r)]
                if gaps:
                    missed = sum(last - first + 1 for first, last in gaps)
                    self.incomplete.append((event.pos, gaps[0][0], missed))

    def unlisted(self) -> list[tuple[int, int]]:
        """The redacted positions no forgetting lists, as ranges."""
        listed_ranges = sorted(self._listed)
        return [g for first, last in self._redacted for g in _gaps(listed_ranges, first, last)]


def _gaps(ranges: Sequence[Sequence[int]], first: int, last: int) -> list[tuple[int, int]]:
    """The parts of ``[first, last]`` that the ascending, disjoint ``ranges`` leave out."""
    out: list[tuple[int, int]] = []
    at = first
    i = max(bisect.bisect_right(ranges, first, key=operator.itemgetter(0)) - 1, 0)
    while at <= last:
        while i < len(ranges) and ranges[i][1] < at:
            i += 1
        if i < len(ranges) and ranges[i][0] <= at:
            at = ranges[i][1] + 1  # covered up to there
            continue
        end = last if i == len(ranges) else min(last, ranges[i][0] - 1)
        out.append((at, end))
        at = end + 1
    return out


class LogWitness:
    """verify's reading of the log, made on the events a rebuild reads as it builds.

    A rebuild reads and decodes the whole log; verify would read and decode it again, to
    fold it (per-session counts, tokens, content hashes) and to check its ids. Given to
    ``rebuild(..., witness=)``, this makes the same fold, and takes the same id
    fingerprints, from the events the rebuild applies, so that ``verify(..., witness=)``
    need not read the log again. The fold is still verify's own, not the projection's.

    It stands for the log only if the rebuild read that file to its end (``read_whole``)
    and the file has not changed since: verify checks that, and the checkpoint, and
    otherwise reads the log itself, as it always does.
    """

    def __init__(self) -> None:
        self.tally = LogTally()
        self.ids = IdCheck()
        self.forgets = ForgetCheck()
        self.last_pos = 0
        self.torn: TornTail | None = None
        self._file: FileIdentity | None = None  # the log's, if read whole

    def observe(self, event: AnyEvent) -> None:
        self.tally.observe(event)
        self.ids.add_all((event.id,))
        self.forgets.observe_all((event,))

    def read_whole(
        self,
        log: str,
        before: FileIdentity | None,
        last_pos: int,
        torn: TornTail | None,
        examined: int,
    ) -> None:
        """The rebuild read ``log`` (``before``: its identity when the reading began) up to
        byte ``examined``, its torn tail included, and observed every event up to
        ``last_pos``: if that is the whole file, unchanged while it was read, it stands."""
        self.last_pos, self.torn = last_pos, torn
        after = file_identity(log)
        whole = after is not None and after == before and after.size == examined
        self._file = after if whole else None

    def discard(self) -> None:
        """The rebuild did not observe the whole log: verify must read it."""
        self._file = None

    def close(self) -> None:
        """Let go of the fold's temporary file, once verify has used it."""
        self.tally.close()

    def stands_for(self, log: str, upto: int) -> bool:
        """True if this is the fold of ``log`` as it is now, up to pos ``upto``."""
        return self._file is not None and self._file == file_identity(log) and self.last_pos == upto


class FileIdentity(NamedTuple):
    """Which file, and whether it changed: a write changes its size or its mtime."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_identity(path: str) -> FileIdentity | None:
    """The file's identity, None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileIdentity(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
