"""The writer's state checkpoint: what a second open reads, and every way the checkpoint
can be wrong (missing, stale, damaged, another version, another log, killed mid-write)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from journal import Journal, LogError, Receipt, SessionExists, checkpointing
from journal.checkpointing import CHECKPOINT_MIN_BYTES, SAVE_AFTER_SESSIONS
from journal.state import IdWindow
from journal.statefile import FORMAT


@pytest.fixture(autouse=True)
def checkpoint_every_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """These logs are small: keep a checkpoint of them all the same."""
    monkeypatch.setattr(checkpointing, "CHECKPOINT_MIN_BYTES", 0)


def history(log: Path, closed: int = 30, open_: int = 3) -> None:
    with Journal.open(log, "none") as j:
        for i in range(closed):
            sid = f"closed-{i}"
            j.create_session("m", session_id=sid, first_message="hello")
            j.append_message(sid, "assistant", "bye")
            j.archive(sid) if i % 2 else j.delete_session(sid)
        for i in range(open_):
            j.create_session("m", session_id=f"open-{i}", first_message="still here")


def test_a_second_open_holds_the_open_sessions_only_and_knows_the_others(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    history(log)
    assert (tmp_path / "log.jsonl.state").exists()
    with Journal.open(log, "none") as j:
        assert j._state.store is not None  # started from the checkpoint
        assert sorted(j._state.sessions) == ["open-0", "open-1", "open-2"]
        assert j.status("closed-1") == "archived" and j.status("closed-0") == "deleted"
        assert j.last_seq("closed-3") == 2
        with pytest.raises(SessionExists):
            j.create_session("m", session_id="closed-5")  # an id ever used stays used
        j.restore("closed-3")
        assert j.append_message("closed-3", "user", "back").seq == 3
        j.restore("closed-4")  # a deleted one comes back too
        assert j.last_seq("closed-4") == 2


def test_a_missing_stale_damaged_or_foreign_checkpoint_is_rebuilt(tmp_path: Path) -> None:
    log, state = tmp_path / "log.jsonl", tmp_path / "log.jsonl.state"
    history(log)
    expected = {f"closed-{i}": "archived" if i % 2 else "deleted" for i in range(30)}

    def check() -> None:
        with Journal.open(log, "none") as j:
            assert {sid: j.status(sid) for sid in expected} == expected
            assert j.last_seq("open-1") == 1

    state.unlink()  # missing
    check()
    assert state.exists()
    state.write_bytes(b"not a database at all" * 100)  # damaged
    check()
    with closing(sqlite3.connect(state)) as conn, conn:  # another version
        conn.execute("UPDATE meta SET format = ?", (FORMAT + 1,))
    check()
    with closing(sqlite3.connect(state)) as conn, conn:  # a line that is not the one it names
        conn.execute("UPDATE meta SET line_hash = 'x' || substr(line_hash, 2)")
    check()
    older = state.read_bytes()
    with Journal.open(log, "none") as j:  # stale: appended to after it was written
        j.create_session("m", session_id="later", first_message="new")
        j.restore("closed-1")
    state.write_bytes(older)
    with Journal.open(log, "none") as j:
        assert j._state.store is not None  # it was used, then the rest folded
        assert j.last_seq("later") == 1 and j.status("closed-1") == "active"


def test_a_writer_behind_a_newer_checkpoint_starts_again_from_it(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    history(log)
    with Journal.open(log, "none") as a:
        assert "closed-3" not in a._state.sessions
        with Journal.open(log, "none") as b:
            b.restore("closed-3")
            b.append_message("closed-3", "user", "from b")
        # b's checkpoint holds closed-3 with seq 3, past what a has read: a must not fold
        # b's message on top of it.
        assert a.append_message("closed-3", "user", "from a").seq == 4


def test_forgetting_leaves_nothing_of_the_session_in_the_checkpoint(tmp_path: Path) -> None:
    log, state = tmp_path / "log.jsonl", tmp_path / "log.jsonl.state"
    history(log)
    with Journal.open(log, "none") as j:
        j.create_session("m", session_id="zq-secret-session", first_message="x")
    assert b"zq-secret-session" in state.read_bytes()
    with Journal.open(log, "none") as j:
        j.archive("zq-secret-session")
    with Journal.open(log, "none") as j:
        j.forget("zq-secret-session")
        assert b"zq-secret-session" not in state.read_bytes()
    assert not any(b"zq-secret" in p.read_bytes() for p in tmp_path.iterdir())
    with Journal.open(log, "none") as j:
        j.create_session("m", session_id="zq-secret-session")


def test_sessions_that_end_are_let_go_once_a_checkpoint_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import journal.checkpointing as checkpointing

    monkeypatch.setattr(checkpointing, "SAVE_AFTER_SESSIONS", 5)
    with Journal.open(tmp_path / "log.jsonl", "none") as j:
        for i in range(40):
            j.create_session("m", session_id=f"s{i}", first_message="hi")
            j.archive(f"s{i}")
            assert len(j._state.sessions) <= 6
        assert j.status("s3") == "archived"
    assert SAVE_AFTER_SESSIONS > 5


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from journal import Journal
    from journal.statefile import StateFile

    def dying_save(self, *args, **kwargs):  # killed half way through the transaction
        c = self._conn.cursor()
        c.execute("BEGIN IMMEDIATE")
        c.execute("DELETE FROM sessions")
        c.execute("UPDATE meta SET log_pos = log_pos + 1000")
        os.kill(os.getpid(), signal.SIGKILL)

    StateFile.save = dying_save
    with Journal.open(sys.argv[1], "none") as j:
        j.restore("closed-1")
        j.append_message("closed-1", "user", "after the restore")
    """
)


