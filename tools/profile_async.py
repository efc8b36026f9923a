"""CPU per event on the hot path of ``AsyncJournal``: where group commit spends its time.

64 tasks (``--tasks``) append 600-character messages (an ``event_id`` each) to one
``AsyncJournal``;
the script reports the CPU time per event of the loop's thread and of the committer
thread (``time.thread_time``), then profiles the committer and splits its time into the
phases of a batch: under the log's lock (the calls, the encoding, the write), the fsync,
and completing the batch on the loop. With group commit the fsync is shared, so this CPU
is what bounds the rate.

    python tools/profile_async.py [--messages 6400] [--tasks 64] [--durability none]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import journal.aio as aio
from journal import AsyncJournal

TASKS = 64
PHASES = {
    "under the lock: the calls, encoding, the write": "_run_batch",
    "fsync": "wait_durable",
    "completion handed to the loop": "call_soon_threadsafe",
}


def measure(
    path: Path, n: int, durability: str, profile: cProfile.Profile | None, tasks: int = TASKS
) -> dict[str, float]:
    committer_cpu = [0.0]
    real_commit = aio.AsyncJournal._commit

    def commit(self: AsyncJournal) -> None:
        start = time.thread_time()
        if profile is not None:
            profile.enable()
        try:
            real_commit(self)
        finally:
            if profile is not None:
                profile.disable()
            committer_cpu[0] = time.thread_time() - start

    aio.AsyncJournal._commit = commit  # type: ignore[method-assign]
    out: dict[str, float] = {}

    async def main() -> None:
        async with AsyncJournal.open(path, durability) as j:  # type: ignore[arg-type]
            sids = [await j.create_session("m", idle_timeout_seconds=None) for _ in range(tasks)]
            ids = [str(uuid.uuid4()) for _ in range(n)]
            text = ("lorem ipsum dolor sit amet " * 30)[:600]

            async def lane(k: int) -> None:
                for i in range(k, n, tasks):
                    await j.append_message(sids[k], "user", text, event_id=ids[i])

            cpu, wall = time.thread_time(), time.perf_counter()
            await asyncio.gather(*(lane(k) for k in range(tasks)))
            out["loop thread, CPU µs/event"] = (time.thread_time() - cpu) / n * 1e6
            out["wall µs/event"] = (time.perf_counter() - wall) / n * 1e6

    try:
        asyncio.run(main())
    finally:
        aio.AsyncJournal._commit = real_commit  # type: ignore[method-assign]
    out["committer thread, CPU µs/event"] = committer_cpu[0] / n * 1e6
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=6400)
    p.add_argument("--tasks", type=int, default=TASKS)
    p.add_argument("--durability", default="none", choices=["always", "batch", "none"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = (args.messages, args.durability)
        figures = measure(Path(tmp) / "plain.jsonl", *run, None, args.tasks)
        profile = cProfile.Profile()
        measure(Path(tmp) / "profiled.jsonl", *run, profile, args.tasks)
    print(f"{args.messages:,} messages from {args.tasks} tasks, durability {args.durability}")
    for name, value in figures.items():
        print(f"  {name}: {value:.1f}")
    stats: Any = pstats.Stats(profile).stats  # (file, line, name) -> (cc, nc, tt, ct, callers)
    total = sum(tt for _, _, tt, _, _ in stats.values())
    print("committer thread, profiled (time in each phase, waits included):")
    for label, fn in PHASES.items():
        ct = sum(v[3] for k, v in stats.items() if k[2] == fn)
        print(f"  {label}: {ct / total:.0%} of its time, {ct / args.messages * 1e6:.1f} µs/event")


if __name__ == "__main__":
    main()
