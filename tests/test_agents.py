"""The Agents SDK session on the log (projector.integrations.agents), offline: the SDK's
own SQLiteSession is the reference for every answer; the SDK's Runner drives it with a
scripted model; the log keeps what was withdrawn, and other writers' changes are seen."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import projector
import projector.queries

os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "true")
pytest.importorskip("agents", reason="the agents extra (openai-agents) is not installed")

from agents import Agent, Runner, SQLiteSession, function_tool
from agents.memory import OpenAIResponsesCompactionSession, SessionSettings
from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call
from agents.usage import Usage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import InvalidState, InvalidValue, Journal, JournalClosed, read_log
from journal.events import (
    MessageAppended,
    MessagesTruncated,
    SessionMetadataSet,
)
from journal.validation import SESSION_ID
from projector.integrations.agents import ORIGINAL_ID, JournalSession

Item = dict[str, Any]


# -- items as the SDK stores them ------------------------------------------------------------
TEXTS = ["Weather in Lyon?", "Grüß Gott, Zoë", "東京は晴れ", "rain ☔ then sun 🌤", "", "a\nb"]


def user(text: str) -> Item:
    return {"role": "user", "content": text}


def answer(text: str, n: int = 1) -> Item:
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }


def tool_round(call_id: str, city: str) -> list[Item]:
    arguments = json.dumps({"city": city}, ensure_ascii=False)
    return [
        {
            "type": "function_call",
            "id": f"fc_{call_id}",
            "call_id": call_id,
            "name": "get_weather",
            "arguments": arguments,
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": call_id, "output": f"Sunny in {city}"},
    ]


def reasoning(text: str) -> Item:
    return {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": text}]}


texts = st.sampled_from(TEXTS) | st.text(max_size=8)
pieces = st.one_of(
    texts.map(lambda t: [user(t)]),
    texts.map(lambda t: [{"role": "user", "content": [{"type": "input_text", "text": t}]}]),
    st.builds(lambda t, n: [answer(t, n)], texts, st.integers(1, 3)),
    st.builds(tool_round, st.sampled_from(["call_1", "call_2"]), texts),
    texts.map(lambda t: [reasoning(t)]),
    texts.map(lambda t: [{"role": "developer", "content": t}]),
)
batches = st.lists(pieces, min_size=1, max_size=3).map(lambda ps: [i for p in ps for i in p])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), batches),
        st.tuples(st.just("get"), st.sampled_from([None, 0, 1, 2, 5, -1])),
        st.tuples(st.just("pop"), st.none()),
        st.tuples(st.just("clear"), st.none()),
    ),
    max_size=12,
)


async def apply(session: Any, op: str, arg: Any) -> Any:
    if op == "add":
        return await session.add_items(arg)
    if op == "get":
        return await session.get_items(arg)
    if op == "pop":
        return await session.pop_item()
    return await session.clear_session()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=operations, setting=st.sampled_from([None, 1, 3]))
def test_answers_as_the_sdks_sqlite_session_does(ops: list[tuple[str, Any]], setting: Any) -> None:
    async def main(log: Path) -> None:
        options = {"session_settings": SessionSettings(limit=setting)}
        reference = SQLiteSession("conv 1", **options)
        ours = JournalSession("conv 1", log=log, durability="none", **options)
        try:
            for op, arg in ops:
                expected = await apply(reference, op, arg)
                assert await apply(ours, op, arg) == expected, (op, arg)
                assert await ours.get_items() == await reference.get_items()
                assert await ours.get_items(-1) == await reference.get_items(-1)
            async with JournalSession("conv 1", log=log) as again:  # read back from the log
                assert await again.get_items(-1) == await reference.get_items(-1)
        finally:
            reference.close()
            await ours.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp) / "sessions.jsonl"))


# -- the SDK's runner, with a scripted model -------------------------------------------------
@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


def usage(total: int) -> Usage:
    return Usage(requests=1, input_tokens=total - 5, output_tokens=5, total_tokens=total)


def script() -> ScriptedModel:
    """Three turns (two with a tool call), then a fourth."""
    return ScriptedModel(
        [
            ModelStep(
                output=[function_call("get_weather", {"city": "Lyon"}, call_id="call_1")],
                usage=usage(30),
            ),
            ModelStep(output=[assistant_message("Sunny in Lyon ☀️")], usage=usage(40)),
            ModelStep(output=[assistant_message("De rien !")], usage=usage(50)),
            ModelStep(
                output=[function_call("get_weather", {"city": "Oslo"}, call_id="call_2")],
                usage=usage(60),
            ),
            ModelStep(output=[assistant_message("Sunny in Oslo")], usage=usage(70)),
            ModelStep(output=[assistant_message("Noted: you like rain.")], usage=usage(80)),
        ]
    )


async def conversation(session: Any) -> tuple[list[Item], list[Item], Item | None]:
    """Three turns, pop_item, a fourth turn, then a compaction by hand (clear + add)."""
    agent = Agent(name="planner", model=script(), tools=[get_weather])
    for text in ("Weather in Lyon?", "Merci !", "And Oslo?"):
        await Runner.run(agent, text, session=session)
    popped = await session.pop_item()
    await Runner.run(agent, "I like rain", session=session)
    before = await session.get_items()
    await session.clear_session()
    await session.add_items(before)
    return before, await session.get_items(), popped


def events(log: Path) -> list[Any]:
    return [e for e, _ in read_log(str(log))]


def test_runs_keep_the_same_history_as_sqlite_session(tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"

    async def main() -> None:
        reference = SQLiteSession("trip")
        try:
            expected = await conversation(reference)
        finally:
            reference.close()
        async with JournalSession("trip", log=log) as ours:
            assert await conversation(ours) == expected

    asyncio.run(main())
    logged = events(log)
    messages = [e for e in logged if isinstance(e, MessageAppended)]
    cuts = [e for e in logged if isinstance(e, MessagesTruncated)]
    assert [c.reason for c in cuts] == ["pop_item", "clear_session"]
    # 3 turns of 4, 2 and 4 items, the last one popped; a fourth of 2; the 11 added again
    assert cuts[0].keep_through_seq == 9 and cuts[1].keep_through_seq == 0
    assert [m.seq for m in messages] == [*range(1, 11), 10, 11, *range(1, 12)]
    # the log still holds the popped item and every message the clear withdrew
    popped = messages[9]
    assert (popped.role, popped.content) == ("assistant", "Sunny in Oslo")
    assert json.loads(popped.raw)["content"][0]["text"] == "Sunny in Oslo"
    assert [json.loads(m.raw) for m in messages[:12]] == [
        *[json.loads(m.raw) for m in messages[12:][:9]],
        json.loads(popped.raw),
        *[json.loads(m.raw) for m in messages[12:][9:]],
    ]
    # readable renderings of the tool call and its result
    call, result = messages[1], messages[2]
    assert (call.role, call.content, call.tool_calls[0].id, call.tool_calls[0].name) == (
        "assistant",
        "",
        "call_1",
        "get_weather",
    )
    assert (result.role, result.tool_call_id, result.content) == ("tool", "call_1", "Sunny in Lyon")
    # the run's usage: each group records the tokens spent since the run's previous one
    assert sum(m.tokens_used or 0 for m in messages) == 30 + 40 + 50 + 60 + 70 + 80
    # the projection holds the session as the SDK sees it, verified against the log
    db = str(tmp_path / "sessions.db")
    projector.replay(str(log), db)
    report = projector.verify(str(log), db)
    assert report.ok, report.problems
    assert messages_in(db) == 11
    # and as of before each withdrawal, with what it withdrew
    projector.rebuild(str(log), db, until=cuts[1].pos - 1)
    assert messages_in(db) == 11  # 9 kept after the pop, 2 of turn four
    projector.rebuild(str(log), db, until=cuts[0].pos - 1)
    assert messages_in(db) == 10  # the popped one included


def messages_in(db: str) -> int:
    conn = projector.connect(db)
    try:
        return len(projector.queries.get_transcript(conn, "trip").messages)
    finally:
        conn.close()


def test_run_sync_and_run_streamed_with_a_tool_call(tmp_path: Path) -> None:
    def steps() -> ScriptedModel:
        return ScriptedModel(
            [
                ModelStep(output=[function_call("get_weather", {"city": "Nice"}, call_id="c")]),
                ModelStep(output=[assistant_message("Sunny in Nice")]),
            ]
        )

    async def streamed(session: Any) -> list[Item]:
        agent = Agent(name="a", model=steps(), tools=[get_weather])
        result = Runner.run_streamed(agent, "Weather in Nice?", session=session)
        async for _ in result.stream_events():
            pass
        items: list[Item] = await session.get_items()
        return items

    # run_sync runs on the thread's default loop and leaves it open for the next call;
    # this test closes it.
    reference = SQLiteSession("s")
    ours = JournalSession("s", log=tmp_path / "s.jsonl")
    loop = None
    try:
        for session in (reference, ours):
            for question in ("Weather?", "And now?"):  # a second run on the same loop
                agent = Agent(name="a", model=steps(), tools=[get_weather])
                result = Runner.run_sync(agent, question, session=session)
                assert result.final_output == "Sunny in Nice"
        loop = asyncio.get_event_loop_policy().get_event_loop()
        items = loop.run_until_complete(ours.get_items())
        assert items == loop.run_until_complete(reference.get_items())
        assert len(items) == 8
    finally:
        reference.close()
        if loop is not None:
            loop.run_until_complete(ours.close())
            loop.close()
            asyncio.set_event_loop(None)

    async def both() -> None:
        reference = SQLiteSession("t")
        try:
            expected = await streamed(reference)
        finally:
            reference.close()
        async with JournalSession("t", log=tmp_path / "s.jsonl") as session:
            assert await streamed(session) == expected

    asyncio.run(both())


# -- sessions, writers and ids ---------------------------------------------------------------
def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


def test_two_sessions_of_one_log_are_isolated(tmp_path: Path) -> None:
    async def main() -> None:
        async with (
            JournalSession("a", log=tmp_path / "s.jsonl") as a,
            JournalSession("b", log=tmp_path / "s.jsonl") as b,
        ):
            await a.add_items([user("to a")])
            await b.add_items([user("to b"), answer("b's answer")])
            assert await b.pop_item() == answer("b's answer")
            await a.clear_session()
            assert await a.get_items() == []
            assert await b.get_items() == [user("to b")]

    run(main)


def test_concurrent_groups_all_land_each_in_one_piece(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    def group(tag: str, i: int) -> list[Item]:
        return [user(f"{tag}{i}"), *tool_round(f"{tag}{i}", tag), answer(f"{tag}{i} done")]

    async def main() -> None:
        async with (
            JournalSession("shared", log=log) as one,
            JournalSession("shared", log=log) as other,
        ):

            async def writer(session: JournalSession, tag: str) -> None:
                for i in range(5):
                    await session.add_items(group(tag, i))

            # two tasks on one object, and a second writer of the same session
            await asyncio.gather(writer(one, "a"), writer(one, "b"), writer(other, "c"))
            items = await one.get_items()
            assert items == await other.get_items()
            assert len(items) == 15 * 4
            for k in range(0, 60, 4):  # each group contiguous, in its writer's order
                tag = items[k]["content"][:-1]
                n = int(items[k]["content"][-1])
                assert items[k : k + 4] == group(tag, n)
            for tag in "abc":
                mine = [int(i["content"][-1]) for i in items[::4] if i["content"][0] == tag]
                assert mine == list(range(5))

    run(main)
    groups = [e.grp for e in events(log) if isinstance(e, MessageAppended)]
    assert groups.count((1, 4)) == 14 and groups.count((3, 6)) == 1  # the first creates


def test_another_writers_appends_and_withdrawals_are_seen(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with JournalSession("s", log=log) as one:
            await one.add_items([user("1"), answer("2"), user("3")])
            async with JournalSession("s", log=log) as other:
                assert await other.pop_item() == user("3")
                await other.add_items([user("3 again")])
            assert await one.get_items() == [user("1"), answer("2"), user("3 again")]
            assert await one.pop_item() == user("3 again")
            with Journal.open(log) as j:  # a plain writer, through the journal's API
                j.truncate("s", 1)
                j.append_message("s", "assistant", "from elsewhere")
            assert await one.get_items() == [
                user("1"),
                {"role": "assistant", "content": "from elsewhere"},
            ]
            await one.add_items([user("last")])
        async with JournalSession("s", log=log) as reopened:
            assert await reopened.get_items(2) == [
                {"role": "assistant", "content": "from elsewhere"},
                user("last"),
            ]

    run(main)


@pytest.mark.parametrize("sdk_id", ["user 42/chat: Zoë", "a/b", " ", "x" * 300])
def test_an_id_the_log_refuses_is_mapped_and_recorded(tmp_path: Path, sdk_id: str) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with JournalSession(sdk_id, log=log) as s:
            assert s.session_id == sdk_id
            assert SESSION_ID.fullmatch(s.journal_session_id) and s.journal_session_id != sdk_id
            await s.add_items([user("hello"), answer("hi")])
        async with JournalSession(sdk_id, log=log) as again:
            assert await again.get_items() == [user("hello"), answer("hi")]
        async with JournalSession(sdk_id + "!", log=log) as neighbour:  # another id
            assert await neighbour.get_items() == []

    run(main)
    (meta,) = [e for e in events(log) if isinstance(e, SessionMetadataSet)]
    assert (meta.key, meta.value) == (ORIGINAL_ID, sdk_id)


def test_an_id_the_log_accepts_is_kept(tmp_path: Path) -> None:
    async def main() -> None:
        async with JournalSession("user-42", log=tmp_path / "s.jsonl") as s:
            assert s.journal_session_id == "user-42"
            await s.add_items([user("hi")])

    run(main)
    assert not [e for e in events(tmp_path / "s.jsonl") if isinstance(e, SessionMetadataSet)]


def test_a_cancelled_write_still_settles_in_memory_and_log_alike(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with JournalSession("s", log=log, session_settings={"limit": 2}) as s:
            await s.add_items([user("1")])
            for n in range(5):
                task = asyncio.ensure_future(s.add_items([answer(f"a{n}"), user(f"u{n}")]))
                for _ in range(n):  # cancelled at different moments
                    await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                async with JournalSession("s", log=log) as fresh:
                    assert await s.get_items(-1) == await fresh.get_items()
            assert len(await s.get_items()) == 2  # the settings' limit

    run(main)


# -- the SDK's compaction hooks: one atomic group each ---------------------------------------
def test_a_compaction_snapshot_replaces_the_newest_items_in_one_group(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    summary = {"type": "compaction", "id": "cmp_1", "encrypted_content": "…"}

    async def main() -> None:
        async with JournalSession("s", log=log) as s:
            await s.add_items([user("1"), answer("2"), user("3"), answer("4")])
            snapshot = await s._get_compaction_snapshot(3)
            assert snapshot is not None and not snapshot.complete
            assert snapshot.items == [answer("2"), user("3"), answer("4")]
            assert await snapshot.replace_suffix(1, [summary])
            assert await s.get_items() == [user("1"), answer("2"), summary]
            # a snapshot whose items are no longer the newest replaces nothing
            stale = await s._get_compaction_snapshot(5)
            assert stale is not None and stale.complete
            await s.add_items([user("5")])
            assert not await stale.replace_suffix(0, [summary])
            assert await s.get_items() == [user("1"), answer("2"), summary, user("5")]

    run(main)
    logged = events(log)
    cut = next(e for e in logged if isinstance(e, MessagesTruncated))
    added = logged[logged.index(cut) + 1]
    assert (cut.reason, cut.keep_through_seq, cut.grp, added.grp) == (
        "compaction",
        2,
        (1, 2),
        (2, 2),
    )


def test_sdk_compaction_replaces_the_history_in_one_group(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"
    # an assistant message without an id: the SDK drops ids from compacted answers
    compacted = [
        user("summary: Lyon is sunny"),
        {k: v for k, v in answer("ok").items() if k != "id"},
    ]

    async def compact(**request: Any) -> Any:
        assert [i["content"] for i in request["input"][:1]] == ["Weather in Lyon?"]
        return SimpleNamespace(output=compacted, usage=None)

    client = SimpleNamespace(responses=SimpleNamespace(compact=compact))

    async def main() -> None:
        async with JournalSession("s", log=log) as s:
            await s.add_items([user("Weather in Lyon?"), *tool_round("c1", "Lyon")])
            session = OpenAIResponsesCompactionSession(
                "s",
                s,
                client=client,
                compaction_mode="input",  # type: ignore[arg-type]
            )
            await session.run_compaction({"force": True, "compaction_mode": "input"})
            assert await s.get_items() == compacted

    run(main)
    logged = events(log)
    cut = next(e for e in logged if isinstance(e, MessagesTruncated))
    assert (cut.reason, cut.keep_through_seq, cut.grp) == ("compaction", 0, (1, 3))


# -- errors, limits and the projection -------------------------------------------------------
def test_a_closed_session_raises_journal_closed(tmp_path: Path) -> None:
    async def main() -> None:
        s = JournalSession("s", log=tmp_path / "s.jsonl")
        await s.add_items([user("hi")])
        await s.close()
        await s.close()  # twice is fine
        calls: list[Callable[[], Awaitable[Any]]] = [
            s.get_items,
            lambda: s.add_items([user("late")]),
            lambda: s.add_items([]),
            s.pop_item,
            s.clear_session,
        ]
        for call in calls:
            with pytest.raises(JournalClosed):
                await call()
        never_opened = JournalSession("t", log=tmp_path / "s.jsonl")
        await never_opened.close()
        with pytest.raises(JournalClosed):
            await never_opened.get_items()

    run(main)


def test_a_session_closed_in_the_log_is_read_but_not_written(tmp_path: Path) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with JournalSession("s", log=log) as s:
            await s.add_items([user("hi"), answer("hello")])
            with Journal.open(log) as j:
                j.archive("s")
            assert await s.get_items() == [user("hi"), answer("hello")]
            for call in (lambda: s.add_items([user("more")]), s.pop_item, s.clear_session):
                with pytest.raises(InvalidState):
                    await call()
            assert await s.get_items() == [user("hi"), answer("hello")]

    run(main)


@pytest.mark.parametrize(
    "bad",
    [
        "not a mapping",
        {"role": "user", "content": float("nan")},
        {"role": "user", "content": object()},
        {"role": "user", "content": "x" * (5 * 1024 * 1024)},
        {"role": "user", "content": "a lone \ud800 surrogate"},
    ],
)
def test_an_item_the_log_cannot_keep_is_refused_with_nothing_written(
    tmp_path: Path, bad: Any
) -> None:
    log = tmp_path / "s.jsonl"

    async def main() -> None:
        async with JournalSession("s", log=log) as s:
            await s.add_items([user("first")])
            size = log.stat().st_size
            with pytest.raises(InvalidValue):
                await s.add_items([user("fine"), bad])
            assert log.stat().st_size == size
            assert await s.get_items() == [user("first")]

    run(main)


def test_items_sqlite_keeps_are_kept_exactly(tmp_path: Path) -> None:
    odd = [
        user("nul \x00 inside"),
        {"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]},
        {"type": "function_call", "call_id": "", "name": "", "arguments": "{}"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "n": 1.5, "k": None},
        {"type": "item_reference", "id": "ref", 1: "int key"},
    ]

    async def main() -> None:
        reference = SQLiteSession("s")
        try:
            await reference.add_items(odd)  # type: ignore[arg-type]
            async with JournalSession("s", log=tmp_path / "s.jsonl") as s:
                await s.add_items(odd)  # type: ignore[arg-type]
                assert await s.get_items() == await reference.get_items()
        finally:
            reference.close()

    run(main)


def test_a_projection_given_sees_each_write(tmp_path: Path) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"

    async def main() -> None:
        async with JournalSession("trip 1", log=log, db=db) as s:
            await s.add_items([user("Weather in Lyon?"), *tool_round("c1", "Lyon")])
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute(
                    "SELECT role, content, tool_call_id FROM messages "
                    "WHERE session_id = ? ORDER BY sequence_number",
                    (s.journal_session_id,),
                ).fetchall()
                (meta,) = conn.execute(
                    "SELECT value FROM session_metadata WHERE key = ?", (ORIGINAL_ID,)
                ).fetchone()
            finally:
                conn.close()
            assert rows == [
                ("user", "Weather in Lyon?", None),
                ("assistant", "", None),
                ("tool", "Sunny in Lyon", "c1"),
            ]
            assert meta == "trip 1"

    run(main)


def test_a_failing_projection_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "not-a-db").write_text("a file of another program", encoding="utf-8")

    async def main() -> None:
        async with JournalSession("s", log=tmp_path / "s.jsonl", db=tmp_path / "not-a-db") as s:
            await s.add_items([user("hi")])
            assert await s.get_items() == [user("hi")]

    with caplog.at_level(logging.WARNING, logger="projector.integrations"):
        run(main)
    assert "was not brought up to date" in caplog.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidValue):
        JournalSession("s", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        JournalSession("s", model_id="no spaces allowed")
    with pytest.raises(InvalidValue):
        JournalSession(42)  # type: ignore[arg-type]
