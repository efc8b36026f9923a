"""The bulk path of catch-up: the fold of ``bulk.Loader`` on a database that already
holds part of the log (see projector/sync/catchup.py, which drops the triggers inside the
batch's transaction and creates them again before its COMMIT)."""

from __future__ import annotations

import sqlite3
import sys

from projector.rules.apply import (
    INSERT_METADATA_SQL,
    INSERT_MODEL_SQL,
    INSERT_SESSION_SQL,
    RESTORED_FTS_SQL,
)
from projector.sync.bulk import Loader, fill_fts_after
from projector.sync.bulk_sessions import (
    INSERT_TIMEOUTS_SQL,
    UPDATE_SESSION_SQL,
    UPDATE_TIMEOUTS_SQL,
    FoldSession,
    load_session,
    session_row,
    timeouts_row,
)
from projector.sync.bulk_snapshots import messages_span


class CatchUpLoader(Loader):
    """The fold on a database that already holds part of the log (one batch of catch-up,
    triggers dropped inside its transaction). Sessions and models are read on first use;
    a session's row is inserted when it is created (so the foreign keys hold at every
    step) and given its final values at the end; a deletion deletes at once (the cascade
    removes its rows; its full-text rows are removed first, as the messages_ad trigger
    would)."""

    def __init__(self, conn: sqlite3.Connection, after_pos: int) -> None:
        # A batch holds a bounded number of events, so of sessions: all are kept.
        super().__init__(conn, cap=sys.maxsize)
        self.after_pos = after_pos
        self._meta_dirty: set[str] = set()
        self._restored_ids: set[str] = set()

    def _get(self, session_id: str) -> FoldSession | None:
        if session_id in self.sessions:
            return self.sessions[session_id]
        s = self.sessions[session_id] = load_session(self.conn, session_id)
        return s

    def _recreate(self, session_id: str, snapshot_pos: int) -> FoldSession:
        s = super()._recreate(session_id, snapshot_pos)
        self._restored_ids.add(session_id)
        return s

    def _model(self, model_id: str) -> tuple[str, str | None, str] | None:
        model = self.models.get(model_id)
        if model is None:
            row = self.conn.execute(
                "SELECT model_name, provider, created_at FROM models WHERE model_id = ?",
                (model_id,),
            ).fetchone()
            if row is not None:
                model = self.models[model_id] = (row[0], row[1], row[2])
        return model

    def _new_model(self, model_id: str, model: tuple[str, str | None, str]) -> None:
        self.models[model_id] = model
        self.conn.execute(INSERT_MODEL_SQL, (model_id, *model))

    def _born(self, s: FoldSession) -> None:
        self.conn.execute(INSERT_SESSION_SQL, session_row(s))
        self.conn.execute(INSERT_TIMEOUTS_SQL, timeouts_row(s))

    def _metadata_changed(self, s: FoldSession) -> None:
        self._meta_dirty.add(s.session_id)

    def _stored_snap(self, s: FoldSession) -> tuple[int, int, int, int] | None:
        """The session's latest stored snapshot (but a pre_archive one, which holds other
        fields), if its messages are the first ones of ``s``: a message id is the pos of
        its event, so the same id at the snapshot's last seq means the same messages up
        to there (a restore from an older snapshot gives that seq a new message)."""
        row = self.conn.execute(
            "SELECT snapshot_id, message_count FROM session_snapshots WHERE session_id = ? "
            "AND snapshot_type != 'pre_archive' ORDER BY snapshot_id DESC LIMIT 1",
            (s.session_id,),
        ).fetchone()
        if row is None or not 0 < row[1] <= s.message_count:
            return None
        span = messages_span(self.conn, row[0])
        if span is None:
            return None
        same = self.conn.execute(
            "SELECT 1 FROM messages WHERE session_id = ? AND sequence_number = ? "
            "AND message_id = ?",
            (s.session_id, row[1], span[2]),
        ).fetchone()
        return (row[0], row[1], span[0], span[1]) if same else None

    def _withdraw(self, session_id: str, keep_through_seq: int) -> None:
        """As the messages_ad trigger would, the full-text rows of the messages written
        go first (pending ones are in no index yet)."""
        self.conn.execute(
            "DELETE FROM sessions_fts WHERE rowid IN (SELECT message_id FROM messages "
            "WHERE session_id = ? AND sequence_number > ?)",
            (session_id, keep_through_seq),
        )
        super()._withdraw(session_id, keep_through_seq)

    def _gone(self, session_id: str) -> None:
        self.sessions[session_id] = None
        self._restored_ids.discard(session_id)
        self.flush()
        self.conn.execute(
            "DELETE FROM sessions_fts WHERE rowid IN "
            "(SELECT message_id FROM messages WHERE session_id = ?)",
            (session_id,),
        )
        self.conn.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))

    def finish(self) -> None:
        self.flush()
        c = self.conn
        live = self.live()
        c.executemany(UPDATE_SESSION_SQL, [(*r[1:], r[0]) for r in map(session_row, live)])
        c.executemany(UPDATE_TIMEOUTS_SQL, [(*r[1:], r[0]) for r in map(timeouts_row, live)])
        for sid in sorted(self._meta_dirty):
            s = self.sessions.get(sid)
            if s is None:
                continue
            c.execute("DELETE FROM session_metadata WHERE session_id = ?", (sid,))
            c.executemany(
                INSERT_METADATA_SQL, [(m[0], sid, key, m[1]) for key, m in s.metadata.items()]
            )
        fill_fts_after(c, self.after_pos)
        # A restored session's messages keep their old ids: index them too.
        for sid in sorted(self._restored_ids):
            c.execute(RESTORED_FTS_SQL, (sid,))
