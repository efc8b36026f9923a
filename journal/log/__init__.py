"""The log: the append-only file of checksummed JSON lines that is the only source of truth.

``files`` opens it safely, ``appender`` writes whole records under a lock with group
commit, ``reader`` (with ``fastpath``) reads it back and tells a clean end from a torn tail
from corruption. ``backend`` states what the writer and the projector need of any log;
``file_backend`` and ``memory`` implement it, the second for fast tests.
"""

from typing import TYPE_CHECKING

from journal.log.appender import DURABILITY_MODES, MAX_HANDOFFS, Durability, LogFile
from journal.log.backend import (
    START,
    AppendConflict,
    AppendTooLarge,
    Cursor,
    LogBackend,
    LogBusy,
    LogSource,
    Run,
    TornTail,
)
from journal.log.file_backend import FileLog, FileSource
from journal.log.files import FILE_MODE, check_regular_file, fsync_directory, open_log_for_append
from journal.log.memory import MemoryLog, MemoryStore
from journal.log.reader import LogReader, StateReader, read_log

if TYPE_CHECKING:  # both implement the seam: mypy checks them against it

    def _implements(file: FileLog, memory: MemoryLog) -> tuple[LogBackend, LogBackend]:
        return file, memory


__all__ = [
    "DURABILITY_MODES",
    "FILE_MODE",
    "MAX_HANDOFFS",
    "START",
    "AppendConflict",
    "AppendTooLarge",
    "Cursor",
    "Durability",
    "FileLog",
    "FileSource",
    "LogBackend",
    "LogBusy",
    "LogFile",
    "LogReader",
    "LogSource",
    "MemoryLog",
    "MemoryStore",
    "Run",
    "StateReader",
    "TornTail",
    "check_regular_file",
    "fsync_directory",
    "open_log_for_append",
    "read_log",
]
