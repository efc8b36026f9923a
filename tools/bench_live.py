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

The baselines, measured in the same run on the same kind of events:

* latency: a polling reader, one process appending and calling ``projector.replay`` right
  after each append (the best a reader that polls can do), at the same rate;
* burst: the time the writer took to write it. The watcher keeps up when its lag is back
  to zero no later than that after the burst's last append (a backlog cannot grow); the
  rate of a cold ``projector.replay`` of the same burst is printed beside it;
* idle: a reader calling ``projector.replay`` every 5 ms (the p50 latency target) on the
  same idle log, in its own process, over the same window.

The writer uses durability ``batch``: at ``always`` a single writer on this class of disk
is bound by fsync (a few ms per append) below 1,000 appends/s, and the watcher's latency
does not depend on the writer's fsync. Usage::

    python tools/bench_live.py [--quick]        # prints the result as JSON

``run_live(quick)`` returns the same dict, for ``tools/bench.py``.
"""

from __future__ import annotations

import argparse
import json
import math
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
SUSTAIN_QUICK_S: Final = 3.0
BURST: Final = 50_000
BURST_QUICK: Final = 10_000
IDLE_S: Final = 10.0
IDLE_QUICK_S: Final = 3.0
IDLE_POLL_S: Final = 0.005  # the idle baseline's poll interval: the p50 latency target
SESSIONS: Final = 20
CONTENT: Final = "the router keeps every answer so a session can be searched later " * 3


# -- children ----------------------------------------------------------------------------
def _writer(log: str, out: str, rate: float, seconds: float, burst: int, settle: float) -> None:
    """Append at ``rate`` for ``seconds``, then ``burst`` events at once; times to ``out``."""
    from journal import Journal

    stamps: list[tuple[int, float]] = []
    with Journal.open(log, "batch") as j:
        sids = [j.create_session(model_id="bench/model", title=f"s{i}") for i in range(SESSIONS)]
        # Wait for the watcher to catch up with the setup, so the measurement starts clean.
        time.sleep(settle)
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
        time.sleep(settle)
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
    """``projector.watch`` until SIGTERM; per batch its last pos, commit moment, lag,
    events applied and duration (ms, from the start of its pass or the previous commit)."""
    from projector.watch import BatchReport, watch

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    batches: list[tuple[int, float, int, int, float]] = []

    def on_batch(r: BatchReport) -> None:
        batches.append((r.last_pos, r.committed, r.behind, r.applied, r.duration_ms))

    watch(log, db, stop=stop, on_batch=on_batch)
    Path(out).write_text(json.dumps(batches))


def _poller(log: str, db: str, out: str, rate: float, seconds: float) -> None:
    """The latency baseline: append, then ``projector.replay`` at once; latencies to ``out``."""
    import projector
    from journal import Journal

    latencies: list[float] = []
    with Journal.open(log, "batch") as j:
        sids = [j.create_session(model_id="bench/model", title=f"s{i}") for i in range(SESSIONS)]
        projector.replay(log, db)
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            now = time.monotonic()
            if now > start + seconds and i >= 100:
                break  # replay slower than the rate: keep to the time, not the count
            if due > now:
                time.sleep(due - now)
            t = time.monotonic()
            j.append_message(sids[i % SESSIONS], role="user", content=CONTENT)
            projector.replay(log, db)
            latencies.append((time.monotonic() - t) * 1000.0)
    Path(out).write_text(json.dumps(latencies))


def _idle_poller(log: str, db: str, out: str, seconds: float) -> None:
    """The idle baseline: ``projector.replay`` every IDLE_POLL_S; CPU share to ``out``."""
    import projector

    projector.replay(log, db)
    warm_until = time.monotonic() + min(0.5, seconds)
    while time.monotonic() < warm_until:
        projector.replay(log, db)
        time.sleep(IDLE_POLL_S)
    cpu0, t0 = time.process_time(), time.monotonic()
    polls = 0
    while time.monotonic() - t0 < seconds:
        projector.replay(log, db)
        polls += 1
        time.sleep(IDLE_POLL_S)
    cpu1, t1 = time.process_time(), time.monotonic()
    Path(out).write_text(
        json.dumps({"cpu_percent": 100.0 * (cpu1 - cpu0) / (t1 - t0), "polls": polls})
    )


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


def _checkpoint(db: str) -> int:
    import sqlite3

    from projector.db import readonly_uri

    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        row = conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()
    finally:
        conn.close()
    return int(row[0]) if row else 0


def run_live(
    quick: bool,
    *,
    sustain_s: float | None = None,
    burst: int | None = None,
    idle_s: float | None = None,
    workdir: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark; returns its figures (milliseconds, seconds, percent of a core).

    ``sustain_s``, ``burst`` and ``idle_s`` override the sizes that ``quick`` picks.
    """
    import sqlite3

    import projector

    seconds = sustain_s if sustain_s is not None else SUSTAIN_QUICK_S if quick else SUSTAIN_S
    burst = burst if burst is not None else BURST_QUICK if quick else BURST
    idle = idle_s if idle_s is not None else IDLE_QUICK_S if quick else IDLE_S
    settle = min(1.0, max(0.25, seconds / 2))
    baseline_s = max(0.3, min(5.0, seconds / 6))
    with tempfile.TemporaryDirectory(prefix="bench-live-", dir=workdir) as tmp:
        log, db = f"{tmp}/s.jsonl", f"{tmp}/s.db"
        wout, bout, iout = f"{tmp}/writer.json", f"{tmp}/watcher.json", f"{tmp}/idle.json"
        watcher = _child("watcher", log, db, bout)
        try:
            writer = _child("writer", log, wout, str(RATE), str(seconds), str(burst), str(settle))
            if writer.wait() != 0:
                raise RuntimeError("the writer failed")
            w = json.loads(Path(wout).read_text())
            # The burst is caught up once the watcher's checkpoint reaches the last pos.
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and _checkpoint(db) < w["last"]:
                time.sleep(0.05)
            time.sleep(1.5 * settle)  # let the last poll pass, then measure an idle watcher
            # The idle baseline polls its own copy of the database, over the same window.
            # Not beside the log: the watcher's observer would see every write to it.
            os.mkdir(f"{tmp}/idle")
            idle_db = f"{tmp}/idle/idle.db"
            with sqlite3.connect(db) as src, sqlite3.connect(idle_db) as dst:
                src.backup(dst)
            src.close()
            dst.close()
            poller = _child("idle", log, idle_db, iout, str(idle))
            cpu0, t0 = _cpu_seconds(watcher.pid), time.monotonic()
            time.sleep(idle)
            cpu1, t1 = _cpu_seconds(watcher.pid), time.monotonic()
            if poller.wait(60 + 2 * idle) != 0:
                raise RuntimeError("the idle poller failed")
        finally:
            watcher.send_signal(signal.SIGTERM)
            code = watcher.wait(60)
        if code != 0:
            raise RuntimeError(f"the watcher exited with {code}")
        batches = json.loads(Path(bout).read_text())
        idle_base = json.loads(Path(iout).read_text())

        # Burst baseline: the database as it was just before the burst, caught up cold.
        pre_burst = w["stamps"][-1][0] if w["stamps"] else 0
        cold = f"{tmp}/cold.db"
        projector.rebuild(log, cold, until=pre_burst)
        if _checkpoint(cold) != pre_burst:
            raise RuntimeError("the pre-burst database does not end where the burst starts")
        t = time.perf_counter()
        projector.replay(log, cold)
        replay_s = time.perf_counter() - t
        if _checkpoint(cold) != w["last"]:
            raise RuntimeError("the cold replay did not reach the end of the burst")
        for name in ("cold.db", "idle/idle.db"):
            Path(f"{tmp}/{name}").unlink()

        # Latency baseline: append and replay at once, one process, its own log.
        pout = f"{tmp}/poller.json"
        poller = _child("poller", f"{tmp}/p.jsonl", f"{tmp}/p.db", pout, str(RATE), str(baseline_s))
        if poller.wait() != 0:
            raise RuntimeError("the latency poller failed")
        polled = json.loads(Path(pout).read_text())

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
        "poll_events": len(polled),
        "poll_latency_ms_p50": round(statistics.median(polled), 3),
        "poll_latency_ms_p99": round(_pct(polled, 0.99), 3),
        "burst_events": burst,
        "burst_write_s": round(w["burst_end"] - w["burst_start"], 3),
        "burst_visible_s": round(caught - w["burst_start"], 3) if caught else None,
        "burst_max_behind": max((b[2] for b in burst_batches), default=0),
        "burst_final_behind": burst_batches[-1][2] if burst_batches else None,
        "burst_batches": len(burst_batches),
        "burst_applied": sum(b[3] for b in burst_batches),
        "burst_busy_s": round(sum(b[4] for b in burst_batches) / 1000.0, 3),
        "burst_cold_replay_s": round(replay_s, 3),
        "idle_s": round(t1 - t0, 2),
        "idle_cpu_percent": round(100.0 * (cpu1 - cpu0) / (t1 - t0), 3),
        "idle_poll_interval_ms": IDLE_POLL_S * 1000.0,
        "idle_poll_cpu_percent": round(idle_base["cpu_percent"], 3),
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


