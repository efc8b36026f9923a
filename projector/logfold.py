"""What the projection should hold, per session, computed from the log alone.

An independent fold (no SQL) of message counts, tokens and a content hash per live
session. Rebuild checks its fresh database against it and verify the projection;
``message_digest`` is the one definition of a message's bytes for the content hash, used
on both sides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from journal.events import (
    AnyEvent,
    MessageAppended,
    SessionCreated,
    SessionDeleted,
    SessionRestored,
    SessionSnapshotted,
    encode_json,
)


def message_digest_input(
    message_id: int,
    seq: int,
    role: str,
    content: str,
    timestamp: str,
    tokens: int | None,
    duration: float | None,
    metadata_json: str | None,
) -> bytes:
    """The bytes a message adds to its session's content hash."""
    if duration is not None:
        duration += 0.0  # -0.0 in the log is 0.0 in SQLite, which keeps no sign on a zero
    row: list[Any] = [message_id, seq, role, content, timestamp, tokens, duration, metadata_json]
    return encode_json(row) + b"\n"


@dataclass
class SessionTally:
    """One session's messages as the log says they should be."""

    count: int = 0
    tokens: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def copy(self) -> SessionTally:
        return SessionTally(self.count, self.tokens, self.digest.copy())

    @property
    def content_hash(self) -> str:
        return str(self.digest.hexdigest())


class LogTally:
    """Folds events into per-session tallies; mirrors the projection's rules, not its code."""

    def __init__(self, *, hashes: bool = True) -> None:
        # hashes=False: counts and tokens only (rebuild's checks need no content hash).
        self.hashes = hashes
        self.sessions: dict[str, SessionTally] = {}
        # The tally as of each snapshot: a deleted session is restored from one.
        self._at_snapshot: dict[int, tuple[str, SessionTally]] = {}

    def observe(self, event: AnyEvent) -> None:
        if type(event) is MessageAppended:  # the common case first
            t = self.sessions.get(event.session_id)
            if t is None:
                t = self.sessions[event.session_id] = SessionTally()
            t.count += 1
            t.tokens += event.tokens_used or 0
            if self.hashes:
                t.digest.update(
                    message_digest_input(
                        event.pos,
                        event.seq,
                        event.role,
                        event.content,
                        event.when,
                        event.tokens_used,
                        event.duration_seconds,
                        None if event.metadata is None else encode_json(event.metadata).decode(),
                    )
                )
            return
        match event:
            case SessionCreated():
                self.sessions[event.session_id] = SessionTally()
            case SessionSnapshotted():
                current = self.sessions.get(event.session_id)
                if current is not None:
                    self._at_snapshot[event.pos] = (event.session_id, current.copy())
            case SessionDeleted():
                self.sessions.pop(event.session_id, None)
            case SessionRestored():
                if event.session_id not in self.sessions and event.snapshot_pos is not None:
                    saved = self._at_snapshot.get(event.snapshot_pos)
                    if saved is not None and saved[0] == event.session_id:
                        self.sessions[event.session_id] = saved[1].copy()
            case _:
                pass  # other events do not change messages
