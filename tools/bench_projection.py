"""The projection section of ``tools/bench.py``: rebuild and replay against two baselines.

* ``projector.rebuild`` of the workload log vs the ideal bulk load of the very rows it
  produced into the seed's schema (and, in the note, into the project's own; see
  ``bench_seed``);
* ``projector.replay`` catching up the second half of the log into a database holding the
  first half vs the ideal load of the rows that differ, and vs the seed as written
  applying the same second half;
* the replay catch-up rate with sessions of 10,000 messages vs sessions of 100;
* the peak memory of a child process rebuilding a log of ``mem_large`` events vs one of
  ``mem_small`` events.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench_seed import (
    Rows,
    SeedLoader,
    ideal_catch_up,
    ideal_load,
    read_columns,
    read_rows,
    seed_connect,
    seed_ideal_load,
)
from benchlib import Context, Figure, Section, best_of, child_peak_rss_mib, timed

import projector
from journal import LogReader
from projector.sync.rebuild import remove_database

SEED = 1
REBUILD_CODE = "import sys, projector\nprojector.rebuild(sys.argv[1], sys.argv[2])\n"


def _copy_db(src: Path, dst: Path) -> None:
    import sqlite3

    with sqlite3.connect(str(src)) as a, sqlite3.connect(str(dst)) as b:
        a.backup(b)
    a.close()
    b.close()


_REBUILT: dict[Path, Path] = {}


def _rebuilt(ctx: Context, log: Path) -> Path:
    """A projector database of the whole log, built once per run."""
    if log not in _REBUILT:
        db = ctx.fresh("rebuilt.db")
        projector.rebuild(str(log), str(db))
        _REBUILT[log] = db
    return _REBUILT[log]


def rebuild(ctx: Context) -> Figure:
    log, ends = ctx.log(SEED, ctx.size.events)
    n = ends[-1]
    rows = read_rows(_rebuilt(ctx, log))

    def project() -> float:
        db = ctx.fresh("rebuild.db")
        t = timed(lambda: projector.rebuild(str(log), str(db)))
        remove_database(str(db))
        return t

    def ideal_seed() -> float:
        db = ctx.fresh("ideal-seed.db")
        loaded: list[Rows] = []
        t = timed(lambda: loaded.append(seed_ideal_load(rows, db)))
        if read_columns(db, loaded[0]) != loaded[0]:
            raise AssertionError("the seed-schema bulk load did not hold the rebuilt rows")
        remove_database(str(db))
        return t

    def ideal_own() -> float:
        db = ctx.fresh("ideal.db")
        t = timed(lambda: ideal_load(rows, db))
        if read_rows(db) != rows:
            raise AssertionError("the ideal bulk load did not reproduce the rebuilt rows")
        remove_database(str(db))
        return t

    t_project, t_seed, t_own = best_of(ctx.size.rounds, project, ideal_seed, ideal_own)
    return Figure(
        "rebuild",
        n / t_project,
        "events/s",
        "ideal bulk load of the same rows into the seed schema",
        n / t_seed,
        t_seed / t_project,
        ">=",
        1.0,
        f"{n:,} events, {log.stat().st_size / 2**20:.0f} MiB of log; into the project's "
        f"own schema (fewer indexes) the same load ran at {n / t_own:,.0f} events/s, "
        f"ratio {t_own / t_project:.2f}",
    )


def _halves(ctx: Context, log: Path, n: int) -> tuple[Path, int]:
    """A projector database holding the first half of ``log``; returns it and its pos."""
    mid = n // 2
    half = ctx.fresh("half.db")
    projector.rebuild(str(log), str(half), until=mid)
    return half, mid


def _replay_time(ctx: Context, log: Path, half: Path) -> float:
    db = ctx.fresh("catchup.db")
    _copy_db(half, db)
    t = timed(lambda: projector.replay(str(log), str(db)))
    remove_database(str(db))
    return t


def replay(ctx: Context) -> list[Figure]:
    log, ends = ctx.log(SEED, ctx.size.events)
    n = ends[-1]
    half, mid = _halves(ctx, log, n)
    before, after = read_rows(half), read_rows(_rebuilt(ctx, log))
    events = [e for e, _ in LogReader(str(log))]
    seed_half = ctx.fresh("seed-half.db")
    conn = seed_connect(seed_half)
    SeedLoader(conn).load(events[:mid])
    conn.close()

    def ideal() -> float:
        db = ctx.fresh("ideal-half.db")
        ideal_load(before, db)
        t = timed(lambda: ideal_catch_up(before, after, db))
        if read_rows(db) != after:
            raise AssertionError("the ideal catch-up did not reproduce the replayed rows")
        remove_database(str(db))
        return t

    def seed() -> float:
        db = ctx.fresh("seed.db")
        _copy_db(seed_half, db)
        conn = seed_connect(db)
        loader = SeedLoader(conn)
        # The seed's loader needs each session's model: fold the first half's creations.
        for e in events[:mid]:
            if type(e).__struct_config__.tag == "session_created":
                loader.models[e.session_id] = (e.model_id, e.model_name)  # type: ignore[union-attr]
        t = timed(lambda: loader.load(events[mid:]))
        conn.close()
        remove_database(str(db))
        return t

    t_project, t_ideal, t_seed = best_of(
        ctx.size.rounds, lambda: _replay_time(ctx, log, half), ideal, seed
    )
    k = n - mid
    note = f"second half of {n:,} events ({k:,}) into a database holding the first half"
    return [
        Figure(
            "replay catch-up",
            k / t_project,
            "events/s",
            "ideal load of the differing rows",
            k / t_ideal,
            t_ideal / t_project,
            ">=",
            0.5,
            note,
        ),
        Figure(
            "replay catch-up",
            k / t_project,
            "events/s",
            "seed as written (5,000/transaction)",
            k / t_seed,
            t_seed / t_project,
            ">=",
            3.0,
            note,
        ),
    ]


def catch_up_by_length(ctx: Context) -> Figure:
    msgs = ctx.size.catchup_msgs
    long_len = min(10_000, max(200, msgs // 2 if msgs < 10_000 else msgs))
    rates: dict[int, Callable[[], float]] = {}
    sizes: dict[int, int] = {}
    for length in (100, long_len):
        log, ends = ctx.log(4, msgs, fixed_len=length)
        half, mid = _halves(ctx, log, ends[-1])
        sizes[length] = ends[-1] - mid
        rates[length] = lambda log=log, half=half: _replay_time(ctx, log, half)
    t_long, t_short = best_of(ctx.size.rounds, rates[long_len], rates[100])
    r_long, r_short = sizes[long_len] / t_long, sizes[100] / t_short
    return Figure(
        f"replay catch-up, {long_len:,} messages/session",
        r_long,
        "events/s",
        "100 messages/session",
        r_short,
        r_long / r_short,
        ">=",
        0.9,
        f"{msgs:,} messages per log; second half replayed onto the first",
    )


def rebuild_memory(ctx: Context) -> Figure:
    small, n_small = ctx.memory_log(ctx.size.proj_mem_small)
    large, n = ctx.memory_log(ctx.size.proj_mem_large)
    peaks = []
    for log in (small, large):
        db = ctx.fresh("mem.db")
        peaks.append(child_peak_rss_mib(REBUILD_CODE, str(log), str(db)))
        remove_database(str(db))
    return Figure(
        f"rebuild peak RSS, {n:,} events",
        peaks[1],
        "MiB",
        f"{n_small:,} events",
        peaks[0],
        peaks[1] / peaks[0],
        "<=",
        1.2,
        f"child process, getrusage(RUSAGE_CHILDREN); both logs hold the same "
        f"{ctx.size.mem_sessions:,} sessions (one a prefix of the other)",
    )


def run(ctx: Context, section: Section) -> None:
    section.figures.append(rebuild(ctx))
    section.figures.extend(replay(ctx))
    section.figures.append(catch_up_by_length(ctx))
    section.figures.append(rebuild_memory(ctx))
