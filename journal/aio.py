"""The asyncio face of the writer, for host apps that run an event loop.

Each call runs the blocking ``Journal`` method in a worker thread, so the loop never waits
for a write or an fsync; concurrent awaits land in different threads and share fsyncs
through the journal's group commit. Inside ``async with j.batch():`` the calls of the task
that opened the batch run on the one thread that holds the batch's lock.

Cancelling an await does not undo an append already handed to the worker: retry it with
the same ``event_id`` to learn its receipt.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from journal.log import Durability
from journal.state import Receipt
from journal.writer import Journal

P = ParamSpec("P")
T = TypeVar("T")

# The executor of the batch the current task is inside, if any.
_batch_lane: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "journal_batch_lane", default=None
)


class AsyncJournal:
    """Awaitable versions of every ``Journal`` method."""

    def __init__(self, journal: Journal, max_workers: int = 16) -> None:
        self.journal = journal
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="journal-async")

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: str | os.PathLike[str], durability: Durability = "always", **options: Any
    ) -> AsyncIterator[AsyncJournal]:
        """``async with AsyncJournal.open(path) as j:`` opens the log in a worker thread."""
        loop = asyncio.get_running_loop()
        journal = await loop.run_in_executor(
            None, functools.partial(Journal.open, path, durability, **options)
        )
        aj = cls(journal)
        try:
            yield aj
        finally:
            await aj.aclose()

    async def aclose(self) -> None:
        """Close the journal (in a thread: it may fsync) and stop the workers."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self.journal.close)
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        pool = _batch_lane.get() or self._pool
        return await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(fn, *args, **kwargs)
        )

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[AsyncJournal]:
        """Calls awaited by this task inside the block form one atomic group.

        Cancellation never leaves the log locked: a batch cancelled while it waits for the
        lock leaves the block (writing nothing) as soon as its lane gets the lock.
        """
        lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal-batch")
        loop = asyncio.get_running_loop()
        block = self.journal.batch()
        token = _batch_lane.set(lane)
        shut_down_later = False
        try:
            entering = loop.run_in_executor(lane, block.__enter__)
            try:
                await asyncio.shield(entering)
            except BaseException as exc:
                if not entering.done():
                    # The lane still waits for the lock; the moment it gets it, it must let
                    # go, or the lock would stay with a thread nobody will ever ask again.
                    def leave(f: asyncio.Future[Any], exc: BaseException = exc) -> None:
                        if not f.cancelled() and f.exception() is None:
                            lane.submit(block.__exit__, type(exc), exc, None)
                        lane.shutdown(wait=False)

                    entering.add_done_callback(leave)
                    shut_down_later = True
                raise
            try:
                yield self
            except BaseException as exc:
                # shielded: a second cancellation must not skip leaving the block
                await asyncio.shield(
                    loop.run_in_executor(lane, block.__exit__, type(exc), exc, exc.__traceback__)
                )
                raise
            await asyncio.shield(loop.run_in_executor(lane, block.__exit__, None, None, None))
        finally:
            _batch_lane.reset(token)
            if not shut_down_later:
                lane.shutdown(wait=False)  # its last task is done; never block the loop

    async def create_session(
        self, model_id: str, model_name: str | None = None, title: str | None = None, **kwargs: Any
    ) -> str:
        return await self._run(self.journal.create_session, model_id, model_name, title, **kwargs)

    async def append_message(
        self, session_id: str, role: str, content: str, **kwargs: Any
    ) -> Receipt:
        return await self._run(self.journal.append_message, session_id, role, content, **kwargs)

    async def register_model(
        self, model_id: str, model_name: str | None = None, **kwargs: Any
    ) -> Receipt:
        return await self._run(self.journal.register_model, model_id, model_name, **kwargs)

    async def set_metadata(
        self, session_id: str, key: str, value: str | None, **kwargs: Any
    ) -> Receipt:
        return await self._run(self.journal.set_metadata, session_id, key, value, **kwargs)

    async def rename(self, session_id: str, title: str | None, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.rename, session_id, title, **kwargs)

    async def pause(self, session_id: str, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.pause, session_id, **kwargs)

    async def resume(self, session_id: str, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.resume, session_id, **kwargs)

    async def snapshot(self, session_id: str, reason: str = "checkpoint", **kwargs: Any) -> Receipt:
        return await self._run(self.journal.snapshot, session_id, reason, **kwargs)

    async def archive(self, session_id: str, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.archive, session_id, **kwargs)

    async def restore(self, session_id: str, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.restore, session_id, **kwargs)

    async def delete_session(self, session_id: str, **kwargs: Any) -> Receipt:
        return await self._run(self.journal.delete_session, session_id, **kwargs)

    async def expire_due(self, now: datetime | None = None, **kwargs: Any) -> list[Receipt]:
        return await self._run(self.journal.expire_due, now, **kwargs)
