"""The writer's public operations: registering models, creating sessions, appending
messages, setting metadata, titles and snapshots, moving a session through its lifecycle
(pause, resume, archive, time out, restore, delete, expire what is due), and reading what
the writer knows.

Each validates its input, checks the session's status against ``journal.lifecycle`` and
appends its events through the machinery of ``journal.writer.Journal``, its subclass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from msgspec import UNSET

import journal.events as ev
from journal.errors import InvalidValue, SequenceConflict, SessionExists
from journal.events import TimeoutKind, ToolCall  # by name, as help() shows signatures
from journal.ids import derived_id
from journal.lifecycle import (
    ACTIVE,
    APPEND_MESSAGE,
    ARCHIVE,
    DELETE,
    DELETED,
    HARD_TIMEOUT,
    IDLE_TIMEOUT,
    PAUSE,
    READ,
    READ_STATUS,
    RENAME,
    RESTORE,
    RESUME,
    SET_METADATA,
    SNAPSHOT,
    TIME_OUT,
    TIMED_STATUSES,
    TRUNCATE,
)
from journal.message_args import CheckedMessage, MessageArgs, first_message_kwargs
from journal.operation_base import OperationBase, combined
from journal.state import Receipt
from journal.validation import (
    MAX_METADATA_VALUE_BYTES,
    check_at,
    check_count,
    check_model_id,
    check_session_id,
    check_text,
    check_time,
    check_timeout,
)

DEFAULT_WARN_BEFORE_SECONDS: Final = 300.0
_CALENDAR_END: Final = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC).timestamp()


class Operations(OperationBase):
    """What the host app can ask of the writer."""

    # -- models, sessions and what they hold ----------------------------------------------
    @combined
    def register_model(
        self,
        model_id: str,
        model_name: str | None = None,
        provider: str | None = None,
        *,
        event_id: str | None = None,
    ) -> Receipt:
        """Record a model (done automatically on its first use by a session)."""
        check_model_id(model_id)
        check_text("model_name", model_name)
        check_text("provider", provider)
        with self._writing() as w:
            dup = self._duplicate(event_id, "model_registered", None)
            if dup is not None:
                return dup
            if model_id in self._state.models:
                raise InvalidValue(f"model {model_id!r} is already registered")
            return self._add(
                w,
                ev.ModelRegistered(
                    model_id=model_id, model_name=model_name or model_id, provider=provider
                ),
                event_id,
            )

    @combined
    def create_session(
        self,
        model_id: str,
        model_name: str | None = None,
        title: str | None = None,
        *,
        idle_timeout_seconds: int | None = 3600,
        hard_timeout_seconds: int | None = 86400,
        session_id: str | None = None,
        first_message: str | Mapping[str, Any] | None = None,
        provider: str | None = None,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> str:
        """Start a session (and its first message, atomically); returns its id.

        ``first_message`` is the content of a user message, or the keyword arguments of
        ``append_message``. An unknown model is registered in the same atomic group.
        """
        sid = session_id if session_id is not None else self._new_id()
        check_session_id(sid)
        check_model_id(model_id)
        check_text("model_name", model_name)
        check_text("title", title)
        check_timeout("idle_timeout_seconds", idle_timeout_seconds)
        check_timeout("hard_timeout_seconds", hard_timeout_seconds)
        at = check_at(at)
        message = first_message_kwargs(first_message)
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_created", session_id)
            if dup is not None:
                assert dup.session_id is not None
                return dup.session_id
            if self._state.find(sid) is not None:
                raise SessionExists(sid)
            if model_id not in self._state.models:
                self._add(
                    w,
                    ev.ModelRegistered(
                        model_id=model_id, model_name=model_name or model_id, provider=provider
                    ),
                    derived_id(event_id, "model"),
                    at,
                )
            self._add(
                w,
                ev.SessionCreated(
                    session_id=sid,
                    model_id=model_id,
                    model_name=model_name,
                    title=title,
                    idle_timeout_seconds=idle_timeout_seconds,
                    hard_timeout_seconds=hard_timeout_seconds,
                ),
                event_id,
                at,
            )
            if message is not None:
                message.setdefault("event_id", derived_id(event_id, "first_message"))
                message.setdefault("at", at)
                self.append_message(sid, **message)
        return sid

    def append_message(
        self,
        session_id: str,
        role: str,
        content: str,
        *,
        tokens_used: int | None = None,
        duration_seconds: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        expected_seq: int | None = None,
        event_id: str | None = None,
        at: datetime | str | None = None,
        tool_calls: Sequence[ToolCall | Mapping[str, Any]] | None = None,
        tool_call_id: str | None = None,
        raw: str | Mapping[str, Any] | Sequence[Any] | None = None,
    ) -> Receipt:
        """Append a message; ``expected_seq`` is the last seq the caller saw (0 for none).

        ``tool_calls`` (an assistant's: each ``id``, ``name``, ``arguments``),
        ``tool_call_id`` (a tool result's) and ``raw`` (the provider's message item, as JSON
        text kept verbatim or a value encoded compactly) carry real LLM traffic.
        """
        # The checks that need no state run here, before the hand-over (journal.message_args).
        args = MessageArgs(
            session_id,
            role,
            content,
            tokens_used,
            duration_seconds,
            metadata,
            expected_seq,
            event_id,
            at,
            tool_calls,
            tool_call_id,
            raw,
        )
        return self._append_checked(args.checked())

    @combined
    def _append_checked(self, m: CheckedMessage) -> Receipt:
        """append_message, its arguments checked: what needs the state, under the lock."""
        session_id, event_id = m.session_id, m.event_id
        expected_seq, parts = m.expected_seq, m.parts
        with self._writing() as w:
            dup = self._duplicate(event_id, "message_appended", session_id)
            if dup is not None:
                return dup
            s = self._session(session_id, APPEND_MESSAGE)
            if expected_seq is not None and expected_seq != s.last_seq:
                raise SequenceConflict(session_id, expected_seq, s.last_seq)
            return self._add(
                w,
                ev.MessageAppended(
                    session_id=session_id,
                    seq=s.last_seq + 1,
                    role=m.role,  # type: ignore[arg-type]
                    content=m.content,
                    tokens_used=m.tokens_used,
                    duration_seconds=m.duration_seconds,
                    metadata=m.metadata,
                    tool_calls=UNSET if parts.tool_calls is None else parts.tool_calls,
                    tool_call_id=UNSET if parts.tool_call_id is None else parts.tool_call_id,
                    raw=UNSET if parts.raw is None else parts.raw,
                ),
                event_id,
                m.at,
            )

    @combined
    def set_metadata(
        self,
        session_id: str,
        key: str,
        value: str | None,
        *,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> Receipt:
        """Set (or, with None, clear) one metadata key of a session."""
        check_text("key", key, required=True)
        if value is not None:
            check_text("value", value, limit=MAX_METADATA_VALUE_BYTES)
            size = len(value.encode("utf-8"))
            if size > MAX_METADATA_VALUE_BYTES:
                raise InvalidValue(
                    f"value is {size} bytes of UTF-8; the limit is {MAX_METADATA_VALUE_BYTES}"
                )
        at = check_at(at)
        return self._simple(
            ev.SessionMetadataSet(session_id=session_id, key=key, value=value),
            SET_METADATA,
            event_id,
            at,
        )

    @combined
    def rename(self, session_id: str, title: str | None, *, event_id: str | None = None) -> Receipt:
        """Give the session a new title."""
        check_text("title", title)
        return self._simple(ev.SessionRenamed(session_id=session_id, title=title), RENAME, event_id)

    @combined
    def truncate(
        self,
        session_id: str,
        keep_through_seq: int,
        *,
        reason: str | None = None,
        event_id: str | None = None,
    ) -> Receipt:
        """Withdraw the session's messages after seq ``keep_through_seq`` (0: all of them).

        The log keeps them, for the record; the projection removes them, and the next
        message gets seq ``keep_through_seq + 1``.
        """
        if keep_through_seq is None:
            raise InvalidValue("keep_through_seq must be a whole number >= 0, not None")
        check_count("keep_through_seq", keep_through_seq)
        check_text("reason", reason)
        event = ev.MessagesTruncated(
            session_id=session_id, keep_through_seq=keep_through_seq, reason=reason
        )
        with self._writing() as w:
            dup = self._duplicate(event_id, "messages_truncated", session_id)
            if dup is not None:
                return dup
            last = self._session(session_id, TRUNCATE).last_seq
            if keep_through_seq >= last:
                raise InvalidValue(
                    f"session {session_id!r}: no messages after seq {keep_through_seq} to "
                    f"withdraw (its last seq is {last})"
                )
            return self._add(w, event, event_id)

    @combined
    def snapshot(
        self,
        session_id: str,
        reason: str = "checkpoint",
        *,
        note: str | None = None,
        event_id: str | None = None,
    ) -> Receipt:
        """Record a snapshot of the session and its messages as of now."""
        if reason not in ev.SNAPSHOT_REASONS:
            raise InvalidValue(
                f"reason must be one of {', '.join(ev.SNAPSHOT_REASONS)}, not {reason!r}"
            )
        check_text("note", note)
        return self._simple(
            ev.SessionSnapshotted(
                session_id=session_id,
                reason=reason,  # type: ignore[arg-type]
                note=note,
            ),
            SNAPSHOT,
            event_id,
        )

    # -- the session lifecycle ------------------------------------------------------------
    @combined
    def pause(
        self, session_id: str, *, event_id: str | None = None, at: datetime | str | None = None
    ) -> Receipt:
        """Suspend the session's timeouts until resume() or its next message."""
        return self._simple(ev.SessionPaused(session_id=session_id), PAUSE, event_id, check_at(at))

    @combined
    def resume(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Make a paused session active; its idle clock restarts."""
        return self._simple(ev.SessionResumed(session_id=session_id), RESUME, event_id)

    @combined
    def archive(
        self, session_id: str, *, event_id: str | None = None, at: datetime | str | None = None
    ) -> Receipt:
        """Archive the session (the projection keeps a pre_archive snapshot)."""
        return self._simple(
            ev.SessionArchived(session_id=session_id), ARCHIVE, event_id, check_at(at)
        )

    @combined
    def time_out(
        self,
        session_id: str,
        kind: TimeoutKind,
        *,
        event_id: str | None = None,
        at: datetime | str | None = None,
    ) -> Receipt:
        """Record that one session timed out, decided by the caller (imports, or a host
        app that runs its own timeout policy); ``expire_due`` decides for every session.

        ``idle`` makes an active session idle; ``hard`` expires an active, idle or paused
        one. The decision time (``as_of``) is ``at`` when given, else the writer's clock.
        """
        rule = TIME_OUT.get(kind) if isinstance(kind, str) else None
        if rule is None:
            kinds = " or ".join(map(repr, TIME_OUT))
            raise InvalidValue(f"kind must be {kinds}, not {kind!r}")
        at = check_at(at)
        as_of = self._now() if at is None else at
        return self._simple(
            ev.SessionTimedOut(session_id=session_id, kind=kind, as_of=as_of), rule, event_id, at
        )

    @combined
    def restore(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Reopen an idle, expired, archived or deleted session with fresh deadlines.

        A deleted session comes back from the ``pre_delete`` snapshot taken when it was
        deleted, messages included.
        """
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_restored", session_id)
            if dup is not None:
                return dup
            s = self._session(session_id, RESTORE)
            snapshot_pos = s.pre_delete_pos if s.status == DELETED else None
            return self._add(
                w, ev.SessionRestored(session_id=session_id, snapshot_pos=snapshot_pos), event_id
            )

    @combined
    def delete_session(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        """Delete the session from the projection, after a ``pre_delete`` snapshot.

        The log keeps every event; ``restore`` brings the session back.
        """
        with self._writing() as w:
            dup = self._duplicate(event_id, "session_deleted", session_id)
            if dup is not None:
                return dup
            self._session(session_id, DELETE)
            self._add(
                w,
                ev.SessionSnapshotted(session_id=session_id, reason="pre_delete"),
                derived_id(event_id, "pre_delete"),
            )
            return self._add(w, ev.SessionDeleted(session_id=session_id), event_id)

    @combined
    def expire_due(
        self,
        now: datetime | None = None,
        *,
        warn_before_seconds: float = DEFAULT_WARN_BEFORE_SECONDS,
    ) -> list[Receipt]:
        """Append the timeout events due as of ``now`` (default: the writer's clock).

        Per session, at most one of: ``session_timed_out(kind=hard)`` once past the hard
        deadline (status expired), ``session_timed_out(kind=idle)`` once idle for longer
        than its idle timeout (status idle), or, within ``warn_before_seconds`` of either
        deadline, a ``timeout_warning`` with a ``timeout_warning`` snapshot. Paused sessions
        are skipped. The decision time is recorded in each event as ``as_of``.
        """
        as_of = self._now() if now is None else check_time("now", now)
        t = ev.ts_seconds(as_of)
        receipts: list[Receipt] = []
        with self._writing() as w:
            for sid, s in list(self._state.sessions.items()):
                if s.status not in TIMED_STATUSES:
                    continue
                idle_at = (
                    ev.ts_seconds(s.idle_since) + s.idle_timeout
                    if s.idle_timeout is not None and s.status == ACTIVE
                    else math.inf
                )
                hard_at = s.hard_deadline if s.hard_deadline is not None else math.inf
                # A deadline past the calendar (only a log from before the writer kept
                # times in range holds one) is its last moment, which no clock reaches.
                idle_at, hard_at = (min(x, _CALENDAR_END) for x in (idle_at, hard_at))
                if hard_at <= t:
                    kind: TimeoutKind | None = HARD_TIMEOUT
                elif idle_at <= t:
                    kind = IDLE_TIMEOUT
                else:
                    kind = None
                if kind is not None:
                    receipts.append(
                        self._add(
                            w, ev.SessionTimedOut(session_id=sid, kind=kind, as_of=as_of), None
                        )
                    )
                elif not s.warned and min(idle_at, hard_at) - warn_before_seconds <= t:
                    soon = IDLE_TIMEOUT if idle_at <= hard_at else HARD_TIMEOUT
                    deadline = datetime.fromtimestamp(min(idle_at, hard_at), UTC)
                    self._add(
                        w, ev.SessionSnapshotted(session_id=sid, reason="timeout_warning"), None
                    )
                    receipts.append(
                        self._add(
                            w,
                            ev.TimeoutWarning(
                                session_id=sid,
                                kind=soon,
                                deadline=ev.format_ts(deadline),
                                as_of=as_of,
                            ),
                            None,
                        )
                    )
                w.split()
        return receipts

    # -- read-only views for callers ------------------------------------------------------
    def receipt(self, event_id: str) -> Receipt | None:
        """Where the event with this id landed, if it is within the id window."""
        seen = self._state.recent_ids.get(event_id)
        return None if seen is None else seen[1]

    def last_seq(self, session_id: str) -> int:
        """The seq of the session's last message (0 if none), as of the last look."""
        return self._session(session_id, READ, reading=True).last_seq

    def status(self, session_id: str) -> str:
        """The session's status as of the writer's last look at the log."""
        return self._session(session_id, READ_STATUS, reading=True).status
