"""append_message's arguments as one record, and the checks of them that need no state.

The checks run in the caller's thread (on the event loop for ``AsyncJournal``) before the
call is handed over, so bad input fails without waiting for the log's lock; what needs the
state runs under the lock, on the ``CheckedMessage`` they return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from journal.errors import InvalidValue
from journal.events import ToolCall
from journal.validation import (
    MessageParts,
    check_at,
    check_count,
    check_duration,
    check_message,
    check_metadata,
)


class MessageArgs(msgspec.Struct, gc=False):
    """append_message's arguments, as the caller gives them (see ``Journal.append_message``).

    A msgspec struct: built from a call's arguments in C, and an unknown keyword is a
    TypeError, as it is for the method. Neither record here is tracked by the garbage
    collector (``gc=False``): two per append would only bring its next pass closer, and
    neither can be part of a reference cycle.
    """

    session_id: str
    role: str
    content: str
    tokens_used: int | None = None
    duration_seconds: float | None = None
    metadata: Mapping[str, Any] | None = None
    expected_seq: int | None = None
    event_id: str | None = None
    at: datetime | str | None = None
    tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None
    tool_call_id: str | None = None
    raw: str | Mapping[str, Any] | Sequence[Any] | None = None

    def checked(self) -> CheckedMessage:
        """The checks that need no state; InvalidValue if one fails."""
        parts = check_message(self.role, self.content, self.tool_calls, self.tool_call_id, self.raw)
        check_count("tokens_used", self.tokens_used)
        check_duration(self.duration_seconds)
        meta = check_metadata(self.metadata)
        if self.expected_seq is not None:
            check_count("expected_seq", self.expected_seq)
        return CheckedMessage(
            self.session_id,
            self.role,
            self.content,
            self.tokens_used,
            self.duration_seconds,
            meta,
            self.expected_seq,
            self.event_id,
            check_at(self.at),
            parts,
        )


class CheckedMessage(msgspec.Struct, frozen=True, gc=False):
    """A message's arguments once checked, in the form its event takes them."""

    session_id: str
    role: str
    content: str
    tokens_used: int | None
    duration_seconds: float | None
    metadata: dict[str, Any] | None
    expected_seq: int | None
    event_id: str | None
    at: str | None  # the log's timestamp text
    parts: MessageParts


def first_message_kwargs(first: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """create_session's ``first_message`` as keyword arguments of append_message."""
    if first is None:
        return None
    if isinstance(first, str):
        return {"role": "user", "content": first}
    if isinstance(first, Mapping):
        return dict(first)
    raise InvalidValue("first_message must be a string or a mapping of append_message arguments")
