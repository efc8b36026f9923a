"""The JetStream log (``journal.log.jetstream``) beyond the log contract: its URL, its
stream's settings, its limits, and what a writer sees when servers go away.

The contract itself (reading, conflicts, gapless positions, retries) runs against a real
server in ``tests/test_log_contract.py``. Every server here is a real ``nats-server`` on
127.0.0.1, started by the fixtures of ``tests/nats_servers.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from journal.errors import InvalidValue, LogError, UnknownSession
from journal.events import MessageAppended

pytestmark = pytest.mark.nats


def _stream_url(server: Any, replicas: int = 1) -> str:
    return f"{server.url}/S{uuid.uuid4().hex[:10]}?replicas={replicas}"


def _contents(journal: Journal) -> list[str]:
    reading = journal._log.read()
    return [e.content for e, _ in reading if isinstance(e, MessageAppended)]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:4222/S",
        "nats:///S",
        "nats://127.0.0.1:4222/A.B",
        "nats://127.0.0.1:4222/S?replicas=2",
        "nats://127.0.0.1:4222/S?replicas=three",
        "nats://127.0.0.1:4222/S?speed=fast",
    ],
)
def test_a_url_that_names_no_log_is_refused(url: str) -> None:
    from journal.log.jetstream import parse_url

    with pytest.raises(InvalidValue):
        parse_url(url)


def test_the_url_names_servers_stream_and_replicas() -> None:
    from journal.log.jetstream import parse_url

    address = parse_url("nats://127.0.0.1:4222,127.0.0.1:4223/CHATS?replicas=3")
    assert address.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")
    assert (address.stream, address.subject, address.replicas) == ("CHATS", "CHATS.log", 3)
    assert parse_url("nats://127.0.0.1:4222").stream == "SESSIONS"


def test_a_durability_the_servers_decide_is_not_asked_of_the_client() -> None:
    with pytest.raises(InvalidValue, match="sync_interval"):
        Journal.open("nats://127.0.0.1:4222/S", durability="batch")


def test_without_the_nats_extra_a_nats_url_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    monkeypatch.delitem(sys.modules, "journal.log.jetstream", raising=False)
    with pytest.raises(InvalidValue, match=r"session-journal\[nats\]"):
        Journal.open("nats://127.0.0.1:4222/S")


def test_a_writer_opened_by_url_keeps_sessions_across_handles(nats_single: Any) -> None:
    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        sid = j.create_session("m", session_id="s", first_message="hello")
        with j.batch():
            j.append_message(sid, "assistant", "one")
            j.append_message(sid, "user", "two")
        written = j.last_pos
    with Journal.open(url) as again:
        assert again.last_seq("s") == 3 and again.last_pos == written
        assert _contents(again) == ["hello", "one", "two"]


def test_writers_on_two_handles_interleave_without_gaps_or_losses(nats_single: Any) -> None:
    """No lock spans the handles: each append is conditional on the end its writer read,
    and a writer that lost the race catches up and tries again by itself."""
    url = _stream_url(nats_single)
    with Journal.open(url) as first:
        first.create_session("m", session_id="s")
    writers = [Journal.open(url) for _ in range(2)]
    errors: list[BaseException] = []

    def write(k: int) -> None:
        try:
            for i in range(40):
                writers[k].append_message("s", "user", f"{k}-{i}")
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Journal.open(url) as j:
        events = [e for e, _ in j._log.read()]
        assert [e.pos for e in events] == list(range(1, len(events) + 1))
        assert sorted(_contents(j)) == sorted(f"{k}-{i}" for k in range(2) for i in range(40))
        assert j.last_seq("s") == 80
    for w in writers:
        w.close()


def test_a_stream_set_up_otherwise_is_refused_by_name(nats_single: Any) -> None:
    import nats
    from nats.js.api import StreamConfig

    async def make() -> None:
        nc = await nats.connect(nats_single.url)
        await nc.jetstream().add_stream(
            StreamConfig(name="LIMITED", subjects=["LIMITED.log"], max_msgs=10)
        )
        await nc.close()

    asyncio.run(make())
    with pytest.raises(LogError, match="max_msgs"):
        Journal.open(f"{nats_single.url}/LIMITED")


def test_an_append_over_max_payload_is_refused_and_a_combined_one_is_split(
    nats_single: Any,
) -> None:
    from journal.commit import Call, Ticket
    from journal.log import AppendTooLarge

    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        sid = j.create_session("m", session_id="s")
        limit = j._log._nc.max_payload
        with pytest.raises(AppendTooLarge, match="max_payload"):
            j.append_message(sid, "user", "x" * (limit + 1))
        # Three calls a writer combined: too large together, each fits alone.
        calls = [Call(j.append_message, (sid, "user", str(k) * (limit // 2)), {}) for k in "abc"]
        j._combiner.submit(Ticket(calls))
        assert [c.error for c in calls] == [None, None, None]
        assert [c.result.seq for c in calls] == [1, 2, 3]
        assert [c[0] for c in _contents(j)] == ["a", "b", "c"]


def test_a_writer_cut_off_from_its_server_says_so_and_a_retry_stores_once(
    nats_single: Any,
) -> None:
    from journal.log.jetstream import JetStreamLog, LogUnavailable

    url = _stream_url(nats_single)
    with Journal.open(JetStreamLog(url, wait_s=2)) as j:
        sid = j.create_session("m", session_id="s")
        nats_single.kill(0)
        event_id = str(uuid.uuid4())
        with pytest.raises(LogUnavailable, match="retry with the same event id"):
            j.append_message(sid, "user", "while away", event_id=event_id)
        nats_single.restart(0)
        receipt = j.append_message(sid, "user", "while away", event_id=event_id)
        assert j.append_message(sid, "user", "again", event_id=event_id) == receipt._replace(
            duplicate=True
        )
        assert _contents(j) == ["while away"]


def _bytes_under(directory: Path, needle: bytes) -> list[str]:
    return [str(p) for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_a_forgotten_session_leaves_no_byte_in_the_servers_store(nats_single: Any) -> None:
    """On one node the secure erase overwrites the original messages at once; their
    replacements hold the other sessions' records and the redacted ones only."""
    url, secret = _stream_url(nats_single), f"secret-{uuid.uuid4().hex}"
    with Journal.open(url) as j:
        j.create_session("m", session_id=secret, first_message=f"{secret} says hi")
        with j.batch():  # one message holding both sessions' records
            j.create_session("m", session_id="kept", first_message="kept words")
            j.append_message(secret, "user", f"more of {secret}")
        assert _bytes_under(nats_single.directory, secret.encode())  # stored, before
        j.forget(secret)
        with pytest.raises(UnknownSession):
            j.status(secret)
    assert _bytes_under(nats_single.directory, secret.encode()) == []
    with Journal.open(url) as j:
        assert _contents(j) == ["kept words"] and j.last_seq("kept") == 1
        j.create_session("m", session_id=secret)  # the id may be used again
        assert j.last_seq(secret) == 0


