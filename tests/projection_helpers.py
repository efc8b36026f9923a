"""Helpers for the projector's tests: logs written through the real writer with an
injected clock, random workloads covering every event type, hand-made log lines for the
error paths, and the seed's schema (a copy kept in tests/seed_schema.sql)."""

from __future__ import annotations

import random
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from journal import Journal, JournalError
from journal.events import (
    AnyEvent,
    SessionForgotten,
    decode_line,
    encode_line,
    format_ts,
    redaction_line,
)
from projector import replay
from projector.db import create_schema

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SEED_SCHEMA = TESTS / "seed_schema.sql"
SEED_SOURCE = REPO / ".." / "shared" / "seed" / "000_618f625810efe0b0.txt"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A clock for the writer: advances by ``step`` seconds at each reading."""

    def __init__(self, start: datetime = T0, step: float = 1.0) -> None:
        self.now = start
        self.step = timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def open_journal(path: Path, clock: Clock | None = None) -> Journal:
    return Journal.open(path, durability="none", clock=clock or Clock())


def seed_conn() -> sqlite3.Connection:
    """An in-memory database with the seed's schema, foreign keys on."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.executescript(SEED_SCHEMA.read_text(encoding="utf-8"))
    return conn


def our_conn() -> sqlite3.Connection:
    """An in-memory database with the projection's schema, foreign keys on."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    create_schema(conn)
    return conn


def known_workload(log: Path) -> dict[str, str]:
    """A small, fixed history: three sessions on two models; returns their ids by name."""
    with open_journal(log) as j:
        a = j.create_session(
            model_id="gpt-4o",
            model_name="GPT-4o",
            title="Trip plan",
            session_id="a",
            first_message={"role": "user", "content": "Plan a trip to Paris", "tokens_used": 10},
        )
        j.append_message(
            a, role="assistant", content="Paris in May", tokens_used=20, duration_seconds=1.5
        )
        j.append_message(a, role="user", content="Book hotels", tokens_used=5, duration_seconds=0.5)
        b = j.create_session(model_id="gpt-4o", title="Recipes", session_id="b")
        j.append_message(b, role="user", content="A soup recipe", tokens_used=7)
        j.append_message(b, role="assistant", content="Leek soup", tokens_used=8)
        j.append_message(b, role="user", content="Thanks", tokens_used=1)
        c = j.create_session(model_id="claude", model_name="Claude", title="Code", session_id="c")
        j.append_message(c, role="user", content="Fix my loop", tokens_used=3)
        j.set_metadata(a, "channel", "web")
        j.rename(b, "Soup recipes")
        j.archive(c)
    return {"a": a, "b": b, "c": c}


# -- random workloads ------------------------------------------------------------------
OPS = (
    "create", "message", "message", "message", "metadata", "rename", "pause", "resume",
    "snapshot", "archive", "restore", "delete", "expire", "batch",
)  # fmt: skip


def run_workload(log: Path, ops: Sequence[tuple[int, int, int]], start: datetime = T0) -> int:
    """Apply random operations through the writer; invalid ones are refused by it (and
    skipped). Returns how many calls were accepted."""
    clock = Clock(start, step=7.0)
    accepted = 0
    with open_journal(log, clock) as j:
        sessions: list[str] = []
        for op_index, pick, n in ops:
            op = OPS[op_index % len(OPS)]
            sid = sessions[pick % len(sessions)] if sessions else None
            try:
                _one_op(j, op, sid, sessions, clock, n)
            except JournalError:
                continue
            accepted += 1
    return accepted


def _one_op(
    j: Journal, op: str, sid: str | None, sessions: list[str], clock: Clock, n: int
) -> None:
    if op == "create" or sid is None:
        first: Any = (
            None if n % 3 else {"role": "user", "content": f"hello {n}", "tokens_used": n % 50}
        )
        sessions.append(
            j.create_session(
                model_id=f"model-{n % 3}",
                title=f"session {len(sessions)}",
                idle_timeout_seconds=None if n % 5 == 0 else 60 + n % 600,
                hard_timeout_seconds=None if n % 7 == 0 else 600 + n % 3000,
                first_message=first,
            )
        )
    elif op == "message" and n % 11 == 0:
        # An assistant's tool call (no text) and its result, as LLM APIs send them.
        call = {"id": f"call_{n}", "name": "lookup", "arguments": f'{{"n": {n}}}'}
        j.append_message(sid, "assistant", "", tool_calls=[call], raw={"n": n, "role": "assistant"})
        j.append_message(sid, "tool", f"result {n}", tool_call_id=f"call_{n}", raw=f'{{"n":  {n}}}')
    elif op == "message":
        j.append_message(
            sid,
            role=("user", "assistant", "system")[n % 3],
            content=f"word{n % 97} text {n}",
            tokens_used=None if n % 4 == 0 else n % 100,
            duration_seconds=None if n % 3 == 0 else (n % 1000) / 7.0,
            metadata=None if n % 5 else {"k": n},
        )
    elif op == "metadata":
        j.set_metadata(sid, f"key{n % 3}", None if n % 4 == 0 else f"v{n}")
    elif op == "rename" and n % 4 == 0:
        # Messages withdrawn (an agent's pop or a compaction): to 0, or a few back.
        last = j.last_seq(sid)
        j.truncate(sid, 0 if n % 3 == 0 else max(0, last - 1 - n % 3), reason=f"n{n}")
    elif op == "rename":
        j.rename(sid, f"title {n}")
    elif op == "pause":
        j.pause(sid)
        if n % 2:
            j.resume(sid)
    elif op == "resume":
        j.resume(sid)
    elif op == "snapshot":
        j.snapshot(sid, reason=("checkpoint", "timeout_warning")[n % 2], note=f"n{n}")
    elif op == "archive":
        j.archive(sid)
    elif op == "restore":
        j.restore(sid)
    elif op == "delete":
        j.delete_session(sid)
    elif op == "expire":
        clock.now += timedelta(seconds=n % 4000)
        j.expire_due(warn_before_seconds=300)
    elif op == "batch":
        with j.batch():
            j.append_message(sid, role="user", content=f"batched {n}", tokens_used=1)
            j.append_message(sid, role="assistant", content=f"reply {n}", tokens_used=2)


def random_ops(seed: int, count: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    return [
        (rng.randrange(len(OPS)), rng.randrange(1000), rng.randrange(10**6)) for _ in range(count)
    ]


# -- hand-made lines -------------------------------------------------------------------
def line(event: AnyEvent, pos: int, ts: datetime | None = None) -> bytes:
    """A log line for ``event`` at ``pos`` (bypassing the writer's validation)."""
    import msgspec

    stamped = msgspec.structs.replace(
        event,
        pos=pos,
        id=str(uuid.UUID(int=pos)),
        ts=format_ts(ts or T0 + timedelta(seconds=pos)),
    )
    return encode_line(stamped)


def write_lines(path: Path, events: Sequence[AnyEvent]) -> list[int]:
    """Write events as lines at pos 1, 2, …; returns the byte offset where each starts."""
    offsets, data = [], b""
    for pos, event in enumerate(events, 1):
        offsets.append(len(data))
        data += line(event, pos)
    path.write_bytes(data)
    return offsets


def ranges(positions: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Ascending positions as inclusive ranges, as a forgetting lists them."""
    out: list[list[int]] = []
    for pos in positions:
        if out and out[-1][1] + 1 == pos:
            out[-1][1] = pos
        else:
            out.append([pos, pos])
    return tuple((a, b) for a, b in out)


def records_of(log: Path, session_id: str) -> list[int]:
    """The positions of the records that carry ``session_id``."""
    events = [decode_line(raw) for raw in log.read_bytes().splitlines()]
    return [e.pos for e in events if getattr(e, "session_id", None) == session_id]


def forget_in_log(
    log: Path, session_id: str, redact: Callable[[int], bool] = lambda pos: True
) -> tuple[int, list[int]]:
    """Forget a session by hand, as the writer does: append its ``session_forgotten`` (the
    positions of every record that carries its id), then overwrite those records in place
    with their redactions (``redact(pos)`` chooses which; all of them by default, as a
    finished erasure leaves them). Returns the forgetting's pos and the positions. The
    forgetting's line depends on the log alone: the same log forgotten twice ends alike."""
    data = log.read_bytes()
    lines = data.splitlines(keepends=True)
    events = [decode_line(raw[:-1]) for raw in lines]
    mine = records_of(log, session_id)
    assert mine, f"no record of {session_id!r}"
    pos = events[-1].pos + 1
    forgetting = SessionForgotten(
        pos=pos, id=str(uuid.UUID(int=pos)), ts=events[-1].ts, positions=ranges(mine)
    )
    with open(log, "r+b") as f:
        f.seek(len(data))
        f.write(encode_line(forgetting))
        offset = 0
        for raw, event in zip(lines, events, strict=True):
            if event.pos in mine and redact(event.pos):
                f.seek(offset)
                f.write(redaction_line(raw))
            offset += len(raw)
    return forgetting.pos, mine


def append_event(log: Path, event: AnyEvent) -> int:
    """Append ``event`` by hand at the log's next pos, stamped with its last time (for a
    log the writer is not asked to read); returns its pos."""
    import msgspec

    last = decode_line(log.read_bytes().splitlines()[-1])
    pos = last.pos + 1
    stamped = msgspec.structs.replace(event, pos=pos, id=str(uuid.UUID(int=pos)), ts=last.ts)
    with open(log, "ab") as f:
        f.write(encode_line(stamped))
    return pos


def rows(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def execute(db: Path, sql: str, params: Sequence[Any] = ()) -> None:
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute(sql, params)
    finally:
        conn.close()


# -- forgotten sessions ------------------------------------------------------------------
# Every table that can hold a session's rows, and how to count those of one session.
_ROWS_OF = {
    "sessions": "SELECT count(*) FROM sessions WHERE session_id = ?",
    "messages": "SELECT count(*) FROM messages WHERE session_id = ?",
    "session_metadata": "SELECT count(*) FROM session_metadata WHERE session_id = ?",
    "session_timeouts": "SELECT count(*) FROM session_timeouts WHERE session_id = ?",
    "session_snapshots": "SELECT count(*) FROM session_snapshots WHERE session_id = ?",
    "sessions_fts": "SELECT count(*) FROM sessions_fts WHERE session_id = ?",
}


def rows_of(db: Path, sid: str) -> dict[str, int]:
    return {table: rows(db, sql, (sid,))[0][0] for table, sql in _ROWS_OF.items()}


def nothing_of(db: Path, sid: str) -> bool:
    return not any(rows_of(db, sid).values())


def scrub_due(db: Path) -> list[tuple[Any, ...]]:
    return rows(db, "SELECT step FROM projector_scrub")


SECRETS = (
    "zqsessionidmark", "zqtitlemark", "zqcontentmark", "zqmessagemetamark",
    "zqmetakeymark", "zqmetavaluemark", "zqsnapshotnotemark", "zqrawitemmark",
)  # fmt: skip


def write_secret_session(log: Path, db: Path | None) -> None:
    """A session carrying each of SECRETS, projected into ``db`` (if given) now and then
    as it is written, so its rows go in event by event."""
    with open_journal(log, Clock(datetime(2026, 5, 1, tzinfo=UTC))) as j:
        sid = j.create_session(
            model_id="model-1", session_id="u-zqsessionidmark", title="a zqtitlemark"
        )
        for i in range(40):
            j.append_message(
                sid, "user", f"words zqcontentmark {i}", metadata={"m": "zqmessagemetamark"},
                raw='{"item": "zqrawitemmark"}',
            )  # fmt: skip
            if i % 8 == 0 and db is not None:
                replay(log, db)
        j.set_metadata(sid, "zqmetakeymark", "zqmetavaluemark")
        j.snapshot(sid, note="zqsnapshotnotemark")
        j.archive(sid)
    if db is not None:
        replay(log, db)


def residue(db: Path) -> dict[str, list[str]]:
    found = {}
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db}{suffix}")
        data = path.read_bytes() if path.exists() else b""
        found[suffix or "db"] = [s for s in SECRETS if s.encode() in data]
    return found
