"""A lone awaited call runs on the loop's thread; anything else goes to the committer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from journal import AsyncJournal, Journal, read_log
from journal.commit import Call
from journal.events import MessageAppended


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(coro_fn(), timeout=120))


def where_batches_run(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread that ran each batch under the log's lock (a try that found
    the log busy ran nothing and is not counted)."""
    names: list[str] = []
    real = Journal._run_batch

    def recorded(self: Journal, calls: list[Call], wait: bool = True) -> int:
        token = real(self, calls, wait)
        names.append(threading.current_thread().name)
        return token

    monkeypatch.setattr(Journal, "_run_batch", recorded)
    return names


# Lone calls run inline while the last one was durable within this: tests that expect
# them inline must not depend on how fast this machine's disk is.
ANY_DISK = 60_000.0


def contents(log: Path) -> list[str]:
    return [e.content for e, _ in read_log(str(log)) if isinstance(e, MessageAppended)]


def test_a_lone_call_runs_on_the_loop_and_concurrent_calls_go_to_the_committer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    names = where_batches_run(monkeypatch)

    async def main() -> None:
        async with AsyncJournal.open(log, inline_limit_ms=ANY_DISK) as j:
            sid = await j.create_session("m", session_id="s")
            assert (await j.append_message(sid, "user", "alone")).seq == 1
            assert names == [threading.current_thread().name] * 2
            names.clear()
            receipts = await asyncio.gather(
                *(j.append_message(sid, "user", f"m{i}") for i in range(8))
            )
            assert sorted(r.seq for r in receipts) == list(range(2, 10))
            assert set(names) == {"journal-commit"}

    run(main)
    assert contents(log)[0] == "alone" and len(contents(log)) == 9


def test_the_loop_hands_lone_calls_over_after_a_slow_one_or_when_told_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = where_batches_run(monkeypatch)

    async def main() -> None:
        async with AsyncJournal.open(tmp_path / "a.jsonl", inline_limit_ms=0) as j:
            await j.create_session("m", session_id="s")
            await j.append_message("s", "user", "x")
        assert names == ["journal-commit"] * 2
        names.clear()
        async with AsyncJournal.open(tmp_path / "b.jsonl", inline_limit_ms=1000) as j:
            j._last_took = 2.0  # as if the disk had just taken two seconds
            await j.create_session("m", session_id="s")
            assert names == ["journal-commit"]
            j._last_took = 0.0
            await j.append_message("s", "user", "x")
            assert names[1:] == [threading.current_thread().name]

    run(main)


def test_a_lone_call_while_a_batch_holds_the_log_waits_for_it_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop never waits for the lock: another task's batch holds it, so the lone call
    goes to the committer (taking the lock on the loop would block the batch's own task)."""
    log = tmp_path / "s.jsonl"
    names = where_batches_run(monkeypatch)

    async def main() -> None:
        async with AsyncJournal.open(log, inline_limit_ms=ANY_DISK) as j:
            sid = await j.create_session("m", session_id="s")
            names.clear()
            inside, leave = asyncio.Event(), asyncio.Event()

            async def batch() -> None:
                async with j.batch():
                    await j.append_message(sid, "user", "in the batch")
                    inside.set()
                    await leave.wait()

            holder = asyncio.create_task(batch())
            await inside.wait()
            lone = asyncio.create_task(j.append_message(sid, "user", "lone"))
            for _ in range(20):
                await asyncio.sleep(0)
            assert not lone.done()
            leave.set()
            await holder
            assert (await lone).seq == 2
            assert names == ["journal-commit"]

    run(main)
    assert contents(log) == ["in the batch", "lone"]


def test_a_lone_call_cancelled_in_its_turn_of_the_loop_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with AsyncJournal.open(log, inline_limit_ms=ANY_DISK) as j:
            sid = await j.create_session("m", session_id="s")
            task = asyncio.create_task(j.append_message(sid, "user", "never"))
            await asyncio.sleep(0)  # the task is in its turn of the loop, before running
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert (await j.append_message(sid, "user", "after")).seq == 1

    run(main)
    assert contents(log) == ["after"]


def test_a_lone_call_raises_the_writers_errors(tmp_path: Path) -> None:
    from journal import JournalClosed, UnknownSession

    async def main() -> None:
        async with AsyncJournal.open(tmp_path / "s.jsonl", inline_limit_ms=ANY_DISK) as j:
            with pytest.raises(UnknownSession):
                await j.append_message("nobody", "user", "x")
            j.journal.close()
            with pytest.raises(JournalClosed):
                await j.create_session("m")

    run(main)
