"""The end of ``import-legacy``: project the log it wrote, verify it, check every message.

``project`` builds the projection, then runs ``projector.verify`` on it and, beside it,
``check_messages``, which reads every imported message back from the projection and
compares it with the old row it came from: a message missing, or whose content, role or
metadata differs, is a problem in the report (``check_problems``), as is a session whose
import record is damaged.
"""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from projector.checks.logfold import LogWitness
from projector.checks.verify import verify
from projector.db import readonly_uri
from projector.legacy.plan import RECORD_KEY, MessagePlan, SessionPlan
from projector.legacy.report import ImportReport
from projector.legacy.source import BadText
from projector.legacy.values import from_jsonable, jsonable
from projector.sync.rebuild import rebuild, remove_database
from projector.sync.replay import replay


def project(
    log: str,
    db: str,
    plans: list[SessionPlan],
    positions: dict[str, tuple[str, int]],
    report: ImportReport,
) -> None:
    """Project the log into ``db``, verify it and check every message; outcomes go into
    the report."""
    if os.path.exists(db):
        replay(log, db)  # an earlier import's projection: catch it up
        _verify_and_check(log, db, plans, positions, report, None)
        return
    # A new database: the bulk path, the one ``rebuild`` takes, much faster than a replay.
    # It folds the log for verify as it reads it (the witness), and skips its own checks,
    # which verify makes too. Should verify find the result wrong, a replay builds the
    # database again, and verify, run once more, names what is wrong, as for any projection.
    # (Problems of the message check alone are the import's, not the projection's: a
    # database verify passed is the one a replay would build.)
    witness = LogWitness()
    try:
        rebuild(log, db, checked=False, witness=witness)
        verified = _verify_and_check(log, db, plans, positions, report, witness)
    finally:
        witness.close()
    if not verified:
        remove_database(db)
        replay(log, db)
        _verify_and_check(log, db, plans, positions, report, None)


def _verify_and_check(
    log: str,
    db: str,
    plans: list[SessionPlan],
    positions: dict[str, tuple[str, int]],
    report: ImportReport,
    witness: LogWitness | None,
) -> bool:
    """verify and check_messages side by side: each is largely SQLite, on a connection of
    its own. True if verify found nothing wrong."""
    with ThreadPoolExecutor(1, thread_name_prefix="import-check") as pool:
        checking = pool.submit(check_messages, db, plans, positions)
        result = verify(log, db, witness=witness)
        checked, problems = checking.result()
    report.verify_ok = bool(result.ok)
    report.verify_problems = [str(p) for p in result.problems]
    report.messages_checked, report.check_problems = checked, problems
    return result.ok


def _record(conn: sqlite3.Connection, sid: str) -> dict[str, Any]:
    rows = dict(
        conn.execute(
            "SELECT key, value FROM session_metadata WHERE session_id = ? AND key >= ? AND key < ?",
            (sid, RECORD_KEY, RECORD_KEY + "~"),
        ).fetchall()
    )
    head = msgspec.json.decode(rows[RECORD_KEY]) if RECORD_KEY in rows else {}
    if isinstance(head, dict) and "$chunks" in head:
        text = "".join(rows[f"{RECORD_KEY}#{n}"] for n in range(1, head["$chunks"] + 1))
        head = msgspec.json.decode(text)
    assert isinstance(head, dict)
    return head


def check_messages(
    db: str,
    plans: list[SessionPlan],
    positions: dict[str, tuple[str, int]],
) -> tuple[int, list[str]]:
    """Every old message is in the projection, and gives back its old content: the
    number of messages found so, and the problems."""
    problems: list[str] = []
    checked = 0
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        for plan in plans:
            sid = plan.session_id
            rows = {
                seq: (role, content, meta)
                for seq, role, content, meta in conn.execute(
                    "SELECT sequence_number, role, content, metadata FROM messages "
                    "WHERE session_id = ?",
                    (sid,),
                )
            }
            try:
                record = _record(conn, sid)
            except (KeyError, msgspec.DecodeError, AssertionError):
                problems.append(f"session {sid}: import record {RECORD_KEY} missing or damaged")
                record = {}
            parts: list[str] = []
            for m in plan.messages:
                where = positions.get(m.event_id)
                got = rows.get(where[1]) if where is not None else None
                if got is None:
                    problems.append(f"session {sid}: old message {_mid(m)} not in the projection")
                    continue
                role, content, meta_text = got
                meta = msgspec.json.decode(meta_text) if meta_text else None
                parts.append(content)
                if m.part is not None and m.part[0] < m.part[1]:
                    continue
                original: Any = "".join(parts)
                parts = []
                if isinstance(meta, dict) and "import_flags" in meta:
                    legacy = meta["legacy"]
                    if "content" in legacy:
                        original = legacy["content"]
                        if isinstance(original, dict) and "$overflow" in original:
                            ref = original["$overflow"]
                            original = record.get("overflow", {}).get(ref, {}).get("content")
                        original = from_jsonable(original)
                    if "invalid_role" not in meta["import_flags"] and role != m.role:
                        problems.append(f"session {sid}: message {_mid(m)} has role {role!r}")
                elif m.metadata != meta:
                    problems.append(f"session {sid}: message {_mid(m)} metadata differs")
                old = m.row.get("content")
                if _same(original, old):
                    checked += 1
                else:
                    problems.append(f"session {sid}: message {_mid(m)} content differs")
    finally:
        conn.close()
    return checked, problems


def _same(a: Any, b: Any) -> bool:
    if type(a) is str and type(b) is str:  # nearly every message
        return a == b
    if isinstance(a, BadText) or isinstance(b, BadText):
        return isinstance(a, BadText) and isinstance(b, BadText) and bytes(a) == bytes(b)
    return bool(jsonable(a) == jsonable(b) and type(a) is type(b))


def _mid(m: MessagePlan) -> str:
    return repr(jsonable(m.row.get("message_id", m.row["_rowid_"])))
