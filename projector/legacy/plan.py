"""Planning the events that reproduce an old database: one ``SessionPlan`` per session.

Planning is pure (no I/O): the same old rows always give the same plan, the same event ids
and the same content, which is what makes the import idempotent and its dry run exact.
``projector.legacy.importer`` documents the mapping of every kind of mess; this module
implements it and records every deviation from the old row as an ``Anomaly`` for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from journal.events import ROLES, encode_json
from journal.jsoncheck import too_deep
from journal.validation import (
    MAX_CONTENT_BYTES,
    MAX_METADATA_VALUE_BYTES,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_SECONDS,
)
from projector.legacy.ids import IdPrefix, event_id, uuid5_hex
from projector.legacy.report import Anomaly
from projector.legacy.source import BadText, OldDatabase, OldSession, Row
from projector.legacy.values import (
    MODEL_ID,
    SESSION_ID,
    as_count,
    as_duration,
    as_seq,
    as_text,
    jsonable,
    normalise_ts,
    timeout,
)

RECORD_KEY: Final = "session_journal.legacy_import"
RESERVED_PREFIX: Final = "session_journal."
UNKNOWN_MODEL: Final = "legacy-unknown-model"
STATUSES: Final = ("active", "idle", "paused", "archived", "expired")
# Under the writer's limits with room to spare (they count characters or UTF-8 bytes).
CHUNK_CHARS: Final = 16_000
MESSAGE_META_BYTES: Final = MAX_METADATA_VALUE_BYTES - 4096
CONTENT_PART_BYTES: Final = MAX_CONTENT_BYTES


def marker(reason: str) -> str:
    """The content that stands for a message whose original content cannot be stored."""
    return f"[session-journal import: {reason}; the original row is in metadata.legacy]"


@dataclass(slots=True)
class MessagePlan:
    event_id: str
    row: Row  # the old row, as read
    role: str
    content: str
    tokens_used: int | None
    duration_seconds: float | int | None
    metadata: dict[str, Any] | None
    at: str | None
    seq: int  # its seq if the session is written fresh
    part: tuple[int, int] | None = None

    @property
    def weight(self) -> int:
        """Rough bytes of its log line, to keep atomic groups under the writer's limit."""
        return 4 * len(self.content) + (len(encode_json(self.metadata)) if self.metadata else 0)


@dataclass
class SessionPlan:
    old: OldSession
    identity: list[Any]
    session_id: str
    kind: str  # "session", "recovered_orphans" or "duplicate_session_row"
    event_id: str
    model_id: str
    model_name: str | None
    title: str | None
    idle_timeout: int | None
    hard_timeout: int | None
    at: str | None
    status: str
    status_at: str | None
    metadata: list[tuple[str, str, str]] = field(default_factory=list)  # key, value, id
    record: dict[str, Any] = field(default_factory=dict)
    messages: list[MessagePlan] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    def record_entries(self) -> list[tuple[str, str, str]]:
        """The import record as session metadata: (key, value, event id), chunked."""
        text = encode_json(self.record).decode()
        ident = [*self.identity, "record", event_id(text)]
        if len(text) <= CHUNK_CHARS:
            return [(RECORD_KEY, text, event_id(*ident))]
        chunks = [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)]
        out = [
            (f"{RECORD_KEY}#{n}", chunk, event_id(*ident, n)) for n, chunk in enumerate(chunks, 1)
        ]
        head = encode_json({"$chunks": len(chunks)}).decode()
        return [*out, (RECORD_KEY, head, event_id(*ident, 0))]


