"""Group commit: concurrent calls on one ``Journal`` are combined into one write.

A caller hands its call to the ``Combiner`` as a ``Ticket`` (one call for a thread, many
for the asyncio committer). If no thread is combining, the caller becomes the combiner:
it takes every ticket queued so far, runs all their calls under one hold of the log's
lock (one catch-up, one clock reading, one ``os.write``), releases the lock and hands the
combiner's role to the first caller that queued meanwhile. Every other caller of the batch
is woken once, with its result and the write's durability token; each then waits for the
fsync that covers the token, which one thread does for all of them (``LogFile``).

So a thread that meets no contention runs its own call at once, and threads that meet
contention do not pass the lock from one to the next: the calls of many threads cost one
lock hand-off, one write and one fsync. Each call stays its own atomic group, and a call
that fails (bad input, a conflict) is undone alone; a failed write fails the whole batch,
which then wrote nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any


class Call:
    """One method call to run under the log's lock, and what it gave."""

    __slots__ = ("args", "error", "fn", "future", "kwargs", "result")

    def __init__(
        self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None
        self.future: Any = None  # the asyncio face's future, completed on its loop


class Ticket:
    """Calls handed over together: they land in the same batch, in this order."""

    __slots__ = ("_signal", "calls", "combine", "token")

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.token = 0  # the durability token of the batch's write (0: nothing written)
        self.combine = False  # woken to become the combiner, not because it is done
        self._signal: threading.Lock | None = None

    def wait(self) -> None:
        assert self._signal is not None
        self._signal.acquire()

    def wake(self) -> None:
        assert self._signal is not None
        self._signal.release()


# Runs the calls of a batch under one hold of the lock; returns the write's token.
RunBatch = Callable[[list[Call]], int]


class Combiner:
    """Combines the calls of concurrent callers; see the module docstring."""

    def __init__(self, run_batch: RunBatch) -> None:
        self._run_batch = run_batch
        self._mutex = threading.Lock()
        self._queue: list[Ticket] = []
        self._busy = False  # a thread is combining

    def submit(self, ticket: Ticket) -> None:
        """Run the ticket's calls (here or in the combining thread); returns once written.

        Each call then holds its result or its error, and ``ticket.token`` says which
        write to wait for (``LogFile.wait_durable``).
        """
        with self._mutex:
            self._queue.append(ticket)
            if self._busy:
                ticket._signal = threading.Lock()
                ticket._signal.acquire()
            else:
                self._busy = True
        interrupted: BaseException | None = None
        if ticket._signal is not None:
            while True:
                try:
                    ticket.wait()  # woken with the outcome, or to combine
                    break
                except BaseException as exc:  # a signal handler's exception, say
                    # The calls are handed over and will run, and the combiner's role may
                    # be passed to this ticket: keep waiting, then raise.
                    interrupted = exc
        if ticket._signal is None or ticket.combine:
            self._combine()
        if interrupted is not None:
            raise interrupted

    def _combine(self) -> None:
        with self._mutex:
            batch, self._queue = self._queue, []
        calls = [call for t in batch for call in t.calls]
        token = 0
        try:
            token = self._run_batch(calls)
        except BaseException as exc:  # nothing of the batch was written
            for call in calls:
                call.error, call.result = exc, None
        successor = None
        with self._mutex:
            if self._queue:
                successor = self._queue[0]
                successor.combine = True
            else:
                self._busy = False
        for t in batch:
            t.token = token
            if t._signal is not None:
                t.combine = False
                t.wake()
        if successor is not None:
            successor.wake()
