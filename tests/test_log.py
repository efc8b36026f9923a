"""The log file: torn tails, corruption in the middle, the reader, and safe paths."""

from __future__ import annotations

import os
import stat
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from journal import CorruptLog, Journal, LogError, LogReader, UnsafeLogPath, read_log
from journal import events as ev


def make_log(path: Path, messages: int = 5, big: int = 0) -> list[bytes]:
    """A log of one session (model + session as a group) and ``messages`` messages."""
    with Journal.open(path, durability="none") as j:
        sid = j.create_session(model_id="m-1", session_id="s1")
        for i in range(messages):
            content = ("x" * big if big and i == 1 else f"message {i}") + " é ✓"
            j.append_message(sid, role="user", content=content, tokens_used=i)
    return path.read_bytes().splitlines(keepends=True)


def offsets(lines: list[bytes]) -> list[int]:
    out, at = [], 0
    for line in lines:
        out.append(at)
        at += len(line)
    return out


def ids(path: Path) -> list[str]:
    return [e.id for e, _ in read_log(str(path))]


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- torn tails ---------------------------------------------------------------------------
def test_reader_stops_before_an_unterminated_line_and_reports_it(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    log.write_bytes(b"".join(lines) + b'{"type":"mess')
    reader = LogReader(str(log))
    assert len(list(reader)) == len(lines)
    assert reader.torn is not None
    assert reader.torn.offset == sum(map(len, lines)) and reader.torn.length == 13
    assert reader.torn.reason == "unterminated last line"
    assert reader.end == reader.torn.offset and reader.last_pos == len(lines)
    assert log.read_bytes().endswith(b'{"type":"mess')  # a reader never repairs


@pytest.mark.parametrize("padding", [b"", b"\0" * 700, b"\xff\xfe garbage\n\x00junk\n\x01"])
def test_torn_last_record_at_every_byte_offset(tmp_path: Path, padding: bytes) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=3)
    keep, last = b"".join(lines[:-1]), lines[-1]
    kept_ids = ids(log)[:-1]
    for cut in range(len(last) + 1):
        if cut == len(last) and not padding:
            continue  # the whole record: nothing torn
        torn = last[:cut] + padding
        if not torn:
            continue
        log.write_bytes(keep + torn)
        for q in tmp_path.glob("s.jsonl.torn-*"):
            q.unlink()
        with Journal.open(log, durability="none") as j:
            assert len(j.repairs) == 1, cut
            repair = j.repairs[0]
            keep_len = len(keep) + (len(last) if cut == len(last) else 0)
            assert (repair.offset, repair.length) == (keep_len, len(keep) + len(torn) - keep_len)
            assert Path(repair.quarantine_path).read_bytes() == (keep + torn)[keep_len:]
            assert mode(repair.quarantine_path) == 0o600
            assert log.stat().st_size == keep_len
            got = ids(log)
            assert got[: len(kept_ids)] == kept_ids
            r = j.append_message("s1", role="assistant", content="after the repair")
            assert r.pos == len(got) + 1 and r.seq == len(got) - 1
        with Journal.open(log, durability="none") as again:
            assert again.repairs == []


@pytest.mark.parametrize("where", ["content", "checksum digits"])
def test_a_complete_last_line_failing_its_checksum_is_corruption_and_nothing_moves(
    tmp_path: Path, where: str
) -> None:
    """Edited by hand, not torn: a crash cuts a record before its newline, never after."""
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    if where == "content":
        lines[-1] = lines[-1].replace(b"message 4", b"message 5")
    else:
        lines[-1] = lines[-1][:-4] + (b"0" if lines[-1][-4:-3] != b"0" else b"1") + b'"}\n'
    damaged = b"".join(lines)
    log.write_bytes(damaged)
    where_ = rf"line {len(lines)} \(byte offset {offsets(lines)[-1]}\): checksum mismatch"
    with pytest.raises(CorruptLog, match=where_ + ".*a crash cuts a record before its newline"):
        Journal.open(log)
    assert log.read_bytes() == damaged
    assert list(tmp_path.glob("*.torn-*")) == []
    with pytest.raises(CorruptLog, match=where_):
        list(read_log(str(log)))


