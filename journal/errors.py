"""The errors session-journal raises, as one hierarchy.

Lower-layer errors (``OSError``, ``msgspec`` errors) are translated once, where they
happen, with ``raise … from exc``; callers catch these classes only::

    JournalError
    ├── LogError                  the log file itself
    │   ├── UnsafeLogPath         a symlink, hard link or non-regular file
    │   ├── NotALog               a file that is no log at all; left untouched
    │   ├── CorruptLog            a bad line no crash can leave (path, line, offset)
    │   ├── LogWriteError         write failed (disk full, file too large); log cut back
    │   │   └── QuarantineFailed  a torn tail could not be moved aside; log untouched
    │   └── DurabilityError       fsync failed; this handle refuses further appends
    ├── JournalClosed             the journal was closed (or poisoned by a failed fsync)
    ├── ValidationError           bad input; nothing was written
    │   ├── InvalidValue          a field is malformed, out of range or too large
    │   ├── UnknownSession        no such session
    │   ├── SessionExists         create_session with an id already in the log
    │   ├── InvalidState          the session's status forbids the operation
    │   └── GroupTooLarge         an atomic group over the documented limit
    └── ConflictError             optimistic concurrency failed; nothing was written
        ├── SequenceConflict      expected_seq is not the session's last seq
        └── IdempotencyConflict   an event id reused for a different operation
"""

from __future__ import annotations

from journal.lifecycle import CLOSED_STATUSES, RESTORE


class JournalError(Exception):
    """Base class of every error session-journal raises on purpose."""


class LogError(JournalError):
    """A problem with the log file."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class UnsafeLogPath(LogError):
    """The log path is a symlink, a hard link, or not a regular file."""


class NotALog(LogError):
    """The file at the log's path is not a session-journal log (a database, say)."""


# Why a bad line is corruption, when nothing more precise is known.
LATER_RECORDS: str = (
    "later lines are records, so this is corruption in the middle of the log, not a torn tail"
)


class CorruptLog(LogError):
    """A bad line that no crash can leave: corruption, never skipped or cut off silently."""

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        line: int,
        offset: int,
        why: str = LATER_RECORDS,
        file: tuple[str, int] | None = None,
    ) -> None:
        # ``offset`` counts from the log's start; in a sealed segment, ``file`` names the
        # segment's file and the offset in it, which is where a person looks.
        there = f"; byte {file[1]} of {file[0]}" if file is not None else ""
        super().__init__(
            f"{path}: line {line} (byte offset {offset}{there}): {reason}; {why}", path=path
        )
        self.reason, self.line, self.offset, self.why = reason, line, offset, why

    def in_file(self, file: str, offset: int) -> CorruptLog:
        """The same error, saying which file holds the bad line, and where."""
        return CorruptLog(
            self.reason,
            path=self.path,
            line=self.line,
            offset=self.offset,
            why=self.why,
            file=(file, offset),
        )


class LogWriteError(LogError):
    """Writing a record failed; the log was cut back to its length before the write."""


class QuarantineFailed(LogWriteError):
    """A torn tail could not be copied aside (disk full?); the log was left as it was."""


class DurabilityError(LogError):
    """fsync failed: the records may not be on disk. The handle refuses further appends."""


class JournalClosed(JournalError):
    """The journal is closed, or was poisoned by a failed fsync: open it again."""


class ValidationError(JournalError):
    """Bad input: nothing was written."""


class InvalidValue(ValidationError):
    """A field is malformed, out of range or too large."""


class UnknownSession(ValidationError):
    """No session with that id exists (or it was deleted)."""

    def __init__(self, session_id: str, *, deleted: bool = False) -> None:
        super().__init__(
            f"session {session_id!r} was deleted; restore() brings it back from its "
            "pre_delete snapshot"
            if deleted
            else f"unknown session {session_id!r}"
        )
        self.session_id, self.deleted = session_id, deleted


class SessionExists(ValidationError):
    """A session with that id already exists."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} already exists")
        self.session_id = session_id


class InvalidState(ValidationError):
    """The session's status does not allow the operation."""

    def __init__(self, session_id: str, status: str, operation: str) -> None:
        hint = (
            f"; restore({session_id!r}) reopens it"
            if status in CLOSED_STATUSES and operation != RESTORE.operation
            else ""
        )
        super().__init__(f"session {session_id!r} is {status}: cannot {operation}{hint}")
        self.session_id, self.status, self.operation = session_id, status, operation


class GroupTooLarge(ValidationError):
    """An atomic group exceeds the documented limit of events or bytes."""


class ConflictError(JournalError):
    """Optimistic concurrency check failed; nothing was written."""


class SequenceConflict(ConflictError):
    """``expected_seq`` is not the session's last message seq."""

    def __init__(self, session_id: str, expected: int, actual: int) -> None:
        super().__init__(
            f"session {session_id!r}: expected last seq {expected}, but it is {actual}; "
            "read the new messages and retry"
        )
        self.session_id, self.expected, self.actual = session_id, expected, actual


class IdempotencyConflict(ConflictError):
    """An event id that was already used for a different operation."""
