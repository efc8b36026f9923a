"""The append section of ``tools/bench.py``: the writer against raw writes of the same bytes.

* durable, one thread: ``Journal`` (durability ``always``) replaying the workload's calls
  vs a loop of ``os.write`` + ``fsync`` of exactly the bytes the writer produced, call by
  call (the log it writes is checked byte for byte against the workload's);
* durable, 8 threads on one ``Journal`` vs the same messages from one thread (group commit);
* durability ``none`` vs a loop of plain msgspec encoding + ``os.write`` of the same events
  (the note adds the least a process-safe writer must do per call, for scale);
* opening a log (reading it back and folding the writer's state) vs a plain msgspec decode
  of the same file, and the peak memory of a child process that opens it at two sizes with
  the same sessions (memory must follow sessions, not events).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import workload
from benchlib import Context, Figure, Section, best_of, child_peak_rss_mib, timed

from journal import Journal
from journal.events import AnyEvent, Event, decode_line, encode_line, format_ts
from journal.writer import random_event_id

SEED = 1
OPEN_CODE = "import sys\nfrom journal import Journal\nJournal.open(sys.argv[1], 'none').close()\n"
FLOOR_CODE = "import journal\n"


def _lines(path: Path, count: int | None = None) -> list[bytes]:
    with open(path, "rb") as f:
        return list(itertools.islice(f, count))


def _chunks(lines: list[bytes], ends: list[int]) -> list[bytes]:
    """The bytes each call appended."""
    out, start = [], 0
    for end in ends:
        out.append(b"".join(lines[start:end]))
        start = end
    return out


def _replay(ctx: Context, ops: list[workload.Op], durability: str, expected: bytes) -> float:
    path = ctx.fresh(f"{durability}.jsonl")
    clock = workload.make_clock()
    j = Journal.open(path, durability, clock=clock, new_id=clock.new_id)  # type: ignore[arg-type]
    try:
        elapsed = timed(lambda: workload.replay(ops, j, clock))
    finally:
        j.close()
    if path.read_bytes() != expected:
        raise AssertionError(f"{path}: the writer did not reproduce the workload's bytes")
    os.unlink(path)
    return elapsed


def _interleaved_durable(
    ctx: Context, ops: list[workload.Op], chunks: list[bytes], block: int = 25
) -> tuple[float, float]:
    """Writer and raw loop in alternating blocks of calls: (writer time, raw time).

    fsync latency on a shared machine swings by 10x within seconds; alternating every
    few milliseconds exposes both sides to the same disk.
    """
    path, raw_path = ctx.fresh("always.jsonl"), ctx.fresh("raw-fsync.bin")
    clock = workload.make_clock()
    j = Journal.open(path, "always", clock=clock, new_id=clock.new_id)
    fd = os.open(raw_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    t_project = t_raw = 0.0
    try:
        for start in range(0, len(ops), block):
            t0 = time.perf_counter()
            workload.replay(ops[start : start + block], j, clock)
            t1 = time.perf_counter()
            for chunk in chunks[start : start + block]:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            t2 = time.perf_counter()
            t_project += t1 - t0
            t_raw += t2 - t1
    finally:
        j.close()
        os.close(fd)
    if path.read_bytes() != b"".join(chunks):
        raise AssertionError(f"{path}: the writer did not reproduce the workload's bytes")
    os.unlink(path)
    os.unlink(raw_path)
    return t_project, t_raw


def durable_one_thread(ctx: Context) -> Figure:
    size = ctx.size
    log, ends = ctx.log(SEED, size.events)
    ops = list(itertools.islice(workload.operations(SEED, size.events), size.durable_ops))
    ends = ends[: len(ops)]
    chunks = _chunks(_lines(log, ends[-1]), ends)
    t_project = t_raw = 0.0
    for _ in range(size.rounds):
        a, b = _interleaved_durable(ctx, ops, chunks)
        t_project, t_raw = t_project + a, t_raw + b
    n = ends[-1]
    return Figure(
        "durable `always`, 1 thread",
        n / t_project * size.rounds,
        "events/s",
        "raw os.write+fsync of the same bytes",
        n / t_raw * size.rounds,
        t_raw / t_project,
        ">=",
        0.6,
        f"{len(ops)} calls, {n} events, {sum(map(len, chunks)):,} bytes; one fsync per call; "
        f"the two alternate every 25 calls, {size.rounds} pass(es)",
    )


def _messages(count: int) -> list[dict[str, Any]]:
    out = []
    for op in workload.operations(SEED, max(count * 2, 1000)):
        if op.name == "append_message":
            kw = dict(op.kwargs)
            del kw["session_id"]
            out.append(kw)
            if len(out) == count:
                break
    if len(out) < count:
        raise AssertionError("workload too small for the thread run")
    return out


def drive_threads(
    j: Any,
    sids: list[str],
    parts: list[list[dict[str, Any]]],
    threads: int,
    prepare: Callable[[], object] | None = None,
) -> float:
    """Seconds for ``threads`` threads to append ``parts[i]`` to ``sids[i]`` through ``j``,
    thread ``i`` its part (one thread: the parts in turn, a message of each at a time).
    ``prepare`` runs in each thread before the clock starts."""
    if threads == 1:
        start = time.perf_counter()
        for row in zip(*parts, strict=True):
            for sid, kw in zip(sids, row, strict=True):
                j.append_message(sid, **kw)
        return time.perf_counter() - start
    barrier = threading.Barrier(threads + 1)

    def worker(i: int) -> None:
        if prepare is not None:
            prepare()
        barrier.wait()
        for kw in parts[i]:
            j.append_message(sids[i], **kw)

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start = time.perf_counter()
    barrier.wait()
    for t in pool:
        t.join()
    return time.perf_counter() - start


def _threaded(ctx: Context, msgs: list[dict[str, Any]], threads: int, writers: int) -> float:
    path = ctx.fresh(f"threads-{threads}.jsonl")
    with Journal.open(path, "always") as j:
        sids = [
            j.create_session("openai/gpt-4o", session_id=f"bench-{i}", idle_timeout_seconds=None)
            for i in range(writers)
        ]
        parts = [msgs[i::writers] for i in range(writers)]
        elapsed = drive_threads(j, sids, parts, threads)
        if j.last_pos != len(msgs) + writers + 1:
            raise AssertionError("thread run lost appends")
    os.unlink(path)
    return elapsed


def durable_threads(ctx: Context) -> Figure:
    size = ctx.size
    writers = 8
    msgs = _messages(writers * size.thread_msgs)
    # Alternate in four slices per round, so both sides meet the same disk weather.
    q = max(writers, len(msgs) // 4 // writers * writers)
    pieces = [msgs[k : k + q] for k in range(0, len(msgs) - q + 1, q)]
    t_eight = t_one = 0.0
    for _ in range(size.rounds):
        for piece in pieces:
            t_eight += _threaded(ctx, piece, writers, writers)
            t_one += _threaded(ctx, piece, 1, writers)
    n = sum(map(len, pieces)) * size.rounds
    return Figure(
        "durable `always`, 8 threads (group commit)",
        n / t_eight,
        "messages/s",
        "the same messages from 1 thread",
        n / t_one,
        t_one / t_eight,
        ">=",
        2.5,
        f"{writers} sessions x {size.thread_msgs} messages, one Journal shared by the threads",
    )


def _encode_write(path: Path, groups: list[list[AnyEvent]]) -> float:
    enc = msgspec.json.Encoder()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        start = time.perf_counter()
        for group in groups:
            data = b"".join([enc.encode(e) + b"\n" for e in group])
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    os.unlink(path)
    return elapsed


def _locked_floor(path: Path, groups: list[list[AnyEvent]]) -> float:
    """The least any process-safe writer does per call, with no validation and no state:
    take the flock, look for a replaced log (stat), give each event a new id and
    timestamp, encode it with its checksum, write, release the flock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        start = time.perf_counter()
        for group in groups:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.stat(path)
            data = b"".join(
                encode_line(
                    msgspec.structs.replace(
                        e, id=random_event_id(), ts=format_ts(datetime.now(UTC))
                    )
                )
                for e in group
            )
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            fcntl.flock(fd, fcntl.LOCK_UN)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
    os.unlink(path)
    return elapsed


