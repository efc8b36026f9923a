"""The log's contract (``journal.log.backend``), one body of tests run against every backend.

Each test speaks to the interface only: cursors are kept and compared, never computed.
What a test needs done to a log behind the interface's back (a crash cutting a write
short, a flipped byte, the log replaced or cut) is the harness's, one per backend. A new
backend adds a harness to ``HARNESSES`` and must pass these tests unchanged.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import msgspec
import pytest

from journal import CorruptLog, Journal, JournalClosed, LogError, UnknownSession
from journal.events import (
    AnyEvent,
    MessageAppended,
    Redacted,
    SessionCreated,
    SessionForgotten,
    encode_line,
)
from journal.log import (
    START,
    AppendConflict,
    Cursor,
    FileLog,
    LogBackend,
    LogBusy,
    MemoryLog,
    MemoryStore,
)

TS = "2026-01-01T00:00:00.000000Z"


class Harness(Protocol):
    def open(self) -> LogBackend:
        """A new writer's handle on the harness's one log."""

    def cut_last_record_short(self) -> None:
        """What a crash during the last append leaves: part of its last record."""

    def flip_a_byte_of(self, index: int) -> None:
        """Damage record ``index`` (0-based) as a disk or an editor would."""

    def replace(self) -> None:
        """Put another, empty log in this one's place."""

    def drop_last_record(self) -> None:
        """Remove the last whole record, as something other than this library might."""

    def kept_aside(self) -> bytes:
        """Every byte of the torn tails moved aside so far."""


