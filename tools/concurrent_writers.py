"""Several processes append to one log at once; audit positions, seqs and ids.

Each worker process runs ``--threads`` threads sharing one ``Journal`` (so their calls are
combined into batches, and the flock orders the batches of the processes); each thread
appends ``--appends`` messages, alternating between its own session and sessions shared
by every worker, lines from about 100 B to over 1 MiB (larger than a pipe buffer or a
page, so a write is never atomic by luck). The audit reads the log back: every message
present, positions gapless (the reader checks), ids unique, per-session seqs
gapless from 1.

    python tools/concurrent_writers.py --procs 4 --appends 500
    python tools/concurrent_writers.py --procs 8 --appends 5000 --durability batch
    python tools/concurrent_writers.py --procs 4 --threads 4 --appends 500
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

SHARED = ("shared-0", "shared-1")


def worker(log: str, wid: int, appends: int, durability: str, go: str, threads: int) -> None:
    from journal import Journal

    while not Path(go).exists():  # start together
        time.sleep(0.001)
    with Journal.open(log, durability=durability) as j:  # type: ignore[arg-type]

        def appender(t: int) -> None:
            own = j.create_session("m", session_id=f"worker-{wid}-{t}")
            for i in range(appends):
                sid = own if i % 2 else SHARED[i % 4 // 2]
                if i % 400 == 123:
                    filler = "w" * (1 << 20)  # a 1 MiB line: many write() calls' worth
                elif i % 50 == 7:
                    filler = "y" * 70_000
                else:
                    filler = "z" * (100 + i % 100)
                j.append_message(sid, "user", f"{wid}.{t}:{i}:{filler}")

        pool = [threading.Thread(target=appender, args=(t,)) for t in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()


def run(
    workdir: Path, procs: int, appends: int, durability: str, threads: int = 1
) -> dict[str, object]:
    from journal import Journal, read_log
    from journal.events import MessageAppended

    log = workdir / "concurrent.jsonl"
    go = workdir / "go"
    with Journal.open(log) as j:
        for sid in SHARED:
            j.create_session("m", session_id=sid)
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                str(log),
                str(w),
                str(appends),
                durability,
                str(go),
                str(threads),
            ]
        )
        for w in range(procs)
    ]
    go.touch()
    codes = [c.wait() for c in children]
    seqs: dict[str, list[int]] = defaultdict(list)
    ids: set[str] = set()
    contents: set[str] = set()
    records = 0
    big = 0
    for event, _ in read_log(str(log)):  # raises CorruptLog on a gap in positions
        records += 1
        ids.add(event.id)
        if isinstance(event, MessageAppended):
            seqs[event.session_id].append(event.seq)
            contents.add(event.content.split(":", 2)[0] + ":" + event.content.split(":", 2)[1])
            big += len(event.content) > 65_536
    expected = {
        f"{w}.{t}:{i}" for w in range(procs) for t in range(threads) for i in range(appends)
    }
    return {
        "procs": procs,
        "threads": threads,
        "appends": appends,
        "exit_codes": codes,
        "records": records,
        "messages": sum(map(len, seqs.values())),
        "missing": len(expected - contents),
        "ids_unique": len(ids) == records,
        "seqs_gapless": all(v == list(range(1, len(v) + 1)) for v in seqs.values()),
        "large_lines": big,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--appends", type=int, default=500)
    parser.add_argument("--durability", default="always")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", nargs=6)
    args = parser.parse_args()
    if args.worker:
        log, wid, n, durability, go, threads = args.worker
        worker(log, int(wid), int(n), durability, go, int(threads))
        return
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stats = run(Path(tmp), args.procs, args.appends, args.durability, args.threads)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    ok = (
        stats["missing"] == 0
        and stats["ids_unique"]
        and stats["seqs_gapless"]
        and not any(stats["exit_codes"])  # type: ignore[arg-type]
    )
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{args.procs} processes x {args.threads} threads x {args.appends} appends: "
            f"{stats['messages']} messages, "
            f"{stats['missing']} missing, positions gapless, ids unique: {stats['ids_unique']}, "
            f"seqs gapless: {stats['seqs_gapless']}, {stats['large_lines']} lines > 64 KiB, "
            f"{stats['seconds']} s"
        )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
