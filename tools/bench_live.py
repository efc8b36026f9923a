"""Benchmark of the live projector: append-to-visible latency, a burst, and idle CPU.

Three processes: this one (the conductor), a writer appending through ``Journal`` at a
steady rate, and a watcher running ``projector.watch``. Both children stamp events with
``time.monotonic()``, which on Linux is one clock for every process (CLOCK_MONOTONIC):

* the writer records, per position, the moment just before ``append_message`` was called;
* the watcher records, per committed batch, its last position and the moment the catch-up
  returned (after COMMIT: from then on every reader sees the batch).

An event's latency is the commit moment of the first batch that covers it minus its append
moment. Then a burst of 50,000 events (quick: 10,000) is written as fast as the writer
can and the time until the watcher has applied all of it is measured. Last, the watcher is
left idle and its CPU time read from ``/proc/<pid>/stat``.

The writer uses durability ``batch``: at ``always`` a single writer on this class of disk
is bound by fsync (a few ms per append) below 1,000 appends/s, and the watcher's latency
does not depend on the writer's fsync. Usage::

    python tools/bench_live.py [--quick]        # prints the result as JSON

``run_live(quick)`` returns the same dict, for ``tools/bench.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

RATE: Final = 1_000  # appends per second
SUSTAIN_S: Final = 30.0
SUSTAIN_QUICK_S: Final = 5.0
BURST: Final = 50_000
BURST_QUICK: Final = 10_000
IDLE_S: Final = 10.0
IDLE_QUICK_S: Final = 5.0
SESSIONS: Final = 20
CONTENT: Final = "the router keeps every answer so a session can be searched later " * 3


# -- children ----------------------------------------------------------------------------
def _writer(log: str, out: str, rate: float, seconds: float, burst: int) -> None:
    """Append at ``rate`` for ``seconds``, then ``burst`` events at once; times to ``out``."""
    from journal import Journal

    stamps: list[tuple[int, float]] = []
    with Journal.open(log, "batch") as j:
        sids = [j.create_session(model_id="bench/model", title=f"s{i}") for i in range(SESSIONS)]
        # Wait for the watcher to catch up with the setup, so the measurement starts clean.
        time.sleep(1.0)
        start = time.monotonic()
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            t = time.monotonic()
            r = j.append_message(sids[i % SESSIONS], role="user", content=CONTENT)
            stamps.append((r.pos, t))
        time.sleep(1.0)
        burst_start = time.monotonic()
        for i in range(burst):
            r = j.append_message(sids[i % SESSIONS], role="assistant", content=CONTENT)
        burst_end = time.monotonic()
        last = r.pos if burst else j.last_pos
    Path(out).write_text(
        json.dumps(
            {"stamps": stamps, "burst_start": burst_start, "burst_end": burst_end, "last": last}
        )
    )


def _watcher(log: str, db: str, out: str) -> None:
    """``projector.watch`` until SIGTERM; per batch (last pos, commit moment, behind)."""
    from projector.watch import BatchReport, watch

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    batches: list[tuple[int, float, int]] = []

    def on_batch(r: BatchReport) -> None:
        batches.append((r.last_pos, r.committed, r.behind))

    watch(log, db, stop=stop, on_batch=on_batch)
    Path(out).write_text(json.dumps(batches))


# -- conductor ---------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15, in clock ticks)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child(role: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--role", role, *args])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_live(quick: bool) -> dict[str, Any]:
    """Run the benchmark; returns its figures (milliseconds, seconds, percent of a core)."""
    seconds = SUSTAIN_QUICK_S if quick else SUSTAIN_S
    burst = BURST_QUICK if quick else BURST
    idle = IDLE_QUICK_S if quick else IDLE_S
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        log, db = f"{tmp}/s.jsonl", f"{tmp}/s.db"
        wout, bout = f"{tmp}/writer.json", f"{tmp}/watcher.json"
        watcher = _child("watcher", log, db, bout)
        try:
            writer = _child("writer", log, wout, str(RATE), str(seconds), str(burst))
            if writer.wait() != 0:
                raise RuntimeError("the writer failed")
            w = json.loads(Path(wout).read_text())
            # The burst is caught up once the watcher's checkpoint reaches the last pos.
            import sqlite3

            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                try:
                    pos = conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()[0]
                finally:
                    conn.close()
                if pos >= w["last"]:
                    break
                time.sleep(0.01)
            time.sleep(1.5)  # let the last poll pass, then measure an idle watcher
            cpu0, t0 = _cpu_seconds(watcher.pid), time.monotonic()
            time.sleep(idle)
            cpu1, t1 = _cpu_seconds(watcher.pid), time.monotonic()
        finally:
            watcher.send_signal(signal.SIGTERM)
            code = watcher.wait(60)
        if code != 0:
            raise RuntimeError(f"the watcher exited with {code}")
        batches = json.loads(Path(bout).read_text())

    latencies = _latencies(w["stamps"], batches)
    burst_batches = [b for b in batches if b[1] >= w["burst_start"]]
    caught = next((b[1] for b in burst_batches if b[0] >= w["last"]), None)
    return {
        "rate_per_s": RATE,
        "sustain_s": seconds,
        "events": len(latencies),
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p99": round(_pct(latencies, 0.99), 3),
        "latency_ms_max": round(max(latencies), 3),
        "batches_sustained": sum(1 for b in batches if b[1] < w["burst_start"]),
        "burst_events": burst,
        "burst_write_s": round(w["burst_end"] - w["burst_start"], 3),
        "burst_visible_s": round(caught - w["burst_start"], 3) if caught else None,
        "burst_max_behind": max((b[2] for b in burst_batches), default=0),
        "burst_final_behind": burst_batches[-1][2] if burst_batches else None,
        "idle_s": round(t1 - t0, 2),
        "idle_cpu_percent": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 3),
    }


def _latencies(stamps: list[list[float]], batches: list[list[float]]) -> list[float]:
    """Per appended event: commit moment of the first batch covering it minus append moment."""
    out: list[float] = []
    i = 0
    for pos, t in stamps:
        while i < len(batches) and batches[i][0] < pos:
            i += 1
        if i == len(batches):
            raise RuntimeError(f"event {pos} was never reported applied")
        out.append((batches[i][1] - t) * 1000.0)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--role", choices=("writer", "watcher"))
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    if a.role == "writer":
        log, out, rate, seconds, burst = a.args
        _writer(log, out, float(rate), float(seconds), int(burst))
    elif a.role == "watcher":
        _watcher(*a.args)
    else:
        print(json.dumps(run_live(a.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