def crlf(lines: list[bytes]) -> list[bytes]:
    """What ``sed -i 's/$/\\r/'`` does to each line."""
    return [line[:-1] + b"\r\n" for line in lines]


@pytest.mark.parametrize(
    "converted",
    ["every line", "the second half", "the first half", "the last line", "one middle line"],
)
def test_a_log_converted_to_crlf_is_named_and_left_alone(tmp_path: Path, converted: str) -> None:
    import journal.log.reader

    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=6)
    n = len(lines)
    first, last = {
        "every line": (0, n),
        "the second half": (n // 2, n),
        "the first half": (0, n // 2),
        "the last line": (n - 1, n),
        "one middle line": (3, 4),
    }[converted]
    lines[first:last] = crlf(lines[first:last])
    data = b"".join(lines)
    log.write_bytes(data)
    named = (
        rf"line {first + 1} \(byte offset {offsets(lines)[first]}\): the line ends with CR LF: "
        r"the log's line endings were converted .*session-journal repair-line-endings"
    )
    with pytest.raises(CorruptLog, match=named):
        Journal.open(log)
    assert log.read_bytes() == data
    assert list(tmp_path.glob("*.torn-*")) == []
    with pytest.raises(CorruptLog, match=named):
        list(read_log(str(log)))
    with pytest.MonkeyPatch.context() as patch:  # the chunked reader, as replay reads
        patch.setattr(journal.log.reader, "_FAST_CHUNK", 256)
        with pytest.raises(CorruptLog, match=named):
            for _ in LogReader(str(log)).runs():
                pass


def _writes(path: Path, sizes: list[int]) -> list[bytes]:
    """A log made of writes of 1 record or ``size`` records (an atomic group); its writes."""
    writes: list[bytes] = []
    with Journal.open(path, durability="none") as j:
        sid = j.create_session("m", session_id="s")
        for k, size in enumerate(sizes):
            before = path.stat().st_size
            with j.batch():
                for i in range(size):
                    j.append_message(sid, "user", f"write {k}.{i} " + "é" * (k % 3))
            writes.append(path.read_bytes()[before:])
    return writes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4),
    data=st.data(),
    fill=st.sampled_from(["none", "zeros", "garbage"]),
)
def test_any_cut_of_the_last_write_is_repaired_keeping_every_earlier_record(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], data: st.DataObject, fill: str
) -> None:
    """What a crash can leave (a prefix of the last write, then perhaps zeros or garbage
    where blocks were never written) is a torn tail: moved aside byte for byte."""
    path = tmp_path_factory.mktemp("cut") / "s.jsonl"
    last = _writes(path, sizes)[-1]
    whole = path.read_bytes()
    kept = whole[: len(whole) - len(last)]
    kept_ids = ids(path)[: -sizes[-1]]
    cut = data.draw(st.integers(0, len(last) - 1))
    extra = {
        "none": b"",
        "zeros": b"\0" * data.draw(st.integers(1, 5000)),
        "garbage": data.draw(st.binary(min_size=1, max_size=600)),
    }[fill]
    assume(b"crc" not in extra)  # unwritten blocks hold no checksum field
    path.write_bytes(kept + last[:cut] + extra)
    with Journal.open(path, durability="none") as j:
        if cut or extra:
            (repair,) = j.repairs
            assert Path(repair.quarantine_path).read_bytes() == last[:cut] + extra
        else:
            assert j.repairs == []
        assert path.read_bytes() == kept
        assert ids(path) == kept_ids
        assert j.append_message("s", "user", "after").pos == len(kept_ids) + 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(1, 3), min_size=1, max_size=4), data=st.data())
