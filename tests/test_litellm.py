"""LiteLLM capture, run offline through LiteLLM itself (``mock_response``): what lands in
the log for sync, async, streamed and tool calls, redelivered and late callbacks, edited
histories, and failures that must never reach the caller."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost map from the network
litellm = pytest.importorskip("litellm", reason="the litellm extra is not installed")

from litellm.integrations.custom_logger import CustomLogger  # noqa: E402
from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER  # noqa: E402

from journal.errors import DurabilityError, InvalidValue  # noqa: E402
from journal.events import MessageAppended, SessionMetadataSet, decode_line  # noqa: E402
from journal.integrations.litellm import JournalCallback  # noqa: E402
from journal.writer import Journal  # noqa: E402
from projector import replay, verify  # noqa: E402

# LiteLLM and its dependencies warn about themselves; the suite's "warnings are errors"
# stays for this project's own code.
pytestmark = [
    pytest.mark.filterwarnings("ignore:::pydantic.*"),
    pytest.mark.filterwarnings("ignore:::litellm.*"),
]
MODEL = "openai/gpt-4o"
WEATHER_CALL = {
    "id": "call_w1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'},
}


class Recording(JournalCallback):
    """The callback under test, remembering each hook's arguments and outcome."""

    def __init__(self, log: Path, **options: Any) -> None:
        super().__init__(log, **options)
        self.calls: list[tuple[Any, ...]] = []
        self.outcomes: list[str] = []
        self.arrived = threading.Condition()

    def capture(self, kwargs: Any, response_obj: Any, start: Any, end: Any) -> str:
        outcome = super().capture(kwargs, response_obj, start, end)
        with self.arrived:
            self.calls.append((kwargs, response_obj, start, end))
            self.outcomes.append(outcome)
            self.arrived.notify_all()
        return outcome

    def wait_for(self, count: int) -> None:
        """Sync hooks run on LiteLLM's worker threads: wait until ``count`` have run."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.outcomes) >= count, timeout=60)


def register(cb: Recording | None) -> None:
    """Make ``cb`` the only callback. LiteLLM copies ``callbacks`` into its success and
    failure lists on the first call, so those are emptied too."""
    for name in ("input_callback", "success_callback", "failure_callback"):
        setattr(litellm, name, [])
    litellm._async_success_callback = []
    litellm._async_failure_callback = []
    litellm.callbacks = [] if cb is None else [cb]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "sessions.jsonl"


@pytest.fixture
def callback(log: Path) -> Iterator[Recording]:
    cb = Recording(log)
    register(cb)
    try:
        yield cb
    finally:
        register(None)
        cb.close()


def messages(log: Path) -> list[MessageAppended]:
    lines = log.read_bytes().splitlines() if log.exists() else []
    return [e for e in map(decode_line, lines) if isinstance(e, MessageAppended)]


def transcript(log: Path, session_id: str) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in messages(log) if m.session_id == session_id]


def complete(cb: Recording, history: list[dict[str, Any]], answer: str, **kw: Any) -> Any:
    before = len(cb.outcomes)
    response = litellm.completion(model=MODEL, messages=history, mock_response=answer, **kw)
    cb.wait_for(before + 1)
    return response


async def acomplete(cb: Recording, history: list[dict[str, Any]], answer: str, **kw: Any) -> Any:
    before = len(cb.outcomes)
    response = await litellm.acompletion(model=MODEL, messages=history, mock_response=answer, **kw)
    await settle(cb, before + 1)
    return response


async def settle(cb: Recording, count: int) -> None:
    """Async hooks go through LiteLLM's logging worker (flush drains it); a stream's
    through a task of its own, and ours hands the append to a thread: wait for those
    without holding the event loop."""
    await GLOBAL_LOGGING_WORKER.flush()
    await asyncio.to_thread(cb.wait_for, count)


def test_hooks_take_the_keyword_names_litellm_calls_them_with() -> None:
    for name in ("log_success_event", "async_log_success_event"):
        ours = inspect.signature(getattr(JournalCallback, name)).parameters
        theirs = inspect.signature(getattr(CustomLogger, name)).parameters
        assert list(ours) == list(theirs)


def test_two_interleaved_sessions_sync_async_streamed_with_tools(
    callback: Recording, log: Path, tmp_path: Path
) -> None:
    a: list[dict[str, Any]] = [{"role": "user", "content": "Plan Lyon"}]
    b: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    b.append({"role": "user", "content": "Weather?"})
    # 1. sync, session a
    r = complete(callback, a, "Day 1: Vieux Lyon", litellm_session_id="trip-a")
    a += [{"role": "assistant", "content": r.choices[0].message.content}]
    # 2. sync, session b: the model calls a tool
    r = litellm.completion(
        model=MODEL,
        messages=b,
        mock_response="",
        mock_tool_calls=[WEATHER_CALL],
        metadata={"session_id": "trip-b"},
    )
    callback.wait_for(2)
    b += [r.choices[0].message.model_dump(mode="json")]
    b += [{"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "clear"}'}]
    a += [{"role": "user", "content": "And day 2?"}]

    async def three_async() -> None:
        nonlocal a, b
        # 3. async, session b: the tool's result goes in with the history
        r = await acomplete(callback, b, "Clear skies.", litellm_session_id="trip-b")
        b += [{"role": "assistant", "content": r.choices[0].message.content}]
        # 4. async, session a
        r = await acomplete(callback, a, "Day 2: Fourviere", litellm_session_id="trip-a")
        a += [{"role": "assistant", "content": r.choices[0].message.content}]
        a += [{"role": "user", "content": "Day 3?"}]
        # 5. async and streamed, session a
        stream = await litellm.acompletion(
            model=MODEL,
            messages=a,
            mock_response="Day 3: Croix-Rousse",
            stream=True,
            litellm_session_id="trip-a",
        )
        async for _ in stream:
            pass
        await settle(callback, 5)
        a += [{"role": "assistant", "content": "Day 3: Croix-Rousse"}]

    asyncio.run(three_async())
    b += [{"role": "user", "content": "Thanks"}]
    # 6. sync, session b, and LiteLLM delivers its callback twice
    complete(callback, b, "You're welcome", litellm_session_id="trip-b")
    callback.capture(*callback.calls[-1])
    assert callback.outcomes[-1] == "duplicate"

    assert transcript(log, "trip-a") == [
        ("user", "Plan Lyon"),
        ("assistant", "Day 1: Vieux Lyon"),
        ("user", "And day 2?"),
        ("assistant", "Day 2: Fourviere"),
        ("user", "Day 3?"),
        ("assistant", "Day 3: Croix-Rousse"),
    ]
    assert transcript(log, "trip-b") == [
        ("system", "Be brief."),
        ("user", "Weather?"),
        ("assistant", ""),
        ("tool", '{"sky": "clear"}'),
        ("assistant", "Clear skies."),
        ("user", "Thanks"),
        ("assistant", "You're welcome"),
    ]
    by_content = {(m.session_id, m.seq): m for m in messages(log)}
    call = by_content["trip-b", 3]
    assert [(c.id, c.name, c.arguments) for c in call.tool_calls or ()] == [
        ("call_w1", "get_weather", '{"city": "Lyon"}')
    ]
    assert by_content["trip-b", 4].tool_call_id == "call_w1"
    assert isinstance(call.raw, str) and '"call_w1"' in call.raw
    answers = [m for m in messages(log) if m.metadata]
    assert len(answers) == 6  # one response per call, the redelivery added none
    assert all(m.tokens_used and m.tokens_used > 0 for m in answers)
    assert all(m.metadata and m.metadata["cost_usd"] > 0 for m in answers)
    assert all(m.metadata and m.metadata["model"] == MODEL for m in answers)
    streamed = by_content["trip-a", 6].metadata or {}
    assert streamed["stream"] is True and "time_to_first_token_seconds" in streamed
    db = tmp_path / "sessions.db"
    replay(log, db)
    assert verify(log, db).ok


def test_a_late_callback_of_an_earlier_call_writes_nothing(log: Path) -> None:
    cb = Recording(log)
    register(cb)
    try:
        h: list[dict[str, Any]] = [{"role": "user", "content": "one"}]
        complete(cb, h, "first", litellm_session_id="s")
        first = cb.calls[-1]
        h += [{"role": "assistant", "content": "first"}, {"role": "user", "content": "two"}]
        complete(cb, h, "second", litellm_session_id="s")
    finally:
        register(None)
        cb.close()
    # A fresh process reads the log; the first call's callback arrives only now.
    late = Recording(log)
    try:
        kwargs, response, start, end = first
        kwargs = {**kwargs, "litellm_call_id": "other"}
        slo = {**kwargs["standard_logging_object"], "litellm_call_id": "another-id"}
        kwargs["standard_logging_object"] = slo
        assert late.capture(kwargs, response, start, end) == "already logged"
    finally:
        late.close()
    assert [c for _, c in transcript(log, "s")] == ["one", "first", "two", "second"]


def test_an_edited_history_is_skipped_by_default(
    callback: Recording, log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    h: list[dict[str, Any]] = [{"role": "user", "content": "one"}]
    complete(callback, h, "first", litellm_session_id="s")
    before = log.read_bytes()
    with caplog.at_level(logging.WARNING, logger="journal.integrations"):
        edited = [{"role": "user", "content": "one, reworded"}]
        complete(callback, edited, "other", litellm_session_id="s")
    assert callback.outcomes[-1] == "skipped: history changed"
    assert log.read_bytes() == before
    assert any("no longer matches session s" in r.getMessage() for r in caplog.records)


def test_an_edited_history_can_start_a_new_session_that_later_calls_follow(log: Path) -> None:
    cb = Recording(log, history_change="new_session")
    register(cb)
    try:
        complete(cb, [{"role": "user", "content": "one"}], "first", litellm_session_id="s")
        window: list[dict[str, Any]] = [{"role": "user", "content": "two"}]  # "one" trimmed
        complete(cb, window, "second", litellm_session_id="s")
        window += [{"role": "assistant", "content": "second"}, {"role": "user", "content": "3"}]
        complete(cb, window, "third", litellm_session_id="s")
    finally:
        register(None)
        cb.close()
    assert [c for _, c in transcript(log, "s")] == ["one", "first"]
    forks = {
        e.session_id
        for e in map(decode_line, log.read_bytes().splitlines())
        if isinstance(e, SessionMetadataSet) and e.value == "s"
    }
    assert len(forks) == 1
    (fork,) = forks
    assert fork.startswith("s:fork-")
    assert [c for _, c in transcript(log, fork)] == ["two", "second", "3", "third"]


def test_calls_without_a_session_are_skipped_unless_asked(log: Path) -> None:
    for option, written in (("skip", 0), ("per_call", 2)):
        cb = Recording(log, missing_session=option)
        register(cb)
        try:
            complete(cb, [{"role": "user", "content": option}], "answer")
        finally:
            register(None)
            cb.close()
        assert len([m for m in messages(log) if m.content in (option, "answer")]) == written


def test_a_session_id_the_log_refuses_is_made_valid(callback: Recording, log: Path) -> None:
    complete(callback, [{"role": "user", "content": "hi"}], "yo", litellm_session_id="a b/c")
    (sid,) = {m.session_id for m in messages(log)}
    assert sid.startswith("a-b-c_")


def test_a_failure_is_logged_and_the_call_still_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where a directory should be")
    cb = Recording(blocked / "sessions.jsonl")
    register(cb)
    try:
        with caplog.at_level(logging.ERROR, logger="journal.integrations"):
            r = complete(cb, [{"role": "user", "content": "hi"}], "fine", litellm_session_id="s")
    finally:
        register(None)
        cb.close()
    assert r.choices[0].message.content == "fine"
    assert cb.outcomes[-1].startswith("failed: ")
    assert any("could not record" in rec.getMessage() for rec in caplog.records)


def test_the_journal_is_reopened_after_a_durability_error(
    callback: Recording, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    complete(callback, [{"role": "user", "content": "one"}], "first", litellm_session_id="s")
    broken = callback.recorder._journal
    real = Journal.append_message

    def fail_once(self: Journal, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(Journal, "append_message", real)
        raise DurabilityError("fsync failed (simulated)", path=str(log))

    monkeypatch.setattr(Journal, "append_message", fail_once)
    h = [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first"},
        {"role": "user", "content": "two"},
    ]
    complete(callback, h, "second", litellm_session_id="s")
    assert callback.outcomes[-1] == "failed: DurabilityError"
    assert callback.recorder._journal is None and broken is not None and broken.closed
    # LiteLLM does not retry; the next call of the session brings the log up to date.
    h += [{"role": "assistant", "content": "second"}, {"role": "user", "content": "three"}]
    complete(callback, h, "third", litellm_session_id="s")
    assert [c for _, c in transcript(log, "s")] == [
        "one", "first", "two", "second", "three", "third",
    ]  # fmt: skip


def test_the_proxy_handler_is_a_callback_for_the_configured_log() -> None:
    from journal.integrations import litellm as integration

    assert isinstance(integration.handler, CustomLogger)
    assert integration.handler.recorder.log_path == os.environ.get(
        "SESSION_JOURNAL_LOG", "sessions.jsonl"
    )
    assert integration.handler.recorder._journal is None  # nothing opened on import


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"missing_session": "ignore"}, "missing_session must be 'skip' or 'per_call'"),
        ({"history_change": "merge"}, "history_change must be 'skip' or 'new_session'"),
    ],
)
def test_unknown_policies_are_refused(log: Path, option: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidValue, match=message):
        JournalCallback(log, **option)
