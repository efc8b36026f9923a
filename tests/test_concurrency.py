"""Many writers at once: processes, Journal objects in one process, threads."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from journal import Journal, JournalClosed, read_log
from journal.events import MessageAppended
from journal.log import Cursor, LogFile

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def audit(log: Path) -> tuple[int, dict[str, list[int]]]:
    """(records, seqs per session); read_log itself checks positions are gapless."""
    seqs: dict[str, list[int]] = defaultdict(list)
    ids = set()
    n = 0
    for event, _ in read_log(str(log)):
        n += 1
        assert event.pos == n
        ids.add(event.id)
        if isinstance(event, MessageAppended):
            seqs[event.session_id].append(event.seq)
    assert len(ids) == n
    for sid, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), sid
    return n, seqs


def run_threads(n: int, target: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def wrapped(k: int) -> None:
        try:
            target(k)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    assert errors == []


def concurrent_writers(*args: str) -> dict[str, Any]:
    """Run tools/concurrent_writers.py with ``args``; its audit, which must have passed."""
    out = subprocess.run(
        [sys.executable, str(TOOLS / "concurrent_writers.py"), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stats: dict[str, Any] = json.loads(out.stdout)
    assert stats["missing"] == 0 and stats["ids_unique"] and stats["seqs_gapless"]
    return stats


def test_four_processes_append_500_each() -> None:
    stats = concurrent_writers("--procs", "4", "--appends", "500")
    assert stats["exit_codes"] == [0, 0, 0, 0]
    assert stats["messages"] == 2000
    assert stats["large_lines"] >= 40


def test_processes_of_several_threads_append_together() -> None:
    """Threads pass the flock among themselves; other processes still get their turns."""
    stats = concurrent_writers("--procs", "3", "--threads", "3", "--appends", "150")
    assert stats["exit_codes"] == [0, 0, 0] and stats["threads"] == 3
    assert stats["messages"] == 3 * 3 * 150


def test_several_journal_objects_in_one_process(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        shared = j.create_session("m", session_id="shared")
    journals = [Journal.open(log) for _ in range(4)]
    try:

        def work(k: int) -> None:
            own = journals[k].create_session("m", session_id=f"own-{k}")
            for i in range(100):
                journals[k].append_message(shared if i % 2 else own, "user", f"{k}/{i}")

        run_threads(4, work)
    finally:
        for j in journals:
            j.close()
    n, seqs = audit(log)
    assert n == 2 + 4 + 400
    assert len(seqs["shared"]) == 200


def test_threads_share_one_journal(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        seen: list[int] = []
        lock = threading.Lock()

        def work(k: int) -> None:
            for i in range(100):
                if i % 10 == 0:
                    with j.batch():
                        a = j.append_message(sid, "user", f"{k}/{i}a")
                        b = j.append_message(sid, "user", f"{k}/{i}b", expected_seq=a.seq)
                    assert b.seq == a.seq + 1 and b.pos == a.pos + 1
                    got = [a.seq, b.seq]
                else:
                    got = [j.append_message(sid, "assistant", f"{k}/{i}").seq]
                with lock:
                    seen.extend(got)

        run_threads(6, work)
    n, seqs = audit(log)
    assert n == 2 + 6 * 110
    assert sorted(seen) == seqs[sid] == list(range(1, 6 * 110 + 1))


def test_close_while_threads_append(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    for _ in range(5):
        j = Journal.open(log)
        sid = j.create_session("m")
        outcomes: list[str] = []
        started = threading.Barrier(5)

        def work(
            k: int,
            j: Journal = j,
            sid: str = sid,
            outcomes: list[str] = outcomes,
            started: threading.Barrier = started,
        ) -> None:
            started.wait()
            for i in range(200):
                try:
                    j.append_message(sid, "user", f"{k}/{i}")
                except JournalClosed:
                    outcomes.append("closed")
                    return
            outcomes.append("done")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        started.wait()
        j.close()
        for t in threads:
            t.join(timeout=60)
        assert set(outcomes) <= {"closed", "done"} and len(outcomes) == 4
        audit(log)


def test_threads_hand_the_flock_on_a_bounded_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While threads queue for the log, the flock passes between them without being
    released; after MAX_HANDOFFS it is released, so other processes get their turn."""
    import fcntl
    import time

    import journal.log.appender
    from journal.log import LogFile

    calls: list[int] = []
    real_flock = fcntl.flock

    class RecordingFcntl:
        LOCK_EX, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_UN

        @staticmethod
        def flock(fd: int, op: int) -> None:
            calls.append(op)
            real_flock(fd, op)

    real_append = LogFile.append

    def slow_append(self: LogFile, data: bytes, at: int) -> int:
        time.sleep(0.002)  # hold the lock long enough for the other threads to queue
        return real_append(self, data, at)

    monkeypatch.setattr(journal.log.appender, "fcntl", RecordingFcntl)
    monkeypatch.setattr(journal.log.appender, "MAX_HANDOFFS", 3)
    monkeypatch.setattr(LogFile, "append", slow_append)
    log = tmp_path / "s.jsonl"
    with Journal.open(log, "none") as j:
        sids = [j.create_session("m", session_id=f"s{k}") for k in range(4)]
        calls.clear()

        def work(k: int) -> None:
            for i in range(20):
                j.append_message(sids[k], "user", f"{k}/{i}")

        run_threads(4, work)
    takes = calls.count(fcntl.LOCK_EX)
    assert calls.count(fcntl.LOCK_UN) == takes  # every flock taken was released
    assert takes < 80  # handed on at least once
    assert takes >= 80 // 4  # never more than 1 + 3 holders per flock
    n, seqs = audit(log)
    assert n == 1 + 4 + 80
    assert all(seqs[s] == list(range(1, 21)) for s in sids)


