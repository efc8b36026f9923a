"""Simulated power loss: what survives a cut at any point of a recorded write stream.

A workload runs against a real log while a shim over ``os.write``, ``os.fsync`` and
``os.ftruncate`` (installed as ``journal.log.appender.os``) records every operation on the log's
descriptor and the moment each call was acknowledged. For many crash points the harness
builds the file a power cut could leave: the bytes covered by the last completed fsync,
then a random prefix of the bytes written after it, then optionally a zero or garbage
fill (blocks allocated but never written). It checks that recovery (opening a writer)

* keeps every event acknowledged before the cut (``always`` mode),
* never reports corruption (any mode: the damage is always at the tail),
* changes nothing when run a second time.

    python tools/power_loss.py --points 2000          # prints "... 0 lost, 0 corrupt ..."
    python tools/power_loss.py --durability batch
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import tempfile
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class RecordingOS(types.SimpleNamespace):
    """``os`` as journal.log sees it, recording writes, fsyncs and truncations of one fd."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self._real = real
        self.fd: int | None = None
        self.ops: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def write(self, fd: int, data: Any) -> int:
        n = int(self._real.write(fd, data))
        if fd == self.fd:
            self.ops.append(("write", bytes(data[:n])))
        return n

    def fsync(self, fd: int) -> None:
        self._real.fsync(fd)
        if fd == self.fd:
            self.ops.append(("fsync", None))

    def ftruncate(self, fd: int, length: int) -> None:
        self._real.ftruncate(fd, length)
        if fd == self.fd:
            self.ops.append(("truncate", length))


def record_workload(
    workdir: Path, durability: str, seed: int
) -> tuple[list[tuple[str, Any]], list[tuple[str, int]]]:
    """Run a workload; return the operations and (event id, ops done when acknowledged)."""
    import journal.log.appender as journal_log
    from journal import Journal

    rng = random.Random(seed)
    log = workdir / "recorded.jsonl"
    shim = RecordingOS(os)
    acks: list[tuple[str, int]] = []
    journal_log.os = shim  # type: ignore[assignment]
    try:
        with Journal.open(log, durability=durability, batch_interval_ms=1) as j:  # type: ignore[arg-type]
            shim.fd = j._log.fd

            def ack(event_id: str) -> None:
                acks.append((event_id, len(shim.ops)))

            sessions = []
            for k in range(3):
                eid = str(uuid.uuid4())
                sessions.append(
                    j.create_session(
                        "m", session_id=f"s{k}", event_id=eid, first_message=f"hello {k}"
                    )
                )
                ack(eid)
            for i in range(60):
                sid = rng.choice(sessions)
                if i % 10 == 9:
                    with j.batch():
                        receipts = [
                            j.append_message(sid, "user", f"batched {i}.{n}") for n in range(3)
                        ]
                    for r in receipts:
                        ack(r.event_id)
                    continue
                size = rng.choice((10, 100, 5000, 70_000))
                r = j.append_message(sid, "assistant", f"{i}:" + "w" * size)
                ack(r.event_id)
    finally:
        journal_log.os = os  # type: ignore[assignment]
    return shim.ops, acks


def crash_image(ops: list[tuple[str, Any]], upto: int, rng: random.Random) -> tuple[bytes, bytes]:
    """(the synced prefix, a file a power cut after ``upto`` operations could leave)."""
    content = b""
    synced = b""
    for kind, arg in ops[:upto]:
        if kind == "write":
            content += arg
        elif kind == "fsync":
            synced = content
        else:
            content = content[:arg]
            synced = synced[:arg]
    unsynced = content[len(synced) :] if content.startswith(synced) else b""
    image = synced + unsynced[: rng.randint(0, len(unsynced))]
    fill = rng.choice(("none", "zeros", "garbage"))
    n = rng.choice((1, 7, 512, 4096))
    if fill == "zeros":
        image += b"\0" * n
    elif fill == "garbage":
        image += rng.randbytes(n)
    return synced, image


def check_points(
    workdir: Path,
    ops: list[tuple[str, Any]],
    acks: list[tuple[str, int]],
    points: list[int],
    durability: str,
    seed: int,
    report: Callable[[str], None] = lambda _msg: None,
) -> dict[str, int]:
    from journal import CorruptLog, Journal, NotALog, read_log

    rng = random.Random(seed)
    stats = {
        "points": 0,
        "lost": 0,
        "corrupt": 0,
        "second_run_changed": 0,
        "repairs": 0,
        "refused_as_no_log": 0,
        "acknowledged_checked": 0,
    }
    for k, upto in enumerate(points):
        synced, image = crash_image(ops, upto, rng)
        case = workdir / f"cut-{k}"
        case.mkdir()
        log = case / "sessions.jsonl"
        log.write_bytes(image)
        os.chmod(log, 0o600)
        stats["points"] += 1
        try:
            with Journal.open(log, durability="none") as j:
                stats["repairs"] += len(j.repairs)
            present = {e.id for e, _ in read_log(str(log))}
            after_first = log.read_bytes()
            with Journal.open(log, durability="none") as again:
                if again.repairs or log.read_bytes() != after_first:
                    stats["second_run_changed"] += 1
                    report(f"cut {upto}: second recovery changed the log")
        except NotALog:
            # Garbage where a new file's first record should be (a cut before its first
            # fsync): refused whole, never moved aside; a loss if anything was promised.
            stats["refused_as_no_log"] += 1
            present = set()
        except CorruptLog as exc:
            stats["corrupt"] += 1
            report(f"cut {upto}: {exc}")
            continue
        must_survive = [eid for eid, at in acks if at <= upto]
        if durability != "always":  # only what an fsync covered is promised
            must_survive = [eid for eid in must_survive if eid.encode() in synced]
        stats["acknowledged_checked"] += len(must_survive)
        lost = [eid for eid in must_survive if eid not in present]
        if lost:
            stats["lost"] += len(lost)
            report(f"cut {upto}: lost {lost[:3]}")
        for path in case.iterdir():
            path.unlink()
        case.rmdir()
    return stats


def run(workdir: Path, points: int, durability: str, seed: int) -> dict[str, int]:
    ops, acks = record_workload(workdir, durability, seed)
    rng = random.Random(seed)
    every = list(range(len(ops) + 1))
    chosen = every if points >= len(every) else sorted(rng.sample(every, points))
    stats = check_points(
        workdir, ops, acks, chosen, durability, seed, report=lambda m: print(m, file=sys.stderr)
    )
    stats["operations"] = len(ops)
    stats["fsyncs"] = sum(1 for kind, _ in ops if kind == "fsync")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500, help="crash points per round")
    parser.add_argument("--rounds", type=int, default=1, help="each round: a new workload")
    parser.add_argument("--durability", default="always")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    logging.getLogger("journal").setLevel(logging.ERROR)  # one warning per repair otherwise
    total: dict[str, int] = {}
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            stats = run(Path(tmp), args.points, args.durability, seed + r)
        for key, value in stats.items():
            total[key] = total.get(key, 0) + value
    if args.json:
        print(json.dumps({**total, "seed": seed}))
    else:
        print(
            f"{total['points']} crash points ({args.durability}), "
            f"{total['acknowledged_checked']} acknowledged events checked: {total['lost']} lost, "
            f"{total['corrupt']} corrupt, {total['second_run_changed']} changed by a second "
            f"recovery, {total['repairs']} torn tails repaired, {total['refused_as_no_log']} "
            f"refused as no log (seed {seed})"
        )
    sys.exit(0 if total["lost"] == total["corrupt"] == total["second_run_changed"] == 0 else 1)


if __name__ == "__main__":
    main()
