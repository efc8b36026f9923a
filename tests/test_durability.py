"""Durability: fsync before acknowledgement, failing disks, the batch and none modes."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

import journal.log.appender as journal_log
import journal.log.files as journal_log_files
from journal import (
    DurabilityError,
    Journal,
    JournalClosed,
    LogWriteError,
    read_log,
)


class FakeOS(types.SimpleNamespace):
    """``os`` for journal.log: records calls and fails on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int]] = []
        self.fail_fsync: int | None = None  # errno to raise on the log's fsync
        self.fail_write: int | None = None  # errno to raise after a partial write
        self.fd: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if fd == self.fd and self.fail_write is not None:
            if len(data) > 1 and not any(c == ("partial", fd) for c in self.calls):
                self.calls.append(("partial", fd))
                return os.write(fd, bytes(data[: len(data) // 2]))
            raise OSError(self.fail_write, os.strerror(self.fail_write))
        self.calls.append(("write", fd))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        kind = "fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync"
        self.calls.append((kind, fd))
        if fd == self.fd and self.fail_fsync is not None:
            raise OSError(self.fail_fsync, os.strerror(self.fail_fsync))
        os.fsync(fd)

    def count(self, kind: str) -> int:
        return sum(1 for k, fd in self.calls if k == kind and fd == self.fd)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeOS:
    shim = FakeOS()
    monkeypatch.setattr(journal_log, "os", shim)
    monkeypatch.setattr(journal_log_files, "os", shim)
    return shim


def test_new_log_fsyncs_its_directory(tmp_path: Path, fake: FakeOS) -> None:
    with Journal.open(tmp_path / "s.jsonl"):
        pass
    assert any(kind == "fsync-dir" for kind, _ in fake.calls)


def test_always_mode_fsyncs_before_it_acknowledges(tmp_path: Path, fake: FakeOS) -> None:
    with Journal.open(tmp_path / "s.jsonl") as j:
        fake.fd = j._log.fd
        sid = j.create_session("m")
        for i in range(5):
            j.append_message(sid, "user", f"m{i}")
            assert [k for k, fd in fake.calls if fd == fake.fd][-2:] == ["write", "fsync"]
        assert fake.count("fsync") == fake.count("write") == 6


def test_none_mode_never_fsyncs(tmp_path: Path, fake: FakeOS) -> None:
    with Journal.open(tmp_path / "s.jsonl", durability="none") as j:
        fake.fd = j._log.fd
        sid = j.create_session("m")
        for i in range(5):
            j.append_message(sid, "user", f"m{i}")
    assert fake.count("write") == 6 and fake.count("fsync") == 0
    assert len(list(read_log(str(tmp_path / "s.jsonl")))) == 7


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "journal-flush"]


def test_batch_mode_syncs_in_the_background_and_stops_on_close(
    tmp_path: Path, fake: FakeOS
) -> None:
    before = set(_flushers())
    j = Journal.open(tmp_path / "s.jsonl", durability="batch", batch_interval_ms=5)
    fake.fd = j._log.fd
    (flusher,) = set(_flushers()) - before
    sid = j.create_session("m")
    j.append_message(sid, "user", "x")
    deadline = time.monotonic() + 30
    while fake.count("fsync") == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake.count("fsync") >= 1  # done by the flusher, not by the call
    j.close()
    assert not flusher.is_alive()
    assert set(_flushers()) == before
    with pytest.raises(JournalClosed):
        j.append_message(sid, "user", "y")


def test_batch_mode_close_syncs_what_the_flusher_has_not_yet(tmp_path: Path, fake: FakeOS) -> None:
    j = Journal.open(tmp_path / "s.jsonl", durability="batch", batch_interval_ms=3_600_000)
    fake.fd = j._log.fd
    sid = j.create_session("m")
    j.append_message(sid, "user", "x")
    assert fake.count("write") == 2 and fake.count("fsync") == 0  # acknowledged unsynced
    j.close()
    assert fake.count("fsync") == 1
    j.close()  # closing again does nothing
    assert fake.count("fsync") == 1


def test_failing_fsync_raises_poisons_the_handle_and_is_never_retried(
    tmp_path: Path, fake: FakeOS
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        acked = [j.append_message(sid, "user", f"m{i}").event_id for i in range(3)]
    before = log.read_bytes()
    j = Journal.open(log)
    fake.fd = j._log.fd
    fake.calls.clear()
    fake.fail_fsync = errno.EIO
    eid = str(uuid.uuid4())
    with pytest.raises(DurabilityError, match=r"fsync failed \(Input/output error\)") as info:
        j.append_message(sid, "user", "maybe", event_id=eid)
    assert str(log) in str(info.value) and "same event_id" in str(info.value)
    with pytest.raises(JournalClosed, match="fsync failed"):
        j.append_message(sid, "user", "refused")
    j.close()
    assert fake.count("fsync") == 1  # not retried, not even by close()
    # the unacknowledged record may or may not be there; nothing else changed
    after = log.read_bytes()
    assert after.startswith(before) and after.count(b"\n") - before.count(b"\n") <= 1
    fake.fail_fsync = None
    with Journal.open(log) as fresh:  # a new handle works, and the retry is exactly-once
        r = fresh.append_message(sid, "user", "maybe", event_id=eid)
        assert r.duplicate == (after != before)
    ids = [e.id for e, _ in read_log(str(log))]
    assert set(acked) <= set(ids) and ids.count(eid) == 1


def test_fsync_failure_reaches_every_waiting_thread(tmp_path: Path, fake: FakeOS) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        fake.fd = j._log.fd
        fake.calls.clear()
        fake.fail_fsync = errno.EIO
        errors: list[type[BaseException]] = []

        def work() -> None:
            try:
                j.append_message(sid, "user", "x")
            except (DurabilityError, JournalClosed) as exc:
                errors.append(type(exc))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(errors) == 4 and DurabilityError in errors
        assert fake.count("fsync") == 1


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_failing_write_cuts_the_log_back_and_the_writer_goes_on(
    tmp_path: Path, fake: FakeOS, code: int
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log) as j:
        sid = j.create_session("m")
        j.append_message(sid, "user", "before")
        before = log.read_bytes()
        fake.fd = j._log.fd
        fake.fail_write = code
        with pytest.raises(LogWriteError, match=f"write failed \\({os.strerror(code)}\\)") as info:
            j.append_message(sid, "user", "y" * 10_000)
        assert str(log) in str(info.value) and "nothing was appended" in str(info.value)
        assert ("partial", fake.fd) in fake.calls  # half of it had reached the file
        assert log.read_bytes() == before
        fake.fail_write = None  # space is back
        r = j.append_message(sid, "user", "after")
        assert (r.pos, r.seq) == (4, 2)
    assert [e.pos for e, _ in read_log(str(log))] == [1, 2, 3, 4]


CHILD = r"""
import json, os, resource, sys
from journal import Journal, LogWriteError
log = sys.argv[1]
with Journal.open(log) as j:
    sid = j.create_session("m", session_id="s")
    j.append_message(sid, "user", "small")
    size = os.path.getsize(log)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 5000, resource.RLIM_INFINITY))
    out = {"size": size}
    try:
        j.append_message(sid, "user", "z" * 20000)
        out["error"] = None
    except LogWriteError as exc:
        out["error"] = str(exc)
    out["after_error"] = os.path.getsize(log)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    r = j.append_message(sid, "user", "z" * 20000)
    out["retry"] = [r.pos, r.seq]
print(json.dumps(out))
"""


def test_file_size_limit_in_a_child_process(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["error"] is not None and "File too large" in out["error"]
    assert out["after_error"] == out["size"]
    assert out["retry"] == [4, 2]
    assert [e.pos for e, _ in read_log(str(log))] == [1, 2, 3, 4]


def test_a_retry_while_the_first_write_is_being_fsynced_waits_for_that_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry answered from the id window ("duplicate") promises the record is durable:
    in `always` mode it waits for the first call's fsync, and shares its failure."""
    log = tmp_path / "s.jsonl"
    j = Journal.open(log)
    sid = j.create_session("gpt-4o")
    first_fsync_started = threading.Event()

    def slow_failing_fsync(fd: int) -> None:
        first_fsync_started.set()
        time.sleep(0.3)
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(
        journal_log, "os", types.SimpleNamespace(**{**vars(os), "fsync": slow_failing_fsync})
    )
    eid = str(uuid.uuid4())
    outcome: dict[str, object] = {}

    def first() -> None:
        try:
            outcome["first"] = j.append_message(sid, "user", "hello", event_id=eid)
        except DurabilityError as exc:
            outcome["first"] = exc

    writer = threading.Thread(target=first)
    writer.start()
    assert first_fsync_started.wait(10)
    with pytest.raises(DurabilityError):  # not a receipt for a record not yet durable
        j.append_message(sid, "user", "hello", event_id=eid)
    writer.join()
    assert isinstance(outcome["first"], DurabilityError)
    j.close()
