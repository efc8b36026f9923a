"""The OpenAI Agents SDK's session memory, kept in the journal: ``JournalSession``.

``JournalSession`` implements the SDK's ``Session`` protocol (``get_items``,
``add_items``, ``pop_item``, ``clear_session``) on one session of the log, so an agent's
history is the log's and ``session-journal show``, search and ``stats`` read it::

    session = JournalSession("user-42", log="sessions.jsonl")
    result = await Runner.run(agent, "Hello", session=session)

One SDK item is one message:

* each ``add_items`` call is one atomic group, the session's creation included on its
  first call (with no timeouts: an SDK session does not expire). Each item is kept as
  given, as JSON in the message's ``raw``; ``get_items`` decodes exactly that, so items
  come back equal to what was added, as from the SDK's ``SQLiteSession``;
* the message's other fields render the item for reading and search: a message item
  keeps its role and its text; a ``function_call`` is an assistant message carrying the
  tool call (``call_id``, ``name``, ``arguments``); a ``function_call_output`` is a tool
  message answering ``call_id``, with the output as its text; a ``reasoning`` item or an
  item of any other type is an assistant message with the item's text, if it has any;
* ``pop_item`` and ``clear_session`` withdraw messages with ``messages_truncated``
  (reasons ``pop_item`` and ``clear_session``): the log keeps what was withdrawn, and
  the next item takes the freed seq. The SDK's compaction hooks
  (``_get_compaction_snapshot``, whose ``replace_suffix`` replaces the newest items, and
  ``_atomic_replace_items``) withdraw and append in one group, reason ``compaction``.

Ids: the SDK takes any string as a session id; the log takes ``SESSION_ID`` of
``journal.validation``. An id the log refuses is mapped as the LiteLLM capture maps one
(``session_id_for``: disallowed characters become ``-``, then ``_`` and 8 hex digits of
the id's hash, so two ids never share a session), and the SDK's id is kept in the
session's metadata ``agents_session_id``.

Reading: the session's items are held in memory, read from the log once, then read on
from where the last read stopped. What another writer (another process or another
``JournalSession``) appends to or withdraws from the session is folded in at the next
call; the log is never read whole again. What this object writes is in memory at once.

The SDK is imported when a session is made, never by ``import projector``; this is the
one module that imports it. ``agent_items`` maps items to messages and back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from journal.errors import InvalidValue, JournalClosed, LogError, UnknownSession
from journal.events import MessageAppended, MessagesTruncated
from journal.integrations.capture import session_id_for
from journal.log import DURABILITY_MODES, START, Cursor, Durability, LogReader
from journal.log.segments import log_size
from journal.validation import check_model_id
from journal.writer import Journal
from projector.integrations.agent_items import item_arguments, message_json
from projector.sync.replay import replay
from projector.watch import AlreadyWatching, projection_lock

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory.session import _CompactionSnapshot
    from agents.memory.session_settings import SessionSettings
    from agents.run_context import RunContextWrapper

log = logging.getLogger("projector.integrations")

T = TypeVar("T")

# The session metadata key that keeps the SDK's id of a session whose id had to be mapped.
ORIGINAL_ID: Final = "agents_session_id"
# The reasons of the withdrawals each operation writes.
POP_ITEM: Final = "pop_item"
CLEAR_SESSION: Final = "clear_session"
COMPACTION: Final = "compaction"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One item of the session: the position of its message in the log, which no other
    record shares (a seq does not identify one: a withdrawn message frees its seq), and
    the item's JSON."""

    pos: int
    text: str


