"""The live projector: exactly-once under a concurrent writer, truncation, restarts, the
polling backstop, the watch lock, signals, torn tails, and no leaked threads or descriptors.

Nothing here asserts a duration: each test waits for a condition with a generous deadline.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from journal import CorruptLog, Journal, LogError, LogReader
from projector import canonical_hash, rebuild, verify
from projector.db import readonly_uri
from projector.watch import AlreadyWatching, BatchReport, lock_path, watch

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 120.0  # generous: only a failing test waits this long
CLI = str(Path(sys.executable).parent / "session-journal")


def canonical(db: Path) -> str:
    return canonical_hash(str(db))


def rebuild_hash(log: Path, tmp: Path) -> str:
    """The canonical hash of a clean rebuild of ``log``, in a file of its own."""
    fresh = tmp / f"fresh-{time.monotonic_ns()}.db"
    rebuild(str(log), str(fresh))
    return canonical(fresh)


def checkpoint_pos(db: Path) -> int:
    """The projection's checkpoint, read as any reader would (-1: no database yet)."""
    if not db.exists():
        return -1
    conn = sqlite3.connect(readonly_uri(db), uri=True)
    try:
        row = conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()
    except sqlite3.OperationalError:
        return -1
    finally:
        conn.close()
    return int(row[0]) if row else -1


def log_last_pos(log: Path) -> int:
    reader = LogReader(str(log))
    for _ in reader:
        pass
    return reader.last_pos


# -- helpers -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every thread and descriptor a test's watcher opened is gone when it returns."""
    threads = set(threading.enumerate())
    fds = set(os.listdir("/proc/self/fd"))
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        if not extra:
            break
        time.sleep(0.02)
    assert extra == []
    assert set(os.listdir("/proc/self/fd")) - fds == set()


