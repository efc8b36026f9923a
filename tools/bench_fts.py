"""The full-text index's cost: its size on disk and the time to fill it.

Writes the seeded workload (``tools/workload.py``) and rebuilds the projection from it
once (its wall time is printed, but on a shared machine it swings by half from one run to
the next). Then, in the same database, fills two fresh indexes of every message, each
twice, alternated, best time kept: the index as the projection has it (a message's own
text) and, as the baseline, the earlier shape that copied the session's title and model
name into every message's row. Sizes are the pages each takes (SQLite's ``dbstat``: the
index and its shadow tables).

    python tools/bench_fts.py --events 100000
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workload import write_log

from projector import rebuild

# The two shapes: their columns, and the SELECT that fills them from the projection.
SHAPES = {
    "message_text": (
        "session_id UNINDEXED, content",
        "SELECT m.message_id, m.session_id, m.content FROM messages AS m",
    ),
    "with_title_and_model": (
        "session_id UNINDEXED, title, content, model_name",
        "SELECT m.message_id, m.session_id, s.title, m.content, s.model_name "
        "FROM messages AS m JOIN sessions AS s ON s.session_id = m.session_id",
    ),
}


def index_bytes(conn: sqlite3.Connection, name: str) -> int:
    """Bytes of the pages of a full-text index and its shadow tables."""
    row = conn.execute(
        "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = ? OR name LIKE ? ESCAPE '\\'",
        (name, name.replace("_", "\\_") + "\\_%"),
    ).fetchone()
    return int(row[0])


def fill(conn: sqlite3.Connection, name: str, shape: str) -> float:
    """Seconds to fill a fresh index of this shape (left in place, to be measured)."""
    columns, select = SHAPES[shape]
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE VIRTUAL TABLE {name} USING fts5({columns}, tokenize = 'porter')")
    conn.commit()
    started = time.perf_counter()
    names = ", ".join(["rowid", *(c.split()[0] for c in columns.split(","))])
    conn.execute(f"INSERT INTO {name} ({names}) {select} ORDER BY m.message_id")
    conn.commit()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The full-text index's size and fill time.")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log, db = os.path.join(tmp, "sessions.jsonl"), os.path.join(tmp, "sessions.db")
        write_log(log, seed=args.seed, events=args.events)
        started = time.perf_counter()
        result = rebuild(log, db)
        seconds = time.perf_counter() - started
        conn = sqlite3.connect(db)
        figures: dict[str, object] = {
            "events": result.events_applied,
            "messages": conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0],
            "log_bytes": os.path.getsize(log),
            "rebuild_seconds": round(seconds, 2),
            "db_bytes": os.path.getsize(db),
            "projection_fts_bytes": index_bytes(conn, "sessions_fts"),
        }
        times: dict[str, list[float]] = {shape: [] for shape in SHAPES}
        for shape in [*SHAPES, *reversed(SHAPES)]:  # neither always meets the warmer cache
            times[shape].append(fill(conn, f"bench_{shape}", shape))
        for shape in SHAPES:
            figures[f"{shape}_fill_seconds"] = round(min(times[shape]), 2)
            figures[f"{shape}_bytes"] = index_bytes(conn, f"bench_{shape}")
        conn.close()
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    print(
        f"{figures['events']:,} events ({figures['messages']:,} messages, "
        f"{figures['log_bytes']:,} bytes of log): rebuild {seconds:.2f} s, "
        f"its index {figures['projection_fts_bytes']:,} bytes"
    )
    for shape in SHAPES:
        print(
            f"  index of {shape.replace('_', ' ')}: {figures[f'{shape}_bytes']:,} bytes, "
            f"filled in {figures[f'{shape}_fill_seconds']} s (best of 2)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
