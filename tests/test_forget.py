"""Forgetting a session in the log: zero residue, nothing else changed, safe under kills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journal import AsyncJournal, InvalidValue, Journal, UnknownSession
from journal.events import Redacted, SessionForgotten, decode_line
from journal.log import FileLog

SECRETS = [b"zq-id", b"zq-title", b"zq-content", b"zq-mmeta", b"zq-skey", b"zq-sval", b"zq-note"]
SID = "zq-id-7"


def fill(j: Journal, messages: int = 3) -> None:
    """A session that carries a secret in every field, and another one around it."""
    j.register_model("m", "M")
    j.create_session("m", session_id=SID, title="zq-title")
    j.create_session("m", session_id="other", first_message="hello")
    for i in range(messages):
        j.append_message(SID, "user", f"zq-content {i}", metadata={"k": "zq-mmeta"})
        j.append_message("other", "assistant", f"reply {i}")
    j.set_metadata(SID, "zq-skey", "zq-sval")
    j.snapshot(SID, note="zq-note")


def records(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def residue(directory: Path) -> list[tuple[str, bytes]]:
    return [
        (p.name, s) for p in sorted(directory.iterdir()) for s in SECRETS if s in p.read_bytes()
    ]


def test_forget_leaves_no_byte_of_the_session_and_changes_nothing_else(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with Journal.open(log, "none") as j:
        fill(j)
    with log.open("ab") as f:  # a crash tore the session's next message
        f.write(
            b'{"type":"message_appended","pos":99,"id":"x","session_id":"zq-id-7","content":"zq'
        )
    before = records(log)[:-1]  # the torn piece is moved aside
    with Journal.open(log, "none") as j:
        assert len(j.repairs) == 1
        receipt = j.forget(SID)
    after = records(log)
    assert residue(tmp_path) == []
    assert len(after) == len(before) + 1 and receipt.pos == len(after)
    assert receipt.session_id is None and receipt.seq is None
    for old, new in zip(before, after, strict=False):
        assert len(old) == len(new)  # every record keeps its byte offset
        event = decode_line(new[:-1])
        if SID.encode() in old:
            assert isinstance(event, Redacted) and event.pos == decode_line(old[:-1]).pos
        else:
            assert old == new
    forgotten = decode_line(after[-1][:-1])
    assert isinstance(forgotten, SessionForgotten)
    assert forgotten.positions[0][0] == 2  # the session's creation comes first
    assert b"zq" not in after[-1]


def test_the_forgotten_session_is_gone_from_the_writer_and_its_id_is_free(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with Journal.open(log, "none") as j, Journal.open(log, "none") as other:
        fill(j)
        kept = j.append_message("other", "user", "kept", event_id=str(uuid.uuid4()))
        gone = j.append_message(SID, "user", "gone", event_id=str(uuid.uuid4()))
        other.append_message("other", "user", "seen")  # it has read the session
        assert other.status(SID) == "active"
        eid = str(uuid.uuid4())
        first = j.forget(SID, event_id=eid)
        assert j.forget(SID, event_id=eid) == first._replace(duplicate=True)
        assert j.receipt(gone.event_id) is None and j.receipt(kept.event_id) == kept
        other.append_message("other", "user", "after")  # catches up with the forgetting
        with pytest.raises(UnknownSession):
            other.status(SID)
        assert other.receipt(gone.event_id) is None and other.receipt(kept.event_id) == kept
        again = other.create_session("m", session_id=SID, first_message="new life")
        assert other.last_seq(again) == 1
    with Journal.open(log, "none") as j:
        assert j.last_seq(SID) == 1 and j.last_seq("other") == 7


def test_forget_refuses_an_unknown_session_and_a_batch(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "log.jsonl", "none") as j:
        fill(j)
        size = os.path.getsize(j.path)
        with pytest.raises(UnknownSession):
            j.forget("never-created")
        with pytest.raises(InvalidValue), j.batch():
            j.forget(SID)
        assert os.path.getsize(j.path) == size  # nothing written by either
        j.delete_session(SID)
        j.forget(SID)  # a deleted session is forgotten like any other
        with pytest.raises(UnknownSession):
            j.forget(SID)  # already forgotten


def test_a_writer_that_opens_the_log_completes_an_unfinished_redaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = tmp_path / "done.jsonl"
    with Journal.open(done, "none", new_id=_counter(), clock=_clock()) as j:
        fill(j)
        j.forget(SID)
    log = tmp_path / "log.jsonl"
    with monkeypatch.context() as m:
        m.setattr(FileLog, "redact", _fails)
        with Journal.open(log, "none", new_id=_counter(), clock=_clock()) as j:
            fill(j)
            with pytest.raises(OSError):
                j.forget(SID)
    assert SECRETS[0] in log.read_bytes()  # the record is there, the redaction is not
    with Journal.open(log, "none") as j, pytest.raises(UnknownSession):
        j.status(SID)
    assert log.read_bytes() == done.read_bytes()


class _PowerCut(Exception):
    pass


def _forgotten_log(tmp_path: Path, name: str) -> Path:
    log = tmp_path / name
    with Journal.open(log, "none", new_id=_counter(), clock=_clock()) as j:
        fill(j)
        j.forget(SID)
    return log


@pytest.mark.parametrize("cut", ["in-a-record", "in-the-note"])
def test_a_redaction_cut_by_a_power_failure_is_completed_before_the_log_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    done = _forgotten_log(tmp_path, "done.jsonl")
    log = tmp_path / "log.jsonl"
    write, pwrite, calls = os.write, os.pwrite, [0]

    def torn_note(fd: int, data: bytes) -> int:  # the note reaches the disk cut short
        if bytes(data[:7]) == b'{"end":':
            write(fd, data[: len(data) // 2])
            raise _PowerCut
        return write(fd, data)

    def torn_record(fd: int, data: bytes, offset: int) -> int:  # the 2nd overwrite half done
        calls[0] += 1
        if calls[0] == 2:
            pwrite(fd, data[: len(data) // 2], offset)
            raise _PowerCut
        return pwrite(fd, data, offset)

    with Journal.open(log, "none", new_id=_counter(), clock=_clock()) as j:
        fill(j)
        with monkeypatch.context() as m:
            if cut == "in-the-note":
                m.setattr(os, "write", torn_note)
            else:
                m.setattr(os, "pwrite", torn_record)
            with pytest.raises(_PowerCut):
                j.forget(SID)
    assert (tmp_path / "log.jsonl.redacting").exists()
    with Journal.open(log, "none", new_id=_counter(start=1000), clock=_clock()) as j:
        # The note is carried out, or dropped if the forgetting was never appended.
        assert not (tmp_path / "log.jsonl.redacting").exists()
        if cut == "in-the-note":
            assert j.status(SID) == "active"
            j.forget(SID)
        with pytest.raises(UnknownSession):
            j.status(SID)
    assert all(s not in log.read_bytes() for s in SECRETS)
    if cut == "in-a-record":
        assert log.read_bytes() == done.read_bytes()


def test_the_async_face_forgets(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"

    async def main() -> None:
        async with AsyncJournal.open(log, "none") as aj:
            await aj.create_session("m", session_id=SID, first_message="zq-content")
            receipt = await aj.forget(SID)
            assert receipt.pos == aj.last_pos
            with pytest.raises(UnknownSession):
                await aj.forget(SID)

    asyncio.run(main())
    assert residue(tmp_path) == []


# -- kill -9 at each step of a forgetting ------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from journal import Journal
    from journal.log import FileLog
    path, step = sys.argv[1], int(sys.argv[2])
    die = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    if step == 0:  # before anything is changed
        FileLog.scrub_torn = die
    elif step == 1:  # after the redaction is planned, before the record is appended
        plan = FileLog.plan_redaction
        FileLog.plan_redaction = lambda self, *a: (plan(self, *a), die())
    else:  # after step - 2 records were overwritten
        pwrite, count = os.pwrite, [0]
        def counted(fd, data, offset):
            if count[0] == step - 2:
                die()
            count[0] += 1
            return pwrite(fd, data, offset)
        os.pwrite = counted
    with Journal.open(path, "none") as j:
        j.forget("zq-id-7")
    """
)


