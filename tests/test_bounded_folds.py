"""Folds of a whole history in bounded memory: what verify and rebuild keep per session
and per event goes to disk past a bound, and nothing they find or build changes."""

from __future__ import annotations

import importlib
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest
from projection_helpers import (
    execute,
    forget_in_log,
    open_journal,
    random_ops,
    rows,
    run_workload,
)

from journal.events import SessionCreated, decode_line, encode_line
from projector import canonical_hash, catch_up, connect, rebuild, replay, verify
from projector.checks.idcheck import IdCheck
from projector.checks.tallies import SessionTally, SpillFile, SpillMap, merged, tally_map
from projector.db import create_schema
from projector.rules.session_rows import ApplyError
from projector.sync.bulk_load import bulk_load
from projector.sync.reading import Until

tallies = importlib.import_module("projector.checks.tallies")
idcheck = importlib.import_module("projector.checks.idcheck")
verify_module = importlib.import_module("projector.checks.verify")


@pytest.fixture
def tiny_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fold keeps two entries in memory and spills ids every seven."""
    monkeypatch.setattr(tallies, "CACHE_ENTRIES", 2)
    monkeypatch.setattr(idcheck, "SPILL_IDS", 7)


def test_a_spill_map_reads_back_what_it_spilled_in_key_order() -> None:
    file = SpillFile()
    try:
        spilled = tally_map(file, "t", cap=2)
        model: dict[str, tuple[int, int, bytes]] = {}
        for i in range(20):
            sid = f"s{(i * 7) % 13:02d}"
            t = spilled.get(sid) or SessionTally()
            t.add(i, f"message {i}".encode())
            spilled.put(sid, t)
            model[sid] = t.row()
        assert spilled.spilled and len(spilled.memory) <= 2
        for sid in ("s03", "s12", "nobody"):
            spilled.pop(sid)
            model.pop(sid, None)
        assert [(sid, t.row()) for sid, t in spilled.items()] == sorted(model.items())
        first: SpillMap[str, int] = SpillMap(
            file, "f", ("pos",), lambda p: (p,), lambda r: r[0], cap=1, first_wins=True
        )
        for pos, sid in enumerate(["a", "b", "a", "c", "b", "a"], 1):
            first.put(sid, pos)
        assert list(first.items()) == [("a", 1), ("b", 2), ("c", 4)]
        assert first.where(lambda pos: pos > 1) == ["b", "c"]
    finally:
        file.close()


def test_merged_pairs_two_sorted_streams() -> None:
    left = [("a", 1), ("c", 3), ("d", 4)]
    right = [("b", "B"), ("c", "C"), ("e", "E")]
    assert list(merged(left, right)) == [
        ("a", 1, None), ("b", None, "B"), ("c", 3, "C"), ("d", 4, None), ("e", None, "E")
    ]  # fmt: skip


def test_ids_used_twice_are_found_across_spills() -> None:
    ids = IdCheck(spill_ids=5)
    ids.add_all(f"id-{i}" for i in range(100))
    ids.add_all(["id-3", "", "id-77", "id-3"])  # an empty id (a redaction) counts for none
    assert ids.any_suspects
    assert [i for i in ("id-3", "id-77", "id-4") if ids.suspected(i)] == ["id-3", "id-77"]
    clean = IdCheck(spill_ids=5)
    clean.add_all(f"id-{i}" for i in range(100))
    assert not clean.any_suspects and not clean.suspected("id-3")


def damaged(tmp_path: Path) -> tuple[Path, Path]:
    """A projection of a random history with damage of every kind verify reports."""
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    run_workload(log, random_ops(11, 500))
    replay(log, db)
    # In the order they were created: their ids are random, and which sessions the damage
    # below hits decides which kinds of problem it makes.
    sids = [r[0] for r in rows(db, "SELECT session_id FROM sessions ORDER BY created_at")]
    assert len(sids) > 10
    with_messages = rows(
        db, "SELECT session_id FROM sessions WHERE message_count >= 3 ORDER BY created_at"
    )
    a, b = with_messages[0][0], with_messages[-1][0]
    forgotten = sids[len(sids) // 2]
    _at, of = forget_in_log(log, forgotten, redact=lambda pos: pos % 2 == 0)
    replay(log, db)
    execute(db, "UPDATE sessions SET total_tokens = total_tokens + 1 WHERE session_id = ?", (a,))
    execute(db, "UPDATE messages SET content = 'forged' WHERE message_id = "
                "(SELECT max(message_id) FROM messages WHERE session_id = ?)", (a,))  # fmt: skip
    execute(db, "DROP TRIGGER update_message_count_delete")
    execute(db, "DELETE FROM messages WHERE session_id = ? AND sequence_number = 2", (b,))
    execute(db, "UPDATE session_timeouts SET idle_timeout_seconds = 1 WHERE session_id = ?", (b,))
    execute(db, "UPDATE sessions SET last_event_pos = ? WHERE session_id = ?", (of[-1], sids[0]))
    lines = log.read_bytes().splitlines()
    earlier, last = decode_line(lines[0]), decode_line(lines[-1])
    again = msgspec.structs.replace(last, pos=last.pos + 1, id=earlier.id, grp=msgspec.UNSET)
    with log.open("ab") as f:
        f.write(encode_line(again))  # an id used twice
        f.write(b'{"pos":')  # a torn tail
    return log, db


def test_verify_finds_the_same_with_folds_larger_than_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log, db = damaged(tmp_path)
    plain = [str(p) for p in verify(log, db).problems]
    kinds = {p.split("]")[0][1:] for p in plain}
    assert kinds == {
        "counter", "sequence", "log_mismatch", "timeouts", "log", "forgetting", "forgotten", "fts"
    }  # fmt: skip
    monkeypatch.setattr(tallies, "CACHE_ENTRIES", 2)
    monkeypatch.setattr(idcheck, "SPILL_IDS", 7)
    assert [str(p) for p in verify(log, db).problems] == plain


@pytest.mark.usefixtures("tiny_memory")
def test_a_rebuild_with_folds_larger_than_memory_verifies(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(5, 600))
    report = rebuild(log, tmp_path / "r.db")
    assert report.sessions > 10
    assert verify(log, tmp_path / "r.db").ok


# -- the bulk fold of rebuild ----------------------------------------------------------
bulk_module = importlib.import_module("projector.sync.bulk")
bulk_load_module = importlib.import_module("projector.sync.bulk_load")


def incremental(log: Path, db: Path, until: int | None = None) -> None:
    conn = connect(db)
    try:
        create_schema(conn)
        catch_up(conn, log, until=until, bulk=False)
    finally:
        conn.close()


def bulk(log: Path, db: Path, until: int | None = None) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        create_schema(conn)
        bulk_load(conn, log, until=None if until is None else Until(pos=until))
    finally:
        conn.close()


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_a_bulk_fold_that_keeps_few_sessions_builds_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(seed, 500))
    held: list[int] = []

    class Watched(bulk_module.Loader):  # type: ignore[name-defined,misc]
        def apply(self, e: Any) -> None:
            super().apply(e)
            held.append(len(self.sessions))

    monkeypatch.setattr(bulk_module, "SESSIONS_IN_MEMORY", 3)
    monkeypatch.setattr(bulk_load_module, "Loader", Watched)
    last = len(log.read_bytes().splitlines())
    for n, until in enumerate((None, last // 2, last // 3)):
        a, b = tmp_path / f"bulk{n}.db", tmp_path / f"incr{n}.db"
        bulk(log, a, until)
        incremental(log, b, until)
        assert canonical_hash(a) == canonical_hash(b)
    assert max(held) <= 3  # released: written and dropped, read back when needed
    sessions = rows(tmp_path / "bulk0.db", "SELECT count(*) FROM sessions")[0][0]
    assert sessions > 3


def test_a_forgetting_of_a_session_the_bulk_fold_wrote_early_goes_event_by_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "log.jsonl"
    run_workload(log, random_ops(13, 400))
    first = decode_line(log.read_bytes().splitlines()[1])
    assert isinstance(first, SessionCreated)
    # Its records are not redacted yet: the fold meets them before the forgetting.
    forget_in_log(log, first.session_id, redact=lambda pos: False)
    incremental(log, tmp_path / "incr.db")
    monkeypatch.setattr(bulk_module, "SESSIONS_IN_MEMORY", 2)
    with pytest.raises(ApplyError):
        bulk(log, tmp_path / "bulk.db")
    rebuild(log, tmp_path / "r.db")  # the incremental path, after the bulk one gave up
    assert canonical_hash(tmp_path / "r.db") == canonical_hash(tmp_path / "incr.db")


@pytest.mark.parametrize(("back", "second_reading"), [(1, False), (8, False), (20, True)])
def test_a_withdrawal_of_the_last_few_messages_needs_no_second_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, back: int, second_reading: bool
) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with open_journal(log) as j:
        sid = j.create_session(model_id="m", session_id="s")
        for i in range(30):
            j.append_message(sid, "user", f"message {i}", tokens_used=i)
        j.truncate(sid, 30 - back)
        j.append_message(sid, "user", "after the cut", tokens_used=100)
    replay(log, db)
    reads: list[int] = []
    real = verify_module.events_upto

    def counted(*args: Any) -> Any:
        def reading() -> Any:
            reads.append(1)  # only when the second reading is made
            yield from real(*args)

        return reading()

    monkeypatch.setattr(verify_module, "events_upto", counted)
    assert verify(log, db).ok
    assert bool(reads) is second_reading
    tokens = rows(db, "SELECT total_tokens FROM sessions")[0][0]
    assert tokens == sum(range(30 - back)) + 100
    execute(db, "UPDATE messages SET tokens_used = 0 WHERE sequence_number = 2")
    execute(db, "UPDATE sessions SET total_tokens = total_tokens - 1")
    assert [p.kind for p in verify(log, db).problems] == ["log_mismatch"]