class Watcher:
    """``watch`` in a thread, as a host app runs it."""

    def __init__(self, log: Path, db: Path, **kwargs: object) -> None:
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.batches: list[BatchReport] = []
        kwargs.setdefault("poll_interval", 0.2)

        def run() -> None:
            try:
                watch(str(log), str(db), stop=self.stop, on_batch=self.batches.append, **kwargs)  # type: ignore[arg-type]
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, name="test-watcher")
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def wait_for(condition: Callable[[], bool], what: str, watcher: Watcher | None = None) -> None:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        if watcher is not None and watcher.error is not None:
            raise watcher.error
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def writer(log: Path, seed: int, events: int) -> subprocess.Popen[bytes]:
    """Another process appends the seeded workload to ``log``."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import workload; "
        "workload.write_log(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(ROOT / "tools"), str(log), str(seed), str(events)]
    )


def appender(log: Path, messages: int) -> subprocess.Popen[bytes]:
    """Another process appends ``messages`` to a new session of an existing log."""
    code = (
        "import sys; from journal import Journal\n"
        "with Journal.open(sys.argv[1], 'none') as j:\n"
        "    sid = j.create_session(model_id='test/appender')\n"
        "    for i in range(int(sys.argv[2])):\n"
        "        j.append_message(sid, role='user', content=f'message {i}')\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(log), str(messages)])


def write_log(log: Path, seed: int, events: int) -> None:
    assert writer(log, seed, events).wait(DEADLINE) == 0


def converged(log: Path, db: Path) -> Callable[[], bool]:
    return lambda: log.exists() and checkpoint_pos(db) == log_last_pos(log)


# -- tests -------------------------------------------------------------------------------
def test_concurrent_writer_applied_exactly_once(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    w = Watcher(log, db)  # before the log exists: it waits for it
    try:
        proc = writer(log, seed=1, events=3000)
        assert proc.wait(DEADLINE) == 0
        wait_for(converged(log, db), "the watcher to reach the end of the log", w)
    finally:
        w.close()
    assert canonical(db) == rebuild_hash(log, tmp_path)
    assert sum(b.applied for b in w.batches) == log_last_pos(log)


def test_truncation_and_replacement_converge_to_a_rebuild(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=2, events=800)
    w = Watcher(log, db)
    try:
        wait_for(converged(log, db), "the first catch-up", w)
        # Replaced: another log, written beside it and renamed over it.
        other = tmp_path / "other.jsonl"
        write_log(other, seed=3, events=500)
        os.replace(other, log)
        wait_for(lambda: canonical(db) == rebuild_hash(log, tmp_path), "replacement", w)
        # Truncated in place to a prefix, then written over with different records.
        data = log.read_bytes()
        cut = data.index(b"\n", len(data) // 3) + 1
        with open(log, "r+b") as f:
            f.truncate(cut)
        wait_for(lambda: checkpoint_pos(db) == log_last_pos(log), "truncation", w)
        with open(log, "r+b") as f:
            f.truncate(0)
        write_log(log, seed=4, events=300)
        wait_for(lambda: canonical(db) == rebuild_hash(log, tmp_path), "rewrite", w)
    finally:
        w.close()
    assert any(b.rebuilt for b in w.batches)


def test_stop_and_restart_mid_stream(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=5, events=12_000)  # several batches of catch-up behind
    behind = log_last_pos(log)
    proc = appender(log, 3000)  # and a writer still appending
    stopped_at = []
    try:
        for _ in range(3):
            before = checkpoint_pos(db)
            w = Watcher(log, db)
            wait_for(lambda: checkpoint_pos(db) > before, "progress", w)  # noqa: B023
            w.close()  # stops after the batch it is applying, mid-pass
            stopped_at.append(checkpoint_pos(db))
    finally:
        assert proc.wait(DEADLINE) == 0
    assert stopped_at[0] < behind
    w = Watcher(log, db)
    try:
        wait_for(converged(log, db), "the end of the log", w)
    finally:
        w.close()
    assert canonical(db) == rebuild_hash(log, tmp_path)


def test_polling_backstop_alone_converges(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    w = Watcher(log, db, use_observer=False, poll_interval=0.05)
    try:
        proc = writer(log, seed=6, events=1500)
        assert proc.wait(DEADLINE) == 0
        wait_for(converged(log, db), "the poll to catch up", w)
    finally:
        w.close()
    assert not [t for t in threading.enumerate() if "observer" in t.name.lower()]
    assert canonical(db) == rebuild_hash(log, tmp_path)


def test_observer_hints_alone_converge(tmp_path: Path) -> None:
    # A poll interval far beyond the deadline: only watchdog's events can wake the worker.
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    w = Watcher(log, db, poll_interval=3600.0)
    try:
        proc = writer(log, seed=7, events=1000)
        assert proc.wait(DEADLINE) == 0
        wait_for(converged(log, db), "the hints to catch up", w)
    finally:
        w.close()


def test_second_watcher_is_refused(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    w = Watcher(log, db)
    try:
        lock = Path(lock_path(str(db)))
        wait_for(lambda: lock.exists() and lock.read_bytes().strip() != b"", "the lock", w)
        with pytest.raises(AlreadyWatching, match=rf"already watched .*pid {os.getpid()}"):
            watch(str(log), str(db), stop=threading.Event())
        # The command says so in one line and exits 2, without waiting.
        cli = subprocess.run(
            [CLI, "--log", str(log), "--db", str(db), "watch"],
            capture_output=True,
            timeout=DEADLINE,
        )
        assert cli.returncode == 2
        assert cli.stderr.decode().startswith(f"error: {db}: already watched")
        assert len(cli.stderr.decode().splitlines()) == 1
    finally:
        w.close()
    assert os.stat(lock_path(str(db))).st_mode & 0o777 == 0o600
    # Released on stop: a new watcher may start.
    Watcher(log, db).close()


@pytest.mark.parametrize("poll_interval", [0.0, -1.0])
def test_a_poll_interval_that_is_not_positive_is_refused_before_the_lock(
    tmp_path: Path, poll_interval: float
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with pytest.raises(ValueError, match="poll_interval"):
        watch(str(log), str(db), stop=threading.Event(), poll_interval=poll_interval)
    assert not Path(lock_path(str(db))).exists() and not db.exists()


def test_torn_last_line_is_waited_for_then_applied(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(str(log), "none") as j:
        sid = j.create_session(model_id="m", model_name="M")
        for i in range(20):
            j.append_message(sid, role="user", content=f"message {i}")
    data = log.read_bytes()
    cut = data.rindex(b"\n", 0, len(data) - 1) + 1
    line = data[cut:]  # the last message: written again below, in two halves
    with open(log, "r+b") as f:
        f.truncate(cut)
    last = log_last_pos(log)
    w = Watcher(log, db, poll_interval=0.05)
    try:
        wait_for(lambda: checkpoint_pos(db) == last, "the whole records", w)
        with open(log, "ab") as f:
            f.write(line[:-10])
        time.sleep(0.5)  # several hints and polls see the torn tail
        assert w.error is None
        assert checkpoint_pos(db) == last
        with open(log, "ab") as f:
            f.write(line[-10:])
        wait_for(lambda: checkpoint_pos(db) == last + 1, "the completed line", w)
    finally:
        w.close()
    assert canonical(db) == rebuild_hash(log, tmp_path)


def test_corruption_in_the_middle_stops_the_watcher_loudly(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=10, events=300)
    data = bytearray(log.read_bytes())
    middle = data.index(b'"type"', len(data) // 2)
    data[middle + 1] ^= 0x01  # a flipped bit: the checksum fails, later lines are valid
    log.write_bytes(bytes(data))
    w = Watcher(log, db)
    w.thread.join(DEADLINE)
    with pytest.raises(CorruptLog, match="byte offset"):
        w.close()


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="POSIX signals")
def test_sigterm_exits_zero_with_the_database_at_the_end(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=9, events=500)
    proc = subprocess.Popen(
        [CLI, "--log", str(log), "--db", str(db), "watch", "--poll-interval", "0.2", "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: checkpoint_pos(db) == log_last_pos(log), "the watch command")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err.decode()
    lines = err.decode().splitlines()
    assert lines[0].startswith("watching ") and lines[-1] == "stopped"
    assert any(line.startswith("applied ") and " lag 0 event(s)" in line for line in lines)
    assert checkpoint_pos(db) == log_last_pos(log)


@pytest.mark.slow
def test_verify_while_watch_applies_a_live_writer_finds_no_false_problem(tmp_path: Path) -> None:
    """verify reads one snapshot, and waits out a write in progress before it calls the
    log's end torn: with a writer and a live projector running, every run is clean and no
    session is marked with problems."""
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=3, events=400)
    w = Watcher(log, db, poll_interval=0.05)
    reports = []
    try:
        wait_for(converged(log, db), "the first catch-up", w)
        procs = [appender(log, 20_000), appender(log, 20_000)]
        while any(p.poll() is None for p in procs) and len(reports) < 40:
            reports.append(verify(log, db))
        assert all(p.wait(DEADLINE) == 0 for p in procs)
        wait_for(converged(log, db), "the watcher to reach the end of the log", w)
    finally:
        w.close()
    assert len(reports) >= 5, "the writers finished before verify could run alongside"
    assert [str(p) for r in reports for p in r.problems] == []
    assert any(r.checkpoint_pos < r.log_last_pos for r in reports)  # it ran behind, mid-write
    with closing(sqlite3.connect(db)) as conn:
        marked = conn.execute("SELECT count(*) FROM sessions WHERE integrity_status = 'problems'")
        assert marked.fetchone() == (0,)


def test_a_feed_that_fails_stops_the_watch_with_its_error(tmp_path: Path) -> None:
    """What keeps the log growing beside a watch (a stream's copy) failing ends the watch
    and is raised to its caller, rather than leaving it watching a log that stopped."""
    from projector.watch import run_watch

    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    write_log(log, seed=4, events=50)

    def feed(stop: threading.Event) -> None:
        time.sleep(0.2)
        raise LogError("the feed found damage", path=str(log))

    with pytest.raises(LogError, match="the feed found damage"):
        run_watch(str(log), str(db), poll_interval=0.05, feed=feed)
    assert checkpoint_pos(db) == log_last_pos(log)
