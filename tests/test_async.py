"""The asyncio face: appends from many tasks, a responsive loop, atomic batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import journal.log as journal_log
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
