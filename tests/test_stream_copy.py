"""A node's copy of a JetStream log (``journal.log.stream_copy``): byte for byte the
stream's records, resumed after a crash at any point, refused when it is another stream's.

Every server is a real ``nats-server`` on 127.0.0.1 (``tests/nats_servers.py``).
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from journal import Journal
from journal.errors import CorruptLog
from journal.log import FileSource

pytestmark = pytest.mark.nats


def _stream_url(server: Any) -> str:
    return f"{server.url}/C{uuid.uuid4().hex[:10]}"


def _write(url: str, sessions: int, messages: int, prefix: str = "s") -> None:
    with Journal.open(url) as j:
        for k in range(sessions):
            sid = j.create_session("openai/gpt-4o", session_id=f"{prefix}{k}")
            with j.batch():  # a group: one message of several records
                for m in range(messages):
                    j.append_message(sid, "user", f"{prefix}{k} message {m}")


def _stream_bytes(url: str) -> bytes:
    from journal.log.jetstream import JetStreamLog

    log = JetStreamLog(url)
    try:
        return b"".join(p for batch in log.messages(0, 0) for _, p, _ in batch)
    finally:
        log.close()


def _copy(url: str, path: Path) -> Any:
    from journal.log.stream_copy import StreamCopy

    return StreamCopy(url, str(path))


def _copied(server: Any, tmp_path: Path, sessions: int, messages: int) -> tuple[str, Path]:
    """A new stream with ``sessions`` sessions of ``messages`` messages, and a copy of it
    made: the stream's URL and the copy's path."""
    url, path = _stream_url(server), tmp_path / "copy.jsonl"
    _write(url, sessions=sessions, messages=messages)
    with _copy(url, path) as copy:
        copy.sync()
    return url, path


def test_the_copy_holds_the_streams_records_byte_for_byte(nats_single: Any, tmp_path: Path) -> None:
    url, path = _stream_url(nats_single), tmp_path / "node.db.stream.jsonl"
    _write(url, sessions=3, messages=4)
    with _copy(url, path) as copy:
        assert copy.sync() == 1 + 3 * 5  # the model's registration, then the sessions
        assert copy.sync() == 0
        _write(url, sessions=2, messages=1, prefix="t")
        assert copy.sync() == 2 * 2
    assert path.read_bytes() == _stream_bytes(url)
    events = [e for e, _ in FileSource(str(path)).read()]
    assert [e.pos for e in events] == list(range(1, 21))


def test_a_copy_resumes_whatever_its_anchor_missed(nats_single: Any, tmp_path: Path) -> None:
    """A crash between the copy's fsync and its anchor's rename leaves an older anchor (or
    none): what the copy holds past it is compared, not appended again."""
    url, path = _copied(nats_single, tmp_path, sessions=2, messages=2)
    anchor = Path(f"{path}.anchor")
    old_anchor = anchor.read_bytes()
    _write(url, sessions=2, messages=2, prefix="t")
    with _copy(url, path) as copy:
        copy.sync()
    anchor.write_bytes(old_anchor)  # the anchor the crash left behind
    _write(url, sessions=1, messages=1, prefix="u")
    with _copy(url, path) as copy:
        assert copy.sync() == 2
    assert path.read_bytes() == _stream_bytes(url)
    anchor.unlink()
    with _copy(url, path) as copy:
        assert copy.sync() == 0
    assert path.read_bytes() == _stream_bytes(url)


def test_a_damaged_anchor_makes_the_copy_compare_everything(
    nats_single: Any, tmp_path: Path
) -> None:
    url, path = _copied(nats_single, tmp_path, sessions=2, messages=1)
    Path(f"{path}.anchor").write_bytes(b"{not json")
    _write(url, sessions=1, messages=1, prefix="t")
    with _copy(url, path) as copy:
        assert copy.sync() == 2
    assert path.read_bytes() == _stream_bytes(url)


def test_a_torn_tail_of_the_copy_is_moved_aside_and_copied_again(
    nats_single: Any, tmp_path: Path
) -> None:
    url, path = _copied(nats_single, tmp_path, sessions=2, messages=1)
    whole = path.read_bytes()
    _write(url, sessions=1, messages=1, prefix="t")
    with path.open("ab") as f:  # a copy cut short by a crash mid-append
        f.write(_stream_bytes(url)[len(whole) : len(whole) + 40])
    with _copy(url, path) as copy:
        assert copy.sync() == 2
    assert path.read_bytes() == _stream_bytes(url)
    assert list(tmp_path.glob("copy.jsonl.torn-*"))


def test_a_copy_of_another_stream_is_refused(nats_single: Any, tmp_path: Path) -> None:
    from journal.log.stream_copy import CopyMismatch

    first, second = _stream_url(nats_single), _stream_url(nats_single)
    path = tmp_path / "copy.jsonl"
    _write(first, sessions=1, messages=1)
    _write(second, sessions=1, messages=1, prefix="other")
    with _copy(first, path) as copy:
        copy.sync()
    before = path.read_bytes()
    with _copy(second, path) as copy, pytest.raises(CopyMismatch, match="copied from stream"):
        copy.sync()
    Path(f"{path}.anchor").unlink()  # without its anchor, the bytes themselves differ
    with _copy(second, path) as copy, pytest.raises(CopyMismatch, match="differ"):
        copy.sync()
    assert path.read_bytes() == before


def test_a_copy_changed_in_place_is_found_by_a_check_of_every_message(
    nats_single: Any, tmp_path: Path
) -> None:

    url, path = _copied(nats_single, tmp_path, sessions=3, messages=1)
    data = path.read_bytes()
    at = data.index(b"s0 message 0")
    path.write_bytes(data[:at] + b"S0" + data[at + 2 :])  # checksum now wrong too
    with _copy(url, path) as copy:
        assert copy.sync() == 0  # the anchor's message is intact: a sync looks no further
        with pytest.raises(CorruptLog):
            copy.sync(check_all=True)


def test_a_copy_longer_than_the_stream_is_refused(nats_single: Any, tmp_path: Path) -> None:
    from journal.log.stream_copy import CopyMismatch

    url, path = _copied(nats_single, tmp_path, sessions=1, messages=1)
    other = _stream_url(nats_single)
    _write(other, sessions=3, messages=1)
    with _copy(other, tmp_path / "long.jsonl") as copy:
        copy.sync()
    Path(f"{path}.anchor").unlink()
    path.write_bytes((tmp_path / "long.jsonl").read_bytes())
    with _copy(url, path) as copy, pytest.raises(CopyMismatch):
        copy.sync()


def test_a_follower_waits_out_its_server_and_goes_on_when_it_returns(
    nats_single: Any, tmp_path: Path
) -> None:
    import threading

    from journal.log.stream_copy import StreamCopy

    url, path = _stream_url(nats_single), tmp_path / "copy.jsonl"
    _write(url, sessions=1, messages=1)
    said: list[str] = []
    stop = threading.Event()
    copy = StreamCopy(url, str(path), wait_s=1.0)
    failed: list[BaseException] = []

    def follow() -> None:
        try:
            copy.follow(stop, 0.2, say=said.append)
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)

    thread = threading.Thread(target=follow)
    thread.start()
    try:
        nats_single.kill(0)
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.1)
        nats_single.restart(0)
        _write(url, sessions=2, messages=1, prefix="after")
        while path.read_bytes() != _stream_bytes(url) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(30)
        copy.close()
    assert not failed and not thread.is_alive()
    assert path.read_bytes() == _stream_bytes(url)
    assert "still trying" in said[0] and "answer again" in said[-1]
