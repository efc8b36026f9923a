"""Forgetting a session on a long JetStream stream: one created lately, one created first.

Starts one loopback ``nats-server`` (``tools/nats_cluster.py``, ``sync_interval:
always``), writes N closed sessions (each created with a first message, then archived,
200 to a message), then three sessions of a few messages, and times ``Journal.forget`` of
each of those (the search reads the stream from the message that holds the session's
creation, found by a binary search), then of three of the first sessions (the search
reads nearly the whole stream: what every forget read before). Usage::

    python tools/stream_forget.py --closed 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from stream_open import long_stream

from journal import Journal


def _late_sessions(j: Journal) -> None:
    for k in range(3):
        j.create_session("m", session_id=f"late{k}", first_message="private words")
        j.append_message(f"late{k}", "assistant", "an answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closed", type=int, default=20_000)
    args = parser.parse_args()
    with (
        long_stream(args.closed, _late_sessions) as (url, state),
        Journal.open(url, state_path=state) as j,
    ):
        for label, ids in (
            ("created last", ["late0", "late1", "late2"]),
            ("created first", ["c0", "c1", "c2"]),
        ):
            for session_id in ids:
                t0 = time.perf_counter()
                j.forget(session_id)
                print(f"forget a session {label}: {time.perf_counter() - t0:.3f} s", flush=True)


if __name__ == "__main__":
    main()
