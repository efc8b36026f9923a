"""Benchmarks of session-journal, each figure a ratio against a baseline of the same run.

Usage::

    python tools/bench.py [--quick] [--only NAME[,NAME...]] [--json]

Sections: ``append`` (the writer vs raw writes of the same bytes), ``async`` (durable
appends from an event loop and from threads vs plain SQLite), ``projection``
(rebuild and replay vs an ideal bulk load and the seed's schema as written), ``live``
(the live projector: append-to-visible latency, a burst, idle CPU), ``import`` (legacy
import + projection vs rebuild alone), ``peer`` (eventsourcing), ``history`` (the memory
of rebuild and verify, and the writer's open, as the history grows ten-fold),
``jetstream`` (a log in a JetStream stream vs a file: appends, catch-up, server memory;
skipped without the nats extra). Each
prints the project's figure, its baseline, the ratio and the target, met or not.
``--quick`` finishes in under a minute, the full run in under ten. See BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_append
import bench_async
import bench_history
import bench_import
import bench_jetstream
import bench_live
import bench_peer
import bench_projection
from benchlib import SIZES, Context, Section, cpu_model, render

# name -> runner; a runner fills in its Section (figures, or a status and message).
SECTIONS: dict[str, Callable[[Context, Section], None]] = {
    "append": bench_append.run,
    "async": bench_async.run,
    "projection": bench_projection.run,
    "live": bench_live.run,
    "import": bench_import.run,
    "peer": bench_peer.run,
    "history": bench_history.run,
    "jetstream": bench_jetstream.run,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes: under a minute")
    p.add_argument("--only", metavar="NAME", help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--size", choices=sorted(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    size_name = args.size or os.environ.get("BENCH_SIZE") or ("quick" if args.quick else "full")
    size = SIZES[size_name]
    names = list(SECTIONS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    command = "python tools/bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    header = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "size": size.name,
        "command": command.strip(),
    }
    if not args.json:
        print(
            f"session-journal benchmarks: {header['date']}, {header['cpu']} "
            f"({header['cores']} cores), Python {header['python']}, size {size.name}"
        )
    results: list[Section] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sj-bench-", dir=args.workdir) as tmp:
        ctx = Context(size, Path(tmp))
        for name in names:
            section = Section(name)
            t0 = time.perf_counter()
            try:
                SECTIONS[name](ctx, section)
            except Exception as exc:  # one broken section must not lose the others' figures
                section.status = "error"
                section.message = f"{type(exc).__name__}: {exc}"
                section.figures.clear()
            section.seconds = time.perf_counter() - t0
            results.append(section)
            if not args.json:
                print(render(section), flush=True)
    total = time.perf_counter() - start
    if args.json:
        doc = {**header, "seconds": round(total, 1), "sections": [s.as_dict() for s in results]}
        print(json.dumps(doc, indent=2))
    else:
        figures = [f for s in results for f in s.figures]
        met = sum(f.met for f in figures)
        print(f"== {met} of {len(figures)} targets met, {total:.0f} s")
    return 1 if any(s.status == "error" for s in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
