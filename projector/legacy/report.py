"""The report of ``import-legacy``: what the old database held, what was wrong with it,
what the import wrote, and whether the result checks out.

``ImportReport`` is a msgspec Struct: ``report.to_builtins()`` is the ``--json`` form,
``format_report(report)`` the text a person reads (long lists are cut to a few examples;
the JSON form lists every anomaly).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec


class Anomaly(msgspec.Struct, frozen=True, kw_only=True):
    """One thing in the old database that was not as it should be, and what became of it.

    ``kind`` is a flag name (see ``projector.legacy.importer``), ``session_id`` the id in the
    journal, ``old_session_id`` and ``message_id`` the old row's ids.
    """

    kind: str
    session_id: str | None
    old_session_id: Any = None
    message_id: Any = None
    detail: str = ""


class CounterMismatch(msgspec.Struct, frozen=True, kw_only=True):
    """A denormalised counter of the old sessions row that disagrees with its rows."""

    session_id: str
    field: str
    recorded: Any
    actual: Any


class ImportReport(msgspec.Struct, kw_only=True):
    """Everything ``import_legacy`` found and did."""

    source: str
    source_bytes: int
    source_sha256: str
    source_unchanged: bool | None = None
    log_path: str
    db_path: str
    dry_run: bool
    integrity_check: list[str]
    schema_variant: str
    tables: list[str]
    missing_columns: dict[str, list[str]]
    has_fts: bool
    not_imported_tables: dict[str, int]  # unknown tables -> row count
    counts: dict[str, int]
    content_bytes: int
    counter_mismatches: list[CounterMismatch] = msgspec.field(default_factory=list)
    anomalies: list[Anomaly] = msgspec.field(default_factory=list)
    sessions_planned: int = 0
    sessions_written: int = 0
    sessions_already_present: int = 0
    events_written: int = 0
    events_already_present: int = 0
    verify_ok: bool | None = None
    verify_problems: list[str] = msgspec.field(default_factory=list)
    messages_checked: int = 0
    check_problems: list[str] = msgspec.field(default_factory=list)

    @property
    def anomaly_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(a.kind for a in self.anomalies).items()))

    @property
    def ok(self) -> bool:
        """True if nothing failed: the source is unchanged, verify and the check passed."""
        if self.source_unchanged is False or self.check_problems:
            return False
        return self.dry_run or bool(self.verify_ok)

    def to_builtins(self) -> dict[str, Any]:
        """The JSON-able form (``--json``)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["anomaly_counts"] = self.anomaly_counts
        out["ok"] = self.ok
        return out


def _examples(items: list[str], limit: int = 5) -> list[str]:
    shown = [f"      {line}" for line in items[:limit]]
    if len(items) > limit:
        shown.append(f"      … and {len(items) - limit} more (see --json)")
    return shown


def format_report(report: ImportReport, *, examples: int = 5) -> str:
    """The report as text: the pre-import check, then the import and its checks."""
    r = report
    lines = [
        "Pre-import check",
        "================",
        f"  source: {r.source} ({r.source_bytes} bytes, sha256 {r.source_sha256[:16]}…)",
        "  integrity_check: " + ("ok" if r.integrity_check == ["ok"] else "FAILED"),
    ]
    if r.integrity_check != ["ok"]:
        lines += _examples(r.integrity_check, examples)
    lines.append(f"  schema: {r.schema_variant}; FTS table {'present' if r.has_fts else 'absent'}")
    for table, cols in r.missing_columns.items():
        if cols:
            lines.append(f"  missing columns in {table}: {', '.join(cols)} (read as NULL)")
    for table, n in r.not_imported_tables.items():
        lines.append(f"  table {table} ({n} rows) is not part of the session data: not imported")
    c = r.counts
    lines.append(
        f"  rows: {c.get('sessions', 0)} sessions, {c.get('messages', 0)} messages, "
        f"{c.get('session_metadata', 0)} metadata entries, {c.get('session_timeouts', 0)} "
        f"timeout rows, {c.get('session_snapshots', 0)} snapshots, {c.get('models', 0)} models"
    )
    lines.append(
        f"  content size: {r.content_bytes / 1024 / 1024:.2f} MB ({r.content_bytes} bytes)"
    )
    lines.append(f"  NULL tokens_used: {c.get('null_tokens', 0)} messages")
    lines.append(f"  counter mismatches: {len(r.counter_mismatches)} (recomputed, never copied)")
    lines += _examples(
        [
            f"{m.session_id}: {m.field} recorded {m.recorded!r}, rows say {m.actual!r}"
            for m in r.counter_mismatches
        ],
        examples,
    )
    counts = r.anomaly_counts
    lines.append(f"  anomalies: {sum(counts.values())}" + (" (nothing dropped)" if counts else ""))
    for kind, n in counts.items():
        lines.append(f"    {kind}: {n}")
        lines += _examples(
            [
                f"{a.session_id}"
                + (f" message {a.message_id!r}" if a.message_id is not None else "")
                + f": {a.detail}"
                for a in r.anomalies
                if a.kind == kind
            ],
            examples,
        )
    lines += ["", "Import", "======"]
    if r.dry_run:
        lines.append(
            "  dry run: nothing written; would write "
            f"{r.sessions_planned - r.sessions_already_present} sessions "
            f"({r.sessions_already_present} already in {r.log_path})"
        )
    else:
        lines.append(
            f"  {r.sessions_written} sessions written, {r.sessions_already_present} already "
            f"present; {r.events_written} events appended, {r.events_already_present} already "
            f"in {r.log_path}"
        )
        verdict = "ok" if r.verify_ok else f"{len(r.verify_problems)} problems"
        lines.append(f"  verify {r.db_path}: {verdict}")
        lines += _examples(r.verify_problems, examples)
        if r.check_problems:
            lines.append(f"  message check: {len(r.check_problems)} problems")
            lines += _examples(r.check_problems, examples)
        else:
            lines.append(
                f"  message check: all {r.messages_checked} old messages found in the "
                "projection with their content"
            )
    if r.source_unchanged is not None:
        verdict = "unchanged" if r.source_unchanged else "CHANGED DURING THE IMPORT"
        lines.append(f"  source file {verdict}")
    return "\n".join(lines)
