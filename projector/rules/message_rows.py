"""A message's row in the projection, and the shape of a snapshot's context.

Every path that writes messages (an event applied, the bulk load, a session restored from
its snapshot) builds the row here, so the columns and their order are stated once; every
path that writes or reads a snapshot's ``context_json`` decodes it as ``SnapshotContext``.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec
from msgspec import UNSET

from journal.events import MessageAppended, encode_json

# The columns of a message row, in the order of message_row and SnapshotMessage.
MESSAGE_COLUMNS = (
    "message_id, session_id, sequence_number, role, content, timestamp, tokens_used, "
    "duration_seconds, metadata, tool_calls, tool_call_id, raw"
)
INSERT_MESSAGE_SQL = (
    f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def message_row(e: MessageAppended) -> tuple[Any, ...]:
    """The messages row of an event (MESSAGE_COLUMNS), the one rule for every path."""
    return (
        e.pos,
        e.session_id,
        e.seq,
        e.role,
        e.content,
        e.when,
        e.tokens_used,
        e.duration_seconds,
        None if e.metadata is None else encode_json(e.metadata).decode(),
        None if e.tool_calls is UNSET else encode_json(e.tool_calls).decode(),
        None if e.tool_call_id is UNSET else e.tool_call_id,
        None if e.raw is UNSET else e.raw,
    )


class SnapshotMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """One message as a snapshot's ``context_json`` keeps it.

    The last three fields are left out when None, so a snapshot of plain messages keeps
    the shape it had before they existed.
    """

    message_id: int
    sequence_number: int
    role: str
    content: str
    timestamp: str
    tokens: int | None
    duration_seconds: float | None
    metadata: str | None  # the stored JSON text, kept verbatim so a restore is exact
    tool_calls: str | None = None  # JSON text, as stored
    tool_call_id: str | None = None
    raw: str | None = None

    def row(self, session_id: str) -> tuple[Any, ...]:
        """The messages row (MESSAGE_COLUMNS) this snapshot entry restores."""
        return (
            self.message_id,
            session_id,
            self.sequence_number,
            self.role,
            self.content,
            self.timestamp,
            self.tokens,
            self.duration_seconds,
            self.metadata,
            self.tool_calls,
            self.tool_call_id,
            self.raw,
        )


class SnapshotMetadata(msgspec.Struct, frozen=True):
    metadata_id: int
    key: str
    value: str | None


M = TypeVar("M", SnapshotMessage, msgspec.Raw)


class SnapshotContext(msgspec.Struct, Generic[M], frozen=True):
    """A session and its messages as of a snapshot (the seed's context, extended).

    ``SnapshotContext[SnapshotMessage]`` decodes the messages; ``SnapshotContext[Raw]``
    leaves each one undecoded, a slice of the text (the bulk path copies them as they are).
    """

    session_id: str
    title: str | None
    model_id: str | None
    model_name: str | None
    created_at: str
    status: str
    message_count: int
    total_tokens: int
    total_duration_seconds: float
    idle_timeout_seconds: int | None
    hard_timeout_seconds: int | None
    expires_at: str | None
    last_activity: str
    metadata: list[SnapshotMetadata]
    messages: list[M]
    snapshot_reason: str
    snapshot_time: str