def test_any_change_to_a_complete_record_is_named_and_nothing_moves(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], data: st.DataObject
) -> None:
    """Any record, the last one included: a changed byte of its content or checksum digits
    (a newline too) is corruption, named by line and offset, and the log stays as it is."""
    path = tmp_path_factory.mktemp("edit") / "s.jsonl"
    _writes(path, sizes)
    lines = path.read_bytes().splitlines(keepends=True)
    n = data.draw(st.integers(0, len(lines) - 1))
    line = lines[n]
    digits = len(line) - 11  # the 8 hex digits before '"}\n'
    at = data.draw(
        st.integers(0, len(line) - 1).filter(lambda i: i < digits - 8 or digits <= i < digits + 8)
    )
    new = data.draw(st.integers(0, 255).filter(lambda b: b != line[at]))
    lines[n] = line[:at] + bytes([new]) + line[at + 1 :]
    damaged = b"".join(lines)
    path.write_bytes(damaged)
    # a writer without a checkpoint (a log this small has none) reads it all
    assert not path.with_name("s.jsonl.state").exists()
    with pytest.raises(CorruptLog) as info:
        Journal.open(path, durability="none")
    assert (info.value.line, info.value.offset) == (n + 1, offsets(lines)[n])
    assert f"line {n + 1} (byte offset {offsets(lines)[n]})" in str(info.value)
    assert path.read_bytes() == damaged
    assert list(path.parent.glob("*.torn-*")) == []


def test_two_repairs_never_overwrite_a_quarantine_file(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    body = b"".join(lines)
    for tail in (b"first torn", b"second torn"):
        log.write_bytes(body + tail)
        with Journal.open(log) as j:
            assert Path(j.repairs[0].quarantine_path).read_bytes() == tail
    assert sorted(p.read_bytes() for p in tmp_path.glob("s.jsonl.torn-*")) == [
        b"first torn",
        b"second torn",
    ]


# -- corruption in the middle ----------------------------------------------------------------
@pytest.mark.parametrize("which", [-4, -2])  # a record in the middle; the last but one
def test_every_flipped_byte_of_a_middle_record_is_detected(tmp_path: Path, which: int) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=6)
    data = b"".join(lines)
    start = offsets(lines)[which]
    line_no = len(lines) + which + 1
    record = lines[which]
    detected = 0
    trials = 0
    for i in range(len(record)):
        for new in {record[i] ^ 0x01, record[i] ^ 0xFF, ord("\n")} - {record[i]}:
            trials += 1
            damaged = bytearray(data)
            damaged[start + i] = new
            log.write_bytes(bytes(damaged))
            with pytest.raises(CorruptLog) as info:
                list(read_log(str(log)))
            assert (info.value.line, info.value.offset) == (line_no, start), (i, new)
            assert f"line {line_no} (byte offset {start})" in str(info.value)
            assert str(log) in str(info.value)
            detected += 1
    assert detected == trials > 3 * len(record) - 10


def test_writer_refuses_a_log_corrupt_in_the_middle_and_changes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    lines[3] = lines[3].replace(b"message", b"massage")
    damaged = b"".join(lines)
    log.write_bytes(damaged)
    # a writer without a checkpoint (a log this small has none) reads it all
    assert not (tmp_path / "s.jsonl.state").exists()
    with pytest.raises(CorruptLog, match=r"line 4 \(byte offset \d+\): checksum mismatch"):
        Journal.open(log)
    assert log.read_bytes() == damaged
    assert list(tmp_path.glob("*.torn-*")) == []


