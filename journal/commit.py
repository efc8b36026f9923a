"""Group commit: concurrent calls on one ``Journal`` are combined into one write.

A caller hands its call to the ``Combiner`` as a ``Ticket`` (one call for a thread, many
for the asyncio committer). If no thread is combining, the caller becomes the combiner:
it takes every ticket queued so far, runs all their calls under one hold of the log's
lock (one catch-up, one clock reading, one ``os.write``), releases the lock and hands the
combiner's role to the first caller that queued meanwhile. It then waits for the fsync that
covers the write (while its successor writes the next batch) and wakes every other caller
of the batch once, with its result, durable: a caller sleeps once per call, not once for
its result and again for the fsync. A caller whose calls all failed is woken before the
fsync, as it has nothing to wait for.

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

from journal.errors import DurabilityError, JournalClosed
from journal.log.backend import LogBusy


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

    __slots__ = ("_signal", "calls", "combine", "handed_on", "token")

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.token = 0  # the durability token of the batch's write (0: nothing written)
        self.combine = False  # woken to become the combiner, not because it is done
        self.handed_on = False  # this ticket's combiner passed the role on
        self._signal: threading.Lock | None = None

    def wait(self) -> None:
        assert self._signal is not None
        self._signal.acquire()

    def wake(self) -> None:
        assert self._signal is not None
        self._signal.release()


# Runs the calls of a batch under one hold of the lock; returns the write's token. Its flag
# says whether to wait for the log: if False and the log is busy, it raises LogBusy.
RunBatch = Callable[[list[Call], bool], int]
# Returns once the write of a token is durable (``LogBackend.wait_durable``).
WaitDurable = Callable[[int], None]


class Combiner:
    """Combines the calls of concurrent callers; see the module docstring."""

    def __init__(self, run_batch: RunBatch, wait_durable: WaitDurable) -> None:
        self._run_batch = run_batch
        self._wait_durable = wait_durable
        self._mutex = threading.Lock()
        self._queue: list[Ticket] = []
        self._busy = False  # a thread is combining

    def submit(self, ticket: Ticket) -> None:
        """Run the ticket's calls (here or in the combining thread); returns once written,
        and durable unless the fsync failed.

        Each call then holds its result or its error, and ``ticket.token`` says which
        write to wait for (``LogFile.wait_durable``, which raises the fsync's failure).
        """
        interrupted: BaseException | None = None
        leading = False  # this thread holds the combiner's role
        try:
            with self._mutex:
                self._queue.append(ticket)
                if self._busy:
                    ticket._signal = threading.Lock()
                    ticket._signal.acquire()
                else:
                    self._busy = leading = True
            if not leading:
                interrupted = self._wait(ticket)
                leading = ticket.combine
            if leading:
                self._combine(ticket)
        except BaseException:
            if leading and not ticket.handed_on:
                self._give_up_role(ticket)
            raise
        if interrupted is not None:
            raise interrupted

    def submit_now(self, ticket: Ticket) -> bool:
        """``submit`` without waiting: run the ticket's calls in this thread, alone, if no
        thread is combining and the log is free; False (nothing ran) if either is busy.
        Returns once written, not durable: ``ticket.token`` says which write to wait for.
        """
        with self._mutex:
            if self._busy:
                return False
            self._busy = True
        try:
            ticket.token = self._run_batch(list(ticket.calls), False)
        except LogBusy:
            return False
        except Exception as exc:  # nothing was written
            for call in ticket.calls:
                call.error, call.result = exc, None
        finally:
            self._hand_on([], 0, ticket)  # to whoever queued meanwhile
        return True

    @staticmethod
    def _wait(ticket: Ticket) -> BaseException | None:
        """Wait to be woken with the outcome, or to combine; an exception raised meanwhile
        (by a signal handler, say) is returned, not raised: the calls are handed over and
        will run, and the combiner's role may be passed to this ticket."""
        interrupted = None
        while True:
            try:
                ticket.wait()
                return interrupted
            except BaseException as exc:
                interrupted = exc

    def _combine(self, own: Ticket) -> None:
        """Run what is queued as one batch, then wake its callers and pass the role on.

        An interrupt of this thread (KeyboardInterrupt, say) while the batch runs fails
        this thread's calls alone: nothing of the batch was written, and the other
        callers' calls go back to the head of the queue for the next combiner.
        """
        batch: list[Ticket] = []
        token = 0
        try:
            with self._mutex:
                batch, self._queue = self._queue, []
            calls = [call for t in batch for call in t.calls]
            try:
                token = self._run_batch(calls, True)
            except Exception as exc:  # nothing of the batch was written
                for call in calls:
                    call.error, call.result = exc, None
            except BaseException as exc:
                for call in own.calls:
                    call.error, call.result = exc, None
                others = [t for t in batch if t is not own]
                with self._mutex:
                    self._queue[:0] = others
                batch = [own]
                raise
        finally:
            self._hand_on(batch, token, own)

    def _hand_on(self, batch: list[Ticket], token: int, own: Ticket) -> None:
        """Pass the combiner's role to the first caller queued meanwhile, wait for the
        batch's fsync, then wake the batch's callers with their outcome."""
        successor = None
        with self._mutex:
            if self._queue:
                successor = self._queue[0]
                successor.combine = True
            else:
                self._busy = False
        own.handed_on = True
        if successor is not None:
            successor.wake()  # it writes the next batch while this one is synced
        waiting: list[Ticket] = []
        try:
            for t in batch:
                t.token = token
                if t._signal is None or t is own:
                    continue
                if any(call.error is None for call in t.calls):
                    waiting.append(t)
                else:
                    self._wake(t)
            if waiting:
                self._wait_durable(token)
        except (DurabilityError, JournalClosed):
            pass  # each caller meets the failure in its own wait_durable
        finally:
            for t in waiting:
                self._wake(t)

    @staticmethod
    def _wake(ticket: Ticket) -> None:
        ticket.combine = False
        ticket.wake()

    def _give_up_role(self, own: Ticket) -> None:
        """Interrupted before combining: leave the queue and pass the role on."""
        with self._mutex:
            if own in self._queue:
                self._queue.remove(own)
        self._hand_on([], 0, own)
