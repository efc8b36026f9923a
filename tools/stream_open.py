"""A writer's open on a long JetStream stream, with and without its checkpoint.

Starts one loopback ``nats-server`` (``tools/nats_cluster.py``, ``sync_interval:
always``), writes N closed sessions (each created with a first message, then archived)
and 1,000 open ones through a writer that keeps its checkpoint (``state_path``), then
times three opens of a new writer without a checkpoint (it reads the stream whole) and
three with it (it reads what followed only). Usage::

    python tools/stream_open.py --closed 200000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from nats_cluster import NatsCluster

from journal import Journal


@contextmanager
def long_stream(closed: int, then: Callable[[Journal], object]) -> Iterator[tuple[str, Path]]:
    """A stream on one fresh loopback server holding ``closed`` closed sessions (each
    created with a first message, then archived, 200 to a message), then what ``then``
    writes; yields its URL and the checkpoint of the writer that wrote it."""
    with tempfile.TemporaryDirectory() as scratch, NatsCluster(Path(scratch) / "n", 1) as c:
        url, state = f"{c.url}/L{uuid.uuid4().hex[:8]}", Path(scratch) / "writer.state"
        t0 = time.perf_counter()
        with Journal.open(url, state_path=state) as j:
            for first in range(0, closed, 200):
                with j.batch():
                    for k in range(first, min(first + 200, closed)):
                        j.archive(j.create_session("m", session_id=f"c{k}", first_message="hi"))
            then(j)
            records = j.last_pos
        print(f"wrote {records:,} records in {time.perf_counter() - t0:.1f} s", flush=True)
        yield url, state


def _open_sessions(j: Journal) -> None:
    for k in range(1000):
        j.create_session("m", session_id=f"o{k}", first_message="hi")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closed", type=int, default=20_000)
    args = parser.parse_args()
    with long_stream(args.closed, _open_sessions) as (url, state):
        for label, options in (("no checkpoint", {}), ("checkpoint", {"state_path": state})):
            for _ in range(3):
                t0 = time.perf_counter()
                with Journal.open(url, **options):  # type: ignore[arg-type]
                    took = time.perf_counter() - t0
                print(f"{label}: open {took:.3f} s", flush=True)


if __name__ == "__main__":
    main()
