"""session-journal's write side: the event log and the writer API.

The host app needs one import::

    from journal import Journal

    with Journal.open("sessions.jsonl") as j:
        sid = j.create_session(model_id="gpt-4o", model_name="GPT-4o", title="Trip plan")
        j.append_message(sid, role="user", content="Hello", tokens_used=12)
"""

from journal.aio import AsyncJournal
from journal.errors import (
    ConflictError,
    CorruptLog,
    DurabilityError,
    GroupTooLarge,
    IdempotencyConflict,
    InvalidState,
    InvalidValue,
    JournalClosed,
    JournalError,
    LogError,
    LogWriteError,
    NotALog,
    QuarantineFailed,
    SequenceConflict,
    SessionExists,
    UnknownSession,
    UnsafeLogPath,
    ValidationError,
)
from journal.log import LogReader, TornTail, read_log
from journal.state import Receipt
from journal.writer import Journal, Repair

__all__ = [
    "AsyncJournal",
    "ConflictError",
    "CorruptLog",
    "DurabilityError",
    "GroupTooLarge",
    "IdempotencyConflict",
    "InvalidState",
    "InvalidValue",
    "Journal",
    "JournalClosed",
    "JournalError",
    "LogError",
    "LogReader",
    "LogWriteError",
    "NotALog",
    "QuarantineFailed",
    "Receipt",
    "Repair",
    "SequenceConflict",
    "SessionExists",
    "TornTail",
    "UnknownSession",
    "UnsafeLogPath",
    "ValidationError",
    "read_log",
]