def test_a_kill_while_the_checkpoint_is_written_leaves_one_a_later_open_can_trust(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.jsonl"
    history(log)
    child = subprocess.run([sys.executable, "-c", _CHILD, str(log)], check=False)
    assert child.returncode == -signal.SIGKILL
    with Journal.open(log, "none") as j:
        assert j.status("closed-1") == "active" and j.last_seq("closed-1") == 3


def test_a_retry_of_an_event_from_before_the_checkpoint_is_answered(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    eid = "3b7d1c8e-5f0a-4c2b-9d6e-1a2b3c4d5e6f"
    with Journal.open(log, "none") as j:
        first = j.create_session("m", session_id="s", first_message="hi")
        receipt = j.append_message(first, "user", "once", event_id=eid)
    history(log)
    with Journal.open(log, "none") as j:
        assert j._state.store is not None
        assert j.append_message("s", "user", "once", event_id=eid) == receipt._replace(
            duplicate=True
        )
        assert j.receipt(eid) == receipt


def test_a_checkpoint_that_cannot_be_made_is_done_without(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "log.jsonl"
    history(log)
    (tmp_path / "log.jsonl.state").unlink()
    (tmp_path / "log.jsonl.state").mkdir()  # in the way: SQLite cannot open it
    with Journal.open(log, "none") as j:
        assert j._statefile is None and j.last_seq("open-2") == 1
        j.append_message("open-2", "user", "still works")
    assert "no writer checkpoint" in caplog.text


def test_the_window_looks_up_checkpointed_receipts_and_skips_forgotten_sessions() -> None:
    rows = {
        "old": ("old", "message_appended", 5, "gone", 2),
        "kept": ("kept", "message_appended", 12, "gone", 1),  # the id reused after
        "other": ("other", "session_created", 7, "other", None),
    }
    window = IdWindow(4)
    window.load(set(rows), rows.get)
    assert window.get("other") == ("session_created", Receipt(7, "other", "other", None, False))
    assert window.get("never") is None
    window.drop_sessions({"gone": 10})  # forgotten at pos 10: its earlier receipts go
    assert window.get("old") is None and "old" not in window
    assert window.get("kept") == ("message_appended", Receipt(12, "kept", "gone", 1, False))
    window.discard("other")
    assert window.get("other") is None


def test_a_checkpoint_damaged_while_open_is_named_when_a_retry_needs_it(tmp_path: Path) -> None:
    log, state = tmp_path / "log.jsonl", tmp_path / "log.jsonl.state"
    eid = "3b7d1c8e-5f0a-4c2b-9d6e-1a2b3c4d5e6f"
    with Journal.open(log, "none") as j:
        j.create_session("m", session_id="s", first_message="hi")
        j.append_message("s", "user", "once", event_id=eid)
    history(log)
    j = Journal.open(log, "none")
    try:
        assert j._state.store is not None
        state.write_bytes(b"not a database " * 400)  # changed behind the writer's back
        with pytest.raises(LogError, match="writer's checkpoint cannot be read"):
            j.receipt(eid)
    finally:
        j.close()
    with Journal.open(log, "none") as j:  # opening again rebuilds it from the log
        assert j.receipt(eid) is not None


def test_a_small_log_gets_a_checkpoint_once_it_has_grown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, state = tmp_path / "log.jsonl", tmp_path / "log.jsonl.state"
    assert CHECKPOINT_MIN_BYTES >= 1 << 20  # reading a log that small whole is quick
    monkeypatch.setattr(checkpointing, "CHECKPOINT_MIN_BYTES", 4000)
    with Journal.open(log, "none") as j:
        j.create_session("m", session_id="s", first_message="hello")
    assert not state.exists()  # a small log: read whole, no checkpoint
    with Journal.open(log, "none") as j:
        assert j._statefile is None
        while log.stat().st_size < 4000:
            last = j.append_message("s", "user", "growing")
        j.append_message("s", "user", "past the size")
        assert state.exists() and j._state.store is not None  # made while the writer ran
    with Journal.open(log, "none") as j:  # the next open starts from it
        assert j._state.store is not None and j.last_seq("s") == last.seq + 1
