"""``import-legacy``: move an old AI-router sessions database into the journal, losing nothing.

    report = import_legacy("old.db", "sessions.jsonl", "sessions.db")
    print(format_report(report))          # or report.to_builtins() for --json

The old file is opened read-only (``mode=ro``; never modified: its SHA-256 is compared
before and after). The import reads it whole, prints what the seed's pre-migration check
printed and more, then appends, through the writer API, events that reproduce every
session, message, metadata entry, status and timeout, with the original times in ``at``.
It ends with the projection (``projector.rebuild`` into a new database, ``projector.replay``
into an existing one), ``projector.verify`` and a check that every old message is in the
projection with its content. ``dry_run=True`` reads and reports, writes nothing.

Atomic groups: one session per group (``journal.batch()``). A session over the writer's
group limits (10,000 events, 64 MiB) is split: a creation group (session, metadata, import
record), then message groups in order, the status event in the last one. An interrupted
import is finished by running it again.

Idempotency: every event id is a uuid5 over the row's identity in the old file (the old
session id and ``created_at``, the message's ``message_id``…; never the file's path). The
import first reads the whole log and skips every event whose id is already there, so a
second run appends nothing, however large the import (the writer's own id window holds only
the last 65,536 events).

Counters (``message_count``, ``total_tokens``, ``total_duration_seconds``) are never copied:
the projection recomputes them; every old counter that disagrees with its rows is reported.

What becomes of each kind of mess (flags are listed in the report and, for messages, in
the message's metadata ``import_flags``):

* Every session gets the metadata key ``session_journal.legacy_import``: JSON with its
  original row verbatim (``source_row``), its kind, flags, any ``session_timeouts`` rows,
  old ``session_snapshots`` rows, irregular metadata rows and overflowing fields. A value
  over 16,000 characters is stored as ``{"$chunks": n}`` plus keys ``…#1``…``…#n``.
* A message with any flag has metadata ``{"legacy": {original columns}, "import_flags":
  [...]}`` (``legacy.metadata`` is the old metadata text); a clean message keeps its old
  metadata JSON object as is. ``legacy.content`` is present exactly when ``content`` is
  not the original text. Values JSON cannot hold are tagged: ``{"$float": "nan"}``,
  ``{"$blob_base64": …}``, ``{"$invalid_utf8_base64": …}``; a field moved out for size is
  ``{"$overflow": ref}``, found under ``overflow[ref]`` in the session's import record.
* Orphaned rows (messages, metadata, timeouts, snapshots whose session_id has no sessions
  row, NULL included): kept in a session ``recovered-<old id>`` (or ``legacy-<hex>``),
  titled "Recovered orphaned rows of session …", kind ``recovered_orphans``, every message
  flagged ``orphan``.
* Sequence gaps, duplicates and non-numbers: messages are renumbered 1..n, gapless, in
  their old order (sequence_number, then rowid; non-numbers last); each moved message is
  flagged ``renumbered`` (also ``duplicate_sequence``, ``missing_sequence``), the old
  number is ``legacy.sequence_number``. Identical consecutive rows: ``duplicate_row``.
* Content: empty (``empty_content``), NULL (``null_content``) or a BLOB (``blob_content``)
  becomes a marker text ``[session-journal import: …]``; a number becomes its text
  (``non_text_content``); NUL becomes U+2400 (``nul_in_content``); TEXT that is not UTF-8
  is decoded with U+FFFD (``invalid_utf8``); over 4 MiB of UTF-8 it is cut into
  consecutive messages (``content_split``, ``part: [i, n]``).
* Role: case or spaces wrong (``User ``) is normalised (``role_normalised``); anything
  else (``tool``, NULL) becomes a ``system`` message whose content is a marker
  (``invalid_role``): an unknown speaker's text is never replayed under a trusted role.
* tokens_used: whole numbers 0..10^12 kept; integral floats or numeric text converted
  (``tokens_converted``); negative, fractional, NaN, huge or text → NULL
  (``invalid_tokens``). duration_seconds likewise, 0..10^9 (``duration_converted``,
  ``invalid_duration``). NULL stays NULL (counted in the report).
* metadata column: not JSON (``metadata_not_json``), not an object
  (``metadata_not_object``), holding the keys ``legacy``/``import_flags``
  (``metadata_reserved_key``) or over the size limit (``metadata_too_large``): the text
  is kept in ``legacy.metadata``.
* Timestamps: the formats ``projector.legacy.values`` accepts are normalised; NULL
  (``missing_timestamp``), unparseable (``unparseable_timestamp``) or outside the years
  1000 to 9989 the writer records (``timestamp_out_of_range``): the message takes
  the time of the message before it (or the session's), the raw value stays in
  ``legacy.timestamp``. A session without a usable ``created_at`` takes its first
  message's time, else ``updated_at``, else the time of the import.
* Session fields the writer refuses (id, model id, title, model name, timeouts, status):
  a valid replacement is used (a new id ``legacy-<hex>``, model ``legacy-unknown-model``,
  text with NUL as U+2400 and cut at 10,000 characters, no timeout, status ``active``),
  flagged ``session_id_changed`` / ``invalid_<field>``; the original is in ``source_row``.
  A session id already used in the log by another session gets the suffix
  ``.legacy-<hex>``. A second sessions row with the same id: ``duplicate_session_row``.
* Metadata rows with a NULL, non-text, NUL-holding or oversized value, or an invalid or
  reserved (``session_journal.``) key, are kept in the import record's ``metadata_rows``.
* Timeouts: pre-enhancement databases had none, so sessions get none (no idle or hard
  timeout). Migrated ones take ``session_timeouts`` (else the sessions columns); a
  disagreement is reported (``timeout_mismatch``). Statuses: ``paused``, ``archived``,
  ``idle`` and ``expired`` are reproduced after the messages.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from journal import Journal
from journal.events import MessageAppended, ModelRegistered, SessionCreated
from journal.gcpause import gc_paused
from journal.log import read_log
from journal.validation import MAX_GROUP_EVENTS, MAX_TEXT_CHARS
from projector.db import check_paths
from projector.legacy.check import project
from projector.legacy.ids import event_id
from projector.legacy.plan import MessagePlan, Planner, SessionPlan
from projector.legacy.report import Anomaly, CounterMismatch, ImportReport, format_report
from projector.legacy.source import (
    LegacyImportError,
    OldDatabase,
    file_digest,
    read_database,
)
from projector.legacy.values import MODEL_ID, as_seq, as_text, jsonable

__all__ = ["ImportReport", "LegacyImportError", "format_report", "import_legacy"]

Progress = Callable[[int, int], None]
# Room under the writer's 64 MiB group limit for envelopes and JSON escaping.
GROUP_BYTES = 40 * 1024 * 1024


@dataclass
class LogIndex:
    """What the log already holds, read once before writing."""

    ids: set[str] = field(default_factory=set)
    created: dict[str, str] = field(default_factory=dict)  # session id -> creating event id
    models: set[str] = field(default_factory=set)
    messages: dict[str, tuple[str, int]] = field(default_factory=dict)  # id -> (sid, seq)


def _index_log(log_path: str) -> LogIndex:
    idx = LogIndex()
    if not os.path.exists(log_path):
        return idx
    for event, _ in read_log(log_path):
        idx.ids.add(event.id)
        if isinstance(event, MessageAppended):
            idx.messages[event.id] = (event.session_id, event.seq)
        elif isinstance(event, SessionCreated):
            idx.created.setdefault(event.session_id, event.id)
        elif isinstance(event, ModelRegistered):
            idx.models.add(event.model_id)
    return idx


def import_legacy(
    old_db: str | os.PathLike[str],
    log_path: str | os.PathLike[str],
    db_path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import the old database into the log, then replay, verify and check the projection.

    Raises LegacyImportError (naming the file; nothing written) if the old file is missing,
    unreadable, not SQLite or has no sessions table. ``progress(done, total)`` is called
    as messages are written.
    """
    old, log, db = os.fspath(old_db), os.fspath(log_path), os.fspath(db_path)
    for other in (log, db):
        if os.path.exists(other) and os.path.exists(old) and os.path.samefile(old, other):
            raise LegacyImportError(old, f"is also the output {other}; choose another path")
    check_paths(log, db)
    # The import holds the whole old database and its plans while it allocates millions
    # of short-lived objects: GC passes would walk them all and free nothing.
    with gc_paused():
        source = read_database(old)
        idx = _index_log(log)
        planner = Planner(source, idx.created)
        plans = planner.plan_all()
        report = _pre_report(source, plans, planner.anomalies, log, db, dry_run)
        present = {p.session_id for p in plans if p.event_id in idx.ids}
        report.sessions_already_present = len(present)
        if not dry_run:
            _write(log, source, plans, idx, report, progress)
            project(log, db, plans, idx.messages, report)
    report.source_unchanged = file_digest(old) == source.sha256
    return report


