"""``forget``, ``retain`` and ``import-log`` as an operator runs them: zero residue in every
file of the directory, nothing else changed, and an archive that comes back whole."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from journal import Journal
from journal.events import decode_line
from projector.cli import erase, main

SID = "zq-id-7"
SECRETS = [b"zq-id", b"zq-title", b"zq-content", b"zq-mmeta", b"zq-skey", b"zq-sval", b"zq-note"]


def run(directory: Path, *args: str, input: str | None = None) -> Result:
    log, db = directory / "log.jsonl", directory / "s.db"
    return cli_runner().invoke(main, ["--log", str(log), "--db", str(db), *args], input=input)


def residue(directory: Path) -> list[tuple[str, bytes]]:
    return [
        (p.name, s)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
        for s in SECRETS
        if s in p.read_bytes()
    ]


def positions_and_ids(log: Path) -> dict[int, str]:
    events = [decode_line(line) for line in log.read_bytes().splitlines()]
    return {e.pos: e.id for e in events if e.id}


def transcript(directory: Path, session_id: str) -> object:
    result = run(directory, "show", session_id, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    """A projected log whose session SID carries a secret in every field, and a torn
    tail of it that the next write moved aside."""
    log = tmp_path / "log.jsonl"
    with Journal.open(log) as j:
        j.register_model("m", "M")
        j.create_session("m", session_id=SID, title="zq-title")
        j.create_session("m", session_id="other", title="kept", first_message="hello")
        for i in range(3):
            j.append_message(SID, "user", f"zq-content {i}", metadata={"k": "zq-mmeta"})
            j.append_message("other", "assistant", f"reply {i}")
        j.set_metadata(SID, "zq-skey", "zq-sval")
        j.snapshot(SID, note="zq-note")
    assert run(tmp_path, "replay").exit_code == 0
    with log.open("ab") as f:  # a crash tore the session's next message
        f.write(b'{"type":"message_appended","pos":15,"id":"x","session_id":"zq-id-7","con')
    with Journal.open(log) as j:
        assert len(j.repairs) == 1
        j.append_message("other", "user", "after the crash")
    assert run(tmp_path, "replay").exit_code == 0
    return tmp_path


def test_forget_leaves_no_residue_in_any_file_and_nothing_else_changes(journal_dir: Path) -> None:
    log = journal_dir / "log.jsonl"
    before = positions_and_ids(log)
    of_session = sum(SID.encode() in line for line in log.read_bytes().splitlines())
    other = transcript(journal_dir, "other")
    assert residue(journal_dir)
    forgot = run(journal_dir, "forget", SID, "--yes")
    assert forgot.exit_code == 0, forgot.stderr
    assert run(journal_dir, "replay").exit_code == 0
    assert residue(journal_dir) == []
    after = positions_and_ids(log)
    kept = {pos: eid for pos, eid in before.items() if pos in after}
    assert kept == {pos: after[pos] for pos in kept} and len(kept) == len(before) - of_session
    assert transcript(journal_dir, "other") == other
    assert run(journal_dir, "verify").exit_code == 0
    assert run(journal_dir, "rebuild").exit_code == 0
    assert run(journal_dir, "verify").exit_code == 0
    assert residue(journal_dir) == []
    assert run(journal_dir, "show", SID).exit_code != 0
    with Journal.open(log) as j:
        j.create_session("m", session_id=SID, first_message="a new life")
    assert run(journal_dir, "replay").exit_code == 0
    assert transcript(journal_dir, SID)["messages"][0]["content"] == "a new life"  # type: ignore[index]


def test_forget_asks_on_a_terminal_and_refuses_without_one(
    journal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = journal_dir / "log.jsonl"
    size = log.stat().st_size
    refused = run(journal_dir, "forget", SID)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    monkeypatch.setattr(erase, "_on_terminal", lambda: True)
    declined = run(journal_dir, "forget", SID, input="n\n")
    assert declined.exit_code != 0 and log.stat().st_size == size
    accepted = run(journal_dir, "forget", SID, input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert SECRETS[0] not in log.read_bytes()


def test_forget_again_completes_and_an_unknown_id_is_said(journal_dir: Path) -> None:
    assert run(journal_dir, "forget", SID, "--yes").exit_code == 0
    again = run(journal_dir, "forget", SID, "--yes")
    assert again.exit_code == 0 and "nothing of it left" in again.stdout
    assert residue(journal_dir) == []


# -- retention ----------------------------------------------------------------------------


def _clock(start: datetime) -> Callable[[], datetime]:
    n = iter(range(1 << 30))
    return lambda: start + timedelta(seconds=next(n))


@pytest.fixture
def aged(tmp_path: Path) -> Path:
    """Two sessions that ended in January 2025, one still open since then, one ended now."""
    log = tmp_path / "log.jsonl"
    with Journal.open(log, clock=_clock(datetime(2025, 1, 1, tzinfo=UTC))) as j:
        for sid in ("old-archived", "old-deleted", "old-open"):
            j.create_session("m", session_id=sid, first_message=f"zq-content of {sid}")
            j.append_message(sid, "assistant", "answer")
        j.archive("old-archived")
        j.delete_session("old-deleted")
    with Journal.open(log) as j:
        j.create_session("m", session_id="new-archived", first_message="recent")
        j.archive("new-archived")
    assert run(tmp_path, "replay").exit_code == 0
    return tmp_path


def test_retain_archives_then_forgets_and_import_log_brings_it_back(aged: Path) -> None:
    log, archive = aged / "log.jsonl", aged / "archive.jsonl"
    old = transcript(aged, "old-archived")
    size = log.stat().st_size
    dry = run(aged, "retain", "--closed-before", "2025-06-01", "--to", str(archive), "--dry-run")
    assert dry.exit_code == 0 and "Would move 2 sessions" in dry.stdout
    assert not archive.exists() and log.stat().st_size == size
    moved = run(aged, "retain", "--closed-before", "2025-06-01", "--to", str(archive), "--json")
    assert moved.exit_code == 0, moved.stderr
    report = json.loads(moved.stdout)
    lines = [json.loads(line) for line in archive.read_bytes().splitlines()]  # jq-readable
    assert report["sessions"] == 2 and report["events"] == len(lines)
    assert report["bytes"] == archive.stat().st_size
    assert {line["session_id"] for line in lines} == {"old-archived", "old-deleted"}
    assert b"zq-content of old-archived" not in log.read_bytes()
    assert b"zq-content of old-open" in log.read_bytes()
    assert run(aged, "show", "old-archived").exit_code != 0
    assert run(aged, "verify").exit_code == 0
    back = run(aged, "import-log", str(archive))
    assert back.exit_code == 0, back.stderr
    assert f"Imported {len(lines)} events" in back.stdout
    assert run(aged, "replay").exit_code == 0
    assert transcript(aged, "old-archived") == old
    assert run(aged, "verify").exit_code == 0
    again = run(aged, "import-log", str(archive))
    assert again.exit_code == 0
    assert f"Imported 0 events ({len(lines)} were in the log already)" in again.stdout


def test_retain_refuses_an_existing_archive_and_a_bad_time(aged: Path) -> None:
    log, archive = aged / "log.jsonl", aged / "archive.jsonl"
    archive.write_bytes(b"mine\n")
    size = log.stat().st_size
    exists = run(aged, "retain", "--closed-before", "2025-06-01", "--to", str(archive))
    assert exists.exit_code == 2 and "already exists" in exists.stderr
    bad = run(aged, "retain", "--closed-before", "soon", "--to", str(aged / "a2.jsonl"))
    assert bad.exit_code == 2 and "--closed-before" in bad.stderr
    assert log.stat().st_size == size and archive.read_bytes() == b"mine\n"


def test_import_log_refuses_a_damaged_line_and_writes_nothing(aged: Path) -> None:
    log, archive = aged / "log.jsonl", aged / "archive.jsonl"
    assert run(aged, "retain", "--closed-before", "2025-06-01", "--to", str(archive)).exit_code == 0
    lines = archive.read_bytes().splitlines(keepends=True)
    damaged = aged / "damaged.jsonl"
    damaged.write_bytes(
        lines[0] + lines[1].replace(b"zq-content", b"zq-contenT") + b"".join(lines[2:])
    )
    size = log.stat().st_size
    result = run(aged, "import-log", str(damaged))
    assert result.exit_code == 2
    assert f"line 2 (byte offset {len(lines[0])})" in result.stderr
    assert log.stat().st_size == size