def test_a_redaction_its_writer_did_not_finish_is_finished_by_the_next_open(
    nats_single: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journal.log.jetstream import JetStreamLog

    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        j.create_session("m", session_id="gone", first_message="private words")
        j.create_session("m", session_id="kept", first_message="kept words")

        def stopped(self: JetStreamLog, positions: Any) -> int:
            raise KeyboardInterrupt  # the writer stops after its forgettings were appended

        monkeypatch.setattr(JetStreamLog, "redact", stopped)
        with pytest.raises(KeyboardInterrupt):
            j.forget("gone")
        monkeypatch.undo()
    with Journal.open(url) as j:  # opening the stream carries out the plan
        assert _contents(j) == ["kept words"]
        assert not any(getattr(e, "session_id", None) == "gone" for e, _ in j._log.read())


def test_an_r3_writer_goes_on_when_the_stream_leader_is_killed(nats_cluster3: Any) -> None:
    """Appends wait through the leader's election (seconds) instead of failing; every
    acknowledged message is there afterwards, once."""
    import nats

    url = _stream_url(nats_cluster3, replicas=3)
    with Journal.open(url) as j:
        sid = j.create_session("m", session_id="s")
        for i in range(20):
            j.append_message(sid, "user", f"before {i}")
        stream = url.split("/")[-1].split("?")[0]

        async def leader() -> str:
            nc = await nats.connect(nats_cluster3.urls)
            info = await nc.jetstream().stream_info(stream)
            await nc.close()
            assert info.cluster is not None and info.cluster.leader is not None
            return str(info.cluster.leader)

        nats_cluster3.kill(nats_cluster3.node_of(asyncio.run(leader())))
        for i in range(20):
            j.append_message(sid, "user", f"after {i}")
        expected = [f"before {i}" for i in range(20)] + [f"after {i}" for i in range(20)]
        assert _contents(j) == expected
    with Journal.open(url) as again:
        assert _contents(again) == expected and again.last_seq(sid) == 40


def test_the_readme_example_writes_to_a_stream(nats_single: Any, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```py\n(.*?)```", readme, re.DOTALL) if "nats:" in b]
    servers = re.search(r'"(nats://[^"/]+)/', example)
    assert servers is not None
    ours = example.replace(servers.group(1), nats_single.url).replace("replicas=3", "replicas=1")
    done = subprocess.run(
        [sys.executable, "-c", ours], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_the_async_writer_opens_a_stream_by_url(nats_single: Any) -> None:
    from journal import AsyncJournal

    url = _stream_url(nats_single)

    async def write() -> list[int]:
        async with AsyncJournal.open(url) as j:
            sid = await j.create_session("m", session_id="s")
            receipts = await asyncio.gather(
                *(j.append_message(sid, "user", f"m{i}") for i in range(32))
            )
            assert await j.last_seq(sid) == 32
            return sorted(r.seq for r in receipts)

    assert asyncio.run(write()) == list(range(1, 33))
    with Journal.open(url) as again:
        assert sorted(_contents(again)) == sorted(f"m{i}" for i in range(32))


def test_a_call_refused_on_what_a_writer_knew_is_judged_again_on_the_log(
    nats_single: Any,
) -> None:
    """A writer appends without looking first (the append is conditional on the end it
    knows); a call its stale state refuses is run again once it has caught up, and a call
    the log itself refuses still fails."""
    from journal.errors import SequenceConflict, UnknownSession

    url = _stream_url(nats_single)
    with Journal.open(url) as a, Journal.open(url) as b:
        sid = a.create_session("m", session_id="s")
        assert b.append_message(sid, "user", "b never saw s").seq == 1
        assert a.append_message(sid, "user", "a saw seq 0", expected_seq=1).seq == 2
        with pytest.raises(UnknownSession):
            b.append_message("nobody", "user", "no such session")
        with pytest.raises(SequenceConflict):
            b.append_message(sid, "user", "too late", expected_seq=1)
        assert b.last_seq(sid) == 2
    with Journal.open(url) as j:
        assert _contents(j) == ["b never saw s", "a saw seq 0"]


def test_writer_processes_racing_lose_nothing_when_the_leader_is_killed(tmp_path: Path) -> None:
    """``tools/jetstream_writers.py`` as it runs by default: 4 processes racing on an R3
    stream for 20 s, its leader SIGKILLed halfway and restarted; every receipt audited
    against the stream, and two nodes watching all along end with identical tables that
    verify."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "jetstream_writers.py"
    args = ["--writers", "4", "--seconds", "20", "--json", "--dir", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, str(tool), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stats = json.loads(out.stdout)
    assert stats["acknowledged"] > 30 and stats["shared_messages"] > 10
    assert (stats["lost"], stats["duplicated"], stats["misplaced"]) == (0, 0, 0)
    assert stats["positions_gapless"] == 1 and stats["seqs_gapless"] == 1
    assert stats["watch_exit"] == [0, 0] and stats["watch_caught_up"] == [True, True]
    assert stats["projections_identical"] == 1 and stats["verify_exit"] == [0, 0]


def test_a_writer_on_a_stream_opens_from_its_checkpoint_and_reads_only_what_followed(
    nats_single: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journal.log.jetstream import JetStreamLog

    url, state = _stream_url(nats_single), tmp_path / "writer.state"
    with Journal.open(url, state_path=state) as j:
        for k in range(5):
            j.create_session("m", session_id=f"s{k}", first_message="hi")
        old = j.append_message("s1", "user", "before", event_id=str(uuid.uuid4()))
    with Journal.open(url) as other:  # another host, after the checkpoint
        other.append_message("s1", "user", "after")
        other.create_session("m", session_id="late")
    first_reads: list[int] = []
    read_from = JetStreamLog._messages
    monkeypatch.setattr(
        JetStreamLog,
        "_messages",
        lambda self, first: first_reads.append(first) or read_from(self, first),
    )
    with Journal.open(url, state_path=state) as j:
        assert min(first_reads) > 5  # the sessions' messages were not read again
        assert j.last_seq("s1") == 3 and j.status("late") == "active"
        assert j.append_message("s1", "user", "before", event_id=old.event_id).duplicate
        assert j.append_message("s4", "user", "more").seq == 2


def test_a_checkpoint_of_another_stream_is_not_believed(nats_single: Any, tmp_path: Path) -> None:
    first, second = _stream_url(nats_single), _stream_url(nats_single)
    state = tmp_path / "writer.state"
    with Journal.open(first, state_path=state) as j:
        j.create_session("m", session_id="only-in-first", first_message="a")
        j.append_message("only-in-first", "user", "b")
    with Journal.open(second) as j:
        j.create_session("m", session_id="only-in-second")
        j.append_message("only-in-second", "user", "c")
        j.append_message("only-in-second", "user", "d")
    with Journal.open(second, state_path=state) as j:
        assert j.last_seq("only-in-second") == 2
        with pytest.raises(UnknownSession):
            j.last_seq("only-in-first")


def test_two_units_that_start_with_the_same_event_id_are_not_taken_for_one(
    nats_single: Any,
) -> None:
    """A caller retrying an event through another host starts that host's write with the
    same event id, followed by other calls: the server must not drop it as a duplicate of
    the first host's message (acknowledging records it never stored). It conflicts, and
    the writer catches up and answers the retry from what it reads."""
    from journal.events import encode_line
    from journal.log import START, AppendConflict
    from journal.log.jetstream import JetStreamLog

    url, same = _stream_url(nats_single), str(uuid.uuid4())

    def line(pos: int, content: str, event_id: str) -> bytes:
        return encode_line(
            MessageAppended(
                pos=pos,
                id=event_id,
                ts="2026-01-01T00:00:00.000000Z",
                session_id="s",
                seq=pos,
                role="user",
                content=content,
            )
        )

    a, b = JetStreamLog(url), JetStreamLog(url)
    try:
        with a.exclusive():
            a.append([line(1, "first try", same), line(2, "a's", str(uuid.uuid4()))], START)
        with b.exclusive(), pytest.raises(AppendConflict):
            b.append([line(1, "retried", same), line(2, "b's", str(uuid.uuid4()))], START)
        assert [e.content for e, _ in b.read()] == ["first try", "a's"]
    finally:
        a.close()
        b.close()


def test_a_forget_goes_through_while_another_host_keeps_appending(nats_single: Any) -> None:
    """The forgettings' append is refused each time the other host (200 appends a second)
    got in first; each try searches only what was appended since the last."""
    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        j.create_session("m", session_id="gone", first_message="private words")
        j.create_session("m", session_id="busy")
    stop, written = threading.Event(), []

    def other_host() -> None:
        with Journal.open(url) as other:
            while not stop.is_set():
                written.append(other.append_message("busy", "user", "chatter").seq)
                time.sleep(0.005)

    thread = threading.Thread(target=other_host)
    thread.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        with Journal.open(url) as j:
            j.forget("gone")
    finally:
        stop.set()
        thread.join()
    with Journal.open(url) as j:
        assert j.last_seq("busy") == len(written)
        assert not any(getattr(e, "session_id", None) == "gone" for e, _ in j._log.read())


def test_a_forget_reads_the_stream_from_the_sessions_creation_only(nats_single: Any) -> None:
    """The message that holds the session's creation is found by a binary search: the
    messages before it are not read, however long the stream."""
    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        for k in range(300):
            j.create_session("m", session_id=f"old{k}")
        j.create_session("m", session_id="late", first_message="private words")
        j.append_message("late", "assistant", "more")
    with Journal.open(url) as j:
        log = j._log
        read_batch, fetched = log._read_batch, []

        def counted(first: int, last: int | None) -> Any:
            got = read_batch(first, last)
            fetched.append(len(got[0]))
            return got

        log._read_batch = counted  # type: ignore[method-assign]
        j.forget("late")
        assert 0 < sum(fetched) < 60, fetched  # a whole read: 300 and more
    with Journal.open(url) as j:
        assert not any(getattr(e, "session_id", None) == "late" for e, _ in j._log.read())
        assert j.last_seq("old299") == 0


def test_a_search_steps_over_messages_deleted_by_hand(nats_single: Any) -> None:
    """The binary search meets sequences with no message (deleted by hand, with no
    replacement) and goes on from the next message there is, or below."""
    url = _stream_url(nats_single)
    with Journal.open(url) as j:
        for k in range(40):
            j.create_session("m", session_id=f"s{k}")  # message k + 1 holds position k + 2
        log = j._log
        for seq in (21, 37, 38, 39, 40):  # the search's first step, and the stream's end
            log._delete(log.address.stream, seq)
        with log.exclusive():
            assert log.find_sessions(["s30"], first_pos=32) == {"s30": [32]}
            assert log.find_sessions(["s35"], first_pos=37) == {"s35": [37]}
