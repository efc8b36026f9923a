"""Kill a writer with SIGKILL at random moments, again and again, and audit the log.

A child process appends messages with deterministic event ids and prints each receipt
once the call has returned (that is the acknowledgement). The parent kills it at a random
moment, restarts it from the first unacknowledged message (retrying it with the same
event id), and at the end checks that every acknowledged message is in the log exactly
once, that positions and seqs are gapless, and that each restart repaired what it found.
The child writes the writer's state checkpoint every few records, so kills also land
while one is written; at the end, the state a writer takes from the checkpoint must be
the one the log alone gives. The log is sealed into a segment every few megabytes, so
kills land during rotations too: at the end every segment must hold exactly the
positions its manifest says, and no file may be left over from a rotation.

    python tools/crash_writer.py --kills 500            # prints "500 kills, … 0 lost, 0 duplicated"
    python tools/crash_writer.py --kills 25 --json      # for the test suite
    python tools/crash_writer.py --kills 60 --tasks 16  # AsyncJournal, 16 tasks at once

With ``--tasks N`` the child appends through ``AsyncJournal`` from N concurrent tasks (task
k takes messages k, k + N, …), so kills land while batches of calls are written and
fsynced together; a restart goes on after the highest acknowledged message (the ones
below it that were not acknowledged are not retried: they may or may not be in the log).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

NAMESPACE = uuid.UUID("3b0c7a52-2f4e-4d59-9d0e-6a1c7f3e8b21")
SESSION = "crash-session"


def message_id(i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"message-{i}"))


# The child writes the writer's state checkpoint this often (records), so that kills also
# land while one is written, and each restart starts from one.
CHECKPOINT_EVERY = 7


# The log is sealed into a segment at this size: every few of the big messages.
SEGMENT_BYTES = 3 << 20


def checkpoint_often() -> None:
    import journal.checkpointing

    journal.checkpointing.SAVE_AFTER_RECORDS = CHECKPOINT_EVERY
    journal.checkpointing.CHECKPOINT_MIN_BYTES = 0  # from the first record on


def child(log: str, start: int, durability: str) -> None:
    from journal import Journal

    checkpoint_often()
    with Journal.open(log, durability=durability, segment_bytes=SEGMENT_BYTES) as j:  # type: ignore[arg-type]
        j.create_session(
            "crash-model", session_id=SESSION, event_id=str(uuid.uuid5(NAMESPACE, "session"))
        )
        print(f"open {len(j.repairs)}", flush=True)
        i = start
        while True:
            # every few messages a big one, so kills also land inside long writes
            size = 1_000_000 if i % 5 == 0 else 50 + i % 300
            print(f"begin {i}", flush=True)
            r = j.append_message(SESSION, "user", f"{i}:" + "x" * size, event_id=message_id(i))
            print(f"ack {i} {r.pos} {r.seq} {int(r.duplicate)}", flush=True)
            i += 1


def child_async(log: str, start: int, durability: str, tasks: int) -> None:
    import asyncio

    from journal import AsyncJournal

    checkpoint_often()

    async def main() -> None:
        async with AsyncJournal.open(log, durability, segment_bytes=SEGMENT_BYTES) as j:  # type: ignore[arg-type]
            await j.create_session(
                "crash-model", session_id=SESSION, event_id=str(uuid.uuid5(NAMESPACE, "session"))
            )
            print(f"open {len(j.journal.repairs)}", flush=True)

            async def lane(k: int) -> None:
                i = start + k
                while True:
                    size = 1_000_000 if i % 5 == 0 else 50 + i % 300
                    print(f"begin {i}", flush=True)
                    r = await j.append_message(
                        SESSION, "user", f"{i}:" + "x" * size, event_id=message_id(i)
                    )
                    print(f"ack {i} {r.pos} {r.seq} {int(r.duplicate)}", flush=True)
                    i += tasks

            await asyncio.gather(*(lane(k) for k in range(tasks)))

    asyncio.run(main())


def run(kills: int, workdir: Path, seed: int, durability: str, tasks: int = 0) -> dict[str, int]:
    from journal import read_log
    from journal.events import MessageAppended
    from journal.log.segments import load_manifest

    logging.getLogger("journal").setLevel(logging.ERROR)  # one warning per repair otherwise
    rng = random.Random(seed)
    log = workdir / "crash.jsonl"
    acked: set[int] = set()
    next_i = 0
    repairs = 0
    duplicates_returned = 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for _ in range(kills):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(log), str(next_i), durability]
            + (["--tasks", str(tasks)] if tasks else []),
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        opened = proc.stdout.readline().split()
        if opened and opened[0] == "open":
            repairs += int(opened[1])
        wanted = rng.randrange(0, 12)
        while wanted >= 0:
            line = proc.stdout.readline().split()
            if not line:
                break
            if line[0] == "ack":
                acked.add(int(line[1]))
                duplicates_returned += int(line[4])
                wanted -= 1
            elif line[0] == "begin" and wanted == 0 and int(line[1]) % 5 == 0:
                break  # kill during a long call: its write may be under way
        time.sleep(rng.random() * 0.0015)
        proc.send_signal(signal.SIGKILL)
        # receipts printed before the kill landed are acknowledgements too
        for rest in proc.stdout:
            parts = rest.split()
            if parts and parts[0] == "ack":
                acked.add(int(parts[1]))
                duplicates_returned += int(parts[4])
        proc.wait()
        proc.stdout.close()
        next_i = max(acked) + 1 if acked else 0

    # a last, clean writer must open, repair and append
    from journal import Journal

    with Journal.open(log, segment_bytes=SEGMENT_BYTES) as j:
        repairs += len(j.repairs)
        j.append_message(SESSION, "user", "after the last kill")
        from_checkpoint = (j.last_pos, j.last_seq(SESSION), j._state.store is not None)
    # The state from the checkpoint the kills left is the state the log alone gives.
    os.unlink(f"{log}.state")
    with Journal.open(log) as j:
        checkpoint_agrees = from_checkpoint[:2] == (j.last_pos, j.last_seq(SESSION))
    seen = Counter()
    seqs: list[int] = []
    for event, _ in read_log(str(log)):
        if isinstance(event, MessageAppended):
            seen[event.id] += 1
            seqs.append(event.seq)
    lost = sum(1 for i in acked if seen[message_id(i)] == 0)
    duplicated = sum(1 for n in seen.values() if n > 1)
    return {
        "kills": kills,
        "acknowledged": len(acked),
        "lost": lost,
        "duplicated": duplicated,
        "seq_gapless": int(seqs == list(range(1, len(seqs) + 1))),
        "repairs": repairs,
        "duplicates_returned": duplicates_returned,
        "quarantine_files": len(list(workdir.glob("crash.jsonl.torn-*"))),
        "started_from_checkpoint": int(from_checkpoint[2]),
        "checkpoint_agrees": int(checkpoint_agrees),
        "segments": len(load_manifest(str(log)).segments),
        "segments_consistent": int(segments_consistent(log)),
    }


def segments_consistent(log: Path) -> bool:
    """Each sealed segment holds the positions its manifest lists, and nothing else of a
    rotation is left: no unlisted segment file, no second name, no prepared next file."""
    from journal.log.segments import load_manifest, segment_path, segments_dir

    manifest = load_manifest(str(log))
    for segment in manifest.segments:
        with open(segment_path(str(log), segment), "rb") as f:
            positions = [json.loads(line)["pos"] for line in f]
        if positions != list(range(segment.first_pos, segment.last_pos + 1)):
            return False
    directory = segments_dir(str(log))
    files = (
        {n for n in os.listdir(directory) if n.endswith(".jsonl")} if manifest.segments else set()
    )
    return (
        files == {s.name for s in manifest.segments}
        and log.stat().st_nlink == 1
        and not os.path.exists(f"{log}.next")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None, help="work here (default: a temp dir)")
    parser.add_argument("--durability", default="always")
    parser.add_argument("--tasks", type=int, default=0, help="append from N asyncio tasks")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("LOG", "START", "DURABILITY"))
    args = parser.parse_args()
    if args.child:
        if args.tasks:
            child_async(args.child[0], int(args.child[1]), args.child[2], args.tasks)
        else:
            child(args.child[0], int(args.child[1]), args.child[2])
        return
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    if args.dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            stats = run(args.kills, Path(tmp), seed, args.durability, args.tasks)
    else:
        args.dir.mkdir(parents=True, exist_ok=True)
        stats = run(args.kills, args.dir, seed, args.durability, args.tasks)
    stats["seed"] = seed
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{stats['kills']} kills, {stats['acknowledged']} acknowledged, "
            f"{stats['lost']} lost, {stats['duplicated']} duplicated, "
            f"{stats['repairs']} torn tails repaired, seqs gapless: {bool(stats['seq_gapless'])}, "
            f"checkpoint agrees with the log: {bool(stats['checkpoint_agrees'])}, "
            f"{stats['segments']} segments, consistent: {bool(stats['segments_consistent'])} "
            f"(seed {seed})"
        )
    ok = (
        stats["lost"] == 0
        and stats["duplicated"] == 0
        and stats["seq_gapless"]
        and stats["checkpoint_agrees"]
        and stats["segments_consistent"]
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
