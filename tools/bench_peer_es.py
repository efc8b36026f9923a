"""The session aggregate of the peer benchmark, in eventsourcing's own terms.

A module of its own so that eventsourcing can resolve the event classes by topic
(module and qualified name) when it reloads an aggregate.
"""

from __future__ import annotations

from eventsourcing.domain import Aggregate, event


class ChatSession(Aggregate):  # type: ignore[misc]
    """One chat session; each message is an event on it."""

    @event("Created")  # type: ignore[untyped-decorator]
    def __init__(self, model_id: str, title: str | None) -> None:
        self.model_id = model_id
        self.title = title
        self.message_count = 0
        self.total_tokens = 0

    @event("MessageAppended")  # type: ignore[untyped-decorator]
    def append_message(
        self,
        role: str,
        content: str,
        tokens_used: int | None,
        duration_seconds: float | None,
    ) -> None:
        self.message_count += 1
        self.total_tokens += tokens_used or 0