class JournalSession:
    """The Agents SDK's ``Session`` protocol on one session of the journal's log.

    ``session_id`` is the SDK's id and ``journal_session_id`` the log's (the same unless
    the log refuses the SDK's). ``log`` is the log's path; ``db``, if given, a projection
    brought up to date after each write, so that ``show`` and search see it at once (a
    failure there is logged, not raised: the log already holds the write). ``model_id``
    is the model a new session is recorded with; ``durability`` the writer's;
    ``session_settings`` the SDK's (its ``limit`` applies when ``get_items`` is given
    none).

    Operations on one object run one at a time, each as one call in a worker thread (the
    loop never waits for the log's lock, a write or an fsync); an operation whose caller
    is cancelled still settles before the cancellation goes through. Use an object from
    one event loop at a time (``Runner.run_sync`` reuses one loop per thread). ``await
    session.close()``, or ``async with``, closes the log. Errors are the journal's:
    ``InvalidValue`` for an item the log cannot keep, ``InvalidState`` for a session
    closed in the log (archived, expired), ``JournalClosed`` after ``close()``.
    """

    def __init__(
        self,
        session_id: str,
        log: str | os.PathLike[str] = "sessions.jsonl",
        db: str | os.PathLike[str] | None = None,
        model_id: str = "agents",
        durability: Durability = "always",
        session_settings: SessionSettings | Mapping[str, Any] | None = None,
    ) -> None:
        settings_type, coerce_settings = _settings_api()
        if not isinstance(session_id, str):
            raise InvalidValue(f"session_id must be a string, not {type(session_id).__name__}")
        check_model_id(model_id)
        if durability not in DURABILITY_MODES:
            raise InvalidValue(
                f"durability must be one of {', '.join(DURABILITY_MODES)}, not {durability!r}"
            )
        self.session_id = session_id
        self.journal_session_id = session_id_for(session_id)
        # The runner resolves the settings it is given against these: an SDK instance.
        self.session_settings: SessionSettings | None = (
            settings_type() if session_settings is None else coerce_settings(session_settings)
        )
        self.log_path = os.fspath(log)
        self.db_path = None if db is None else os.fspath(db)
        self.model_id = model_id
        self.durability: Durability = durability
        self._journal: Journal | None = None
        self._closed = False
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        # The session's items, as the log holds them up to _cursor (the record at _pos
        # ends there); item n is the message of seq n.
        self._entries: list[_Entry] = []
        self._cursor = START
        self._pos = 0
        # The run usage last recorded and its total, so that a group records only the
        # tokens spent since the previous group of the same run.
        self._usage_seen: tuple[object, int] | None = None

    # -- the Session protocol ------------------------------------------------------------
    async def get_items(
        self, limit: int | None = None, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> list[TResponseInputItem]:
        """The session's items, oldest first: the latest ``limit`` (``session_settings``'
        when None; all when that is None too; none for 0; all for a negative number, as
        the SDK's ``SQLiteSession`` answers)."""
        async with self._guard():
            entries = await self._call(self._current)
        if limit is None and self.session_settings is not None:
            limit = self.session_settings.limit
        if limit is not None and limit >= 0:
            entries = entries[-limit:] if limit else []
        return [json.loads(e.text) for e in entries]

    async def add_items(
        self,
        items: Sequence[TResponseInputItem],
        *,
        wrapper: RunContextWrapper[Any] | None = None,
    ) -> None:
        """Append the items as one atomic group (creating the session on its first)."""
        async with self._guard():
            self._check_open()
            if not items:
                return
            arguments = [item_arguments(item) for item in items]
            tokens, usage = self._tokens_since(wrapper)

            def plan(j: Journal) -> Callable[[], None]:
                self._ensure_session(j)
                added = self._append(j, arguments, len(self._entries), tokens)
                return lambda: self._entries.extend(added)

            await self._call(self._write_group, plan)
            if usage is not None:
                self._usage_seen = usage
        await self._project()

    async def pop_item(
        self, *, wrapper: RunContextWrapper[Any] | None = None
    ) -> TResponseInputItem | None:
        """Withdraw the newest item and return it (None, writing nothing, if there is none)."""

        def plan(j: Journal) -> Callable[[], _Entry | None]:
            n = len(self._entries)
            if not n:
                return lambda: None
            j.truncate(self.journal_session_id, n - 1, reason=POP_ITEM)
            return self._entries.pop

        entry: _Entry | None = await self._write(plan)
        if entry is None:
            return None
        item: TResponseInputItem = json.loads(entry.text)
        return item

    async def clear_session(self, *, wrapper: RunContextWrapper[Any] | None = None) -> None:
        """Withdraw every item (writing nothing if there is none)."""

        def plan(j: Journal) -> Callable[[], bool]:
            if not self._entries:
                return lambda: False
            j.truncate(self.journal_session_id, 0, reason=CLEAR_SESSION)

            def apply() -> bool:
                self._entries.clear()
                return True

            return apply

        await self._write(plan)

    # -- the SDK's compaction hooks: one atomic group each ------------------------------
    async def _get_compaction_snapshot(
        self,
        limit: int,
        *,
        prune_prefix: Callable[[TResponseInputItem], bool] | None = None,
    ) -> _CompactionSnapshot | None:
        """The newest ``limit`` items, and a ``replace_suffix`` that replaces the newest of
        them in one group, if they are still the newest (else it writes nothing and
        returns False). None, the SDK then reading and replacing items itself, for a
        subclass (it may transform items: it must bring its own snapshot) and for
        ``prune_prefix``: the log withdraws the newest messages, never the oldest."""
        if type(self) is not JournalSession or prune_prefix is not None or limit < 1:
            return None
        try:
            from agents.memory.session import _CompactionSnapshot
        except ImportError:  # an SDK from before the hook
            return None
        async with self._guard():
            entries = await self._call(self._current)
        snapshot = entries[-limit:]

        async def replace_suffix(start: int, output: list[TResponseInputItem]) -> bool:
            expected = [e.pos for e in snapshot[start:]]
            if not expected:
                return False
            return await self._replace(output, expected)

        items = [json.loads(e.text) for e in snapshot]
        return _CompactionSnapshot(items, len(snapshot) == len(entries), replace_suffix)

    async def _atomic_replace_items(self, items: list[TResponseInputItem]) -> bool:
        """Replace the whole history with ``items`` in one group (False for a subclass,
        which may transform items)."""
        if type(self) is not JournalSession:
            return False
        return await self._replace(items, None)

    async def _replace(
        self, items: Sequence[TResponseInputItem], expected: list[int] | None
    ) -> bool:
        """Withdraw the newest items and append ``items``, in one group: every item for
        ``expected`` None, else the items at those positions if they still are the newest
        (False, writing nothing, if not)."""
        arguments = [item_arguments(item) for item in items]

        def plan(j: Journal) -> Callable[[], bool]:
            entries = self._entries
            keep = 0 if expected is None else len(entries) - len(expected)
            if keep < 0 or (expected is not None and [e.pos for e in entries[keep:]] != expected):
                return lambda: False
            if arguments:
                self._ensure_session(j)
            if keep < len(entries):
                j.truncate(self.journal_session_id, keep, reason=COMPACTION)
            added = self._append(j, arguments, keep, None)

            def apply() -> bool:
                del entries[keep:]
                entries.extend(added)
                return True

            return apply

        return await self._write(plan)

    # -- closing --------------------------------------------------------------------------
    async def _write(self, plan: Callable[[Journal], Callable[[], T]]) -> T:
        """Run ``plan``'s group (``_write_group``) under the session's guard; when it wrote
        (a result that is not None or False), bring the projection up to date."""
        async with self._guard():
            done: T = await self._call(self._write_group, plan)
        if done is not None and done is not False:
            await self._project()
        return done

    async def close(self) -> None:
        """Close the log (after the operation under way, if any); later calls raise
        ``JournalClosed``."""
        async with self._guard():
            self._closed = True
            journal, self._journal = self._journal, None
            if journal is not None:
                await asyncio.to_thread(journal.close)

    async def __aenter__(self) -> JournalSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- running operations -------------------------------------------------------------
    def _guard(self) -> asyncio.Lock:
        """This object's lock, on the running loop: one operation at a time, so the items
        in memory and the records the operation writes stay in step."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())
        return self._lock[1]

    def _check_open(self) -> None:
        if self._closed:
            raise JournalClosed(f"{self.log_path}: this JournalSession is closed")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread, the writer opened first (on first use, with what
        the log holds of the session). Waited for even if the caller is cancelled, then
        the cancellation goes through: a thread cannot be stopped, and what it wrote must
        be in memory before the next operation runs."""
        self._check_open()
        task = asyncio.ensure_future(asyncio.to_thread(self._opened_then, fn, *args))
        cancelled: asyncio.CancelledError | None = None
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError as exc:
                cancelled = cancelled or exc
        try:
            result = task.result()
        except BaseException:
            if cancelled is not None:
                raise cancelled from None
            raise
        if cancelled is not None:
            raise cancelled
        return result

    def _opened_then(self, fn: Callable[..., T], *args: Any) -> T:
        if self._journal is None:
            journal = Journal.open(self.log_path, self.durability)
            try:
                self._load(journal)
            except BaseException:
                journal.close()
                raise
            self._journal = journal
        return fn(*args)

    # -- reading the log ------------------------------------------------------------------
    def _load(self, journal: Journal) -> None:
        """Read the session's items from the log (none to read for an id it never had)."""
        try:
            journal.last_seq(self.journal_session_id)
        except UnknownSession as exc:
            if not exc.deleted:
                self._cursor, self._pos = journal.read_to, journal.last_pos
                return
        self._read_on()

    def _current(self) -> list[_Entry]:
        """The items, after folding in what other writers added since the last read: a
        look at the log's size, not a read, when it has not grown."""
        if log_size(self.log_path) != self._cursor:
            self._read_on()
        return list(self._entries)

    def _read_on(self) -> None:
        """Fold what the log holds after ``_cursor`` into the items."""
        sid = self.journal_session_id
        entries = self._entries
        reader = LogReader(self.log_path, self._cursor, self._pos)
        for event, _ in reader:
            if isinstance(event, MessageAppended):
                if event.session_id == sid:
                    # Item n is the message of seq n, whatever was withdrawn before it.
                    del entries[event.seq - 1 :]
                    entries.append(_Entry(event.pos, message_json(event)))
            elif isinstance(event, MessagesTruncated) and event.session_id == sid:
                del entries[event.keep_through_seq :]
        self._cursor, self._pos = Cursor(reader.end), reader.last_pos

    # -- writing --------------------------------------------------------------------------
    def _write_group(self, plan: Callable[[Journal], Callable[[], T]]) -> T:
        """Run ``plan`` as one atomic group, then the change to the items it returns.

        The log is locked and the writer has caught up with it, so what it says is final:
        if others wrote since the last read, the items are brought up to date before the
        plan decides anything. The items change only once the group is written.
        """
        j = self._journal
        assert j is not None  # opened by _call
        with j.batch():
            if j.last_pos != self._pos:
                self._read_on()
            apply = plan(j)
        # Only this object writes through its journal: as far as the writer has read the
        # log, it ends with this group.
        self._cursor, self._pos = j.read_to, j.last_pos
        return apply()

    def _ensure_session(self, j: Journal) -> None:
        """Create the session for its first item, keeping a mapped SDK id in its metadata."""
        sid = self.journal_session_id
        try:
            last = j.last_seq(sid)
        except UnknownSession as exc:
            if exc.deleted:  # restore() brings it back, with its messages
                raise
            j.create_session(
                self.model_id,
                session_id=sid,
                idle_timeout_seconds=None,
                hard_timeout_seconds=None,
            )
            if sid != self.session_id:
                j.set_metadata(sid, ORIGINAL_ID, self.session_id)
            return
        if last != len(self._entries):
            raise LogError(
                f"{self.log_path}: session {sid!r} has {last} messages in the log, but "
                f"{len(self._entries)} were read from it",
                path=self.log_path,
            )

    def _append(
        self, j: Journal, arguments: list[dict[str, Any]], after: int, tokens: int | None
    ) -> list[_Entry]:
        """Append the messages after seq ``after``; the last one carries ``tokens``."""
        sid = self.journal_session_id
        added = []
        for i, args in enumerate(arguments):
            if tokens is not None and i == len(arguments) - 1:
                args = {**args, "tokens_used": tokens}
            receipt = j.append_message(sid, **args, expected_seq=after + i)
            added.append(_Entry(receipt.pos, args["raw"]))
        return added

    def _tokens_since(
        self, wrapper: RunContextWrapper[Any] | None
    ) -> tuple[int | None, tuple[object, int] | None]:
        """The run's tokens spent since its last recorded group, and what to remember once
        this group is written. A wrapper's usage counts the whole run so far."""
        usage = getattr(wrapper, "usage", None)
        total = getattr(usage, "total_tokens", None)
        if usage is None or not isinstance(total, int) or isinstance(total, bool) or total < 1:
            return None, None
        seen = self._usage_seen
        before = seen[1] if seen is not None and seen[0] is usage else 0
        return (total - before if total > before else None), (usage, total)

    async def _project(self) -> None:
        """Bring the projection up to date, if there is one. The log holds the write
        already: a failure here is logged, and the next write (or ``session-journal
        replay``) catches the projection up. It holds the projection's lock, as the
        command line's replay does; while a ``watch`` (or another replay) holds it, that
        one keeps the database current."""
        if self.db_path is None:
            return
        try:
            await asyncio.to_thread(_replay, self.log_path, self.db_path)
        except AlreadyWatching:
            log.debug("%s: projected by another projector", self.db_path)
        except Exception:
            log.warning(
                "%s: the projection %s was not brought up to date",
                self.log_path,
                self.db_path,
                exc_info=True,
            )


def _replay(log_path: str, db_path: str) -> None:
    with projection_lock(log_path, db_path):
        replay(log_path, db_path)


def _settings_api() -> tuple[type[SessionSettings], Callable[[Any], SessionSettings]]:
    """The SDK's settings class and its coercion (the SDK is needed from here on)."""
    try:
        from agents.memory.session_settings import SessionSettings, coerce_session_settings
    except ImportError as exc:
        raise ImportError(
            "JournalSession needs the OpenAI Agents SDK: pip install 'session-journal[agents]'"
        ) from exc
    return SessionSettings, coerce_session_settings
