"""Repairs of the log: a torn tail moved aside on a full disk, CR LF endings converted back,
and the mistakes a careless user makes, tried through the command line."""

from __future__ import annotations

import errno
import os
import stat
import threading
import types
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_runner
from click.testing import Result

import journal.log.appender
import journal.log.files
import journal.repair
from journal import (
    CorruptLog,
    DurabilityError,
    Journal,
    JournalClosed,
    LogError,
    QuarantineFailed,
    read_log,
)
from journal.events import SessionPaused
from journal.repair import repair_line_endings
from projector.cli import main


def make_log(path: Path, messages: int = 6) -> list[bytes]:
    with Journal.open(path, durability="none") as j:
        sid = j.create_session("m", session_id="s", first_message="hello é")
        for i in range(messages):
            j.append_message(sid, "user", f"message {i}")
    return path.read_bytes().splitlines(keepends=True)


def crlf(lines: list[bytes]) -> list[bytes]:
    return [line[:-1] + b"\r\n" for line in lines]


def run(log: Path, *args: str, input: str | None = None) -> Result:
    db = log.parent / "sessions.db"
    return cli_runner().invoke(main, ["--log", str(log), "--db", str(db), *args], input=input)


class FullDisk(types.SimpleNamespace):
    """``os`` for journal.repair: the named call fails with ENOSPC on any file but the log."""

    def __init__(self, failing: str, log_fd: int | None = None) -> None:
        super().__init__()
        self.failing = failing
        self.log_fd = log_fd

    def __getattr__(self, name: str) -> Any:
        real = getattr(os, name)
        if name != self.failing:
            return real

        def fail(fd: int, *args: Any) -> Any:
            if fd == self.log_fd:
                return real(fd, *args)
            if name == "write" and len(args[0]) > 1:
                return real(fd, bytes(args[0][:1]))  # a partial write first, as a disk fills
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return fail


# -- a torn tail on a full disk -----------------------------------------------------------
@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_torn_tail_that_cannot_be_copied_aside_leaves_the_log_and_no_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    damaged = b"".join(lines) + b'{"type":"message_app'
    log.write_bytes(damaged)
    monkeypatch.setattr(journal.repair, "os", FullDisk(failing))
    for _ in range(3):  # every try fails the same way, and leaves nothing behind
        with pytest.raises(QuarantineFailed) as info:
            Journal.open(log)
        message = str(info.value)
        assert f"{log}: cannot copy the torn tail at byte offset {len(damaged) - 20}" in message
        assert "the log was left as it was" in message and "\n" not in message
        assert log.read_bytes() == damaged
        assert list(tmp_path.glob("*.torn-*")) == []
    result = run(log, "append", input='{"type":"session_paused","session_id":"s"}\n')
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: {log}: cannot copy the torn tail")
    assert log.read_bytes() == damaged and list(tmp_path.glob("*.torn-*")) == []
    monkeypatch.undo()  # space again: the next writer moves the tail aside and goes on
    with Journal.open(log) as j:
        assert Path(j.repairs[0].quarantine_path).read_bytes() == b'{"type":"message_app'
    assert log.read_bytes() == b"".join(lines)


def test_a_torn_tail_whose_copy_cannot_be_created_leaves_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    damaged = b"".join(make_log(log)) + b"{"
    log.write_bytes(damaged)
    monkeypatch.setattr(journal.repair, "os", FullDisk("fchmod"))
    with pytest.raises(QuarantineFailed, match=r"cannot create .*\.torn-\d+ to move the torn"):
        Journal.open(log)
    assert log.read_bytes() == damaged


def test_a_cut_that_fails_after_the_copy_poisons_the_handle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    with Journal.open(log) as j:
        log.write_bytes(b"".join(lines) + b"{torn")
        monkeypatch.setattr(journal.log.appender, "os", FullDisk("ftruncate"))
        with pytest.raises(DurabilityError, match="cutting the torn tail off at byte offset"):
            j.append_message("s", "user", "one more")
        monkeypatch.undo()
        with pytest.raises(JournalClosed, match="open the journal again"):
            j.append_message("s", "user", "one more")
    (copy,) = tmp_path.glob("*.torn-*")
    assert copy.read_bytes() == b"{torn"  # copied whole before the cut was tried
    with Journal.open(log) as again:  # tried again: a second copy, never an overwrite
        assert again.repairs[0].quarantine_path.endswith(".1")
    assert log.read_bytes() == b"".join(lines)


