"""The history section of ``tools/bench.py``: what a longer history costs in memory and time.

* ``rebuild`` and ``verify``, each in a child process, on a workload log and on its prefix
  of a tenth of the events (``hist_events``): peak RSS of the long one against the short
  one's. The workload has about one session per 20 messages, so the long log holds ten
  times the sessions, nearly all of them finished long before its end;
* ``Journal.open`` of a log with ``hist_sessions[0]`` open sessions and
  ``hist_sessions[1]`` vs ``hist_sessions[2]`` closed (archived) ones: the time of the
  *second* open (a writer may keep a state checkpoint beside the log, which the first
  open writes) and the RSS the open adds to the process, each in a child process.
  Targets: the long log's open within 1.5 times the short one's + 0.1 s, and the RSS it adds
  within the short one's + 16 MiB; the ratio printed is the figure over that bound.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from contextlib import closing
from pathlib import Path

import msgspec
from benchlib import Context, Figure, Section, child_peak_rss_mib

from journal import events as ev
from journal.log.segments import LogView
from projector.sync.rebuild import remove_database

SEED = 3
MESSAGES_PER_SESSION = 20
REBUILD_CODE = "import sys, projector\nprojector.rebuild(sys.argv[1], sys.argv[2])\n"
VERIFY_CODE = (
    "import sys\nfrom projector.checks.verify import verify\n"
    "assert verify(sys.argv[1], sys.argv[2]).ok\n"
)
# Run twice, each time in a fresh child: opens the log, prints the open's seconds and the
# RSS it added (the peak during it minus RSS before it). The peak is the process's VmHWM,
# not getrusage's ru_maxrss: a child's ru_maxrss starts from its parent's peak at the
# fork (the kernel carries it over the exec), and this process's parent is the bench.
_OPEN_CODE = """
import sys, time
from journal import Journal
def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))
before = status_kib("VmRSS:")
t = time.perf_counter()
j = Journal.open(sys.argv[1], "none")
elapsed = time.perf_counter() - t
peak = status_kib("VmHWM:")
j.close()
print(elapsed, (peak - before) / 1024)
"""
OPEN_ALLOWANCE_S = 0.1
OPEN_FACTOR = 1.5
RSS_ALLOWANCE_MIB = 16.0


def _logs(ctx: Context) -> tuple[tuple[Path, int], tuple[Path, int]]:
    small, large = ctx.size.hist_events
    log, ends = ctx.log(SEED, large, sessions=max(12, large // MESSAGES_PER_SESSION))
    return ctx.prefix(log, ends, small), (log, ends[-1])


def memory(ctx: Context) -> list[Figure]:
    (small, n_small), (large, n_large) = _logs(ctx)
    peaks: dict[str, list[float]] = {"rebuild": [], "verify": []}
    for log in (small, large):
        db = ctx.fresh("history.db")
        peaks["rebuild"].append(child_peak_rss_mib(REBUILD_CODE, str(log), str(db)))
        peaks["verify"].append(child_peak_rss_mib(VERIFY_CODE, str(log), str(db)))
        remove_database(str(db))
    with LogView(str(large)) as view, closing(view.lines(0)) as lines:
        sessions = sum(1 for line in lines if b'"session_created"' in line)
    return [
        Figure(
            f"{what} peak RSS, {n_large:,} events",
            peak[1],
            "MiB",
            f"{n_small:,} events",
            peak[0],
            peak[1] / peak[0],
            "<=",
            1.3,
            f"child process, getrusage(RUSAGE_CHILDREN); the long log holds {sessions:,} "
            "sessions, the short one (its prefix) about a tenth of them",
        )
        for what, peak in peaks.items()
    ]


def write_sessions_log(path: Path, open_sessions: int, closed: int) -> int:
    """A log of ``open_sessions`` sessions open throughout and ``closed`` sessions created,
    given two messages and archived one after the other; its events, written directly."""
    encode = ev.encode_line
    replace = msgspec.structs.replace
    ts = "2026-01-01T00:00:00.000000Z"
    pos = 0
    with path.open("wb", buffering=1 << 20) as out:

        def write(event: ev.AnyEvent) -> None:
            nonlocal pos
            pos += 1
            out.write(encode(replace(event, pos=pos, id=str(uuid.UUID(int=pos)), ts=ts)))

        def session(sid: str) -> None:
            write(ev.SessionCreated(session_id=sid, model_id="m", title="a title"))
            write(ev.MessageAppended(session_id=sid, seq=1, role="user", content="hello " * 20))

        write(ev.ModelRegistered(model_id="m", model_name="M"))
        for i in range(open_sessions):
            session(f"open-{i:07d}")
        for i in range(closed):
            sid = f"closed-{i:07d}"
            session(sid)
            write(ev.MessageAppended(session_id=sid, seq=2, role="assistant", content="ok " * 30))
            write(ev.SessionArchived(session_id=sid))
        for i in range(open_sessions):
            sid = f"open-{i:07d}"
            write(ev.MessageAppended(session_id=sid, seq=2, role="user", content="more"))
    return pos


def _second_open(path: Path) -> tuple[float, float]:
    """(seconds, MiB of RSS added) of the second ``Journal.open`` of ``path``."""
    results = []
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", _OPEN_CODE, str(path)], capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        seconds, added = out.stdout.split()
        results.append((float(seconds), float(added)))
    return results[-1]


def opening(ctx: Context) -> list[Figure]:
    open_sessions, closed_small, closed_large = ctx.size.hist_sessions
    measured = []
    for closed in (closed_small, closed_large):
        path = ctx.fresh(f"closed-{closed}.jsonl")
        events = write_sessions_log(path, open_sessions, closed)
        measured.append((events, *_second_open(path)))
    (n_small, t_small, rss_small), (n_large, t_large, rss_large) = measured
    time_bound = OPEN_FACTOR * t_small + OPEN_ALLOWANCE_S
    rss_bound = rss_small + RSS_ALLOWANCE_MIB
    base = f"{open_sessions:,} open sessions"
    return [
        Figure(
            f"second Journal.open, {closed_large:,} closed sessions",
            t_large,
            "s",
            f"{closed_small:,} closed",
            t_small,
            t_large / time_bound,
            "<=",
            1.0,
            f"{base}; {n_large:,} vs {n_small:,} events; ratio = time / "
            f"({OPEN_FACTOR:g} x the short log's + {OPEN_ALLOWANCE_S:g} s); "
            f"long/short {t_large / t_small:.2f}",
        ),
        Figure(
            f"RSS added by the second Journal.open, {closed_large:,} closed sessions",
            rss_large,
            "MiB",
            f"{closed_small:,} closed",
            rss_small,
            rss_large / rss_bound,
            "<=",
            1.0,
            f"{base}; peak RSS during the open minus RSS before it, child process; ratio = "
            f"added / (the short log's + {RSS_ALLOWANCE_MIB:g} MiB)",
        ),
    ]


def run(ctx: Context, section: Section) -> None:
    section.figures.extend(memory(ctx))
    section.figures.extend(opening(ctx))
