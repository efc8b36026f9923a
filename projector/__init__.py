"""session-journal's read side: the SQLite projection of the log, its checks, and the CLI.

::

    from projector import replay, rebuild, verify

    replay("sessions.jsonl", "sessions.db")       # catch up (creates the database)
    report = verify("sessions.jsonl", "sessions.db")
    if not report.ok:
        print(*report.problems, sep="\\n")
"""

from projector.canonical import canonical_hash
from projector.catchup import CatchUpResult, catch_up
from projector.db import connect
from projector.errors import (
    CheckpointMismatch,
    InvariantViolation,
    ProjectorError,
    RebuildCheckFailed,
    SchemaNotFound,
)
from projector.findings import Problem
from projector.rebuild import RebuildResult, rebuild
from projector.replay import ReplayResult, replay
from projector.verify import VerifyReport, verify

__all__ = [
    "CatchUpResult",
    "CheckpointMismatch",
    "InvariantViolation",
    "Problem",
    "ProjectorError",
    "RebuildCheckFailed",
    "RebuildResult",
    "ReplayResult",
    "SchemaNotFound",
    "VerifyReport",
    "canonical_hash",
    "catch_up",
    "connect",
    "rebuild",
    "replay",
    "verify",
]
