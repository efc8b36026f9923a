"""How long a forgotten session's bytes stay on the servers of an R3 stream.

A forget on a stream replaces the messages holding the session's records and erases the
originals with the server's secure erase, which overwrites them in each server's store at
once. Each server's replication log (``$SYS/_js_/<group>/msgs/*.blk`` in its store) keeps
its own copy of the appends until that server compacts it. This tool starts a loopback
three-node cluster (``tools/nats_cluster.py``, ``sync_interval: always``), writes a session
whose words are unique, forgets it, optionally appends ``--appends`` more messages, then
looks for those words in every file of every server every ``--every`` seconds, printing
the files that still hold them, until none does (exit 0) or ``--timeout`` passes (exit 1)::

    python tools/stream_residue.py                  # nothing appended after the forget
    python tools/stream_residue.py --appends 9000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from nats_cluster import NatsCluster

from journal import Journal


def holding(root: Path, words: bytes) -> list[str]:
    """The files under ``root`` that hold ``words``, relative to it."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and words in p.read_bytes()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, default=0, help="messages appended after")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between looks")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to look for")
    args = parser.parse_args()
    words = f"private-{uuid.uuid4().hex}".encode()
    with tempfile.TemporaryDirectory() as scratch, NatsCluster(Path(scratch), 3) as cluster:
        root = Path(scratch)
        with Journal.open(f"{cluster.url}/RESIDUE?replicas=3") as j:
            j.create_session("m", session_id="kept", first_message="kept words")
            j.create_session("m", session_id="gone", first_message=words.decode())
            print(f"before the forget: {len(holding(root, words))} files hold the words")
            j.forget("gone")
            forgotten = time.monotonic()
            for k in range(args.appends):
                j.append_message("kept", "user", f"message {k}")
        print(f"appended {args.appends} after the forget")
        while True:
            files = holding(root, words)
            took = time.monotonic() - forgotten
            print(f"{took:5.0f} s after the forget: {files or 'no file holds the words'}")
            if not files:
                return
            if took > args.timeout:
                sys.exit(1)
            time.sleep(args.every)


if __name__ == "__main__":
    main()
