"""The import section of ``tools/bench.py``: legacy import + projection vs rebuild alone.

An old-style AI-router database (``tools/legacy_fixture.py``, the seed's migrated schema,
5 % of its counters drifted) is imported with ``projector.legacy.importer.import_legacy``: plan,
write the log, project it into a new database (the bulk path ``rebuild`` takes), verify
it and check every message against the source. The baseline is ``projector.rebuild`` of
the log that import wrote, into another database: what projecting those events costs on
its own. The ratio says how much an import costs beyond rebuilding its result.
"""

from __future__ import annotations

from typing import Any

from benchlib import Context, Figure, Section, best_of, timed
from legacy_fixture import build_legacy_db

import projector
from projector.legacy.importer import import_legacy
from projector.sync.rebuild import remove_database

SEED = 7


def run(ctx: Context, section: Section) -> None:
    sessions, per_session = ctx.size.legacy
    old = ctx.fresh("legacy.db")
    messages = build_legacy_db(old, sessions, per_session, SEED, schema="migrated")
    state: dict[str, Any] = {}

    def imported() -> float:
        log, db = ctx.fresh("import.jsonl"), ctx.fresh("import.db")
        t = timed(lambda: state.__setitem__("report", import_legacy(old, log, db)))
        report = state["report"]
        if not report.ok:
            raise AssertionError(f"the legacy import failed: {report.check_problems[:3]}")
        remove_database(str(db))
        if "log" in state:
            state["log"].unlink()
        state["log"] = log
        return t

    def rebuilt() -> float:
        db = ctx.fresh("rebuild.db")
        t = timed(lambda: projector.rebuild(str(state["log"]), str(db)))
        remove_database(str(db))
        return t

    # One round more than the other sections: an import runs three times as long as the
    # rebuild it is compared with, so a slow spell of this shared machine is more likely to
    # fall on it; one more round of each (three at full size) evens that out.
    t_import, t_rebuild = best_of(ctx.size.rounds + 1, imported, rebuilt)
    report = state["report"]
    section.figures.append(
        Figure(
            f"legacy import + projection, {messages:,} messages",
            t_import,
            "s",
            "rebuild of the log it wrote",
            t_rebuild,
            t_import / t_rebuild,
            "<=",
            3.0,
            f"{sessions:,} sessions x {per_session} messages (migrated schema, 5 % of "
            f"counters drifted); {report.events_written:,} events written; the import "
            f"projects, verifies and checks every message against the source",
        )
    )
    state["log"].unlink()
