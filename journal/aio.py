"""The asyncio face of the writer, for host apps that run an event loop.

Calls from the loop's tasks are queued for one committer thread, which hands everything
queued so far to the journal's combiner (``journal.commit``) as one ticket: one hold of the
log's lock, one write and one fsync for the lot. It then completes every future of the
batch with a single callback on the loop, so a batch costs the loop one wake-up, not one
thread hop per call. The loop itself never waits for a lock.

A lone call skips the committer: when, after one turn of the loop, no other call has come
or is under way, no thread or process holds the log and the last call or batch was durable
within ``inline_limit_ms`` (1 ms by default), the call runs on the loop's thread, fsync
included. Two thread hand-offs cost about as much as a fast fsync, and no other call of
the journal is kept waiting; the turn of the loop first lets every ready task run (so a
task appending in a loop cannot starve the others), and if they call too, all go to the
committer together. The price: the loop waits for that one fsync, and should the disk
stall just then, for as long as it stalls; after a slow call, lone calls go back to the
committer until it is fast again. With ``inline_limit_ms=0`` the loop never waits for a
write or an fsync.

The queue is bounded (``max_pending`` calls handed over and not yet completed): when the
disk stalls, further calls wait before they are handed over, and memory stays bounded.

Cancelling an await does not undo an append already handed to the writer: retry it with
the same ``event_id`` to learn its receipt. A call cancelled while it waits for room in the
queue, or for its turn of the loop, was never handed over and writes nothing. ``aclose``
completes every call handed over before it, then closes the journal.

Inside ``async with j.batch():`` the calls of the task that opened the batch run on the one
thread that holds the batch's lock.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Final, ParamSpec, TypeVar

from journal.commit import Call, Ticket
from journal.errors import DurabilityError, JournalClosed
from journal.forgetting import Ranges
from journal.log import Durability
from journal.message_args import MessageArgs
from journal.state import Receipt
from journal.writer import Journal

T = TypeVar("T")
P = ParamSpec("P")

log = logging.getLogger("journal")
DEFAULT_MAX_PENDING: Final = 1024
DEFAULT_INLINE_LIMIT_MS: Final = 1.0
# Calls per ticket: bounds the size of one write (and of its buffer) under a burst.
_MAX_TICKET: Final = 256

# The executor of the batch the current task is inside, if any.
_batch_lane: contextvars.ContextVar[ThreadPoolExecutor | None] = contextvars.ContextVar(
    "journal_batch_lane", default=None
)


def _awaitable(
    method: Callable[Concatenate[Journal, P], T],
) -> Callable[Concatenate[AsyncJournal, P], Coroutine[Any, Any, T]]:
    """``method`` of ``Journal`` as an awaitable of ``AsyncJournal``, with its signature:
    the call is handed to the committer (``AsyncJournal._call``)."""

    async def awaitable(self: AsyncJournal, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(functools.partial(method, self.journal), *args, **kwargs)

    functools.update_wrapper(awaitable, method)  # name, docstring and signature for help()
    return awaitable


class AsyncJournal:
    """Awaitable versions of every ``Journal`` method. Use it from one event loop."""

    def __init__(
        self,
        journal: Journal,
        max_pending: int = DEFAULT_MAX_PENDING,
        inline_limit_ms: float = DEFAULT_INLINE_LIMIT_MS,
    ) -> None:
        self.journal = journal
        self._slots = asyncio.Semaphore(max(1, max_pending))
        self._queue: deque[Call] = deque()
        self._in_flight = 0  # calls handed to the committer and not yet completed
        self._arriving = 0  # calls in their turn of the loop before running inline
        self._inline_limit = inline_limit_ms / 1000
        # How long the last call or batch took from hand-over to durable, in seconds.
        self._last_took = 0.0
        self._wakeup = threading.Condition(threading.Lock())
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committer = threading.Thread(target=self._commit, name="journal-commit", daemon=True)
        self._committer.start()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        durability: Durability = "always",
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        inline_limit_ms: float = DEFAULT_INLINE_LIMIT_MS,
        **options: Any,
    ) -> AsyncIterator[AsyncJournal]:
        """``async with AsyncJournal.open(path) as j:`` opens the log in a worker thread."""
        loop = asyncio.get_running_loop()
        journal = await loop.run_in_executor(
            None, functools.partial(Journal.open, path, durability, **options)
        )
        aj = cls(journal, max_pending, inline_limit_ms)
        try:
            yield aj
        finally:
            await aj.aclose()

    async def aclose(self) -> None:
        """Complete every call handed over so far, then close the journal.

        Calls made from now on raise ``JournalClosed``.
        """
        loop = asyncio.get_running_loop()
        with self._wakeup:
            if self._closing:
                return
            self._closing = True
            self._wakeup.notify()
        await loop.run_in_executor(None, self._committer.join)
        await loop.run_in_executor(None, self.journal.close)
        # The committer's last completions were scheduled before it ended: let them run.
        await asyncio.sleep(0)

    # -- the hand-over ---------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        lane = _batch_lane.get()
        loop = asyncio.get_running_loop()
        if lane is not None:
            return await loop.run_in_executor(lane, functools.partial(fn, *args, **kwargs))
        if self._closing:
            raise JournalClosed(f"{self.journal.path}: the journal is closed")
        call = Call(fn, args, kwargs)
        alone = not self._in_flight and self._last_took < self._inline_limit
        if alone and await self._run_alone(call):
            if call.error is not None:
                raise call.error
            result: T = call.result
            return result
        await self._slots.acquire()  # back-pressure: wait for room before handing over
        call.future = future = loop.create_future()
        with self._wakeup:
            if self._closing:
                self._slots.release()
                raise JournalClosed(f"{self.journal.path}: the journal is closed")
            self._loop = loop
            self._queue.append(call)
            self._in_flight += 1
            if len(self._queue) == 1:
                self._wakeup.notify()
        # Handed over: cancelling this await leaves the call to run (retry with the same
        # event_id to learn its receipt).
        outcome: T = await future
        return outcome

    async def _run_alone(self, call: Call) -> bool:
        """Run ``call`` on the loop's thread, durably, if after one turn of the loop no
        other call has come or is under way and no thread or process holds the log; False
        (nothing ran) if not."""
        self._arriving += 1
        try:
            # Every task that is ready runs first: if they call too, all go to the committer.
            await asyncio.sleep(0)
        finally:
            self._arriving -= 1
        if self._arriving or self._in_flight or self._closing:
            return False
        start = time.perf_counter()
        ticket = Ticket((call,))
        if not self.journal._combiner.submit_now(ticket):
            return False
        if call.error is None and ticket.token:
            self.journal._log.wait_durable(ticket.token)
        self._last_took = time.perf_counter() - start
        return True

    def _commit(self) -> None:
        """The committer thread: hand queued calls over in tickets until closed and empty."""
        while True:
            with self._wakeup:
                while not self._queue and not self._closing:
                    self._wakeup.wait()
                if not self._queue:
                    return
                n = min(len(self._queue), _MAX_TICKET)
                calls = [self._queue.popleft() for _ in range(n)]
                loop = self._loop
            start = time.perf_counter()
            ticket = Ticket(calls)
            self.journal._combiner.submit(ticket)
            if ticket.token:
                try:
                    self.journal._log.wait_durable(ticket.token)
                except (DurabilityError, JournalClosed) as exc:
                    for call in calls:
                        if call.error is None:
                            call.error, call.result = exc, None
            self._last_took = time.perf_counter() - start
            assert loop is not None
            try:
                loop.call_soon_threadsafe(self._complete, calls)
            except RuntimeError:  # that loop is closed: nobody can await these calls now
                log.warning(
                    "%s: %d calls completed after their event loop closed",
                    self.journal.path,
                    len(calls),
                )

    def _complete(self, calls: list[Call]) -> None:
        """On the loop: complete a batch's futures (those not cancelled) and free their
        slots."""
        self._in_flight -= len(calls)
        for call in calls:
            self._slots.release()
            future = call.future
            if future.cancelled():
                continue
            if call.error is not None:
                future.set_exception(call.error)
            else:
                future.set_result(call.result)

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

    # -- the writer's methods, awaitable ---------------------------------------------------
    register_model = _awaitable(Journal.register_model)
    create_session = _awaitable(Journal.create_session)

    async def append_message(
        self, session_id: str, role: str, content: str, **kwargs: Any
    ) -> Receipt:
        # The checks that need no state run here, so bad input fails without a hand-over.
        checked = MessageArgs(session_id, role, content, **kwargs).checked()
        return await self._call(self.journal._append_checked, checked)

    set_metadata = _awaitable(Journal.set_metadata)
    rename = _awaitable(Journal.rename)
    truncate = _awaitable(Journal.truncate)
    pause = _awaitable(Journal.pause)
    resume = _awaitable(Journal.resume)
    snapshot = _awaitable(Journal.snapshot)
    archive = _awaitable(Journal.archive)
    time_out = _awaitable(Journal.time_out)
    restore = _awaitable(Journal.restore)
    delete_session = _awaitable(Journal.delete_session)
    expire_due = _awaitable(Journal.expire_due)

    reappend = _awaitable(Journal.reappend)

    # Forgetting reads the whole log: on a thread of its own rather than the committer's,
    # which would hold every other call of the loop up meanwhile.
    async def forget(self, session_id: str, *, event_id: str | None = None) -> Receipt:
        return await self._on_own_thread(self.journal.forget, session_id, event_id=event_id)

    async def forget_many(
        self, session_ids: Sequence[str], *, expected: Mapping[str, Ranges] | None = None
    ) -> list[Receipt]:
        return await self._on_own_thread(self.journal.forget_many, session_ids, expected=expected)

    async def _on_own_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closing:
            raise JournalClosed(f"{self.journal.path}: the journal is closed")
        lane = _batch_lane.get()  # inside a batch: refused there, as by Journal
        run = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(lane, run)

    # Reads of the writer's state in memory: no lock, no disk, nothing to hand over.
    async def receipt(self, event_id: str) -> Receipt | None:
        return self.journal.receipt(event_id)

    async def last_seq(self, session_id: str) -> int:
        return self.journal.last_seq(session_id)

    async def status(self, session_id: str) -> str:
        return self.journal.status(session_id)

    @property
    def last_pos(self) -> int:
        return self.journal.last_pos

    @property
    def closed(self) -> bool:
        return self._closing or self.journal.closed
