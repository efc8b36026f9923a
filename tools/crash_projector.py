"""Kill the projector with SIGKILL at random moments during replay, resume, and compare.

A child process runs ``projector.replay`` on a generated log; the parent kills it after a
random delay, again and again, then lets a last replay finish. Pass: the database's
canonical hash equals a clean rebuild's, its checkpoint is at the end of the log, and
``PRAGMA integrity_check`` and ``verify`` are clean.

    python tools/crash_projector.py --kills 200 --events 30000
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
CHILD = (
    "import sys; from projector import replay; replay(sys.argv[1], sys.argv[2], batch_events=500)"
)


def run(workdir: Path, kills: int, events: int, seed: int) -> dict[str, object]:
    sys.path.insert(0, str(TOOLS))
    from workload import write_log

    from projector import canonical_hash, rebuild, replay, verify

    log, db, ref = workdir / "log.jsonl", workdir / "live.db", workdir / "ref.db"
    write_log(str(log), seed, events)
    t0 = time.perf_counter()
    rebuild(str(log), str(ref))
    clean = time.perf_counter() - t0  # bounds the useful kill delays
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import projector"], check=True)
    startup = time.perf_counter() - t0  # kills before this would land before replay starts
    rng = random.Random(seed)
    done = killed = finished_early = 0
    while done < kills:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(log), str(db)])
        time.sleep(startup + rng.uniform(0.0, clean))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            killed += 1
        else:
            finished_early += 1  # it caught up before the kill: start from scratch
            db.unlink()
            for side in ("-wal", "-shm"):
                Path(f"{db}{side}").unlink(missing_ok=True)
        child.wait()
        done += 1
    replay(str(log), str(db))
    same = canonical_hash(str(db)) == canonical_hash(str(ref))
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    report = verify(str(log), str(db))
    return {
        "events": events,
        "attempts": done,
        "killed": killed,
        "finished_before_the_kill": finished_early,
        "same_as_clean_rebuild": same,
        "integrity_check": integrity,
        "verify_ok": report.ok,
        "checkpoint_at_end": report.checkpoint_pos == report.log_last_pos,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(Path(tmp), args.kills, args.events, args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['killed']} kills ({result['attempts']} attempts, "
            f"{result['finished_before_the_kill']} finished first) over {args.events} events: "
            f"same as a clean rebuild: {result['same_as_clean_rebuild']}, integrity_check: "
            f"{result['integrity_check']}, verify ok: {result['verify_ok']}, checkpoint at "
            f"the end: {result['checkpoint_at_end']}"
        )
    ok = (
        result["same_as_clean_rebuild"]
        and result["integrity_check"] == "ok"
        and result["verify_ok"]
        and result["checkpoint_at_end"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
