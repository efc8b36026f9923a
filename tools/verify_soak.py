"""verify again and again while a live projector applies what writers append: no false alarm.

Writer processes append messages (each to a session of its own and to a shared one) as
fast as they can; ``watch`` runs in a thread and keeps the database current; the main
thread runs ``verify`` in a loop until the writers are done. Every report must be clean,
and no session may end up marked with problems. Prints one JSON line of figures; exits 1
on any problem.

    python tools/verify_soak.py --writers 2 --messages 20000
    python tools/verify_soak.py --writers 4 --messages 50000
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

WRITER = """
import sys
from journal import Journal
log, wid, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Journal.open(log, durability="none") as j:
    own = j.create_session("soak/model", session_id=f"writer-{wid}")
    for i in range(n):
        j.append_message(own, role="user", content=f"message {i} of writer {wid}")
"""


def soak(workdir: Path, writers: int, messages: int) -> dict[str, object]:
    from projector import verify
    from projector.watch import watch

    log, db = workdir / "sessions.jsonl", workdir / "sessions.db"
    stop = threading.Event()
    failure: list[BaseException] = []

    def run_watch() -> None:
        try:
            watch(str(log), str(db), stop=stop, poll_interval=0.05)
        except BaseException as exc:
            failure.append(exc)

    watcher = threading.Thread(target=run_watch, name="soak-watch")
    watcher.start()
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(w), str(messages)])
        for w in range(writers)
    ]
    runs, behind, problems = 0, 0, []
    t0 = time.monotonic()
    try:
        while any(p.poll() is None for p in procs):
            if not db.exists():
                time.sleep(0.01)
                continue
            report = verify(log, db)
            runs += 1
            behind += report.checkpoint_pos < report.log_last_pos
            problems += [str(p) for p in report.problems]
        codes = [p.wait() for p in procs]
    finally:
        stop.set()
        watcher.join()
    with closing(sqlite3.connect(db)) as conn:
        marked = conn.execute(
            "SELECT count(*) FROM sessions WHERE integrity_status = 'problems'"
        ).fetchone()[0]
    return {
        "writers": writers,
        "messages": writers * messages,
        "verify_runs": runs,
        "runs_behind_the_log": behind,
        "problems": len(problems),
        "first_problems": problems[:3],
        "sessions_marked_with_problems": marked,
        "writer_exit_codes": codes,
        "watch_error": repr(failure[0]) if failure else None,
        "seconds": round(time.monotonic() - t0, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--messages", type=int, default=20_000, help="per writer")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = soak(Path(tmp), args.writers, args.messages)
    print(json.dumps(figures))
    clean = (
        figures["problems"] == 0
        and figures["sessions_marked_with_problems"] == 0
        and figures["watch_error"] is None
        and set(figures["writer_exit_codes"]) == {0}  # type: ignore[call-overload]
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
