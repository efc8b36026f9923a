"""The asyncio face: appends from many tasks, a responsive loop, atomic batches."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import journal.log.appender as journal_log
from journal import AsyncJournal, Journal, read_log
from journal.events import MessageAppended


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=120))


def journal_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("journal")}


def test_many_tasks_append(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    before = journal_threads()

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            sids = [await j.create_session("m", session_id=f"s{k}") for k in range(4)]

            async def task(k: int) -> list[int]:
                return [
                    (await j.append_message(sids[k % 4], "user", f"{k}/{i}")).seq for i in range(25)
                ]

            results = await asyncio.gather(*(task(k) for k in range(16)))
            assert sum(map(len, results)) == 400
            await j.rename(sids[0], "renamed")
            await j.set_metadata(sids[0], "k", "v")
            await j.pause(sids[1])
            await j.resume(sids[1])
            await j.snapshot(sids[2])
            await j.archive(sids[2])
            await j.restore(sids[2])
            await j.delete_session(sids[3])
            await j.register_model("other")
            assert await j.expire_due() == []

    run(main)
    seqs: dict[str, list[int]] = {}
    for e, _ in read_log(str(log)):
        if isinstance(e, MessageAppended):
            seqs.setdefault(e.session_id, []).append(e.seq)
    assert all(v == list(range(1, 101)) for v in seqs.values()) and len(seqs) == 4
    assert journal_threads() == before  # workers and lanes are gone


def test_the_loop_keeps_running_while_an_append_waits_for_the_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    disk = threading.Event()
    real_fsync = journal_log.os.fsync
    gate = {"on": False}

    def slow_fsync(fd: int) -> None:
        if gate["on"]:
            disk.wait(60)  # the disk answers only when the test says so
        real_fsync(fd)

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            sid = await j.create_session("m")
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick_task = asyncio.create_task(ticker())
            gate["on"] = True
            monkeypatch.setattr(journal_log.os, "fsync", slow_fsync)
            appends = [
                asyncio.create_task(j.append_message(sid, "user", f"m{i}")) for i in range(8)
            ]
            start = ticks
            while ticks < start + 200:  # would never get here if an append blocked the loop
                await asyncio.sleep(0)
            assert not any(t.done() for t in appends)
            disk.set()
            receipts = await asyncio.gather(*appends)
            assert sorted(r.seq for r in receipts) == list(range(1, 9))
            tick_task.cancel()
            gate["on"] = False

    run(main)


def test_async_batch_is_atomic(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            sid = await j.create_session("m")
            before = log.read_bytes()
            with pytest.raises(RuntimeError, match="abandon"):
                async with j.batch():
                    await j.append_message(sid, "user", "a")
                    await j.append_message(sid, "user", "b")
                    raise RuntimeError("abandon")
            assert log.read_bytes() == before
            other = asyncio.create_task(j.append_message(sid, "assistant", "outside"))
            async with j.batch():
                a = await j.append_message(sid, "user", "a")
                b = await j.append_message(sid, "user", "b")
                assert log.read_bytes() == before or not other.done()
            r = await other
            assert {a.seq, b.seq, r.seq} == {1, 2, 3} and b.pos == a.pos + 1

    run(main)
    grouped = [e.grp for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert tuple(g for g in grouped if g) == ((1, 2), (2, 2)) and len(grouped) == 3


def test_cancelling_a_batch_that_waits_for_the_lock_releases_it(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as first:
        sid = first.create_session("m")
    holder = Journal.open(log)
    locked = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with holder.batch():
            locked.set()
            release.wait(60)
            holder.append_message(sid, "user", "from the holder")

    holding = threading.Thread(target=hold)

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            holding.start()
            await asyncio.get_running_loop().run_in_executor(None, locked.wait, 60)

            async def batch() -> None:
                async with j.batch():
                    await j.append_message(sid, "user", "never")

            task = asyncio.create_task(batch())
            for _ in range(50):
                await asyncio.sleep(0)  # let it reach the lock and wait there
            assert not task.done()
            task.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            # the lock was not left to a dead lane: another append gets through
            r = await asyncio.wait_for(j.append_message(sid, "user", "after"), timeout=60)
            assert r.seq == 2

    try:
        run(main)
    finally:
        release.set()
        holding.join(60)
        holder.close()
    contents = [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert contents == ["from the holder", "after"]


def test_every_journal_method_has_its_awaitable() -> None:
    import inspect

    sync_only = {"open", "close", "batch"}  # AsyncJournal.open, aclose, batch
    names = {
        n
        for cls in Journal.__mro__
        for n, member in vars(cls).items()
        if callable(member) and not n.startswith("_") and n not in sync_only
    }
    assert {"append_message", "time_out", "receipt", "last_seq", "status"} <= names
    for name in names:
        assert inspect.iscoroutinefunction(getattr(AsyncJournal, name, None)), name


BAD_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("append_message", ("nobody", "user", "hi"), {}),
    ("append_message", ("s", "robot", "hi"), {}),
    ("append_message", ("s", "user", ""), {}),
    ("append_message", ("s", "user", "hi"), {"expected_seq": 5}),
    ("time_out", ("s", "soon"), {}),
    ("time_out", ("nobody", "idle"), {}),
    ("last_seq", ("nobody",), {}),
    ("status", ("bad id!",), {}),
    ("resume", ("s",), {}),
    ("create_session", ("m",), {"session_id": "s"}),
    ("register_model", ("m",), {}),
]


@pytest.mark.parametrize(("name", "args", "kwargs"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_the_awaitables_raise_the_writers_errors(
    tmp_path: Path, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    from journal.errors import JournalError

    log = tmp_path / "s.jsonl"
    with Journal.open(log) as sync:
        sync.create_session("m", session_id="s")
        with pytest.raises(JournalError) as expected:
            getattr(sync, name)(*args, **kwargs)
    before = log.read_bytes()

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            with pytest.raises(type(expected.value)) as got:
                await getattr(j, name)(*args, **kwargs)
            assert str(got.value) == str(expected.value)

    run(main)
    assert log.read_bytes() == before


def test_the_reads_answer_as_the_writer_does(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            sid = await j.create_session("m", idle_timeout_seconds=60)
            r = await j.append_message(sid, "user", "hi", event_id=str(uuid.uuid4()))
            assert await j.receipt(r.event_id) == r and await j.receipt(str(uuid.uuid4())) is None
            assert await j.last_seq(sid) == 1 and await j.status(sid) == "active"
            t = await j.time_out(sid, "idle")
            assert await j.status(sid) == "idle" and j.last_pos == t.pos

    run(main)


class StalledDisk:
    """``os.fsync`` for journal.log that blocks while ``stalled`` is clear."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.open = threading.Event()
        self.open.set()
        self.waiting = threading.Event()  # an fsync is stuck
        real = journal_log.os.fsync

        def fsync(fd: int) -> None:
            if not self.open.is_set():
                self.waiting.set()
                self.open.wait(60)
            real(fd)

        monkeypatch.setattr(journal_log.os, "fsync", fsync)

    def stall(self) -> None:
        self.waiting.clear()
        self.open.clear()


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop (and the committer thread) run until ``condition`` holds."""
    for _ in range(60_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition never held")


def test_a_stalled_disk_holds_callers_back_with_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    disk = StalledDisk(monkeypatch)
    bodies: list[str] = []

    async def main() -> None:
        async with AsyncJournal.open(log, max_pending=8) as j:
            sid = await j.create_session("m")
            real_append = j.journal._append_checked

            def counted(*args: Any) -> Any:  # the part of an append run by the committer
                bodies.append(args[0].content)
                return real_append(*args)

            j.journal._append_checked = counted  # type: ignore[method-assign]
            disk.stall()
            tasks = [
                asyncio.create_task(j.append_message(sid, "user", f"m{i}")) for i in range(200)
            ]
            await until(disk.waiting.is_set)
            for _ in range(100):
                await asyncio.sleep(0.001)
                # at most 8 calls handed over; the other 192 wait their turn, holding
                # nothing of the writer's
                assert len(j._queue) + len(bodies) <= 8
                assert not any(t.done() for t in tasks)
            disk.open.set()
            receipts = await asyncio.gather(*tasks)
            assert sorted(r.seq for r in receipts) == list(range(1, 201))

    run(main)
    assert len(bodies) == 200


def test_cancelled_while_waiting_for_room_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    disk = StalledDisk(monkeypatch)

    async def main() -> None:
        # inline_limit_ms=0: the lone first call goes to the committer, not onto the loop
        async with AsyncJournal.open(log, max_pending=1, inline_limit_ms=0) as j:
            sid = await j.create_session("m")
            disk.stall()
            first = asyncio.create_task(j.append_message(sid, "user", "first"))
            await until(disk.waiting.is_set)
            second = asyncio.create_task(j.append_message(sid, "user", "never handed over"))
            for _ in range(20):
                await asyncio.sleep(0)
            second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await second
            disk.open.set()
            assert (await first).seq == 1
            assert (await j.append_message(sid, "user", "third")).seq == 2

    run(main)
    contents = [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert contents == ["first", "third"]


def test_cancelled_after_the_hand_over_the_append_stands_and_a_retry_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    disk = StalledDisk(monkeypatch)
    eid = str(uuid.uuid4())

    async def main() -> None:
        async with AsyncJournal.open(log, inline_limit_ms=0) as j:  # via the committer
            sid = await j.create_session("m")
            disk.stall()
            task = asyncio.create_task(j.append_message(sid, "user", "kept", event_id=eid))
            await until(disk.waiting.is_set)  # written, waiting for the disk
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            disk.open.set()
            again = await j.append_message(sid, "user", "kept", event_id=eid)
            assert again.duplicate and again.seq == 1

    run(main)
    contents = [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert contents == ["kept"]


def test_close_while_busy_completes_what_was_handed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journal import JournalClosed

    log = tmp_path / "s.jsonl"
    disk = StalledDisk(monkeypatch)
    outcomes: list[Any] = []

    async def main() -> None:
        j_cm = AsyncJournal.open(log, max_pending=16)
        j = await j_cm.__aenter__()
        sid = await j.create_session("m")
        disk.stall()
        tasks = [asyncio.create_task(j.append_message(sid, "user", f"m{i}")) for i in range(50)]
        await until(disk.waiting.is_set)
        closing = asyncio.create_task(j.aclose())
        for _ in range(20):
            await asyncio.sleep(0)
        assert not closing.done()  # it waits for the calls handed over
        disk.open.set()
        await closing
        outcomes.extend(await asyncio.gather(*tasks, return_exceptions=True))
        with pytest.raises(JournalClosed):
            await j.append_message(sid, "user", "after close")
        assert j.closed and j.journal.closed
        await j_cm.__aexit__(None, None, None)  # closing twice is harmless

    run(main)
    receipts = [o for o in outcomes if not isinstance(o, BaseException)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert all(isinstance(o, JournalClosed) for o in refused)
    assert 16 <= len(receipts) < 50  # what was handed over, and only that
    contents = [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]
    assert len(contents) == len(receipts)
    assert [r.seq for r in receipts] == list(range(1, len(receipts) + 1))


def test_a_failed_fsync_reaches_every_awaiting_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from journal import DurabilityError, JournalClosed

    log = tmp_path / "s.jsonl"

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async def main() -> None:
        async with AsyncJournal.open(log) as j:
            sid = await j.create_session("m")
            monkeypatch.setattr(journal_log.os, "fsync", failing_fsync)
            results = await asyncio.gather(
                *(j.append_message(sid, "user", f"m{i}") for i in range(10)),
                return_exceptions=True,
            )
            assert all(isinstance(r, DurabilityError | JournalClosed) for r in results)
            assert any(isinstance(r, DurabilityError) for r in results)
            monkeypatch.undo()
            with pytest.raises(JournalClosed):
                await j.append_message(sid, "user", "poisoned")

    run(main)


def test_the_committer_outlives_a_loop_that_closed_under_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Completing calls on a loop that has closed cannot be done; the committer says so
    and goes on serving the journal (so that it can still be closed)."""

    async def main() -> None:
        aj = AsyncJournal(Journal.open(tmp_path / "s.jsonl"), inline_limit_ms=0)
        loop = asyncio.get_running_loop()
        real = loop.call_soon_threadsafe
        refused = threading.Event()

        def closed_once(*args: Any) -> Any:
            if not refused.is_set():
                refused.set()
                raise RuntimeError("Event loop is closed")
            return real(*args)

        loop.call_soon_threadsafe = closed_once  # type: ignore[method-assign]
        first = asyncio.ensure_future(aj.create_session("m", session_id="s"))
        await asyncio.get_running_loop().run_in_executor(None, refused.wait, 10)
        assert not first.done()
        first.cancel()
        assert await aj.last_seq("s") == 0  # the committer still serves calls
        await aj.aclose()

    with caplog.at_level("WARNING", logger="journal"):
        asyncio.run(main())
    assert "completed after their event loop closed" in caplog.text