class FileHarness:
    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> LogBackend:
        return FileLog(str(self.path), "none")

    def _lines(self) -> list[bytes]:
        return self.path.read_bytes().splitlines(keepends=True)

    def cut_last_record_short(self) -> None:
        last = self._lines()[-1]
        os.truncate(self.path, self.path.stat().st_size - len(last) // 2)

    def flip_a_byte_of(self, index: int) -> None:
        lines = self._lines()
        line = bytearray(lines[index])
        line[len(line) // 3] ^= 0x01
        lines[index] = bytes(line)
        self.path.write_bytes(b"".join(lines))

    def replace(self) -> None:
        other = self.path.with_name("other.jsonl")
        other.write_bytes(b"")
        os.replace(other, self.path)

    def drop_last_record(self) -> None:
        os.truncate(self.path, self.path.stat().st_size - len(self._lines()[-1]))

    def kept_aside(self) -> bytes:
        return b"".join(p.read_bytes() for p in sorted(self.path.parent.glob("*.torn-*")))


class SegmentedHarness(FileHarness):
    """A file log sealed into a segment every few records: cursors and positions run on
    across files, and damage is done to whichever file holds the record."""

    def open(self) -> LogBackend:
        return FileLog(str(self.path), "none", segment_bytes=SMALL_SEGMENT)

    def _files(self) -> list[Path]:
        segments = sorted(self.path.parent.glob(f"{self.path.name}.segments/*.jsonl"))
        return [*segments, self.path]

    def flip_a_byte_of(self, index: int) -> None:
        for file in self._files():
            lines = file.read_bytes().splitlines(keepends=True)
            if index < len(lines):
                line = bytearray(lines[index])
                line[len(line) // 3] ^= 0x01
                lines[index] = bytes(line)
                with open(file, "r+b") as f:  # in place: a sealed file keeps its name
                    f.write(b"".join(lines))
                return
            index -= len(lines)
        raise IndexError(index)


# Small enough that the contract's logs span several segments.
SMALL_SEGMENT = 700


class MemoryHarness:
    def __init__(self) -> None:
        self.store = MemoryStore("test-memory")

    def open(self) -> LogBackend:
        return MemoryLog(self.store)

    def cut_last_record_short(self) -> None:
        last = self.store.cut(len(self.store.lines) - 1)[0]
        self.store.add(last[: len(last) // 2])

    def flip_a_byte_of(self, index: int) -> None:
        line = bytearray(self.store.lines[index])
        line[len(line) // 3] ^= 0x01
        self.store.lines[index] = bytes(line)

    def replace(self) -> None:
        self.store.replace()

    def drop_last_record(self) -> None:
        self.store.cut(len(self.store.lines) - 1)

    def kept_aside(self) -> bytes:
        return b"".join(b"".join(lines) for lines in self.store.quarantined.values())


class JetStreamHarness:
    """A stream on a real single-node server; damage is done through a plain client (a
    stored message cannot be changed, so the stream is purged and written again)."""

    def __init__(self, url: str, replicas: int) -> None:
        self.url, self.replicas = url, replicas
        self.servers = [f"nats://{host}" for host in url.removeprefix("nats://").split(",")]
        self.stream = f"T{uuid.uuid4().hex[:12]}"

    def open(self) -> LogBackend:
        from journal.log.jetstream import JetStreamLog

        return JetStreamLog(f"{self.url}/{self.stream}?replicas={self.replicas}")

    def _rewrite(self, change: Callable[[list[bytes]], list[bytes]]) -> None:
        """Purge the stream and publish its messages again, as ``change`` makes them."""
        import asyncio

        import nats

        async def rewrite() -> None:
            nc = await nats.connect(servers=self.servers)
            js = nc.jetstream()
            info = await js.stream_info(self.stream)
            payloads = [
                (await js.get_msg(self.stream, seq)).data or b""
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
            await js.purge_stream(self.stream)
            for payload in change(payloads):
                await js.publish(f"{self.stream}.log", payload)
            await nc.close()

        asyncio.run(rewrite())

    def cut_last_record_short(self) -> None:
        pytest.skip("a stream stores a message whole or not at all: no crash tears one")

    def flip_a_byte_of(self, index: int) -> None:
        def flip(payloads: list[bytes]) -> list[bytes]:
            k = index
            for m, payload in enumerate(payloads):
                records = payload.splitlines(keepends=True)
                if k < len(records):
                    line = bytearray(records[k])
                    line[len(line) // 3] ^= 0x01
                    records[k] = bytes(line)
                    payloads[m] = b"".join(records)
                    return payloads
                k -= len(records)
            raise IndexError(index)

        self._rewrite(flip)

    def replace(self) -> None:
        import asyncio

        import nats

        async def replace() -> None:
            nc = await nats.connect(servers=self.servers)
            js = nc.jetstream()
            config = (await js.stream_info(self.stream)).config
            await js.delete_stream(self.stream)
            await js.add_stream(config)
            await nc.close()

        asyncio.run(replace())

    def drop_last_record(self) -> None:
        self._rewrite(lambda payloads: payloads[:-1])

    def kept_aside(self) -> bytes:
        return b""  # nothing is ever torn, so nothing is set aside


HARNESSES = ["file", "segmented", "memory", "jetstream", "jetstream-r3"]

# What a backend does not do, and why: those tests are skipped for it.
NOT_ON: dict[str, dict[str, str]] = {
    "jetstream*": {
        "test_writers_under_exclusion_keep_positions_gapless": "no lock spans the handles",
        "test_exclusive_without_waiting_refuses_a_log_held_elsewhere": "no lock spans them",
        "test_a_torn_tail_is_moved_aside_and_the_log_goes_on": "no message is ever torn",
        "test_the_writer_repairs_a_torn_tail_when_it_opens": "no message is ever torn",
        "test_torn_bytes_of_a_session_are_scrubbed_and_others_kept": "nothing is torn",
    }
}


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    kind = "jetstream*" if request.param.startswith("jetstream") else request.param
    why = NOT_ON.get(kind, {}).get(request.node.originalname)
    if why is not None:
        pytest.skip(f"{request.param}: {why}")
    if request.param == "file":
        return FileHarness(tmp_path / "log.jsonl")
    if request.param == "segmented":
        return SegmentedHarness(tmp_path / "log.jsonl")
    if request.param == "jetstream":
        return JetStreamHarness(request.getfixturevalue("nats_single").url, replicas=1)
    if request.param == "jetstream-r3":
        return JetStreamHarness(request.getfixturevalue("nats_cluster3").url, replicas=3)
    return MemoryHarness()


@pytest.fixture
def log(harness: Harness) -> Iterator[LogBackend]:
    handle = harness.open()
    yield handle
    handle.close()


def message(pos: int, seq: int, content: str = "hi", session_id: str = "s") -> MessageAppended:
    return MessageAppended(
        pos=pos,
        id=str(uuid.uuid4()),
        ts=TS,
        session_id=session_id,
        seq=seq,
        role="user",
        content=content,
    )


def created(pos: int, session_id: str = "s") -> SessionCreated:
    return SessionCreated(pos=pos, id=str(uuid.uuid4()), ts=TS, session_id=session_id, model_id="m")


def lines(*events: AnyEvent, group: bool = False) -> list[bytes]:
    n = len(events)
    return [
        encode_line(msgspec.structs.replace(e, grp=(i, n)) if group else e)
        for i, e in enumerate(events, 1)
    ]


def append(log: LogBackend, records: list[bytes], after: Cursor) -> Cursor:
    with log.exclusive():
        _token, end = log.append(records, after)
    return end


def read_all(log: LogBackend, after: Cursor = START, pos: int = 0) -> list[tuple[AnyEvent, int]]:
    return list(log.read(after, pos))


def test_an_empty_log_reads_as_nothing(log: LogBackend) -> None:
    reading = log.read()
    assert list(reading) == []
    assert reading.torn is None and reading.last_pos == 0
    assert log.end(START) == START


def test_what_is_appended_reads_back_the_same_with_ordered_cursors(log: LogBackend) -> None:
    events = [created(1), message(2, 1), message(3, 2, "é ✓ " * 50)]
    end = append(log, lines(*events), START)
    got = read_all(log)
    assert [e for e, _ in got] == events
    cursors = [c for _, c in got]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert cursors[-1] == end == log.end(START)
    reading = log.read()
    runs = list(reading.runs())
    assert [e for run in runs for e in run.events] == events
    assert [c for run in runs for c in run.ends()] == cursors
    assert reading.end == end and reading.last_pos == 3


def test_reading_from_a_cursor_gives_exactly_what_follows_it(log: LogBackend) -> None:
    end = append(log, lines(created(1), message(2, 1)), START)
    end = append(log, lines(message(3, 2), message(4, 3)), end)
    first = read_all(log)
    for k, (event, cursor) in enumerate(first):  # inside an appended unit and between two
        assert read_all(log, Cursor(cursor), event.pos) == first[k + 1 :]
    assert read_all(log, end, 4) == []


def test_a_group_is_read_whole_or_not_at_all(harness: Harness, log: LogBackend) -> None:
    end = append(log, lines(created(1)), START)
    append(log, lines(message(2, 1), message(3, 2), message(4, 3), group=True), end)
    assert [e.grp for e, _ in read_all(log)][1:] == [(1, 3), (2, 3), (3, 3)]
    harness.cut_last_record_short()
    reading = log.read()
    assert [e.pos for e, _ in reading] == [1]
    assert reading.torn is not None
    assert reading.torn.offset == end and reading.torn.line == 2
    assert reading.end == end


def test_an_append_after_a_stale_cursor_conflicts_and_writes_nothing(
    harness: Harness, log: LogBackend
) -> None:
    other = harness.open()
    try:
        end = append(log, lines(created(1)), START)
        with pytest.raises(AppendConflict):
            append(other, lines(created(1, "t")), START)
        assert [e.pos for e, _ in read_all(log)] == [1]
        assert append(other, lines(message(2, 1)), end) > end
    finally:
        other.close()


def test_writers_under_exclusion_keep_positions_gapless(harness: Harness) -> None:
    handles = [harness.open() for _ in range(3)]
    first = handles[0]
    append(first, lines(created(1)), START)

    def writer(log: LogBackend) -> None:
        for _ in range(30):
            with log.exclusive():
                end = log.end(START)
                reading = log.read(START)
                list(reading)
                log.append(lines(message(reading.last_pos + 1, reading.last_pos)), end)

    threads = [threading.Thread(target=writer, args=(h,)) for h in handles]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.pos for e, _ in read_all(first)] == list(range(1, 92))
    for h in handles:
        h.close()


def test_writers_racing_for_the_end_keep_positions_gapless(harness: Harness) -> None:
    """Every append is conditional on the end its writer read: one that lost the race
    appends nothing, and reads again (where a lock spans the handles, none loses)."""
    handles = [harness.open() for _ in range(3)]
    append(handles[0], lines(created(1)), START)
    conflicts = [0] * len(handles)

    def writer(k: int) -> None:
        log, done = handles[k], 0
        while done < 20:
            with log.exclusive():
                reading = log.read(START)
                list(reading)
                record = lines(message(reading.last_pos + 1, reading.last_pos, f"from {k}"))
                try:
                    log.append(record, Cursor(reading.end))
                    done += 1
                except AppendConflict:
                    conflicts[k] += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(len(handles))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = [e for e, _ in read_all(handles[0])]
    assert [e.pos for e in events] == list(range(1, 62))
    assert sorted(e.content for e in events[1:]) == sorted(  # type: ignore[attr-defined]
        f"from {k}" for k in range(3) for _ in range(20)
    )
    if not isinstance(harness, JetStreamHarness):  # each held the lock to read and append
        assert conflicts == [0, 0, 0]
    for h in handles:
        h.close()


def test_exclusive_without_waiting_refuses_a_log_held_elsewhere(harness: Harness) -> None:
    first, other = harness.open(), harness.open()

    def refused_while(holder: LogBackend) -> None:
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            with holder.exclusive():
                held.set()
                release.wait(60)

        thread = threading.Thread(target=hold)
        thread.start()
        held.wait(60)
        try:
            with pytest.raises(LogBusy):
                first.exclusive(wait=False).__enter__()
        finally:
            release.set()
            thread.join(60)

    try:
        refused_while(other)  # another handle: another process, for a file
        refused_while(first)  # another thread on this handle
        with first.exclusive(wait=False):  # free: taken, re-entrant, let go
            with first.exclusive(wait=False):
                end = first.end(START)
            first.append(lines(created(1)), end)
        with other.exclusive(wait=False):
            assert [e.pos for e, _ in read_all(other)] == [1]
    finally:
        first.close()
        other.close()


def test_a_torn_tail_is_moved_aside_and_the_log_goes_on(harness: Harness, log: LogBackend) -> None:
    end = append(log, lines(created(1), message(2, 1)), START)
    append(log, lines(message(3, 2)), end)
    harness.cut_last_record_short()
    reading = log.read()
    assert [e.pos for e, _ in reading] == [1, 2]
    torn = reading.torn
    assert torn is not None and torn.offset == end and torn.line == 3 and torn.length > 0
    with log.exclusive():
        where = log.repair(torn)
    assert where
    assert log.end(START) == end
    assert log.read().torn is None
    append(log, lines(message(3, 2, "again")), end)
    assert [e.pos for e, _ in read_all(log)] == [1, 2, 3]


def test_damage_in_the_middle_is_corruption_named_by_line(
    harness: Harness, log: LogBackend
) -> None:
    append(log, lines(created(1), message(2, 1), message(3, 2)), START)
    harness.flip_a_byte_of(1)
    with pytest.raises(CorruptLog, match="line 2 "):
        read_all(log)


def test_a_replaced_or_cut_log_is_noticed(harness: Harness, log: LogBackend) -> None:
    end = append(log, lines(created(1), message(2, 1)), START)
    harness.drop_last_record()
    with pytest.raises(LogError):
        log.end(end)
    harness.replace()
    with pytest.raises(LogError):
        log.end(START)


def test_the_start_of_the_last_records(log: LogBackend) -> None:
    end = append(log, lines(created(1), *(message(p, p - 1) for p in range(2, 7))), START)
    cursors = [c for _, c in read_all(log)]
    assert log.start_of_last(2, START, end) == cursors[3]
    assert log.start_of_last(6, START, end) == START
    assert log.start_of_last(10, Cursor(cursors[1]), end) == cursors[1]


def test_the_line_of_the_record_that_ends_at_each_cursor(log: LogBackend) -> None:
    written = lines(created(1), message(2, 1))
    end = append(log, written, START)
    group = lines(message(3, 2), message(4, 3), group=True)
    append(log, group, end)
    starts = [START, *(c for _, c in read_all(log))]
    for k, line in enumerate([*written, *group]):
        assert log.last_line(Cursor(starts[k + 1])) == (starts[k], line)
    assert log.last_line(START)[1] == b""


def test_a_closed_handle_appends_nothing(log: LogBackend) -> None:
    log.close()
    with pytest.raises(JournalClosed):
        log.check_open()
    with pytest.raises(JournalClosed):
        log.append(lines(created(1)), START)


# -- the writer over each backend: what it promises holds whatever stores the log ----------


def test_the_writer_works_over_every_backend(harness: Harness) -> None:
    with Journal.open(harness.open()) as j:
        sid = j.create_session("m", session_id="s", first_message="hello")
        with j.batch():
            j.append_message(sid, "assistant", "one")
            j.append_message(sid, "user", "two")
        assert j.last_seq(sid) == 3
        written = j.last_pos
    with Journal.open(harness.open()) as again:
        assert again.last_seq("s") == 3 and again.last_pos == written
        assert again.append_message("s", "user", "three").pos == written + 1


def test_a_retry_through_another_writer_is_answered_from_the_log(harness: Harness) -> None:
    with Journal.open(harness.open()) as a, Journal.open(harness.open()) as b:
        sid = a.create_session("m", session_id="s")
        first = a.append_message(sid, "user", "once", event_id=str(uuid.uuid4()))
        again = b.append_message(sid, "user", "once", event_id=first.event_id)
        assert again == first._replace(duplicate=True)
        assert b.append_message(sid, "user", "next").seq == 2
        assert a.append_message(sid, "user", "last").seq == 3


def test_the_writer_repairs_a_torn_tail_when_it_opens(harness: Harness) -> None:
    with Journal.open(harness.open()) as j:
        sid = j.create_session("m", session_id="s")
        j.append_message(sid, "user", "kept")
        j.append_message(sid, "user", "torn")
    harness.cut_last_record_short()
    with Journal.open(harness.open()) as j:
        assert len(j.repairs) == 1
        assert j.last_seq("s") == 1
        assert j.append_message("s", "user", "again").seq == 2


def test_a_redaction_changes_those_records_only_and_keeps_every_cursor(log: LogBackend) -> None:
    records = lines(created(1, "a"), created(2, "b"), message(3, 1, "secret", "a"))
    end = append(log, records, START)
    end = append(log, lines(message(4, 1, "kept", "b"), message(5, 2, "gone", "a")), end)
    before = read_all(log)
    with log.exclusive():
        assert log.redact(((1, 1), (3, 3), (5, 5))) == 3
    after = read_all(log)
    assert [c for _, c in after] == [c for _, c in before]
    assert [e.pos for e, _ in after] == [1, 2, 3, 4, 5]
    assert [type(e) for e, _ in after] == [
        Redacted,
        SessionCreated,
        Redacted,
        MessageAppended,
        Redacted,
    ]
    assert [after[i][0] for i in (1, 3)] == [before[i][0] for i in (1, 3)]
    assert all(not e.id and e.ts == TS for e, _ in after if isinstance(e, Redacted))
    with log.exclusive():
        assert log.redact(((1, 1), (3, 3), (5, 5))) == 0  # done already: nothing changes
    assert log.end(end) == end


def test_a_redaction_keeps_a_group_whole(log: LogBackend) -> None:
    end = append(log, lines(created(1, "a"), created(2, "b"), group=True), START)
    with log.exclusive():
        log.redact(((1, 1),))
    assert [type(e) for e, _ in read_all(log)] == [Redacted, SessionCreated]
    assert log.end(end) == end


def test_torn_bytes_of_a_session_are_scrubbed_and_others_kept(
    harness: Harness, log: LogBackend
) -> None:
    end = append(log, lines(created(1, "a"), created(2, "b")), START)
    for session in ("a", "b"):
        end = append(log, lines(message(3, 1, f"torn-{session} " * 20, session)), end)
        harness.cut_last_record_short()
        reading = log.read()
        list(reading)
        assert reading.torn is not None
        with log.exclusive():
            log.repair(reading.torn)
        end = log.end(START)
    assert b"torn-a" in harness.kept_aside() and b"torn-b" in harness.kept_aside()
    with log.exclusive():
        assert log.scrub_torn("c") == []
        changed = log.scrub_torn("a")
    assert len(changed) == 1
    kept = harness.kept_aside()
    assert b"torn-a" not in kept and b"torn-b" in kept


def test_the_writer_forgets_over_every_backend(harness: Harness) -> None:
    with Journal.open(harness.open()) as j:
        j.create_session("m", session_id="a", first_message="secret")
        j.create_session("m", session_id="b", first_message="kept")
        j.append_message("a", "user", "more secret")
        forgotten = j.forget("a")
        assert j.last_pos == forgotten.pos
        with pytest.raises(UnknownSession):
            j.status("a")
    with Journal.open(harness.open()) as j:
        events = [e for e, _ in j._log.read()]
        assert not any(getattr(e, "session_id", None) == "a" for e in events)
        assert isinstance(events[-1], SessionForgotten)
        assert j.last_seq("b") == 1
        j.create_session("m", session_id="a")
        assert j.last_seq("a") == 0


def test_sessions_that_share_a_unit_are_forgotten_one_after_the_other(harness: Harness) -> None:
    """The second forgetting redacts records already redacted once (on a stream: a
    message already replaced) and its own."""
    with Journal.open(harness.open()) as j:
        with j.batch():
            j.create_session("m", session_id="a", first_message="a's secret")
            j.create_session("m", session_id="b", first_message="b's secret")
        j.create_session("m", session_id="c", first_message="kept")
        j.forget("a")
        j.forget("b")
    with Journal.open(harness.open()) as j:
        events = [e for e, _ in j._log.read()]
        assert not any(getattr(e, "session_id", None) in ("a", "b") for e in events)
        assert [e.content for e in events if isinstance(e, MessageAppended)] == ["kept"]
        assert j.last_seq("c") == 1


def test_several_sessions_are_forgotten_with_one_search_and_none_is_a_no_op(
    harness: Harness,
) -> None:
    with Journal.open(harness.open()) as j:
        j.create_session("m", session_id="kept", first_message="kept")
        j.create_session("m", session_id="a", first_message="a's secret")
        j.create_session("m", session_id="b", first_message="b's secret")
        last = j.last_pos
        assert j.forget_many([]) == []
        assert j.last_pos == last
        receipts = j.forget_many(["b", "a"])
        assert [r.pos for r in receipts] == [last + 1, last + 2]
    with Journal.open(harness.open()) as j:
        events = [e for e, _ in j._log.read()]
        assert [e.content for e in events if isinstance(e, MessageAppended)] == ["kept"]
        assert sum(isinstance(e, SessionForgotten) for e in events) == 2


def test_the_records_of_sessions_after_a_cursor_are_found(log: LogBackend) -> None:
    end = append(log, lines(created(1, "a"), created(2, "b")), START)
    append(log, lines(message(3, 1, "x", "a"), message(4, 1, "y", "b")), end)
    with log.exclusive():
        assert log.find_sessions(["a", "b"], end, 2) == {"a": [3], "b": [4]}
        assert log.find_sessions(["a"], log.end(START), 4) == {"a": []}


def test_records_before_the_sessions_first_one_may_be_skipped(log: LogBackend) -> None:
    """``first_pos`` says where the sessions' records begin: each backend finds the same
    records, whether it skips to there (a stream seeks its message) or not."""
    end = START
    for pos in range(1, 41):  # forty one-record units: other sessions
        end = append(log, lines(created(pos, f"o{pos}")), end)
    end = append(log, lines(created(41, "a"), message(42, 1, "x", "a"), group=True), end)
    for pos in range(43, 60):
        end = append(log, lines(created(pos, f"o{pos}")), end)
    append(log, lines(message(60, 2, "y", "a")), end)
    with log.exclusive():
        for first_pos in (0, 1, 30, 41, 42):  # 42: inside the group that begins at 41
            assert log.find_sessions(["a"], first_pos=first_pos) == {"a": [41, 42, 60]}
        assert log.find_sessions(["o50", "a"], first_pos=41) == {"o50": [50], "a": [41, 42, 60]}


def test_the_records_of_sessions_are_found_and_a_lookalike_is_not(log: LogBackend) -> None:
    decoy = msgspec.structs.replace(message(4, 1, "hi", "b"), metadata={"session_id": "a"})
    end = append(log, lines(created(1, "a"), created(2, "b"), message(3, 1, "x", "a")), START)
    append(log, lines(decoy, message(5, 2, "y", "a")), end)
    many = [f"x{i}" for i in range(10)]  # a file log matches every id field once then
    with log.exclusive():
        assert log.find_sessions(["a", "b", "c"]) == {"a": [1, 3, 5], "b": [2, 4], "c": []}
        found = log.find_sessions(["a", "b", *many])
    assert found == {"a": [1, 3, 5], "b": [2, 4], **{x: [] for x in many}}
