"""Append to row visible: ``session-journal watch`` on a JetStream stream and on a file.

Starts one loopback ``nats-server`` (``tools/nats_cluster.py``, ``sync_interval:
always``). For a log file and for an R1 stream in turn, runs ``watch`` in its own process
and appends ``--appends`` messages at 20/s (durability ``always``); each latency runs
from just before ``append_message`` to the moment the projection's checkpoint covers
it (the append included). Prints p50 and p95 for each, ``--rounds`` times. Usage::

    python tools/stream_watch_latency.py --rounds 2
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from nats_cluster import NatsCluster

from journal import Journal
from projector.db import readonly_uri


def _checkpoint_pos(db: Path) -> int:
    try:
        with closing(sqlite3.connect(readonly_uri(db), uri=True)) as conn:
            return int(conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()[0])
    except (sqlite3.Error, TypeError):
        return -1  # not made yet


def _latencies(log: str, db: Path, appends: int) -> tuple[float, float]:
    with Journal.open(log) as j:
        j.create_session("m", session_id="s")
    command = [sys.executable, "-m", "projector", "--log", log, "--db", str(db), "watch"]
    watcher = subprocess.Popen(command)
    found: list[float] = []
    try:
        with Journal.open(log) as j:
            while _checkpoint_pos(db) < 2:
                time.sleep(0.01)
            for i in range(appends):
                t0 = time.monotonic()
                pos = j.append_message("s", "user", f"message {i}").pos
                while _checkpoint_pos(db) < pos:
                    time.sleep(0.0005)
                found.append((time.monotonic() - t0) * 1000)
                time.sleep(0.05)
    finally:
        watcher.terminate()
        watcher.wait()
    found.sort()
    return statistics.median(found), found[int(len(found) * 0.95)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--appends", type=int, default=150)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, NatsCluster(Path(scratch) / "n", 1) as c:
        d = Path(scratch)
        for k in range(args.rounds):
            f = _latencies(str(d / f"f{k}.jsonl"), d / f"f{k}.db", args.appends)
            s = _latencies(f"{c.url}/L{uuid.uuid4().hex[:8]}", d / f"s{k}.db", args.appends)
            print(
                f"round {k}: file p50 {f[0]:.1f} ms, p95 {f[1]:.1f} ms; "
                f"stream p50 {s[0]:.1f} ms, p95 {s[1]:.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    main()
