"""The rules every router adapter shares (journal.integrations.capture), without a router:
multi-part content, ids the log refuses, redelivery, and sessions the log has closed."""

from __future__ import annotations

from pathlib import Path

import pytest

from journal import Journal
from journal.errors import InvalidState, SessionExists
from journal.events import MessageAppended, decode_line
from journal.integrations.capture import Call, Recorder, message_arguments, session_id_for

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
        with pytest.raises(SessionExists):
            r.record(call("c3", HI, YO, {"role": "user", "content": "more"}))
    finally:
        r.close()
    lines = log.read_bytes().splitlines()
    contents = [e.content for e in map(decode_line, lines) if isinstance(e, MessageAppended)]
    assert contents == ["hi", "yo"]