# -- the section of tools/bench.py ------------------------------------------------------
def run(ctx: Any, section: Any) -> None:
    """Fill the ``live`` section of ``tools/bench.py`` (a benchlib Context and Section)."""
    from benchlib import Figure

    sustain_s, burst, idle_s = ctx.size.live
    r = run_live(
        ctx.size.name != "full",
        sustain_s=sustain_s,
        burst=burst,
        idle_s=idle_s,
        workdir=str(ctx.dir),
    )
    steady = (
        f"{r['events']:,} appends at {r['rate_per_s']:,}/s for {r['sustain_s']:g} s, writer "
        f"and watcher in 2 processes; baseline: one process appending then calling replay, "
        f"{r['poll_events']:,} appends"
    )
    for q, target in (("p50", 5.0), ("p99", 20.0)):
        value, base = r[f"latency_ms_{q}"], r[f"poll_latency_ms_{q}"]
        section.figures.append(
            Figure(
                f"append -> visible in SQLite, {q}",
                value,
                "ms",
                f"replay called right after the append (a polling reader), {q}",
                base,
                value / base,
                "<=",
                target,
                steady + (f"; max {r['latency_ms_max']:.1f} ms" if q == "p99" else ""),
                judged="value",
            )
        )
    n, visible, cold = r["burst_events"], r["burst_visible_s"], r["burst_cold_replay_s"]
    busy = r["burst_busy_s"]
    rate = r["burst_applied"] / busy if visible and busy else 0.0
    # "Keeps up": the lag returns to zero, and the watcher needs no longer after the last
    # append than the writer took to write the whole burst (so a backlog cannot grow).
    after_last = visible - r["burst_write_s"] if visible else math.inf
    if visible:
        lag = (
            f"lag back to zero {visible:.2f} s after the burst's first append, "
            f"{after_last:.2f} s after its last (writing it took {r['burst_write_s']:.2f} s)"
        )
    else:
        lag = f"lag never back to zero (still {r['burst_final_behind']} behind)"
    section.figures.append(
        Figure(
            f"burst of {n:,} events: lag back to zero after the last append",
            after_last,
            "s",
            "time the writer took to write the burst",
            r["burst_write_s"],
            after_last / r["burst_write_s"],
            "<=",
            1.0,
            f"{lag}; largest lag {r['burst_max_behind']:,} events; the watcher applied "
            f"{rate:,.0f} events/s in its {r['burst_batches']:,} batches ({busy:.2f} s), "
            f"a cold projector.replay of the same burst {n / cold:,.0f} events/s",
        )
    )
    cpu, base_cpu = r["idle_cpu_percent"], r["idle_poll_cpu_percent"]
    section.figures.append(
        Figure(
            "idle watcher CPU",
            cpu,
            "% of a core",
            f"replay polled every {r['idle_poll_interval_ms']:g} ms",
            base_cpu,
            cpu / base_cpu if base_cpu > 0 else float("inf"),
            "<=",
            1.0,
            f"CPU seconds / wall seconds over {r['idle_s']:g} s idle, from /proc/<pid>/stat; "
            f"the baseline is a reader polling at the p50 target instead of watching",
            judged="value",
        )
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--role", choices=("writer", "watcher", "poller", "idle"))
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    if a.role == "writer":
        log, out, rate, seconds, burst, settle = a.args
        _writer(log, out, float(rate), float(seconds), int(burst), float(settle))
    elif a.role == "watcher":
        _watcher(*a.args)
    elif a.role == "poller":
        log, db, out, rate, seconds = a.args
        _poller(log, db, out, float(rate), float(seconds))
    elif a.role == "idle":
        log, db, out, seconds = a.args
        _idle_poller(log, db, out, float(seconds))
    else:
        print(json.dumps(run_live(a.quick), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
