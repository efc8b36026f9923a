"""The async section of ``tools/bench.py``: durable appends from an event loop.

The same messages (600 characters each, an ``event_id`` each, spread over 64 sessions) are
appended, durably, by

* ``AsyncJournal`` from 64 concurrent tasks (one session each) and from one task;
* ``Journal`` from one thread;
* plain SQLite: WAL, ``synchronous=FULL``, one INSERT per commit into a table keyed by
  the event id, what a host app writing its messages straight into SQLite would do.

The four runs alternate, ``rounds`` times, and the best time of each counts. The section
also reports ``Journal`` from 8 threads against one thread (``bench_append``).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import bench_append
from benchlib import Context, Figure, Section, best_of

from journal import AsyncJournal, Journal
from journal.writer import random_event_id

TASKS = 64
CONTENT_CHARS = 600


def _messages(n: int) -> list[tuple[str, str, str]]:
    """(session id, content, event id) for ``n`` messages, round-robin over the sessions."""
    out = []
    for i in range(n):
        text = f"message {i} " + "lorem ipsum dolor sit amet " * 30
        out.append((f"bench-{i % TASKS}", text[:CONTENT_CHARS], random_event_id()))
    return out


def _sessions(path: Path) -> None:
    with Journal.open(path, "always") as j:
        for k in range(TASKS):
            j.create_session("openai/gpt-4o", session_id=f"bench-{k}", idle_timeout_seconds=None)


def _check(path: Path, n: int) -> None:
    with Journal.open(path, "none") as j:
        if j.last_pos != n + TASKS + 1:
            raise AssertionError(f"{path}: {j.last_pos - TASKS - 1} of {n} messages landed")
    os.unlink(path)


def _async_run(ctx: Context, msgs: list[tuple[str, str, str]], tasks: int) -> float:
    path = ctx.fresh(f"async-{tasks}.jsonl")
    _sessions(path)

    async def main() -> float:
        async with AsyncJournal.open(path) as j:

            async def lane(part: list[tuple[str, str, str]]) -> None:
                for sid, content, eid in part:
                    await j.append_message(sid, "user", content, event_id=eid)

            parts = [msgs[k::tasks] for k in range(tasks)]
            start = time.perf_counter()
            await asyncio.gather(*(lane(p) for p in parts))
            return time.perf_counter() - start

    elapsed = asyncio.run(main())
    _check(path, len(msgs))
    return elapsed


def _sync_run(ctx: Context, msgs: list[tuple[str, str, str]]) -> float:
    path = ctx.fresh("sync-1.jsonl")
    _sessions(path)
    with Journal.open(path, "always") as j:
        start = time.perf_counter()
        for sid, content, eid in msgs:
            j.append_message(sid, "user", content, event_id=eid)
        elapsed = time.perf_counter() - start
    _check(path, len(msgs))
    return elapsed


def _sqlite_run(ctx: Context, msgs: list[tuple[str, str, str]]) -> float:
    path = ctx.fresh("plain.db")
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: a commit per INSERT
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
            "session_id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, "
            "created_at TEXT NOT NULL)"
        )
        sql = (
            "INSERT INTO messages (event_id, session_id, role, content, created_at) "
            "VALUES (?, ?, 'user', ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )
        start = time.perf_counter()
        for sid, content, eid in msgs:
            conn.execute(sql, (eid, sid, content))
        elapsed = time.perf_counter() - start
        (count,) = conn.execute("SELECT count(*) FROM messages").fetchone()
        if count != len(msgs):
            raise AssertionError(f"{path}: {count} of {len(msgs)} rows")
    finally:
        conn.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    return elapsed


def run(ctx: Context, section: Section) -> None:
    size = ctx.size
    msgs = _messages(size.async_msgs)
    n = len(msgs)
    rounds = max(2, size.rounds + 1)
    t_many, t_one, t_sync, t_sqlite = best_of(
        rounds,
        lambda: _async_run(ctx, msgs, TASKS),
        lambda: _async_run(ctx, msgs, 1),
        lambda: _sync_run(ctx, msgs),
        lambda: _sqlite_run(ctx, msgs),
    )
    note = (
        f"{n:,} messages of {CONTENT_CHARS} characters over {TASKS} sessions, an event_id "
        f"each, durability `always`; best of {rounds}, the runs alternating"
    )
    section.figures += [
        Figure(
            f"AsyncJournal, {TASKS} tasks",
            n / t_many,
            "messages/s",
            "AsyncJournal, 1 task",
            n / t_one,
            t_one / t_many,
            ">=",
            2.5,
            note,
        ),
        Figure(
            f"AsyncJournal, {TASKS} tasks",
            n / t_many,
            "messages/s",
            "plain SQLite (WAL, synchronous=FULL, an INSERT per commit)",
            n / t_sqlite,
            t_sqlite / t_many,
            ">=",
            2.0,
            note,
        ),
        Figure(
            "AsyncJournal, 1 task",
            n / t_one,
            "messages/s",
            "Journal, 1 thread",
            n / t_sync,
            t_sync / t_one,
            ">=",
            0.8,
            note,
        ),
        bench_append.durable_threads(ctx),
    ]