class Planner:
    """Builds the plans of one old database, allocating session ids that do not clash."""

    def __init__(self, db: OldDatabase, taken: dict[str, str]) -> None:
        self.db = db
        self.taken = taken  # session id in the log -> the event id that created it
        self.used: set[str] = set()
        self.anomalies: list[Anomaly] = []
        self.migrated = "status" in db.tables["sessions"] or "session_timeouts" in db.tables

    def note(self, kind: str, plan: SessionPlan | None, detail: str, message: Any = None) -> None:
        self.anomalies.append(
            Anomaly(
                kind=kind,
                session_id=plan.session_id if plan else None,
                old_session_id=jsonable(plan.old.key) if plan else None,
                message_id=jsonable(message),
                detail=detail,
            )
        )

    def allocate(self, preferred: str | None, identity: list[Any], eid: str) -> str:
        """``preferred`` if the writer accepts it and no other session holds it."""
        suffix = uuid5_hex(identity)
        candidates = []
        if preferred is not None and SESSION_ID.fullmatch(preferred):
            candidates.append(preferred)
            candidates.append(f"{preferred[:100]}.legacy-{suffix[:12]}")
        candidates.append(f"legacy-{suffix}")
        for sid in candidates:
            if sid not in self.used and self.taken.get(sid, eid) == eid:
                self.used.add(sid)
                return sid
        raise AssertionError(f"no free session id for {identity!r}")  # uuid5 clash

    def plan_all(self) -> list[SessionPlan]:
        return [self.plan(s) for s in self.db.sessions]

    def plan(self, old: OldSession) -> SessionPlan:
        row = old.row or {}
        key_json = jsonable(old.key)
        if old.row is None:
            kind, identity = "recovered_orphans", ["orphans", key_json]
            preferred = f"recovered-{old.key}" if isinstance(old.key, str) else None
        elif old.key is None or old.duplicate_of is not None:
            kind = "duplicate_session_row" if old.key is not None else "session"
            identity = ["session", key_json, jsonable(row.get("created_at")), "row", old.rowid]
            preferred = old.key if isinstance(old.key, str) else None
        else:
            kind, identity = "session", ["session", key_json, jsonable(row.get("created_at"))]
            preferred = old.key if isinstance(old.key, str) else str(old.key)
        eid = event_id(*identity)
        sid = self.allocate(preferred, identity, eid)
        plan = SessionPlan(
            old=old,
            identity=identity,
            session_id=sid,
            kind=kind,
            event_id=eid,
            model_id=UNKNOWN_MODEL,
            model_name=None,
            title=None,
            idle_timeout=None,
            hard_timeout=None,
            at=None,
            status="active",
            status_at=None,
        )
        if old.key is None or sid != str(old.key):
            plan.flags.append("session_id_changed")
            self.note("session_id_changed", plan, f"old id {key_json!r} imported as {sid!r}")
        if kind == "recovered_orphans":
            plan.flags.append("orphans")
            plan.title = as_text("Recovered orphaned rows of session " + str(key_json), 300)[0]
            self.note(
                "orphaned_rows",
                plan,
                f"{len(old.messages)} messages, {len(old.metadata)} metadata rows, "
                f"{len(old.timeouts)} timeout rows, {len(old.snapshots)} snapshots reference "
                f"session {key_json!r}, which has no sessions row; kept in session {sid!r}",
            )
        elif kind == "duplicate_session_row":
            plan.flags.append("duplicate_session_row")
            self.note("duplicate_session_row", plan, f"second sessions row with id {key_json!r}")
        self._session_fields(plan, row)
        self._messages(plan)
        self._metadata(plan)
        plan.record = {
            "kind": kind,
            "original_session_id": key_json,
            "source_row": {k: jsonable(v) for k, v in row.items()} if old.row else None,
            "flags": plan.flags,
            **plan.record,
        }
        if old.timeouts:
            plan.record["timeouts_rows"] = [_plain(r) for r in old.timeouts]
        if old.snapshots:
            plan.record["snapshots"] = [_plain(r) for r in old.snapshots]
        return plan

    def _session_fields(self, plan: SessionPlan, row: Row) -> None:
        changed: list[str] = []
        model = row.get("model_id")
        if isinstance(model, str) and MODEL_ID.fullmatch(model):
            plan.model_id = model
        elif plan.kind != "recovered_orphans":
            changed.append("model_id")
        plan.model_name, ok = as_text(row.get("model_name"), MAX_TEXT_CHARS)
        if not ok:
            changed.append("model_name")
        if plan.kind != "recovered_orphans":
            plan.title, ok = as_text(row.get("title"), MAX_TEXT_CHARS)
            if not ok:
                changed.append("title")
        _created_at(plan, row, changed)
        if self.migrated and plan.kind != "recovered_orphans":
            self._timeouts(plan, row, changed)
        status = row.get("status", "active") if plan.kind != "recovered_orphans" else "active"
        if status is None or status not in STATUSES:
            changed.append("status")
            status = "active"
        plan.status = status
        plan.status_at = normalise_ts(row.get("updated_at"))[0]
        for name in changed:
            plan.flags.append(f"invalid_{name}")
            self.note(
                f"invalid_{name}",
                plan,
                f"{name} {jsonable(row.get(name))!r} cannot be stored as is; "
                f"the original is in metadata {RECORD_KEY}",
            )

    def _timeouts(self, plan: SessionPlan, row: Row, changed: list[str]) -> None:
        """The timeouts, from session_timeouts where the old schema had it (it wins)."""
        trow = plan.old.timeouts[0] if plan.old.timeouts else row
        for name in ("idle_timeout_seconds", "hard_timeout_seconds"):
            value, ok = timeout(trow.get(name), MAX_TIMEOUT_SECONDS)
            setattr(plan, name.removesuffix("_seconds"), value)
            if not ok:
                changed.append(name)
            if plan.old.timeouts and name in row and row[name] != trow.get(name):
                self.note(
                    "timeout_mismatch",
                    plan,
                    f"{name}: sessions says {jsonable(row[name])!r}, "
                    f"session_timeouts says {jsonable(trow.get(name))!r}; "
                    "session_timeouts is used",
                )
        if len(plan.old.timeouts) > 1:
            self.note("duplicate_timeouts_row", plan, f"{len(plan.old.timeouts)} rows")

    def _messages(self, plan: SessionPlan) -> None:
        orphan = plan.kind == "recovered_orphans"

        def order(m: Row) -> tuple[int, int, int]:
            seq = as_seq(m.get("sequence_number"))
            return (0 if seq is not None else 1, seq or 0, m["_rowid_"] or 0)

        rows = sorted(plan.old.messages, key=order)
        ids = IdPrefix(*plan.identity)
        last_at = plan.at
        prev_seq: int | None = None
        prev_sig: tuple[Any, ...] | None = None
        seq = 0
        for row in rows:
            flags = ["orphan"] if orphan else []
            mid = row.get("message_id", row["_rowid_"])
            old_seq = as_seq(row.get("sequence_number"))
            sig = (row.get("role"), row.get("content"), row.get("sequence_number"))
            flags += _order_flags(old_seq, prev_seq, sig == prev_sig)
            prev_seq, prev_sig = old_seq, sig
            role, content, keep_content = _role_content(row, flags)
            tokens, flag = as_count(row.get("tokens_used"))
            flags += [flag] if flag else []
            duration, flag = as_duration(row.get("duration_seconds"))
            flags += [flag] if flag else []
            at, flag = normalise_ts(row.get("timestamp"))
            if flag:
                flags.append(flag)
                at = last_at
            last_at = at or last_at
            original_meta = _meta_object(row.get("metadata"), flags)
            parts = _split(content) if len(content) * 4 > CONTENT_PART_BYTES else [content]
            if len(parts) > 1:
                flags.append("content_split")
            if old_seq != seq + 1:
                flags.append("renumbered")
            legacy: dict[str, Any] = {}
            mid_json = jsonable(mid)
            if flags:
                legacy = _plain(row)
                legacy.setdefault("message_id", mid_json)
                if keep_content:
                    legacy.pop("content", None)
            ref = ids("message", mid_json)  # the row's id: of its event, or of its parts'
            for i, part in enumerate(parts, 1):
                seq += 1
                meta: dict[str, Any] | None = original_meta
                if flags:
                    meta = {"legacy": legacy, "import_flags": list(flags)}
                    if len(parts) > 1:
                        meta["part"] = [i, len(parts)]
                    meta = self._fit(plan, meta, ref)
                plan.messages.append(
                    MessagePlan(
                        event_id=ids("message", mid_json, "part", i) if len(parts) > 1 else ref,
                        row=row,
                        role=role,
                        content=part,
                        tokens_used=tokens if i == 1 else None,
                        duration_seconds=duration if i == 1 else None,
                        metadata=meta,
                        at=at,
                        seq=seq,
                        part=(i, len(parts)) if len(parts) > 1 else None,
                    )
                )
            for f in flags:
                if f != "orphan":
                    self.note(f, plan, _describe(f, row, seq), mid)

    def _fit(self, plan: SessionPlan, meta: dict[str, Any], ref: str) -> dict[str, Any]:
        """Move the largest legacy fields to the session's import record until it fits."""
        legacy = meta["legacy"]
        while len(encode_json(meta)) > MESSAGE_META_BYTES:
            name = max(legacy, key=lambda k: len(encode_json(legacy[k])))
            plan.record.setdefault("overflow", {}).setdefault(ref, {})[name] = legacy[name]
            legacy[name] = {"$overflow": ref}
        return meta

    def _metadata(self, plan: SessionPlan) -> None:
        seen: set[str] = set()
        irregular: list[dict[str, Any]] = []
        for row in plan.old.metadata:
            key, value = row.get("key"), row.get("value")
            ident = event_id(
                *plan.identity, "metadata", jsonable(row.get("metadata_id")), row["_rowid_"]
            )
            problem = None
            if not isinstance(key, str) or not key or len(key) > MAX_TEXT_CHARS or "\x00" in key:
                problem = "invalid_metadata_key"
            elif key.startswith(RESERVED_PREFIX):
                problem = "reserved_metadata_key"
            elif value is None:
                problem = "null_metadata_value"
            elif not isinstance(value, str) or isinstance(value, BadText):
                problem = "non_text_metadata_value"
            elif len(value) > MAX_METADATA_VALUE_BYTES or "\x00" in value:
                problem = "invalid_metadata_value"
            if problem is None:
                assert isinstance(key, str) and isinstance(value, str)
                if key in seen:
                    self.note("duplicate_metadata_key", plan, f"key {key!r} set again; last wins")
                seen.add(key)
                plan.metadata.append((key, value, ident))
            else:
                plain = _plain(row)
                irregular.append({"flag": problem, "row": plain})
                self.note(problem, plan, f"metadata row {plain!r:.200}; kept in {RECORD_KEY}")
        if irregular:
            plan.record["metadata_rows"] = irregular