def test_a_write_cut_short_is_repaired_before_the_thread_it_hands_the_flock_to_appends(
    tmp_path: Path,
) -> None:
    """An append that fails after writing part of its record (an exception other than an
    I/O error, so nothing cuts the file back) hands the log to a queued thread: that
    thread must first find the partial record and move it aside, not write after it."""
    log = tmp_path / "s.jsonl"
    j = Journal.open(log, "none")
    sid = j.create_session("m", session_id="s")
    real_append = j._log.append
    writing = threading.Event()

    def cut_short_once(lines: list[bytes], at: Cursor) -> tuple[int, Cursor]:
        if writing.is_set():
            return real_append(lines, at)
        data = b"".join(lines)
        os.write(j._log.fd, data[: len(data) // 2])
        writing.set()
        while not j._combiner._queue:  # the other thread queues for the log
            time.sleep(0.001)
        raise RuntimeError("interrupted mid-write")

    j._log.append = cut_short_once  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def first() -> None:
        try:
            j.append_message(sid, "user", "cut short")
        except RuntimeError as exc:
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    writing.wait()
    b = threading.Thread(target=lambda: j.append_message(sid, "user", "after it"))
    b.start()
    a.join()
    b.join()
    j.close()
    assert [str(e) for e in errors] == ["interrupted mid-write"]
    assert len(j.repairs) == 1  # the partial record, quarantined
    contents = [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert contents == ["after it"]


def test_an_interrupt_just_after_the_thread_lock_is_taken_leaves_the_log_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception raised in the acquiring thread (by a signal handler) right after it
    took the thread lock, here as the count of waiting threads goes down, must let the
    log go: the thread lock and the flock alike."""
    path = tmp_path / "s.jsonl"
    log = LogFile(str(path))
    real = log._waiting_lock
    exits = 0

    class InterruptedOnTheWayDown:
        def __enter__(self) -> bool:
            return real.__enter__()

        def __exit__(self, *exc: object) -> None:
            nonlocal exits
            real.__exit__(None, None, None)
            exits += 1
            if exits == 2:  # the first went up before the acquire; this one after it
                raise KeyboardInterrupt

    monkeypatch.setattr(log, "_waiting_lock", InterruptedOnTheWayDown())
    with pytest.raises(KeyboardInterrupt), log.exclusive():
        pytest.fail("the log was entered")
    monkeypatch.undo()
    taken = threading.Event()

    def another_thread() -> None:
        with log.exclusive():
            taken.set()

    thread = threading.Thread(target=another_thread, daemon=True)
    thread.start()
    thread.join(60)
    assert taken.is_set()
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process could take it
    finally:
        os.close(fd)
        log.close()
