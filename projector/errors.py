"""The errors the projector raises, as one branch of journal's hierarchy.

``sqlite3.Error`` and ``OSError`` are translated where they happen, with
``raise … from exc``; a bad line in the middle of the log surfaces as journal's own
``CorruptLog`` (path, line, byte offset)::

    JournalError                  (journal.errors)
    ├── CorruptLog                a bad line in the middle of the log (from the reader)
    ├── FileRefused               a file that cannot be used as asked (path, reason)
    │   ├── ForeignFile           (also a ProjectorError, below)
    │   └── LegacyImportError     an old database import-legacy cannot read
    └── ProjectorError            the projection cannot follow the log
        ├── SchemaNotFound        the schema/*.sql files are missing from the install
        ├── InvariantViolation    an event the projection cannot apply (line, offset, session)
        ├── CheckpointMismatch    the checkpoint is not on the log: truncated or replaced
        ├── RebuildCheckFailed    the rebuilt file failed its checks; the old one is kept
        ├── ForeignFile           a file at the database's path that is not a projection
        └── DatasetteVersionError no Datasette installed (or an unknown version) to write for
"""

from __future__ import annotations

from typing import ClassVar

from journal.errors import JournalError


class ProjectorError(JournalError):
    """The projection cannot follow the log."""


class FileRefused(JournalError):
    """A file that cannot be used as asked: ``path``, ``reason``, and in the message
    what became of it (``OUTCOME``)."""

    OUTCOME: ClassVar[str] = "nothing was done"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}; {self.OUTCOME}")
        self.path = path
        self.reason = reason


class SchemaNotFound(ProjectorError):
    """The projection's SQL files cannot be found (a broken install)."""


class InvariantViolation(ProjectorError):
    """An event breaks a rule of the projection; nothing of its batch was committed."""

    def __init__(
        self, reason: str, *, path: str, line: int, offset: int, session_id: str | None
    ) -> None:
        where = f" (session {session_id!r})" if session_id is not None else ""
        place = f"{path}: line {line} (byte offset {offset}){where}"
        super().__init__(f"{place}: {reason}; the projection stopped before this event")
        self.reason = reason
        self.path = path
        self.line = line
        self.offset = offset
        self.session_id = session_id


class CheckpointMismatch(ProjectorError):
    """The line the checkpoint points at is not in the log any more: rebuild."""

    def __init__(self, reason: str, *, path: str, offset: int, pos: int) -> None:
        super().__init__(
            f"{path}: the projection's checkpoint (line {pos}, byte offset {offset}) is not "
            f"on this log: {reason}; the log was truncated or replaced, so the projection "
            "must be rebuilt"
        )
        self.reason = reason
        self.path = path
        self.offset = offset
        self.pos = pos


class RebuildCheckFailed(ProjectorError):
    """The freshly built database failed its quick checks; the old file was kept."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "the rebuilt projection failed its checks (the old database was kept): "
            + "; ".join(problems)
        )
        self.problems = problems


class ForeignFile(ProjectorError, FileRefused):
    """A file the projector would replace or write is not one of its own; it is left as is."""

    OUTCOME = "it was left untouched"


class DatasetteVersionError(ProjectorError):
    """Datasette's format cannot be chosen: it is not installed, or its version is unknown."""