def durability_none(ctx: Context) -> Figure:
    size = ctx.size
    log, ends = ctx.log(SEED, size.events)
    ops = list(workload.operations(SEED, size.events))
    lines = _lines(log)
    expected = log.read_bytes()
    groups: list[list[AnyEvent]] = []
    start = 0
    for end in ends:
        groups.append([decode_line(line[:-1]) for line in lines[start:end]])
        start = end
    del lines
    t_project, t_raw, t_floor = best_of(
        size.rounds,
        lambda: _replay(ctx, ops, "none", expected),
        lambda: _encode_write(ctx.fresh("raw-none.bin"), groups),
        lambda: _locked_floor(ctx.fresh("floor-none.bin"), groups),
    )
    n = ends[-1]
    return Figure(
        "durability `none`",
        n / t_project,
        "events/s",
        "msgspec encode + os.write of the same events",
        n / t_raw,
        t_raw / t_project,
        ">=",
        0.5,
        f"{len(ops):,} calls, {n:,} events, {len(expected) / 2**20:.0f} MiB; the least a "
        f"process-safe writer does per call (flock, stat, new id and timestamp, "
        f"checksum, write; no validation, no state): {n / t_floor:,.0f} events/s, ratio "
        f"{t_raw / t_floor:.2f}",
    )


