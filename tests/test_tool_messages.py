"""Messages as LLM APIs send them: tool calls, tool results, developer turns and the raw
provider item, through the writer, the projection, verify and the read commands; and a
log written before these fields existed, replayed unchanged."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_runner
from projection_helpers import open_journal, rows

from journal import Journal
from journal.errors import InvalidValue
from journal.events import ROLES, MessageAppended, decode_line, encode_line
from journal.validation import MAX_RAW_BYTES
from projector import connect, rebuild, replay, verify
from projector.cli import main
from projector.cli.export import to_jsonl, to_markdown
from projector.queries import get_transcript, search

DATA = Path(__file__).parent / "data"
OLD_LOG = DATA / "log_before_tool_messages.jsonl"
# Its transcripts, exports and snapshots as the projector before tool messages made them.
OLD_EXPECTED = DATA / "log_before_tool_messages.expected.json"

# A provider's item with spacing and key order of its own: it must come back as written.
RAW_CALL = (
    '{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", '
    '"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": '
    '\\"Lyon\\"}"}}]}'
)
CALL = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Lyon"}'}


def conversation(j: Journal) -> str:
    sid = j.create_session("openai/gpt-4o", session_id="weather")
    j.append_message(sid, "developer", "Answer in one line.")
    j.append_message(sid, "user", "Weather in Lyon? zephyr")
    j.append_message(sid, "assistant", "", tool_calls=[CALL], raw=RAW_CALL, tokens_used=30)
    j.append_message(sid, "tool", '{"sky": "clear"}', tool_call_id="call_1")
    j.append_message(sid, "assistant", "Clear skies in Lyon.", raw={"role": "assistant"})
    return sid


@pytest.fixture
def projected(tmp_path: Path) -> tuple[Path, Path]:
    log, db = tmp_path / "log.jsonl", tmp_path / "db.sqlite"
    with open_journal(log) as j:
        conversation(j)
    replay(log, db)
    return log, db


def test_every_role_of_the_event_model_is_allowed_by_the_schema(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "db.sqlite"
    with open_journal(log) as j:
        sid = j.create_session("m")
        for role in ROLES:
            j.append_message(sid, role, f"a {role} turn")
    replay(log, db)
    assert [r for (r,) in rows(db, "SELECT role FROM messages ORDER BY message_id")] == list(ROLES)


def test_a_plain_message_is_written_exactly_as_before(tmp_path: Path) -> None:
    with open_journal(tmp_path / "log.jsonl") as j:
        sid = j.create_session("m")
        j.append_message(sid, "user", "hi")
    line = (tmp_path / "log.jsonl").read_bytes().splitlines()[-1]
    assert b"tool_calls" not in line and b"raw" not in line and b"tool_call_id" not in line


def test_tool_calls_results_and_raw_items_are_projected_and_read_back(
    projected: tuple[Path, Path],
) -> None:
    _, db = projected
    conn = connect(db)
    try:
        t = get_transcript(conn, "weather")
    finally:
        conn.close()
    assert [m.role for m in t.messages] == ["developer", "user", "assistant", "tool", "assistant"]
    call = t.messages[2]
    assert call.content == ""
    assert [(c.id, c.name, c.arguments) for c in call.tool_calls or ()] == [
        ("call_1", "get_weather", '{"city": "Lyon"}')
    ]
    assert call.raw == RAW_CALL  # the very string, spacing and key order kept
    assert t.messages[3].tool_call_id == "call_1"
    assert t.messages[4].raw == '{"role":"assistant"}'  # a value is encoded compactly
    # The JSON lines export is lossless: raw comes back as the same string.
    exported = [json.loads(line) for line in to_jsonl(t).splitlines()[1:]]
    assert exported[2]["raw"] == RAW_CALL
    assert exported[2]["tool_calls"] == [CALL]
    assert "raw" not in exported[1]  # absent fields stay out of the export


def test_markdown_shows_tool_calls_and_what_a_result_answers(projected: tuple[Path, Path]) -> None:
    _, db = projected
    conn = connect(db)
    try:
        md = to_markdown(get_transcript(conn, "weather"))
    finally:
        conn.close()
    assert "Tool call `call_1`: **get_weather**" in md
    assert '{"city": "Lyon"}' in md
    assert "## 4. tool (" in md and "answering `call_1`)" in md


def test_show_prints_the_tool_call(projected: tuple[Path, Path]) -> None:
    log, db = projected
    result = cli_runner().invoke(main, ["--log", str(log), "--db", str(db), "show", "weather"])
    assert result.exit_code == 0, result.output
    assert 'get_weather({"city": "Lyon"})  [call_1]' in result.output
    assert "answering call_1" in result.output


def test_search_finds_text_but_not_raw_items(projected: tuple[Path, Path]) -> None:
    _, db = projected
    conn = connect(db)
    try:
        assert [(h.seq, h.role) for h in search(conn, "zephyr")] == [(2, "user")]
        assert [(h.seq, h.role) for h in search(conn, "clear skies")] == [(5, "assistant")]
        # "function" appears only inside the raw item of message 3.
        assert search(conn, "function") == []
    finally:
        conn.close()


def test_verify_covers_raw_items_and_tool_calls(projected: tuple[Path, Path]) -> None:
    log, db = projected
    assert verify(log, db).ok
    for column, value in (("raw", '{"role":"user"}'), ("tool_calls", "[]"), ("tool_call_id", "x")):
        conn = connect(db)
        try:
            (before,) = conn.execute(
                f"SELECT {column} FROM messages WHERE sequence_number = 3"
            ).fetchone()
            conn.execute(f"UPDATE messages SET {column} = ? WHERE sequence_number = 3", (value,))
            conn.commit()
        finally:
            conn.close()
        report = verify(log, db)
        assert ("log_mismatch", "weather") in {(p.kind, p.session_id) for p in report.problems}
        conn = connect(db)
        try:
            conn.execute(f"UPDATE messages SET {column} = ? WHERE sequence_number = 3", (before,))
            conn.commit()
        finally:
            conn.close()
    assert verify(log, db).ok


def test_a_deleted_session_comes_back_with_its_tool_calls_and_raw_items(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "db.sqlite"
    with open_journal(log) as j:
        sid = conversation(j)
        j.delete_session(sid)
        j.restore(sid)
    replay(log, db)
    conn = connect(db)
    try:
        t = get_transcript(conn, sid)
    finally:
        conn.close()
    assert t.messages[2].raw == RAW_CALL and t.messages[3].tool_call_id == "call_1"
    assert verify(log, db).ok


def test_command_line_append_takes_tool_messages(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "db.sqlite"
    with open_journal(log) as j:
        j.create_session("m", session_id="s")
    lines = [
        {"type": "message_appended", "session_id": "s", "seq": 1, "role": "assistant",
         "content": "", "tool_calls": [CALL], "raw": RAW_CALL},
        {"type": "message_appended", "session_id": "s", "seq": 2, "role": "tool",
         "content": "clear", "tool_call_id": "call_1"},
    ]  # fmt: skip
    stdin = "".join(json.dumps(x) + "\n" for x in lines)
    args = ["--log", str(log), "--db", str(db), "append", "-"]
    result = cli_runner().invoke(main, args, input=stdin)
    assert result.exit_code == 0, result.output
    events = [decode_line(b) for b in log.read_bytes().splitlines()]
    messages = [e for e in events if isinstance(e, MessageAppended)]
    assert messages[0].raw == RAW_CALL and messages[1].tool_call_id == "call_1"


Call = Callable[[Journal], Any]
BAD_MESSAGES: list[tuple[str, Call, str]] = [
    ("empty text alone", lambda j: j.append_message("s", "assistant", ""), "content is empty"),
    (
        "tool calls on a user message",
        lambda j: j.append_message("s", "user", "hi", tool_calls=[CALL]),
        "tool calls belong to an assistant message, not a user message",
    ),
    (
        "tool calls not a list",
        lambda j: j.append_message("s", "assistant", "", tool_calls="call"),
        "tool_calls must be a list, not str",
    ),
    (
        "tool call without a name",
        lambda j: j.append_message("s", "assistant", "", tool_calls=[{"id": "c"}]),
        r"tool_calls\[0\].name must be a non-empty string",
    ),
    (
        "tool call with an unknown key",
        lambda j: j.append_message("s", "assistant", "", tool_calls=[{**CALL, "type": "x"}]),
        r"tool_calls\[0\] has unknown keys: type",
    ),
    (
        "tool call arguments not text",
        lambda j: j.append_message(
            "s", "assistant", "", tool_calls=[{"id": "c", "name": "f", "arguments": {}}]
        ),
        r"tool_calls\[0\].arguments must be a string",
    ),
    (
        "tool call not a mapping",
        lambda j: j.append_message("s", "assistant", "", tool_calls=[3]),
        r"tool_calls\[0\] must be a mapping with id, name and arguments, not int",
    ),
    (
        "tool call id on an assistant message",
        lambda j: j.append_message("s", "assistant", "x", tool_call_id="c"),
        "tool_call_id belongs to a tool message, not a assistant message",
    ),
    (
        "empty tool call id",
        lambda j: j.append_message("s", "tool", "x", tool_call_id=""),
        "tool_call_id must be a non-empty string",
    ),
    (
        "raw not JSON",
        lambda j: j.append_message("s", "user", "hi", raw="{not json"),
        "raw is not JSON text",
    ),
    (
        "raw of another type",
        lambda j: j.append_message("s", "user", "hi", raw=3),
        "raw must be JSON text or a JSON object or array, not int",
    ),
    (
        "raw not serialisable",
        lambda j: j.append_message("s", "user", "hi", raw={"x": float("nan")}),
        "raw is not JSON-serialisable",
    ),
    (
        "raw too deep",
        lambda j: j.append_message("s", "user", "hi", raw="[" * 300 + "]" * 300),
        "raw is JSON nested deeper than 256 levels",
    ),
    (
        "raw over its limit",
        lambda j: j.append_message("s", "user", "hi", raw='"' + "x" * MAX_RAW_BYTES + '"'),
        f"the limit is {MAX_RAW_BYTES}",
    ),
    (
        "raw with a lone surrogate",
        lambda j: j.append_message("s", "user", "hi", raw='"\ud800"'),
        "raw holds a lone surrogate",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [pytest.param(c, m, id=n) for n, c, m in BAD_MESSAGES]
)
def test_bad_tool_messages_are_refused_and_write_nothing(
    tmp_path: Path, call: Call, message: str
) -> None:
    log = tmp_path / "log.jsonl"
    with open_journal(log) as j:
        j.create_session("m", session_id="s")
        before = log.read_bytes()
        with pytest.raises(InvalidValue, match=message):
            call(j)
    assert log.read_bytes() == before


def test_a_log_from_before_tool_messages_replays_and_verifies_unchanged(tmp_path: Path) -> None:
    log, db = tmp_path / "old.jsonl", tmp_path / "old.db"
    shutil.copy(OLD_LOG, log)
    original = log.read_bytes()
    # Every line decodes and encodes back to the same bytes: nothing new is added to it.
    assert all(encode_line(decode_line(b)) == b + b"\n" for b in original.splitlines())
    replay(log, db)
    assert verify(log, db).ok
    expected = json.loads(OLD_EXPECTED.read_text())
    conn = connect(db)
    try:
        for sid, text in expected["exports"].items():
            assert to_jsonl(get_transcript(conn, sid)) == text
            assert to_markdown(get_transcript(conn, sid)) == expected["markdown"][sid]
        snapshots = conn.execute(
            "SELECT snapshot_id, snapshot_type, context_json FROM session_snapshots "
            "ORDER BY snapshot_id"
        ).fetchall()
    finally:
        conn.close()
    assert [list(s) for s in snapshots] == expected["snapshots"]
    rebuild(log, db)
    assert verify(log, db).ok
    # A writer opens it and goes on; the old lines stay as they were.
    with open_journal(log) as j:
        j.restore("trip")
        j.append_message("trip", "assistant", "", tool_calls=[CALL])
    assert log.read_bytes().startswith(original)
    replay(log, db)
    assert verify(log, db).ok