# -- CR LF line endings converted back --------------------------------------------------------
@pytest.mark.parametrize("half", ["all", "first", "second"])
def test_repair_line_endings_gives_back_the_log_byte_for_byte(tmp_path: Path, half: str) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    original = b"".join(lines)
    n = len(lines)
    lo, hi = {"all": (0, n), "first": (0, n // 2), "second": (n // 2, n)}[half]
    lines[lo:hi] = crlf(lines[lo:hi])
    log.write_bytes(b"".join(lines))
    result = run(log, "repair-line-endings")
    assert result.exit_code == 0, result.output
    assert f"{hi - lo} line endings converted from CR LF to LF" in result.output
    assert log.read_bytes() == original
    assert os.stat(log).st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]
    with Journal.open(log) as j:
        assert j.repairs == [] and j.append_message("s", "user", "after").seq == n - 1
    assert run(log, "repair-line-endings").output.endswith(
        "no CR LF line endings; nothing changed\n"
    )


def test_repair_line_endings_keeps_a_torn_tail_for_the_writer(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    log.write_bytes(b"".join(crlf(lines)) + b'{"type":"mess')
    assert repair_line_endings(str(log)) == len(lines)
    assert log.read_bytes() == b"".join(lines) + b'{"type":"mess'
    with Journal.open(log) as j:
        assert [r.reason for r in j.repairs] == ["unterminated last line"]


@pytest.mark.parametrize("edit", ["content", "no CR, edited"])
def test_repair_line_endings_refuses_a_line_that_is_no_record_and_changes_nothing(
    tmp_path: Path, edit: str
) -> None:
    log = tmp_path / "s.jsonl"
    lines = crlf(make_log(log))
    if edit == "content":
        lines[4] = lines[4].replace(b"message", b"massage")
    else:
        lines[4] = lines[4].replace(b"message", b"massage")[:-2] + b"\n"
    data = b"".join(lines)
    log.write_bytes(data)
    offset = len(b"".join(lines[:4]))
    result = run(log, "repair-line-endings")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {log}: line 5 (byte offset {offset}): checksum mismatch; only a log whose "
        "every line is a valid record once its CR is removed is converted; nothing was "
        "changed\n"
    )
    assert log.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_repair_line_endings_on_a_full_disk_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    data = b"".join(crlf(make_log(log)))
    log.write_bytes(data)
    monkeypatch.setattr(journal.repair, "os", FullDisk("write"))
    result = run(log, "repair-line-endings")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {log}: repairing line endings failed ({os.strerror(errno.ENOSPC)}); "
        "the log was left as it was\n"
    )
    assert log.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl"]