def test_a_writer_reads_only_what_follows_its_checkpoint_and_the_projector_reads_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Damage before the checkpoint's line is not the writer's to find (its state comes
    from the checkpoint): it appends on; replay and verify, which read every line, name it."""
    from cli_runner import cli_runner

    from journal import checkpointing
    from projector.cli import main

    monkeypatch.setattr(checkpointing, "CHECKPOINT_MIN_BYTES", 0)  # a small log, checkpointed
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    lines[3] = lines[3].replace(b"message", b"massage")
    log.write_bytes(b"".join(lines))
    with Journal.open(log) as j:
        assert j.append_message("s1", "user", "after").seq == 6
    for command in ("replay", "verify"):
        result = cli_runner().invoke(
            main, ["--log", str(log), "--db", str(tmp_path / "d"), command]
        )
        assert result.exit_code == 1
        assert (
            "line 4" in result.output + result.stderr
            and "checksum mismatch" in result.output + result.stderr
        )


def test_a_gap_in_positions_is_corruption(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    log.write_bytes(b"".join(lines[:3] + lines[4:]))
    with pytest.raises(CorruptLog, match="position 5 where 4 was expected"):
        list(read_log(str(log)))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: ev.MessageAppended(session_id="s1", seq=4, role="user", content="x"), "seq 4"),
        (lambda: ev.SessionRenamed(session_id="nobody", title="t"), "unknown session"),
        (lambda: ev.SessionCreated(session_id="s1", model_id="m-1"), "created twice"),
        (lambda: ev.SessionCreated(session_id="s2", model_id="m-2"), "before it is registered"),
    ],
)
def test_writer_refuses_a_record_its_state_cannot_follow_and_names_it(
    tmp_path: Path, make: Callable[[], ev.Event], needle: str
) -> None:
    """Whole, checksummed records that break the session rules: an error naming the line
    and its offset, never a repair."""
    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=2)
    ts = "2030-01-01T00:00:00.000000Z"
    bad = ev.encode_line(
        msgspec.structs.replace(make(), pos=len(lines) + 1, id=str(uuid.uuid4()), ts=ts)
    )
    damaged = b"".join(lines) + bad
    log.write_bytes(damaged)
    at = len(damaged) - len(bad)
    with pytest.raises(LogError, match=rf"line {len(lines) + 1} \(byte offset {at}\): .*{needle}"):
        Journal.open(log)
    assert log.read_bytes() == damaged
    assert list(tmp_path.glob("*.torn-*")) == []


def test_a_record_the_state_cannot_follow_is_named_again_by_every_later_append(
    tmp_path: Path,
) -> None:
    """Found while catching up (not at open): the state stays as before the record, so
    each later append names the same line, not a position error after it."""
    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=2)
    with Journal.open(log) as j:
        bad = ev.encode_line(
            ev.SessionRenamed(
                session_id="nobody", title="t", pos=len(lines) + 1, id=str(uuid.uuid4()),
                ts="2030-01-01T00:00:00.000000Z",
            )
        )  # fmt: skip
        with log.open("ab") as f:
            f.write(bad)
        for _ in range(2):
            with pytest.raises(LogError, match=rf"line {len(lines) + 1} .*unknown session"):
                j.append_message("s1", "user", "after it")
    assert log.read_bytes() == b"".join(lines) + bad


def test_reader_resumes_from_an_offset(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    offs = offsets(lines)
    rest = list(read_log(str(log), offs[3], 3))
    assert [e.pos for e, _ in rest] == list(range(4, len(lines) + 1))
    assert rest[-1][1] == sum(map(len, lines))
    assert list(read_log(str(tmp_path / "missing.jsonl"))) == []


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400), st.integers(0, 6), st.binary(max_size=50))
def test_the_reader_never_raises_anything_but_corrupt_log(
    tmp_path: Path, noise: bytes, keep: int, tail: bytes
) -> None:
    log = tmp_path / "fuzz.jsonl"
    if not log.exists():
        make_log(log)
        (tmp_path / "clean").write_bytes(log.read_bytes())
    lines = (tmp_path / "clean").read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:keep]) + noise + b"".join(lines[keep:]) + tail)
    reader = LogReader(str(log))
    seen = 0
    try:
        for event, end in reader:
            seen += 1
            assert event.pos == seen and end <= log.stat().st_size
    except CorruptLog as exc:
        assert exc.line >= 1 and exc.offset >= 0
    else:
        assert reader.end <= log.stat().st_size


# -- paths and permissions -------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_log_and_quarantine_are_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        log = tmp_path / "s.jsonl"
        make_log(log)
        assert mode(log) == 0o600
        with log.open("ab") as f:
            f.write(b"torn")
        with Journal.open(log) as j:
            assert mode(j.repairs[0].quarantine_path) == 0o600
    finally:
        os.umask(old)


def _refused(path: Path, match: str) -> None:
    before = sorted(os.listdir(path.parent))
    with pytest.raises(UnsafeLogPath, match=match) as info:
        Journal.open(path)
    assert str(path) in str(info.value)
    assert sorted(os.listdir(path.parent)) == before


def test_symlinked_log_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    make_log(real)
    before = real.read_bytes()
    (tmp_path / "link.jsonl").symlink_to(real)
    _refused(tmp_path / "link.jsonl", "symlink")
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    _refused(tmp_path / "dangling.jsonl", "symlink")
    assert not (tmp_path / "nowhere.jsonl").exists()
    assert real.read_bytes() == before


def test_hard_linked_log_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    make_log(real)
    before = real.read_bytes()
    os.link(real, tmp_path / "other.jsonl")
    _refused(real, "2 hard links")
    assert real.read_bytes() == before


def test_directory_and_fifo_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.jsonl").mkdir()
    _refused(tmp_path / "dir.jsonl", "not a regular file")
    os.mkfifo(tmp_path / "fifo.jsonl")
    _refused(tmp_path / "fifo.jsonl", "not a regular file")


def test_unwritable_location_is_a_log_error(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="cannot create"):
        Journal.open(tmp_path / "no" / "such" / "dir.jsonl")


def test_log_replaced_while_open_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    make_log(log)
    with Journal.open(log) as j:
        os.rename(log, tmp_path / "old.jsonl")
        log.write_bytes((tmp_path / "old.jsonl").read_bytes())
        os.chmod(log, 0o600)
        before = log.read_bytes()
        with pytest.raises(LogError, match="moved or replaced while open"):
            j.append_message("s1", role="user", content="lost?")
        assert log.read_bytes() == before


def test_log_removed_while_open_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    make_log(log)
    with Journal.open(log) as j:
        log.unlink()
        with pytest.raises(LogError, match="moved or replaced while open"):
            j.append_message("s1", role="user", content="lost?")
    assert not log.exists()


def test_log_shrunk_while_open_is_a_clear_error(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    lines = make_log(log)
    with Journal.open(log) as j:
        os.truncate(log, sum(map(len, lines[:-1])))
        with pytest.raises(LogError, match=r"shrank from \d+ to \d+ bytes"):
            j.append_message("s1", role="user", content="lost?")
    assert log.read_bytes() == b"".join(lines[:-1])


def test_a_last_record_from_a_newer_version_is_never_cut_off(tmp_path: Path) -> None:
    """A whole record this version cannot read (an unknown event type, say) is no torn
    write: its checksum holds. Treating it as a torn tail would truncate the log."""
    from journal.events import checksum

    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=2)
    body = (
        b'{"type":"session_summarised","pos":%d,"id":"5f0c8f4e-1c2b-4d3a-9e8f-7a6b5c4d3e2f",'
        b'"v":1,"ts":"2030-01-01T00:00:00.000000Z","session_id":"s1","summary":"..."}'
        % (len(lines) + 1)
    )
    newer = body[:-1] + b',"crc":"%08x"}\n' % checksum(body)
    log.write_bytes(b"".join(lines) + newer)
    before = log.read_bytes()
    with pytest.raises(CorruptLog, match=rf"line {len(lines) + 1} .*written whole"):
        Journal.open(log)
    assert log.read_bytes() == before
    assert list(tmp_path.glob("*.torn-*")) == []
    reader = LogReader(str(log))
    with pytest.raises(CorruptLog, match="newer version"):
        list(reader)


def test_a_whole_line_nested_too_deeply_is_corruption_not_a_crash(tmp_path: Path) -> None:
    from journal.events import checksum

    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=1)
    body = (
        b'{"type":"message_appended","pos":%d,"ts":"2026-01-01T00:00:00.000000Z",'
        b'"session_id":"s","seq":1,"role":"user","content":"x","metadata":{"k":%s}}'
        % (len(lines) + 1, b"[" * 30_000 + b"]" * 30_000)  # past every decoder's stack
    )
    log.write_bytes(b"".join(lines) + body[:-1] + b',"crc":"%08x"}\n' % checksum(body))
    with pytest.raises(CorruptLog, match=r"line 4 .*: JSON nested deeper than 256 levels"):
        list(LogReader(str(log)))


def _fold_slowly(path: Path, window: int) -> tuple[object, ...]:
    from journal.state import JournalState

    state = JournalState(window)
    for event, _ in read_log(str(path)):
        state.apply(event)
    return state.last_pos, state.last_ts, {k: v.fields() for k, v in state.sessions.items()}


@pytest.mark.parametrize("chunk", [64, 700, 1 << 20])
def test_opening_in_chunks_folds_what_the_line_by_line_reader_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    import journal.log.reader
    import journal.writer

    path = tmp_path / "log.jsonl"
    ids = []
    with Journal.open(path, "none") as j:
        for i in range(6):
            sid = j.create_session("m", session_id=f"s{i}", first_message="hi")
            with j.batch():  # groups, some of them crossing chunk boundaries
                for n in range(i + 1):
                    ids.append(j.append_message(sid, "user", f"m{n}" * (i * 7 + 1)).event_id)
            j.pause(sid)
            if i % 2:  # a message makes a paused session active again
                j.append_message(sid, "user", "back")
    monkeypatch.setattr(journal.log.reader, "_FAST_CHUNK", chunk)
    with Journal.open(path, "none", id_window=4) as j:
        state = j._state
        assert (
            state.last_pos,
            state.last_ts,
            {k: v.fields() for k, v in state.sessions.items()},
        ) == (_fold_slowly(path, 4))
        # at least the last id_window ids are remembered, older ones need not be
        pauses = [e.id for e, _ in read_log(str(path)) if e.pos > state.last_pos - 4]
        assert all(j.receipt(i) is not None for i in pauses)
        assert j.receipt(ids[0]) is None


def test_reopening_remembers_the_receipts_of_the_last_id_window_events(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s")
        receipts = [j.append_message(sid, "user", f"m{n}") for n in range(20)]
        receipts += [j.rename(sid, f"t{n}") for n in range(3)]
    with Journal.open(path, "none", id_window=4) as j:  # small log: every id passes through
        assert all(j.receipt(r.event_id) == r for r in receipts[-4:])
        assert j.receipt(receipts[0].event_id) is None
        r = receipts[-1]
        assert j.rename(sid, "t2", event_id=r.event_id) == r._replace(duplicate=True)


def test_a_torn_tail_of_many_lines_leaves_the_id_window_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    path = tmp_path / "log.jsonl"
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s")
        receipts = [j.append_message(sid, "user", f"m{n}") for n in range(20)]
    with open(path, "ab") as f:
        f.write(b"garbage\n" * 10 + b"{")
    with Journal.open(path, "none", id_window=8) as j:
        assert len(j.repairs) == 1
        for r in receipts[-8:]:
            assert j.receipt(r.event_id) == r
        assert j.append_message("s", "user", "after").seq == 21


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), max_size=30),
    head=st.integers(0, 5),
    want=st.integers(0, 35),
    chunk=st.integers(1, 40),
)
def test_the_start_of_the_last_lines_is_found_reading_backwards(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], head: int, want: int, chunk: int
) -> None:
    from journal.log import file_backend
    from journal.log.segments import LogView

    data = b"x" * head + b"".join(line + b"\n" for line in lines)
    path = tmp_path_factory.mktemp("tail") / "f"
    path.write_bytes(data)
    starts = [head]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    expected = starts[max(0, len(lines) - want)]
    old = file_backend._BACK_CHUNK
    file_backend._BACK_CHUNK = chunk
    view = LogView(str(path))
    try:
        assert file_backend.last_lines_start(view, head, len(data), want) == expected
    finally:
        view.close()
        file_backend._BACK_CHUNK = old


def test_the_writer_reads_a_message_header_and_the_projector_the_whole_message(
    tmp_path: Path,
) -> None:
    """Opening a log, the writer decodes what its state needs; a message's body is checked
    when it is written and decoded whole by readers that store it."""
    from journal.events import MessageAppended, MessageHeader, checksum
    from journal.log import StateReader

    path = tmp_path / "log.jsonl"
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s", first_message="hello")
        j.rename(sid, "t")
    whole = [e for e, _ in LogReader(str(path))]
    headers = [e for e, _ in StateReader(str(path))]
    assert [type(e) for e in headers].count(MessageHeader) == 1
    for full, head in zip(whole, headers, strict=True):
        if isinstance(full, MessageAppended):
            assert (head.pos, head.id, head.ts, head.session_id, head.seq) == (
                full.pos,
                full.id,
                full.ts,
                full.session_id,
                full.seq,
            )
        else:
            assert head == full
    # A record with a valid checksum whose body this version cannot read (a number for
    # content): the writer's state does not depend on it; the full reader names the line.
    lines = path.read_bytes().splitlines()
    msg = next(i for i, line in enumerate(lines) if b'"message_appended"' in line)
    body = lines[msg][: lines[msg].rindex(b',"crc"')].replace(b'"content":"hello"', b'"content":5')
    lines[msg] = b'%s,"crc":"%08x"}' % (body, checksum(body + b"}"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    with Journal.open(path, "none") as j:
        assert j.append_message("s", "user", "next").seq == 2
    with pytest.raises(CorruptLog) as err:
        list(LogReader(str(path)))
    assert err.value.line == msg + 1
    assert "content" in str(err.value)


@pytest.mark.parametrize("chunk", [64, 700, 1 << 20])
@pytest.mark.parametrize("cut_members", [1, 2])
def test_chunked_reading_stops_before_a_torn_group_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, cut_members: int
) -> None:
    import journal.log.reader

    path = tmp_path / "log.jsonl"
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s")
        for n in range(5):
            j.append_message(sid, "user", f"m{n}")
        with j.batch():
            for _ in range(3):
                j.append_message(sid, "user", "g" * 300)
    lines = path.read_bytes().splitlines(keepends=True)
    kept = b"".join(lines[:-cut_members])
    path.write_bytes(kept)
    monkeypatch.setattr(journal.log.reader, "_FAST_CHUNK", chunk)
    reader = LogReader(str(path))
    got = [e.pos for run in reader.runs() for e in run.events]
    assert got == list(range(1, len(lines) - 3 + 1))
    assert reader.torn is not None and reader.torn.line == len(lines) - 2
    assert reader.torn.offset + reader.torn.length == len(kept)


def test_the_ids_a_writer_remembers_do_not_depend_on_the_hosts_gc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    path = tmp_path / "log.jsonl"
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s")
        ids = [j.append_message(sid, "user", f"m{n}").event_id for n in range(12)]

    def remembered() -> list[bool]:
        with Journal.open(path, "none", id_window=8) as j:
            return [j.receipt(i) is not None for i in ids]

    with_gc = remembered()
    gc.disable()
    try:
        without_gc = remembered()
    finally:
        gc.enable()
    assert without_gc == with_gc and not with_gc[0] and all(with_gc[-8:])


def _group_log(path: Path) -> bytes:
    with Journal.open(path, "none") as j:
        sid = j.create_session("m", session_id="s", first_message="hello é")
        for n in range(6):
            with j.batch():
                for k in range(n % 3 + 1):
                    j.append_message(sid, "user", f"m{n}.{k} " + "x" * (40 * k))
    return path.read_bytes()


def _reading(path: Path, chunked: bool) -> tuple[object, ...]:
    """What a reader makes of the file: the positions it gives, the error it raises, and
    where it stops."""
    reader = LogReader(str(path))
    got: list[int] = []
    error = None
    try:
        if chunked:
            got = [e.pos for run in reader.runs() for e in run.events]
        else:
            got = [e.pos for e, _ in reader]
    except CorruptLog as exc:
        error = str(exc)
    return got, error, reader.torn, reader.end, reader.last_pos


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    chunk=st.sampled_from([64, 200, 700, 1 << 20]),
    change=st.sampled_from(["flip", "delete", "insert", "cut", "repeat line"]),
)
def test_chunked_and_line_by_line_reading_agree_on_any_damage(
    tmp_path_factory: pytest.TempPathFactory,
    data: st.DataObject,
    chunk: int,
    change: str,
) -> None:
    """The chunked reader checks whole chunks in C and reads a chunk that fails again line
    by line: whatever the damage, it must give what line-by-line reading gives, the same
    events, the same error (line and offset) and the same torn tail."""
    import journal.log.reader

    path = tmp_path_factory.mktemp("damage") / "log.jsonl"
    raw = bytearray(_group_log(path))
    at = data.draw(st.integers(0, len(raw) - 1))
    if change == "flip":
        raw[at] ^= data.draw(st.sampled_from([0x01, 0x20, 0x80]))
    elif change == "delete":
        del raw[at]
    elif change == "insert":
        raw.insert(at, data.draw(st.sampled_from(b'\n"x{}0')))
    elif change == "cut":
        del raw[at:]
    else:
        lines = bytes(raw).splitlines(keepends=True)
        n = data.draw(st.integers(0, len(lines) - 1))
        raw = bytearray(b"".join([*lines[: n + 1], lines[n], *lines[n + 1 :]]))
    path.write_bytes(bytes(raw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal.log.reader, "_FAST_CHUNK", chunk)
        assert _reading(path, chunked=True) == _reading(path, chunked=False)


@pytest.mark.parametrize("depth", [255, 300, 2000])
def test_metadata_an_earlier_writer_nested_deeper_than_todays_limit_still_reads(
    tmp_path: Path, depth: int
) -> None:
    """Writers now refuse metadata nested deeper than 256 levels, but earlier versions
    wrote what the interpreter's stack allowed: old logs must replay, by every reader."""
    from journal.events import checksum

    if depth > 900 and sys.version_info < (3, 12):
        pytest.skip("msgspec on Python 3.11 decodes at most about 1,000 levels")
    log = tmp_path / "s.jsonl"
    lines = make_log(log, messages=3)
    body = (
        b'{"type":"message_appended","pos":%d,"ts":"2026-01-01T00:00:00.000000Z",'
        b'"session_id":"s","seq":1,"role":"user","content":"x","metadata":{"k":%s}}'
        % (len(lines) + 1, b"[" * depth + b"]" * depth)
    )
    log.write_bytes(b"".join(lines) + body[:-1] + b',"crc":"%08x"}\n' % checksum(body))
    readers = (
        lambda: [e for run in LogReader(str(log)).runs() for e in run.events],  # chunks
        lambda: list(LogReader(str(log))),
        lambda: list(read_log(str(log))),
    )
    for read in readers:
        assert len(read()) == len(lines) + 1
