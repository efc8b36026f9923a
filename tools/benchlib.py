"""Shared machinery of ``tools/bench.py``: sizes, figures, timing, child-process memory.

Every figure is a ratio against a baseline measured in the same run, on the same data, on
the same machine: absolute rates on a shared, noisy 2-core box mean little, ratios do.
Timed runs alternate project and baseline (``rounds`` times each) and keep the best time
of each, so a burst of noise from a neighbour hurts both sides or neither.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import workload

from journal.log.segments import LogView

TOOLS = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Size:
    """How much work each section does; ``tiny`` exists for the test suite only."""

    name: str
    rounds: int
    events: int  # the main workload
    durable_ops: int  # calls replayed with durability "always"
    thread_msgs: int  # messages per thread in the group-commit run
    mem_large: int  # events of the log for open time and peak memory (all sessions open)
    mem_small: int  # its prefix compared with it for the writer's memory
    proj_mem_large: int  # the two prefixes of it compared for the rebuild's memory
    proj_mem_small: int
    mem_sessions: int
    peer: tuple[tuple[int, int], ...]  # (sessions, messages per session)
    catchup_msgs: int  # messages per log in the catch-up-by-session-length comparison
    live: tuple[float, int, float]  # live projector: steady seconds, burst events, idle seconds
    legacy: tuple[int, int]  # legacy import: sessions, messages per session
    async_msgs: int = 0  # messages per timed run of the async section
    # The history section: events of the short and the long log (its prefix), and
    # (open sessions, closed sessions of the short log, of the long one) for Journal.open.
    hist_events: tuple[int, int] = (500, 5_000)
    hist_sessions: tuple[int, int, int] = (20, 40, 400)


SIZES: dict[str, Size] = {
    "tiny": Size(
        "tiny",
        1,
        600,
        30,
        5,
        2_000,
        400,
        2_000,
        400,
        12,
        ((2, 10), (1, 30)),
        600,
        (0.5, 300, 0.5),
        (10, 20),
        async_msgs=128,
    ),
    "quick": Size(
        "quick",
        1,
        20_000,
        1_000,
        150,
        100_000,
        70_000,
        20_000,
        2_000,
        200,
        ((4, 50), (1, 300)),
        10_000,
        (3.0, 10_000, 3.0),
        (100, 100),
        async_msgs=1_280,
        hist_events=(5_000, 50_000),
        hist_sessions=(1_000, 2_000, 20_000),
    ),
    "full": Size(
        "full",
        2,
        200_000,
        5_000,
        500,
        1_000_000,
        100_000,
        1_000_000,
        100_000,
        2_000,
        ((20, 50), (4, 500)),
        100_000,
        (30.0, 50_000, 10.0),
        (1_000, 100),
        async_msgs=3_200,
        hist_events=(100_000, 1_000_000),
        hist_sessions=(1_000, 20_000, 200_000),
    ),
}


@dataclass
class Figure:
    """One measured figure, its baseline and the ratio checked against a target.

    ``op`` is ">=" when the ratio must reach ``target``, "<=" when it must stay under it.
    ``judged`` is "value" for the few targets that are absolute by nature (a latency in
    milliseconds, a share of a core): then ``target`` bounds the figure itself, in
    ``unit``, and the ratio to the baseline is printed for the reader only.
    """

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    op: Literal[">=", "<="]
    target: float
    note: str = ""
    judged: Literal["ratio", "value"] = "ratio"

    @property
    def met(self) -> bool:
        x = self.value if self.judged == "value" else self.ratio
        if not math.isfinite(x):
            return False
        return x >= self.target if self.op == ">=" else x <= self.target

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["met"] = self.met
        return d


@dataclass
class Section:
    """A section's outcome: figures, or a status line saying why there are none."""

    name: str
    status: Literal["ok", "skipped", "error"] = "ok"
    message: str = ""
    figures: list[Figure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "seconds": round(self.seconds, 2),
            "figures": [f.as_dict() for f in self.figures],
        }


