"""The workload generator: deterministic (same seed, same bytes) and valid."""

from __future__ import annotations

import random
import sys
from collections import Counter
from pathlib import Path

from journal import LogReader
from journal.events import TAGS, MessageAppended

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import workload

EVENTS = 1_500


def _write(tmp_path: Path, name: str, seed: int, events: int = EVENTS) -> Path:
    path = tmp_path / name
    workload.write_log(str(path), seed, events)
    return path


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.jsonl", 7)
    b = _write(tmp_path, "b.jsonl", 7)
    c = _write(tmp_path, "c.jsonl", 8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_operations_are_deterministic() -> None:
    first = list(workload.operations(3, 800))
    second = list(workload.operations(3, 800))
    assert first == second
    assert first != list(workload.operations(4, 800))


def test_log_reads_back_clean_with_every_event_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "w.jsonl", 11)
    ops = list(workload.operations(11, EVENTS))
    reader = LogReader(str(path))
    events = [event for event, _ in reader]
    assert reader.torn is None
    assert reader.end == path.stat().st_size
    assert [e.pos for e in events] == list(range(1, len(events) + 1))
    assert len(events) == sum(op.events for op in ops)
    assert abs(len(events) - EVENTS) < EVENTS * 0.1
    tags = Counter(type(e).__struct_config__.tag for e in events)
    # Forgetting reads the whole log each time: it has tests and measurements of its own.
    assert set(tags) == set(TAGS) - {"session_forgotten", "redacted"}, set(TAGS) - set(tags)
    assert len({e.id for e in events}) == len(events)
    messages = [e for e in events if isinstance(e, MessageAppended)]
    assert any(not m.content.isascii() for m in messages)
    assert {m.role for m in messages} == {"user", "assistant", "system"}
    lengths = sorted(len(m.content) for m in messages)
    assert lengths[0] < 100 < 1_000 < lengths[-1]
    assert any(m.tokens_used for m in messages) and any(m.duration_seconds for m in messages)
    models = {e.model_id for e in events if type(e).__struct_config__.tag == "model_registered"}
    assert len(models) >= 3


def test_session_lengths_span_the_range() -> None:
    lengths = workload.session_lengths(random.Random(1), 970_000, None, None)
    assert min(lengths) == 1
    assert max(lengths) == workload.MAX_SESSION_LEN
    assert abs(sum(lengths) - 970_000) < 970_000 * 0.01
    fixed = workload.session_lengths(random.Random(1), 1_000, None, 100)
    assert fixed == [100] * 10


def test_fixed_length_sessions(tmp_path: Path) -> None:
    path = tmp_path / "fixed.jsonl"
    workload.write_log(str(path), 5, 600, fixed_len=100)
    per_session = Counter(
        e.session_id for e, _ in LogReader(str(path)) if isinstance(e, MessageAppended)
    )
    assert sorted(per_session.values()) == [100] * 5


def test_projection_replays_and_verifies_clean(tmp_path: Path) -> None:
    import projector

    path = _write(tmp_path, "p.jsonl", 13)
    db = tmp_path / "p.db"
    projector.replay(str(path), str(db))
    report = projector.verify(str(path), str(db))
    assert report.ok, report.problems
    rebuilt = tmp_path / "r.db"
    projector.rebuild(str(path), str(rebuilt))
    assert projector.verify(str(path), str(rebuilt)).ok