def _open(path: Path) -> float:
    return timed(lambda: Journal.open(path, "none").close())


def _decode(path: Path) -> float:
    dec: msgspec.json.Decoder[Event] = msgspec.json.Decoder(AnyEvent)  # type: ignore[arg-type]

    def run() -> None:
        with open(path, "rb", buffering=1 << 20) as f:
            for line in f:
                dec.decode(line)

    return timed(run)


def open_log(ctx: Context) -> list[Figure]:
    size = ctx.size
    small, n_small = ctx.memory_log(size.mem_small)
    large, n = ctx.memory_log(size.mem_large)
    t_open, t_decode = best_of(
        max(1, min(2, size.rounds)), lambda: _open(large), lambda: _decode(large)
    )
    floor = child_peak_rss_mib(FLOOR_CODE)
    rss_small = child_peak_rss_mib(OPEN_CODE, str(small))
    rss_large = child_peak_rss_mib(OPEN_CODE, str(large))
    return [
        Figure(
            f"open a {n:,}-event log (Journal.open)",
            t_open,
            "s",
            "plain msgspec decode of the file",
            t_decode,
            t_open / t_decode,
            "<=",
            2.0,
            f"{large.stat().st_size / 2**20:.0f} MiB, {size.mem_sessions:,} sessions; "
            "ratio = open time / decode time",
        ),
        Figure(
            f"peak RSS opening {n:,} events",
            rss_large,
            "MiB",
            f"opening {n_small:,} events (same {size.mem_sessions:,} sessions)",
            rss_small,
            rss_large / rss_small,
            "<=",
            1.2,
            f"child process, getrusage(RUSAGE_CHILDREN); interpreter + journal import alone: "
            f"{floor:.1f} MiB; the writer keeps the last 65,536 event ids (a fixed window, "
            "full in both logs when both exceed it)",
        ),
    ]


def run(ctx: Context, section: Section) -> None:
    section.figures.append(durable_one_thread(ctx))
    section.figures.append(durable_threads(ctx))
    section.figures.append(durability_none(ctx))
    section.figures.extend(open_log(ctx))
