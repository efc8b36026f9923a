"""The async section of ``tools/bench.py``: durable appends from an event loop.

The same messages (600 characters each, an ``event_id`` each, spread over 64 sessions) are
appended, durably, by

* ``AsyncJournal`` from 64 concurrent tasks (one session each) and from one task;
* ``Journal`` from one thread;
* plain SQLite: WAL, ``synchronous=FULL``, one INSERT per commit into a table keyed by
  the event id, what a host app writing its messages straight into SQLite would do.

The four take turns every 256 messages, in a rotating order, so that all meet the same
disk (fsync latency on a shared machine swings by ten times within seconds); each writer's
time is the sum of its turns, and the best of ``rounds + 1`` passes counts. The section
also reports ``Journal`` from 8 threads against one thread (``bench_append``).
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import bench_append
from benchlib import Context, Figure, Section

from journal import AsyncJournal, Journal
from journal.writer import random_event_id

TASKS = 64
CONTENT_CHARS = 600
SLICE = 4 * TASKS
Msg = tuple[str, str, str]


def _messages(n: int) -> list[Msg]:
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


def _plain_sqlite(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: a commit per INSERT
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
        "session_id TEXT NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, "
        "created_at TEXT NOT NULL)"
    )
    return conn


_INSERT = (
    "INSERT INTO messages (event_id, session_id, role, content, created_at) "
    "VALUES (?, ?, 'user', ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
)


def _round(ctx: Context, msgs: list[Msg]) -> list[float]:
    """One pass over the messages by the four writers, alternating every ``SLICE``
    messages so that all four meet the same disk: (64 tasks, 1 task, 1 thread, SQLite)."""
    paths = [ctx.fresh(f"async-{TASKS}.jsonl"), ctx.fresh("async-1.jsonl")]
    paths.append(ctx.fresh("sync-1.jsonl"))
    for path in paths:
        _sessions(path)
    db = ctx.fresh("plain.db")
    times = [0.0] * 4

    async def main() -> None:
        async with AsyncJournal.open(paths[0]) as many, AsyncJournal.open(paths[1]) as one:

            async def lane(part: list[Msg]) -> None:
                for sid, content, eid in part:
                    await many.append_message(sid, "user", content, event_id=eid)

            with Journal.open(paths[2]) as sync, closing(_plain_sqlite(db)) as conn:

                async def by_many(piece: list[Msg]) -> None:
                    await asyncio.gather(*(lane(piece[i::TASKS]) for i in range(TASKS)))

                async def by_one(piece: list[Msg]) -> None:
                    for sid, content, eid in piece:
                        await one.append_message(sid, "user", content, event_id=eid)

                async def by_thread(piece: list[Msg]) -> None:
                    for sid, content, eid in piece:  # blocks the loop: nothing else runs
                        sync.append_message(sid, "user", content, event_id=eid)

                async def by_sqlite(piece: list[Msg]) -> None:
                    for sid, content, eid in piece:
                        conn.execute(_INSERT, (eid, sid, content))

                writers = [by_many, by_one, by_thread, by_sqlite]
                for turn, k in enumerate(range(0, len(msgs), SLICE)):
                    piece = msgs[k : k + SLICE]
                    # Each writer goes first as often as the others: whatever the disk
                    # does just after one kind of burst falls on every writer alike.
                    for i in [(turn + j) % 4 for j in range(4)]:
                        t0 = time.perf_counter()
                        await writers[i](piece)
                        times[i] += time.perf_counter() - t0
                (rows,) = conn.execute("SELECT count(*) FROM messages").fetchone()
                if rows != len(msgs):
                    raise AssertionError(f"{db}: {rows} of {len(msgs)} rows")

    asyncio.run(main())
    for path in paths:
        _check(path, len(msgs))
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.unlink(f"{db}{suffix}")
    return times


def run(ctx: Context, section: Section) -> None:
    size = ctx.size
    msgs = _messages(size.async_msgs)
    n = len(msgs)
    rounds = max(2, size.rounds + 1)
    best = [math.inf] * 4
    for _ in range(rounds):
        best = [min(a, b) for a, b in zip(best, _round(ctx, msgs), strict=True)]
    t_many, t_one, t_sync, t_sqlite = best
    note = (
        f"{n:,} messages of {CONTENT_CHARS} characters over {TASKS} sessions, an event_id "
        f"each, durability `always`; the four take turns every {SLICE} messages, in a "
        f"rotating order; best of "
        f"{rounds} passes"
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
