"""Group commit: the calls of concurrent callers are combined into one write."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

import journal.log.appender as journal_log
from journal import Journal, LogWriteError, read_log
from journal.commit import Call, Ticket
from journal.errors import SequenceConflict, UnknownSession
from journal.events import MessageAppended


def _contents(log: Path) -> list[str]:
    return [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    writes: list[int] = []
    real_write = journal_log.os.write

    def counting(fd: int, data: bytes | memoryview) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(journal_log.os, "write", counting)
    return writes


def test_a_ticket_of_calls_is_one_write_and_a_failing_call_is_undone_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", session_id="s")
        writes = _count_writes(monkeypatch)
        calls = [
            Call(j.append_message, (sid, "user", "a"), {}),
            Call(j.append_message, ("nobody", "user", "b"), {}),
            Call(j.append_message, (sid, "user", "c"), {"expected_seq": 7}),
            Call(j.create_session, ("m",), {"session_id": "t", "first_message": "d"}),
            Call(j.append_message, (sid, "user", "e"), {"expected_seq": 1}),
        ]
        ticket = Ticket(calls)
        j._combiner.submit(ticket)
        assert ticket.token and len(writes) == 1
        assert isinstance(calls[1].error, UnknownSession)
        assert isinstance(calls[2].error, SequenceConflict)
        assert [c.result.seq for c in (calls[0], calls[4])] == [1, 2]
        assert calls[3].result == "t"
    assert _contents(log) == ["a", "d", "e"]
    events = [e for e, _ in read_log(str(log))]
    assert [e.pos for e in events] == list(range(1, len(events) + 1))
    # each call is its own atomic group: the session with its first message is one
    assert [e.grp for e in events if getattr(e, "session_id", None) == "t"] == [(1, 2), (2, 2)]


def test_a_failed_write_fails_every_call_of_the_batch_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", session_id="s")
        before = log.read_bytes()

        def full_disk(fd: int, data: bytes | memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(journal_log.os, "write", full_disk)
        calls = [Call(j.append_message, (sid, "user", f"m{i}"), {}) for i in range(3)]
        ticket = Ticket(calls)
        j._combiner.submit(ticket)
        assert ticket.token == 0
        assert all(isinstance(c.error, LogWriteError) for c in calls)
        assert log.read_bytes() == before
        monkeypatch.undo()
        assert j.append_message(sid, "user", "after").seq == 1  # the state was rolled back


def test_threads_share_writes_while_the_disk_is_slow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    real_fsync = journal_log.os.fsync
    slow = threading.Event()
    fsyncs: list[int] = []

    def slow_fsync(fd: int) -> None:
        slow.wait(0.02)  # never set: a disk that takes 20 ms per fsync
        fsyncs.append(fd)
        real_fsync(fd)

    with Journal.open(log) as j:
        sids = [j.create_session("m", session_id=f"s{k}") for k in range(8)]
        writes = _count_writes(monkeypatch)
        monkeypatch.setattr(journal_log.os, "fsync", slow_fsync)

        def work(k: int) -> None:
            for i in range(10):
                j.append_message(sids[k], "user", f"{k}/{i}")

        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(_contents(log)) == 80
    # 80 calls: calls that queue while another thread writes go out in its write (one
    # write per call before the combiner), and each fsync covers many calls
    assert len(writes) < 80 and len(fsyncs) <= 40
    seqs: dict[str, list[int]] = {}
    for e, _ in read_log(str(log)):
        if isinstance(e, MessageAppended):
            seqs.setdefault(e.session_id, []).append(e.seq)
    assert all(v == list(range(1, 11)) for v in seqs.values())


def test_an_error_in_a_combined_call_reaches_its_own_caller_only(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m", session_id="s")
        errors: list[BaseException] = []
        barrier = threading.Barrier(6)

        def good(k: int) -> None:
            barrier.wait()
            for i in range(20):
                j.append_message(sid, "user", f"{k}/{i}")

        def bad() -> None:
            barrier.wait()
            for _ in range(20):
                try:
                    j.append_message("nobody", "user", "x")
                except UnknownSession as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=good, args=(k,)) for k in range(5)]
        threads.append(threading.Thread(target=bad))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(errors) == 20
    assert len(_contents(log)) == 100


def test_a_caller_interrupted_while_queued_still_passes_the_log_on(tmp_path: Path) -> None:
    """A signal handler raising in a thread that waits in the queue: its call, handed
    over, is written; the error reaches it afterwards; the next caller is not left
    waiting for a combiner that never comes."""
    import signal

    log = tmp_path / "s.jsonl"
    j = Journal.open(log)
    sid = j.create_session("m", session_id="s")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with j.batch():  # holds the log: the next combiner waits for it
            holding.set()
            release.wait(60)

    def combine_first() -> None:
        j.append_message(sid, "user", "first")

    def interrupt(signum: int, frame: object) -> None:
        threading.Timer(0.2, release.set).start()
        raise RuntimeError("interrupted")

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(60)
    first = threading.Thread(target=combine_first)
    first.start()
    while not j._combiner._busy:
        time.sleep(0.001)
    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(RuntimeError, match="interrupted"):
            j.append_message(sid, "user", "queued")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        release.set()
    holder.join(60)
    first.join(60)
    after = threading.Thread(target=lambda: j.append_message(sid, "user", "after"))
    after.start()
    after.join(60)
    assert not after.is_alive()
    j.close()
    assert _contents(log) == ["first", "queued", "after"]


def test_an_interrupt_of_the_combining_thread_fails_its_own_call_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KeyboardInterrupt in the thread combining a batch (here: in its write) fails that
    thread's call; the other callers' calls of the batch are written by the next
    combiner, and nobody is left waiting."""
    log = tmp_path / "s.jsonl"
    j = Journal.open(log)
    sid = j.create_session("m", session_id="s")
    holding, release = threading.Event(), threading.Event()
    armed = threading.Event()
    real_write = journal_log.os.write

    def write(fd: int, data: bytes | memoryview) -> int:
        if armed.is_set() and threading.current_thread() is threading.main_thread():
            armed.clear()
            raise KeyboardInterrupt
        return real_write(fd, data)

    def hold() -> None:
        with j.batch():  # holds the log: the first combiner waits for it
            holding.set()
            release.wait(60)

    def queue_after_main() -> None:
        while len(j._combiner._queue) < 1:  # the main thread queued behind the combiner
            time.sleep(0.001)
        for name in ("b", "c"):
            threading.Thread(target=j.append_message, args=(sid, "user", name)).start()
        while len(j._combiner._queue) < 3:
            time.sleep(0.001)
        armed.set()
        release.set()

    threading.Thread(target=hold).start()
    holding.wait(60)
    first = threading.Thread(target=j.append_message, args=(sid, "user", "a"))
    first.start()
    while not j._combiner._busy:
        time.sleep(0.001)
    monkeypatch.setattr(journal_log.os, "write", write)
    threading.Thread(target=queue_after_main).start()
    with pytest.raises(KeyboardInterrupt):
        j.append_message(sid, "user", "main")
    first.join(60)
    deadline = time.monotonic() + 60
    while sorted(_contents(log)) != ["a", "b", "c"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert j.append_message(sid, "user", "after").seq == 4
    j.close()
    contents = _contents(log)
    assert sorted(contents[:3]) == ["a", "b", "c"] and contents[3:] == ["after"]


def test_a_combiner_interrupted_before_it_combines_passes_the_role_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journal.commit import Combiner

    log = tmp_path / "s.jsonl"
    j = Journal.open(log)
    sid = j.create_session("m", session_id="s")
    real_combine = Combiner._combine
    calls = 0

    def interrupted_once(self: Combiner, own: Ticket) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        real_combine(self, own)

    monkeypatch.setattr(Combiner, "_combine", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        j.append_message(sid, "user", "lost")
    other = threading.Thread(target=j.append_message, args=(sid, "user", "next"))
    other.start()
    other.join(60)
    assert not other.is_alive()
    j.close()
    assert _contents(log) == ["next"]