class Context:
    """The run's size and scratch directory; generated logs are cached by parameters."""

    def __init__(self, size: Size, workdir: Path) -> None:
        self.size = size
        self.dir = workdir
        self._logs: dict[tuple[Any, ...], tuple[Path, list[int]]] = {}
        self._n = 0

    def fresh(self, stem: str) -> Path:
        """A new path in the scratch directory (nothing there yet)."""
        self._n += 1
        return self.dir / f"{self._n:03d}-{stem}"

    def log(
        self,
        seed: int,
        events: int,
        *,
        sessions: int | None = None,
        fixed_len: int | None = None,
        concurrency: int = 32,
    ) -> tuple[Path, list[int]]:
        """The workload log for these parameters and the position after each call."""
        key = (seed, events, sessions, fixed_len, concurrency)
        if key not in self._logs:
            path = self.fresh(f"w{seed}-{events}-{sessions}-{fixed_len}.jsonl")
            ends = workload.write_log(
                str(path),
                seed,
                events,
                sessions=sessions,
                fixed_len=fixed_len,
                concurrency=concurrency,
            )
            self._logs[key] = (path, ends)
        return self._logs[key]

    def memory_log(self, events: int) -> tuple[Path, int]:
        """The memory log, or its prefix of about ``events`` events cut between calls.

        Every session of the memory log is open from the start, so that each prefix holds
        them all: prefixes differ in events, not in sessions.
        """
        size = self.size
        large, ends = self.log(
            2, size.mem_large, sessions=size.mem_sessions, concurrency=size.mem_sessions
        )
        return self.prefix(large, ends, events)

    def prefix(self, log: Path, ends: list[int], events: int) -> tuple[Path, int]:
        """``log``'s prefix of about ``events`` events, cut between calls (``ends``: the
        position after each call), and its number of events."""
        if events >= ends[-1]:
            return log, ends[-1]
        cut = max((e for e in ends if e <= events), default=ends[0])
        key = ("prefix", str(log), cut)
        if key not in self._logs:
            prefix = self.fresh(f"prefix-{cut}.jsonl")
            # Through the whole log: a long one is sealed into segments as it is written.
            with (
                LogView(str(log)) as view,
                closing(view.lines(0)) as src,
                open(prefix, "wb") as dst,
            ):
                for i, line in enumerate(src):
                    if i == cut:
                        break
                    dst.write(line)
            self._logs[key] = (prefix, [cut])
        return self._logs[key][0], cut


def best_of(rounds: int, *runs: Callable[[], float]) -> list[float]:
    """Run each timed function ``rounds`` times, alternating; the best time of each."""
    best = [math.inf] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            best[i] = min(best[i], run())
    return best


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def child_peak_rss_mib(code: str, *args: str) -> float:
    """Peak RSS (MiB) of a child Python process running ``code``.

    Read with ``getrusage(RUSAGE_CHILDREN)`` in a fresh wrapper process: that figure is the
    largest of all children ever waited for, so each measurement needs its own parent.
    """
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TOOLS), *([path] if path else [])]))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(out.stdout.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def render(section: Section) -> str:
    lines = [f"== {section.name}  ({section.seconds:.1f} s)"]
    if section.status != "ok":
        lines.append(f"  {section.status}: {section.message}")
    for f in section.figures:
        if f.judged == "value":
            target = f"ratio {f.ratio:.2f}  |  target {f.op} {f.target:g} {f.unit} (absolute)"
        else:
            target = f"ratio {f.ratio:.2f} (target {f.op} {f.target:g})"
        lines.append(
            f"  {f.name}: {fmt(f.value)} {f.unit}  |  {f.baseline}: {fmt(f.baseline_value)} "
            f"{f.unit}  |  {target}  {'met' if f.met else 'NOT MET'}"
        )
        if f.note:
            lines.append(f"      {f.note}")
    return "\n".join(lines)
