"""The import section of ``tools/bench.py``: legacy import + projection vs rebuild alone.

An old-style AI-router database (``tools/legacy_fixture.py``, the seed's migrated schema,
5 % of its counters drifted) is imported with ``projector.legacy.import_legacy``: plan,
write the log, project it into a new database (the bulk path ``rebuild`` takes), verify
it and check every message against the source. The baseline is ``projector.rebuild`` of
the log that import wrote, into another database: what projecting those events costs on
its own. The ratio says how much an import costs beyond rebuilding its result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchlib import Context, Figure, Section, best_of, timed
from legacy_fixture import build_legacy_db

SEED = 7


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        p = Path(f"{path}{suffix}")
        if p.exists():
            p.unlink()


def run(ctx: Context, section: Section) -> None:
    try:
        import projector
        from projector.legacy import import_legacy
    except ImportError:
        section.status = "skipped"
        section.message = "the legacy import (projector.legacy) is not available"
        return
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
        _remove(db)
        if "log" in state:
            state["log"].unlink()
        state["log"] = log
        return t

    def rebuilt() -> float:
        db = ctx.fresh("rebuild.db")
        t = timed(lambda: projector.rebuild(str(state["log"]), str(db)))
        _remove(db)
        return t

    t_import, t_rebuild = best_of(ctx.size.rounds, imported, rebuilt)
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