@pytest.mark.slow
def test_a_kill_at_any_step_leaves_the_log_before_or_after(tmp_path: Path) -> None:
    pristine = tmp_path / "pristine.jsonl"
    with Journal.open(pristine, "none") as j:
        fill(j, messages=4)
    session_records = sum(SID.encode() in line for line in records(pristine))
    for step in range(session_records + 2):
        log = tmp_path / f"log-{step}.jsonl"
        log.write_bytes(pristine.read_bytes())
        os.chmod(log, 0o600)
        child = subprocess.run([sys.executable, "-c", _CHILD, str(log), str(step)], check=False)
        assert child.returncode == -signal.SIGKILL, step
        with Journal.open(log, "none") as j:  # opening completes what was started
            if step <= 1:  # killed before the record: the log is as it was
                assert log.read_bytes() == pristine.read_bytes()
                j.forget(SID)  # running it again completes it
            with pytest.raises(UnknownSession):
                j.status(SID)
            assert j.last_seq("other") == 5
        assert all(s not in log.read_bytes() for s in SECRETS), step


# -- other writers append while a session is forgotten -----------------------------------

_APPENDER = textwrap.dedent(
    """
    import json, sys
    from journal import Journal
    with Journal.open(sys.argv[1]) as j:
        for i in range(int(sys.argv[2])):
            r = j.append_message("other", "user", f"concurrent {i}")
            print(json.dumps([r.pos, r.event_id]), flush=True)
    """
)


def test_appends_from_another_process_during_a_forgetting_are_all_kept(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with Journal.open(log, "none") as j:
        fill(j, messages=300)
    appender = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(log), "400"], stdout=subprocess.PIPE, text=True
    )
    assert appender.stdout is not None
    appender.stdout.readline()  # it is appending
    with Journal.open(log) as j:
        j.forget(SID)
    out, _ = appender.communicate(timeout=120)
    assert appender.returncode == 0
    acked = [json.loads(line) for line in out.splitlines()]
    lines = records(log)
    for pos, event_id in acked:
        assert decode_line(lines[pos - 1][:-1]).id == event_id
    with Journal.open(log, "none") as j:
        assert j.last_seq("other") == 301 + 400
    assert all(s not in log.read_bytes() for s in SECRETS)


def _fails(self: FileLog, positions: object) -> int:
    raise OSError("the disk went away")


def _counter(start: int = 1) -> Callable[[], str]:
    n = iter(range(start, 1 << 30))
    return lambda: str(uuid.UUID(int=next(n)))


def _clock() -> Callable[[], datetime]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    n = iter(range(1 << 30))
    return lambda: start + timedelta(seconds=next(n))
