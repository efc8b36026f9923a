"""session-journal's read side: the SQLite projection of the log, its checks, and the CLI.

::

    from projector import replay, rebuild, verify

    replay("sessions.jsonl", "sessions.db")       # catch up (creates the database)
    report = verify("sessions.jsonl", "sessions.db")
    if not report.ok:
        print(*report.problems, sep="\\n")

The tree, in the order the data flows: ``db`` opens the database (schema, whose file it
is); ``rules`` says what each event does to the rows; ``sync`` keeps the database in step
with the log (catch-up, rebuild, ``replay``; ``watch`` does it live); ``checks`` proves
it matches the log (``verify``); ``queries`` reads it. ``forgetting`` purges a forgotten
session's rows and scrubs the files of them. ``legacy`` imports the old app's database;
``cli`` is the command line over all of it; ``errors`` holds the errors.
"""

from projector.checks.canonical import canonical_hash
from projector.checks.findings import Problem
from projector.checks.verify import VerifyReport, verify
from projector.db import connect
from projector.errors import (
    CheckpointMismatch,
    InvariantViolation,
    ProjectorError,
    RebuildCheckFailed,
    SchemaNotFound,
)
from projector.sync.catchup import CatchUpResult, catch_up
from projector.sync.rebuild import RebuildResult, rebuild
from projector.sync.replay import ReplayResult, replay

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