def _created_at(plan: SessionPlan, row: Row, changed: list[str]) -> None:
    """created_at, else the first message's time, else updated_at (else the import's)."""
    plan.at, _ = normalise_ts(row.get("created_at"))
    if plan.at is not None:
        return
    if plan.kind != "recovered_orphans":
        changed.append("created_at")
    first = next((m for m in plan.old.messages if normalise_ts(m.get("timestamp"))[0]), None)
    for fallback in (first and first.get("timestamp"), row.get("updated_at")):
        plan.at = normalise_ts(fallback)[0]
        if plan.at:
            return


def _order_flags(seq: int | None, prev_seq: int | None, same_as_prev: bool) -> list[str]:
    """How a message row's place deviates: no seq, the seq before it again, a repeated row."""
    flags = []
    if seq is None:
        flags.append("missing_sequence")
    elif seq == prev_seq:
        flags.append("duplicate_sequence")
    if same_as_prev:
        flags.append("duplicate_row")
    return flags


def _plain(row: Row) -> dict[str, Any]:
    return {k: jsonable(v) for k, v in row.items() if k != "_rowid_"}


def _role_content(row: Row, flags: list[str]) -> tuple[str, str, bool]:
    """(role, content, whether the content is the original text)."""
    raw_role, raw = row.get("role"), row.get("content")
    role = raw_role.strip().lower() if isinstance(raw_role, str) else None
    if role not in ROLES:
        flags.append("invalid_role")
        return "system", marker(f"message with invalid role {jsonable(raw_role)!r:.100}"), False
    if role != raw_role:
        flags.append("role_normalised")
    if raw is None:
        flags.append("null_content")
        return role, marker("content was NULL"), False
    if isinstance(raw, BadText):
        flags.append("invalid_utf8")
        text = bytes(raw).decode("utf-8", "replace").replace("\x00", "\u2400")
        return role, text or marker("content was not UTF-8"), False
    if isinstance(raw, bytes):
        flags.append("blob_content")
        return role, marker(f"content was a BLOB of {len(raw)} bytes"), False
    if not isinstance(raw, str):
        flags.append("non_text_content")
        return role, repr(raw) if isinstance(raw, float) else str(raw), False
    if raw == "":
        flags.append("empty_content")
        return role, marker("content was empty"), False
    if "\x00" in raw:
        flags.append("nul_in_content")
        return role, raw.replace("\x00", "\u2400"), False
    return role, raw, True


