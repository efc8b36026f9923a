"""Writer processes on one JetStream log, a server killed under them: audit the stream.

Starts a three-node loopback cluster (``tools/nats_cluster.py``, ``sync_interval:
always``) and an R3 stream, then ``--writers`` processes that append for ``--seconds``:
each to its own session and all of them to one shared session, every message with a
deterministic event id, each receipt printed once the call returned (that is the
acknowledgement). No lock spans the processes: they race for the stream's end, and a
loser catches up and tries again. Halfway through, the stream's leader is killed with
SIGKILL; it is started again a few seconds later. A call that finds no server raises
``LogUnavailable`` and the writer retries it with the same event id.

Two nodes project the stream all along, each its own database: ``session-journal watch``
processes (through each node's copy of the stream), started before the writers and
connecting to the servers in a different order.

At the end the whole stream is read back and checked: every acknowledged message is in it
exactly once, at the position and seq its receipt gave; positions are gapless; each
session's seqs are gapless. Once both watchers have caught up they are stopped; their
databases must hold identical tables, and ``session-journal verify`` must exit 0 on each.

    python tools/jetstream_writers.py --writers 4 --seconds 20   # prints "... 0 lost ..."
    python tools/jetstream_writers.py --writers 2 --seconds 6 --json   # the test suite's
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import closing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from nats_cluster import NatsCluster

NAMESPACE = uuid.UUID("5e1d2c6a-9b0f-4c3e-8a7d-2f6b1e0c9d43")
SHARED = "shared"


def event_id(writer: int, i: int) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{writer}-{i}"))


def child(url: str, writer: int, seconds: float) -> None:
    """Append until the time is up; print one JSON receipt per acknowledged message."""
    from journal import Journal
    from journal.log.jetstream import LogUnavailable

    own = f"w{writer}"
    with Journal.open(url) as j:

        def retried(call: Any, *args: Any, **kwargs: Any) -> Any:
            while True:
                try:
                    return call(*args, **kwargs)
                except LogUnavailable:
                    continue  # the same event id: stored once whatever the first try did

        retried(j.create_session, "m", session_id=own, event_id=event_id(writer, -1))
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            session = SHARED if i % 2 else own
            eid = event_id(writer, i)
            r = retried(j.append_message, session, "user", f"{writer}-{i}", event_id=eid)
            print(json.dumps([eid, r.pos, r.session_id, r.seq]), flush=True)
            i += 1


def _leader(cluster: NatsCluster, stream: str) -> int:
    import nats

    async def ask() -> str:
        nc = await nats.connect(cluster.urls)
        try:
            info = await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()
        assert info.cluster is not None and info.cluster.leader is not None
        return str(info.cluster.leader)

    return cluster.node_of(asyncio.run(ask()))


def _cli(url: str, db: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "projector", "--log", url, "--db", str(db), *args]
    return subprocess.Popen(command, text=True, **popen)


def _checkpoint_pos(db: Path) -> int:
    from projector.db import readonly_uri

    try:
        with closing(sqlite3.connect(readonly_uri(db), uri=True)) as conn:
            row = conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()
    except sqlite3.Error:
        return -1  # not made yet
    return int(row[0]) if row else -1


def _projections(url: str, dbs: list[Path], watchers: list[Any], last_pos: int) -> dict[str, Any]:
    """Wait for the watchers to reach ``last_pos``, stop them, compare and verify."""
    from projector import canonical_hash

    deadline = time.monotonic() + 120
    while any(_checkpoint_pos(db) < last_pos for db in dbs) and time.monotonic() < deadline:
        if any(w.poll() is not None for w in watchers):
            break
        time.sleep(0.1)
    caught_up = [_checkpoint_pos(db) == last_pos for db in dbs]
    for w in watchers:
        w.send_signal(signal.SIGTERM)
    errors = [w.communicate(timeout=120)[1] for w in watchers]
    verified = [
        _cli(url, db, "verify", stdout=subprocess.PIPE, stderr=subprocess.PIPE) for db in dbs
    ]
    for v in verified:
        v.communicate(timeout=300)
    return {
        "watch_exit": [w.returncode for w in watchers],
        "watch_caught_up": caught_up,
        "watch_errors": [e[-2000:] for e, w in zip(errors, watchers, strict=True) if w.returncode],
        "projections_identical": int(len({canonical_hash(db) for db in dbs}) == 1),
        "verify_exit": [v.returncode for v in verified],
    }


def run(writers: int, seconds: float, directory: Path) -> dict[str, Any]:
    from journal import Journal
    from journal.events import MessageAppended

    with NatsCluster(directory / "nats", 3) as cluster:
        stream = f"W{uuid.uuid4().hex[:8]}"
        url = f"{cluster.url}/{stream}?replicas=3"
        with Journal.open(url) as j:
            j.create_session("m", session_id=SHARED)
        # The second node lists the servers the other way round: it connects elsewhere.
        hosts = cluster.url.removeprefix("nats://").split(",")
        node_urls = [url, f"nats://{','.join(reversed(hosts))}/{stream}?replicas=3"]
        dbs = [directory / f"node{k}.db" for k in range(2)]
        watchers = [
            _cli(u, db, "watch", "--poll-interval", "0.5", stderr=subprocess.PIPE)
            for u, db in zip(node_urls, dbs, strict=True)
        ]
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--child", url, str(w), str(seconds)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for w in range(writers)
        ]
        outputs: list[str] = [""] * writers
        errors: list[str] = [""] * writers

        def collect(k: int) -> None:
            outputs[k], errors[k] = procs[k].communicate()

        readers = [threading.Thread(target=collect, args=(k,)) for k in range(writers)]
        for t in readers:
            t.start()
        time.sleep(seconds / 2)
        victim = _leader(cluster, stream)
        cluster.kill(victim)
        time.sleep(min(5.0, seconds / 4))
        cluster.restart(victim)
        for t in readers:
            t.join()
        failed = [
            (p.returncode, e[-2000:]) for p, e in zip(procs, errors, strict=True) if p.returncode
        ]
        if failed:
            raise SystemExit(f"a writer failed: {failed}")
        acked = [
            json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("[")
        ]
        with Journal.open(url) as j:
            events = [e for e, _ in j._log.read()]
        projections = _projections(url, dbs, watchers, len(events))
    mine = [
        {str(e) for e in (event_id(w, i) for i in range(len(acked) + 1))} for w in range(writers)
    ]
    by_id = Counter(e.id for e in events)
    where = {e.id: (e.pos, getattr(e, "session_id", None), getattr(e, "seq", None)) for e in events}
    lost = sum(1 for eid, *_ in acked if by_id[eid] == 0)
    duplicated = sum(1 for eid, *_ in acked if by_id[eid] > 1)
    misplaced = sum(
        1 for eid, pos, sid, seq in acked if where.get(eid) not in (None, (pos, sid, seq))
    )
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if isinstance(e, MessageAppended):
            seqs[e.session_id].append(e.seq)
    return {
        "writers": writers,
        "seconds": seconds,
        "killed_node": victim,
        "acknowledged": len(acked),
        "lost": lost,
        "duplicated": duplicated,
        "misplaced": misplaced,
        "positions_gapless": int([e.pos for e in events] == list(range(1, len(events) + 1))),
        "seqs_gapless": int(all(s == list(range(1, len(s) + 1)) for s in seqs.values())),
        "shared_messages": len(seqs[SHARED]),
        # Fairness: no lock spans the processes, and a writer that just appended knows the
        # end while the others must read it first.
        "per_writer": [sum(1 for eid, *_ in acked if eid in mine[w]) for w in range(writers)],
        **projections,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--dir", help="where the servers keep their files (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "WRITER", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        url, writer, seconds = args.child
        child(url, int(writer), float(seconds))
        return
    with tempfile.TemporaryDirectory() as scratch:
        stats = run(args.writers, args.seconds, Path(args.dir or scratch))
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"{stats['writers']} writers, {stats['seconds']:g} s, node {stats['killed_node']} "
            f"(the stream's leader) killed halfway and restarted: {stats['acknowledged']} "
            f"acknowledged, {stats['lost']} lost, {stats['duplicated']} duplicated, "
            f"{stats['misplaced']} not where their receipt said; positions gapless: "
            f"{bool(stats['positions_gapless'])}, seqs gapless: {bool(stats['seqs_gapless'])} "
            f"({stats['shared_messages']} messages in the shared session; acknowledged per "
            f"writer: {stats['per_writer']}); two watching nodes: exit {stats['watch_exit']}, "
            f"caught up {stats['watch_caught_up']}, identical tables: "
            f"{bool(stats['projections_identical'])}, verify exit {stats['verify_exit']}"
        )
        for error in stats["watch_errors"]:
            print(f"a watcher failed: {error}", file=sys.stderr)
    bad = stats["lost"] or stats["duplicated"] or stats["misplaced"]
    projected = (
        stats["watch_exit"] == [0, 0]
        and all(stats["watch_caught_up"])
        and stats["projections_identical"]
        and stats["verify_exit"] == [0, 0]
    )
    gapless = stats["positions_gapless"] and stats["seqs_gapless"]
    sys.exit(0 if gapless and projected and not bad else 1)


if __name__ == "__main__":
    main()
