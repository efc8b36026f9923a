"""The peer section of ``tools/bench.py``: the same sessions through ``eventsourcing``.

One aggregate per session and one event per message, stored by eventsourcing's SQLite
persistence (WAL, ``synchronous=FULL``: each save is durable), vs session-journal's writer
with durability ``always`` (each append fsynced). eventsourcing loads the aggregate by
replaying its events before each new message (no snapshots, no cache: its defaults), so
its rate falls as sessions grow; the comparison runs at two session lengths.

Needs the optional ``bench`` extra (``pip install 'session-journal[bench]'``).
"""

from __future__ import annotations

import os
from typing import Any

import workload
from benchlib import Context, Figure, Section, best_of, timed

from journal import Journal

SEED = 3


def available() -> str | None:
    """None if eventsourcing can be imported, else why not."""
    try:
        import eventsourcing.sqlite  # noqa: F401
        from bench_peer_es import ChatSession  # noqa: F401
    except ImportError as exc:
        return f"eventsourcing is not installed ({exc}); pip install 'session-journal[bench]'"
    return None


def _sessions(count: int, length: int) -> list[list[dict[str, Any]]]:
    """``count`` sessions of ``length`` messages each, from the workload's messages."""
    msgs: list[dict[str, Any]] = []
    need = count * length
    for op in workload.operations(SEED, need + need // 10 + 200, fixed_len=length):
        if op.name == "append_message":
            kw = {k: op.kwargs[k] for k in ("role", "content")}
            kw["tokens_used"] = op.kwargs.get("tokens_used")
            kw["duration_seconds"] = op.kwargs.get("duration_seconds")
            msgs.append(kw)
            if len(msgs) == need:
                break
    return [msgs[i * length : (i + 1) * length] for i in range(count)]


def _eventsourcing(ctx: Context, sessions: list[list[dict[str, Any]]]) -> float:
    from bench_peer_es import ChatSession
    from eventsourcing.application import Application

    path = ctx.fresh("eventsourcing.db")
    app = Application(
        env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}
    )

    def run() -> None:
        for messages in sessions:
            s = ChatSession("openai/gpt-4o", None)
            app.save(s)
            for kw in messages:
                agg = app.repository.get(s.id)
                agg.append_message(**kw)
                app.save(agg)
        last = app.repository.get(s.id)
        if last.message_count != len(sessions[-1]):
            raise AssertionError("eventsourcing lost messages")

    elapsed = timed(run)
    app.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.unlink(f"{path}{suffix}")
    return elapsed


def _journal(ctx: Context, sessions: list[list[dict[str, Any]]]) -> float:
    path = ctx.fresh("peer.jsonl")
    with Journal.open(path, "always") as j:

        def run() -> None:
            for messages in sessions:
                sid = j.create_session("openai/gpt-4o", idle_timeout_seconds=None)
                for kw in messages:
                    j.append_message(sid, **kw)

        elapsed = timed(run)
    os.unlink(path)
    return elapsed


def run(ctx: Context, section: Section) -> None:
    why = available()
    if why is not None:
        section.status, section.message = "skipped", why
        return
    for count, length in ctx.size.peer:
        sessions = _sessions(count, length)
        t_journal, t_es = best_of(
            ctx.size.rounds,
            lambda s=sessions: _journal(ctx, s),
            lambda s=sessions: _eventsourcing(ctx, s),
        )
        n = count * length
        section.figures.append(
            Figure(
                f"durable appends, {length} messages/session",
                n / t_journal,
                "messages/s",
                "eventsourcing 9 + SQLite",
                n / t_es,
                t_es / t_journal,
                ">=",
                4.0,
                f"{count} sessions x {length} messages; session-journal `always`, 1 thread",
            )
        )