def _meta_object(raw: Any, flags: list[str]) -> dict[str, Any] | None:
    """The old metadata column as the message's metadata, if it is a plain JSON object."""
    if raw is None:
        return None
    if not isinstance(raw, str) or isinstance(raw, BadText):
        flags.append("metadata_not_json")
        return None
    try:
        data = raw.encode()
        if too_deep(data):  # deeper than the log's limit: a record no reader would accept
            raise RecursionError
        value = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):
        flags.append("metadata_not_json")
        return None
    if not isinstance(value, dict):
        flags.append("metadata_not_object")
        return None
    if "legacy" in value or "import_flags" in value:
        flags.append("metadata_reserved_key")
        return None
    try:
        encoded = encode_json(value)
        round_trips = msgspec.json.decode(encoded) == value
    except (msgspec.EncodeError, msgspec.DecodeError, TypeError, RecursionError):
        round_trips = False
    if not round_trips:
        flags.append("metadata_not_json")
        return None
    if len(encoded) > MESSAGE_META_BYTES:
        flags.append("metadata_too_large")
        return None
    return value


def _split(content: str) -> list[str]:
    """Cut content into parts of at most CONTENT_PART_BYTES of UTF-8 each."""
    data = content.encode("utf-8")
    if len(data) <= CONTENT_PART_BYTES:
        return [content]
    parts: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + CONTENT_PART_BYTES, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # not inside a character
            end -= 1
        parts.append(data[start:end].decode("utf-8"))
        start = end
    return parts


def _describe(flag: str, row: Row, seq: int) -> str:
    if flag in ("renumbered", "duplicate_sequence", "missing_sequence"):
        return f"old sequence_number {jsonable(row.get('sequence_number'))!r}, now seq {seq}"
    if flag.endswith("timestamp"):
        return f"timestamp {jsonable(row.get('timestamp'))!r:.100}; kept in metadata.legacy"
    if flag in ("role_normalised", "invalid_role"):
        return f"role {jsonable(row.get('role'))!r:.100}"
    return flag.replace("_", " ")