# -- the pre-import report ---------------------------------------------------------------
def _pre_report(
    src: OldDatabase,
    plans: list[SessionPlan],
    anomalies: list[Anomaly],
    log: str,
    db: str,
    dry_run: bool,
) -> ImportReport:
    counts = dict(src.counts)
    counts["null_tokens"] = 0
    content_bytes = 0
    mismatches: list[CounterMismatch] = []
    extra: list[Anomaly] = []
    for plan in plans:
        msgs = plan.old.messages
        for m in msgs:
            c = m.get("content")
            if isinstance(c, str):  # isascii is O(1): no need to encode most text
                content_bytes += len(c) if c.isascii() else len(c.encode("utf-8"))
            elif isinstance(c, bytes):
                content_bytes += len(c)
            counts["null_tokens"] += m.get("tokens_used") is None
        extra += _gaps(plan)
        if plan.old.row is None:
            continue
        tokens = sum(t for m in msgs if isinstance(t := m.get("tokens_used"), int))
        duration = sum(
            float(d)
            for m in msgs
            if isinstance(d := m.get("duration_seconds"), int | float) and math.isfinite(d)
        )
        for name, actual in (
            ("message_count", len(msgs)),
            ("total_tokens", tokens),
            ("total_duration_seconds", duration),
        ):
            if name not in plan.old.row:
                continue
            recorded = plan.old.row[name]
            same = isinstance(recorded, int | float) and (
                math.isclose(recorded, actual, rel_tol=1e-9, abs_tol=1e-6)
                if name == "total_duration_seconds"
                else recorded == actual
            )
            if not same:
                mismatches.append(
                    CounterMismatch(
                        session_id=plan.session_id,
                        field=name,
                        recorded=jsonable(recorded),
                        actual=actual,
                    )
                )
    for table, n in src.unlinked.items():
        extra.append(
            Anomaly(
                kind="null_session_id",
                session_id=None,
                detail=f"{n} {table} rows have a NULL session_id (kept as orphans)",
            )
        )
    counts["orphaned_messages"] = sum(len(p.old.messages) for p in plans if p.old.row is None)
    return ImportReport(
        source=src.path,
        source_bytes=src.size,
        source_sha256=src.sha256,
        log_path=log,
        db_path=db,
        dry_run=dry_run,
        integrity_check=src.integrity,
        schema_variant=src.variant,
        tables=sorted(src.tables),
        missing_columns=src.missing_columns,
        has_fts=src.has_fts,
        not_imported_tables=src.other_tables,
        counts=counts,
        content_bytes=content_bytes,
        counter_mismatches=mismatches,
        anomalies=anomalies + extra,
        sessions_planned=len(plans),
    )


