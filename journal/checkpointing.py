"""How a writer starts from its state checkpoint and keeps it current.

Opening a log costs what its open sessions and its id window cost, not its history: the
state and the receipts of the last ``id_window`` records come from the checkpoint
(``journal.statefile``, validated against the log), and only what was appended after the
checkpoint is folded. Without a valid checkpoint the log is read whole,
as it always was, and the checkpoint written afresh. The checkpoint names its place in
the log by the cursor there and the hash of the record that ends there
(``LogBackend.last_line``), so it works on any backend: a log file keeps it beside
itself, a writer on a JetStream stream in a file of its host's (``state_path``).

The checkpoint is written under the log's lock, with the state caught up to the end of
the log: when the writer closes, and when enough has changed since the last one (then the
sessions that ended are let go from memory: the checkpoint holds them). A log under
``CHECKPOINT_MIN_BYTES`` gets none until it grows past that: it is read whole. Another process
may write one meanwhile: a writer whose state is behind a newer checkpoint starts again
from it before it folds anything, so that no session is read from a checkpoint newer
than the state that reads it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import TYPE_CHECKING, Final

from journal.errors import JournalError
from journal.log import START, Cursor, FileLog, LogBackend
from journal.log.segments import log_size
from journal.state import JournalState
from journal.statefile import Mark, StateFile, mark_of

if TYPE_CHECKING:
    from journal.log.backend import Cursor as _Cursor

log = logging.getLogger("journal")

# A checkpoint is written when this many sessions changed since the last one, or this many
# records were folded: what a writer holds beyond its open sessions stays about that size.
SAVE_AFTER_SESSIONS: Final = 10_000
SAVE_AFTER_RECORDS: Final = 200_000
# Below this size a log is read whole (in milliseconds) rather than kept a checkpoint of:
# writing one costs a SQLite transaction and its fsyncs at every open and close.
CHECKPOINT_MIN_BYTES: Final = 4 << 20


def open_statefile(path: str) -> StateFile:
    """The checkpoint file at ``path``; one SQLite cannot read is replaced by an empty one
    (it is a cache: the log rebuilds it)."""
    sf: StateFile | None = None
    try:
        sf = StateFile(path)
        sf.mark()
        return sf
    except sqlite3.DatabaseError as exc:
        if sf is not None:
            sf.close()
        log.warning("%s: damaged (%s); it is rebuilt from the log", path, exc)
        for leftover in (path, f"{path}-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        return StateFile(path)


class Checkpointing:
    """The checkpoint side of ``journal.writer.Journal``."""

    if TYPE_CHECKING:  # provided by Journal
        _log: LogBackend
        _state: JournalState
        _end: _Cursor

        def _catch_up(self) -> None: ...

    _statefile: StateFile | None = None
    _saved_pos = 0  # the position of the checkpoint this state started from or wrote
    _checkpoint_later = False  # none yet: the log is small; one is made once it grows
    _state_path: str | None = None

    def _open_statefile(self, state_path: str | os.PathLike[str] | None = None) -> None:
        """Open the checkpoint at ``state_path``, or beside a log file; a log file too
        small to need one gets one when it has grown (``_checkpoint_due``). Other
        backends keep one only where told: without, their state is folded whole."""
        if state_path is not None:
            self._state_path = os.fspath(state_path)
        elif isinstance(self._log, FileLog):
            self._state_path = self._log.path + ".state"
        path = self._state_path
        if path is None:
            return
        if (
            isinstance(self._log, FileLog)
            and not os.path.exists(path)
            and log_size(self._log.path) < CHECKPOINT_MIN_BYTES
        ):
            self._checkpoint_later = True
            return
        self._checkpoint_later = False
        try:
            self._statefile = open_statefile(path)
        except (OSError, sqlite3.Error) as exc:  # a read-only directory, say: do without
            log.warning("%s: no writer checkpoint (%s); the log is read whole", path, exc)

    def _start_from_checkpoint(self) -> bool:
        """Take the state from a valid checkpoint ahead of this one (lock held); whether
        it did. The ids of the records before it come from the log's tail."""
        sf = self._statefile
        assert sf is not None
        try:
            mark = sf.mark()
        except sqlite3.Error as exc:  # changed by something else while open: not used
            log.warning("%s: the writer's checkpoint cannot be read: %s", sf.path, exc)
            return False
        if mark is None or mark.log_pos <= self._state.last_pos:
            return False
        self._log.end(START)  # a log replaced or cut since raises here, before it is trusted
        if not sf.matches(mark, *self._log.last_line(Cursor(mark.log_offset))):
            return False
        state = JournalState(self._state.recent_ids.size, store=sf)
        state.sessions = sf.open_sessions()
        state.models = sf.models()
        state.recent_ids.load(sf.recent_ids(mark.log_pos - state.recent_ids.size), sf.receipt_row)
        state.last_pos, state.last_ts = mark.log_pos, mark.last_ts
        self._state, self._end, self._saved_pos = state, Cursor(mark.log_offset), mark.log_pos
        return True

    def _checkpoint_due(self) -> bool:
        state = self._state
        if self._statefile is None:
            return self._checkpoint_later and self._end >= CHECKPOINT_MIN_BYTES
        return (
            len(state.dirty) >= SAVE_AFTER_SESSIONS
            or state.last_pos - self._saved_pos >= SAVE_AFTER_RECORDS
            or bool(state.forgotten_ids)
        )

    def _save_checkpoint(self) -> None:
        """Write the checkpoint as of the state, caught up to the end (lock held), then let
        the sessions that ended go. A failure is only logged: the checkpoint is a cache."""
        if self._statefile is None:  # the log has grown enough to need one
            self._open_statefile(self._state_path)
        sf, state = self._statefile, self._state
        if sf is None or self._end == START:
            return  # none can be made, or an empty log: nothing to mark
        afresh = state.store is None  # folded from the start: the file's rows are stale
        line_start, line = self._log.last_line(self._end)
        mark: Mark = mark_of(line_start, line, self._end, state.last_pos, state.last_ts)
        sessions = (
            list(state.sessions.items())
            if afresh
            else [(sid, state.sessions[sid]) for sid in state.dirty if sid in state.sessions]
        )
        ids = state.recent_ids.since(0 if afresh else self._saved_pos)
        # Twice the window: a writer keeps at least the last ``size`` ids, at most twice.
        ids_after = state.last_pos - 2 * state.recent_ids.size
        try:
            sf.save(
                mark,
                sessions,
                state.models,
                state.forgotten_ids,
                ids,
                ids_after=ids_after,
                afresh=afresh,
            )
        except (sqlite3.Error, OSError, JournalError) as exc:  # closed meanwhile, say
            log.warning("%s: the writer's checkpoint was not written: %s", sf.path, exc)
            return
        state.dirty.clear()
        state.forgotten_ids.clear()
        state.store = sf
        state.evict_ended()
        self._saved_pos = state.last_pos

    def _close_checkpoint(self) -> None:
        """Write a last checkpoint and close the file (at ``Journal.close``)."""
        sf = self._statefile
        if sf is None:
            return
        try:
            with self._log.exclusive():
                self._catch_up()
                state = self._state
                # Nothing folded since the checkpoint it has: that one still holds.
                if state.store is None or state.last_pos != self._saved_pos:
                    self._save_checkpoint()
        except JournalError as exc:  # a log or handle in trouble: its checkpoint can wait
            log.warning("%s: the writer's checkpoint was not written: %s", sf.path, exc)
        finally:
            sf.close()
            self._statefile = None
