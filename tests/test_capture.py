"""The rules every router adapter shares (journal.integrations.capture), without a router:
multi-part content, ids the log refuses, redelivery, and sessions the log has closed."""

from __future__ import annotations

from pathlib import Path

import pytest
from msgspec import UNSET

from journal import Journal
from journal.errors import InvalidState, UnknownSession
from journal.events import MessageAppended, SessionMetadataSet, decode_line
from journal.integrations import capture
from journal.integrations.capture import (
    RAW_OMITTED,
    Call,
    Recorder,
    message_arguments,
    session_id_for,
)
from journal.log import LogReader
from journal.validation import MAX_RAW_BYTES

HI = {"role": "user", "content": "hi"}
YO = {"role": "assistant", "content": "yo"}


def call(call_id: str, *history: dict[str, object], answer: str = "ok") -> Call:
    response = {"role": "assistant", "content": answer}
    return Call(call_id, "s", "openai/gpt-4o", list(history), response)


def test_content_parts_keep_their_text_and_the_item_keeps_the_rest() -> None:
    item = {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
    args = message_arguments(item)
    assert args["content"] == "What is this?"
    assert '"image_url"' in args["raw"]


def test_a_session_id_the_log_refuses_becomes_a_distinct_valid_one() -> None:
    assert session_id_for("chat-42") == "chat-42"
    a, b = session_id_for("user 1/chat"), session_id_for("user 1:chat")
    assert a != b and a.startswith("user-1-chat_")


def test_a_redelivered_call_writes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    r = Recorder(str(log))
    try:
        assert r.record(call("c1", HI)) == "appended 2 to s"
        size = log.stat().st_size
        assert r.record(call("c1", HI)) == "duplicate"
        assert log.stat().st_size == size
    finally:
        r.close()


def test_a_closed_session_takes_no_more_messages(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    r = Recorder(str(log))
    try:
        r.record(call("c1", HI, answer="yo"))
        with Journal.open(log) as j:
            j.archive("s")
        with pytest.raises(InvalidState):
            r.record(call("c2", HI, YO, {"role": "user", "content": "more"}))
        with Journal.open(log) as j:
            j.restore("s")
            j.delete_session("s")
        with pytest.raises(UnknownSession, match="was deleted"):
            r.record(call("c3", HI, YO, {"role": "user", "content": "more"}))
    finally:
        r.close()
    lines = log.read_bytes().splitlines()
    contents = [e.content for e in map(decode_line, lines) if isinstance(e, MessageAppended)]
    assert contents == ["hi", "yo"]


def _messages(log: Path, session_id: str) -> list[MessageAppended]:
    events = map(decode_line, log.read_bytes().splitlines())
    return [e for e in events if isinstance(e, MessageAppended) and e.session_id == session_id]


def test_an_item_over_the_raw_limit_goes_in_without_it_and_capture_goes_on(
    tmp_path: Path,
) -> None:
    """A client resends its whole history each call: an item the log cannot keep whole
    (a large image, say) must not stop the session's capture for good."""
    big = {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:," + "A" * MAX_RAW_BYTES}},
        ],
    }
    picture_only = {"role": "user", "content": [big["content"][1]]}  # type: ignore[index]
    log = tmp_path / "log.jsonl"
    r = Recorder(str(log))
    try:
        assert r.record(call("c1", big, answer="a picture")) == "appended 2 to s"
        more = {"role": "user", "content": "and this?"}
        history = (big, {"role": "assistant", "content": "a picture"}, more)
        assert r.record(call("c2", *history, picture_only)) == "appended 3 to s"
    finally:
        r.close()
    got = _messages(log, "s")
    assert [m.content for m in got][:3] == ["look", "a picture", "and this?"]
    assert got[0].raw is UNSET and got[0].metadata is not None
    assert got[0].metadata[RAW_OMITTED] > MAX_RAW_BYTES
    assert got[3].content.startswith("[a provider item of ") and got[3].raw is UNSET
    assert got[4].content == "ok"
    assert got[4].metadata is not None and got[4].metadata["call_id"] == "c2"


def test_a_fork_made_by_another_recorder_is_continued_not_forked_again(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    one = Recorder(str(log), history_change="new_session")
    two = Recorder(str(log), history_change="new_session")
    try:
        one.record(call("c1", {"role": "user", "content": "one"}, answer="first"))
        trimmed = ({"role": "user", "content": "two"},)
        assert two.record(call("c2", *trimmed, answer="second")).startswith("appended 2 to s:fork-")
        later = (*trimmed, {"role": "assistant", "content": "second"}, HI)
        done = one.record(call("c3", *later, answer="third"))
    finally:
        one.close()
        two.close()
    events = map(decode_line, log.read_bytes().splitlines())
    (fork,) = {e.session_id for e in events if isinstance(e, SessionMetadataSet)}
    assert done == f"appended 2 to {fork}"
    assert [m.content for m in _messages(log, fork)] == ["two", "second", "hi", "third"]


def test_a_recorder_reads_on_from_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer's messages are read from where the recorder's reading stopped,
    not from the start of the log again."""
    log = tmp_path / "log.jsonl"
    starts: list[int] = []
    real = capture.LogReader

    def reader(path: str, start: int = 0, start_pos: int = 0) -> LogReader:
        starts.append(start)
        return real(path, start, start_pos)

    monkeypatch.setattr(capture, "LogReader", reader)
    with Journal.open(log) as j:
        j.create_session("m", session_id="other", first_message="before")
    before = log.stat().st_size
    r = Recorder(str(log))
    try:
        r.record(call("c1", HI, answer="yo"))
        with Journal.open(log) as j:
            j.append_message("s", "user", "typed elsewhere")
            j.append_message("s", "assistant", "answered elsewhere")
        history = (HI, YO, {"role": "user", "content": "typed elsewhere"})
        r.record(call("c2", *history, {"role": "assistant", "content": "answered elsewhere"}))
    finally:
        r.close()
    assert starts and min(starts) >= before
    assert [m.content for m in _messages(log, "s")][-1] == "ok"