def test_repair_line_endings_says_when_its_rename_may_not_be_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    log.write_bytes(b"".join(crlf(lines)))

    class DirectoryFsyncFails(types.SimpleNamespace):
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def fsync(self, fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            os.fsync(fd)

    monkeypatch.setattr(journal.log.files, "os", DirectoryFsyncFails())
    result = run(log, "repair-line-endings")
    assert result.exit_code == 1
    assert result.stderr == (
        f"error: {log}: the line endings were converted, but making the rename durable "
        f"failed ({os.strerror(errno.EIO)}); a power cut may bring the CR LF log back\n"
    )
    assert log.read_bytes() == b"".join(lines)


def test_repair_line_endings_refuses_a_missing_log_and_a_leftover(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    with pytest.raises(LogError, match="cannot open"):
        repair_line_endings(str(log))
    assert not log.exists()
    data = b"".join(crlf(make_log(log)))
    log.write_bytes(data)
    (tmp_path / "s.jsonl.crlf-repair").write_bytes(b"left over")
    result = run(log, "repair-line-endings")
    assert result.exit_code == 2
    assert "s.jsonl.crlf-repair exists" in result.stderr
    assert log.read_bytes() == data


# -- as a careless user would -----------------------------------------------------------------
def _sed_all(lines: list[bytes]) -> list[bytes]:
    return crlf(lines)


def _sed_second_half(lines: list[bytes]) -> list[bytes]:
    return lines[: len(lines) // 2] + crlf(lines[len(lines) // 2 :])


def _edit(n: int) -> Any:
    def edit(lines: list[bytes]) -> list[bytes]:
        lines = list(lines)
        lines[n] = lines[n].replace(b"message", b"MESSAGE")
        return lines

    return edit


CONVERTED = "the line ends with CR LF: the log's line endings were converted"


@pytest.mark.parametrize(
    ("mistake", "line", "reason", "why"),
    [
        (_sed_all, 1, CONVERTED, " (by an editor or a checkout?); `session-journal repair-line"),
        (_sed_second_half, 5, CONVERTED, " (by an editor or a checkout?); `session-journal"),
        (_edit(4), 5, "checksum mismatch", "; the line is complete, and a crash cuts a record"),
        (_edit(-1), 9, "checksum mismatch", "; the line is complete, and a crash cuts a record"),
    ],
)
def test_a_changed_log_is_refused_by_every_command_and_never_moved(
    tmp_path: Path, mistake: Any, line: int, reason: str, why: str
) -> None:
    log = tmp_path / "s.jsonl"
    lines = mistake(make_log(log))
    # A writer reads the whole log only without its checkpoint (see test_log.py for what
    # one that has it reads); a log this small has none.
    assert not (tmp_path / "s.jsonl.state").exists()
    assert len(lines) == 9
    data = b"".join(lines)
    log.write_bytes(data)
    offset = len(b"".join(lines[: line - 1]))
    appended = run(log, "append", input='{"type":"session_paused","session_id":"s"}\n')
    assert appended.exit_code == 1
    assert f"line {line} (byte offset {offset}): {reason}{why}" in appended.stderr
    assert appended.stderr.count("\n") == 1
    assert log.read_bytes() == data and list(tmp_path.glob("*.torn-*")) == []
    replayed = run(log, "replay")
    assert replayed.exit_code == 1
    assert f"line {line} (byte offset {offset}): {reason}{why}" in replayed.stderr
    verified = run(log, "verify")
    assert verified.exit_code == 1
    assert f"line {line}, byte offset {offset}: {reason}" in verified.output
    assert log.read_bytes() == data and list(tmp_path.glob("*.torn-*")) == []


@pytest.mark.parametrize("cut", ["last line", "group"])
def test_a_log_cut_short_is_a_torn_tail_the_next_write_moves_aside(
    tmp_path: Path, cut: str
) -> None:
    log = tmp_path / "s.jsonl"
    with Journal.open(log, durability="none") as j:
        j.create_session("m", session_id="s", first_message="hello")
        with j.batch():
            for i in range(3):
                j.append_message("s", "user", f"in a group {i}")
    data = log.read_bytes()
    lines = data.splitlines(keepends=True)
    kept = b"".join(lines[:-3])
    short = data[:-7] if cut == "last line" else b"".join(lines[:-1])
    log.write_bytes(short)
    appended = run(log, "append", input='{"type":"session_paused","session_id":"s"}\n')
    assert appended.exit_code == 0, appended.output
    (copy,) = tmp_path.glob("*.torn-*")
    assert copy.read_bytes() == short[len(kept) :]
    events = [e for e, _ in read_log(str(log))]
    assert len(events) == len(lines) - 3 + 1 and isinstance(events[-1], SessionPaused)


def test_the_watcher_names_a_log_converted_to_crlf(tmp_path: Path) -> None:
    from projector.watch import watch

    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    lines = make_log(log)
    lines[3:] = crlf(lines[3:])
    log.write_bytes(b"".join(lines))
    with pytest.raises(CorruptLog, match=r"line 4 .*ends with CR LF") as info:
        watch(str(log), str(db), stop=threading.Event(), poll_interval=0.05)
    assert info.value.offset == len(b"".join(lines[:3]))