def _gaps(plan: SessionPlan) -> list[Anomaly]:
    seqs = sorted({s for m in plan.old.messages if (s := as_seq(m.get("sequence_number")))})
    if not seqs or seqs == list(range(1, len(seqs) + 1)):
        return []
    missing: list[str] = []
    expected = 1
    for s in seqs:
        if s > expected:
            missing.append(str(expected) if s == expected + 1 else f"{expected}-{s - 1}")
        expected = max(expected, s + 1)
    detail = "old sequence numbers " + (
        f"skip {', '.join(missing[:20])}" if missing else f"start at {seqs[0]}"
    )
    return [
        Anomaly(
            kind="sequence_gap",
            session_id=plan.session_id,
            old_session_id=jsonable(plan.old.key),
            detail=detail + "; renumbered gapless",
        )
    ]


# -- writing -----------------------------------------------------------------------------
Op = tuple[str, Any, str]  # (kind, payload, event id)


def _ops(plan: SessionPlan) -> Iterator[list[Op]]:
    """The session's events in atomic groups: one group if it fits, else creation first."""
    head: list[Op] = [("create", plan, plan.event_id)]
    head += [("meta", (k, v), eid) for k, v, eid in plan.metadata]
    head += [("meta", (k, v), eid) for k, v, eid in plan.record_entries()]
    tail: list[Op] = []
    if plan.status != "active":
        tail.append(("status", plan, event_id(*plan.identity, "status", plan.status)))
    msgs: list[Op] = [("message", m, m.event_id) for m in plan.messages]
    weight = sum(m.weight for m in plan.messages)
    limit = MAX_GROUP_EVENTS - 1  # room for the model registered with the session
    if len(head) + len(msgs) + len(tail) <= limit and weight <= GROUP_BYTES:
        yield head + msgs + tail
        return
    for i in range(0, len(head), limit):
        yield head[i : i + limit]
    group: list[Op] = []
    size = 0
    for op in msgs:
        w = op[1].weight
        if group and (len(group) >= limit or size + w > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(op)
        size += w
    if len(group) + len(tail) > limit:
        yield group
        group = []
    yield group + tail


def _write(
    log: str,
    src: OldDatabase,
    plans: list[SessionPlan],
    idx: LogIndex,
    report: ImportReport,
    progress: Progress | None,
) -> None:
    total = sum(len(p.messages) for p in plans)
    done = 0
    # No fsync per group, nor every few ms ("batch" mode's, measured at a sixth of the
    # writing time): an interrupted import is finished by running it again, so what
    # matters is that all of it is durable before the projection reads it (_sync_log).
    with Journal.open(log, durability="none") as j:
        _register_models(j, src, idx, report)
        for plan in plans:
            wrote = False
            for group in _ops(plan):
                todo = [op for op in group if op[2] not in idx.ids]
                report.events_already_present += len(group) - len(todo)
                if todo:
                    with j.batch():
                        start = j.last_pos  # after the batch's catch-up: ours from here
                        for op in todo:
                            _run(j, plan, op, idx)
                        appended = j.last_pos - start  # models registered on first use too
                    report.events_written += appended
                    wrote = True
                done += sum(1 for op in group if op[0] == "message")
                if progress is not None:
                    progress(done, total)
            report.sessions_written += wrote
    _sync_log(log)


def _sync_log(log: str) -> None:
    """fsync the log: every byte written through any descriptor of the file is on disk
    after this returns (its directory entry is synced by the writer when it creates it)."""
    fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _register_models(j: Journal, src: OldDatabase, idx: LogIndex, report: ImportReport) -> None:
    for row in src.models:
        mid = row.get("model_id")
        if not (isinstance(mid, str) and MODEL_ID.fullmatch(mid)):
            report.anomalies.append(
                Anomaly(
                    kind="invalid_model_row",
                    session_id=None,
                    detail=f"models row { ({k: jsonable(v) for k, v in row.items()})!r:.300} "
                    "has an invalid model_id; not registered",
                )
            )
            continue
        if mid in idx.models:
            continue
        name, _ = as_text(row.get("model_name"), MAX_TEXT_CHARS)
        provider, _ = as_text(row.get("provider"), MAX_TEXT_CHARS)
        eid = event_id("model", mid)
        if eid not in idx.ids:
            j.register_model(mid, name, provider, event_id=eid)
            report.events_written += 1
        idx.models.add(mid)


def _run(j: Journal, plan: SessionPlan, op: Op, idx: LogIndex) -> None:
    kind, payload, eid = op
    sid = plan.session_id
    if kind == "create":
        j.create_session(
            plan.model_id,
            plan.model_name,
            plan.title,
            idle_timeout_seconds=plan.idle_timeout,
            hard_timeout_seconds=plan.hard_timeout,
            session_id=sid,
            event_id=eid,
            at=plan.at,
        )
    elif kind == "meta":
        key, value = payload
        j.set_metadata(sid, key, value, event_id=eid)
    elif kind == "message":
        m: MessagePlan = payload
        r = j.append_message(
            sid,
            m.role,
            m.content,
            tokens_used=m.tokens_used,
            duration_seconds=m.duration_seconds,
            metadata=m.metadata,
            event_id=eid,
            at=m.at,
        )
        assert r.seq is not None
        idx.messages[eid] = (sid, r.seq)
    elif plan.status == "paused":
        j.pause(sid, event_id=eid, at=plan.status_at)
    elif plan.status == "archived":
        j.archive(sid, event_id=eid, at=plan.status_at)
    else:
        when = plan.status_at or (plan.messages[-1].at if plan.messages else plan.at)
        j.time_out(sid, "idle" if plan.status == "idle" else "hard", event_id=eid, at=when)
