"""``export-log`` and ``import-log --exact``: a whole log moved byte for byte, across
segments, to an empty log; anything less than a whole log, or a log that is not empty,
refused before a byte is written. (Between a file and a JetStream stream:
``tests/test_stream_cli.py``.)"""

from __future__ import annotations

import json
from pathlib import Path

from cli_runner import cli_runner
from click.testing import Result

from journal import Journal
from projector import canonical_hash
from projector.cli import main


def run(log: Path, db: Path, *args: str) -> Result:
    return cli_runner().invoke(main, ["--log", str(log), "--db", str(db), *args])


def _write(log: Path, segment_bytes: int = 1 << 28) -> None:
    with Journal.open(log, segment_bytes=segment_bytes) as j:
        for k in range(6):
            sid = j.create_session("openai/gpt-4o", session_id=f"s{k}", first_message=f"hi {k}")
            j.append_message(sid, "assistant", "x" * 300)


def test_a_log_moves_byte_for_byte_and_projects_the_same(tmp_path: Path) -> None:
    source, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(source, segment_bytes=1500)  # sealed into segments as it is written
    assert list(tmp_path.glob("a.jsonl.*"))
    exported = run(source, tmp_path / "a.db", "export-log")
    assert exported.exit_code == 0
    dump = tmp_path / "dump.jsonl"
    dump.write_bytes(exported.stdout_bytes)
    imported = run(target, tmp_path / "b.db", "import-log", "--exact", str(dump))
    assert imported.exit_code == 0, imported.stderr
    assert target.read_bytes() == exported.stdout_bytes
    for log, db in ((source, tmp_path / "a.db"), (target, tmp_path / "b.db")):
        assert run(log, db, "replay").exit_code == 0
        assert run(log, db, "verify").exit_code == 0
    assert canonical_hash(tmp_path / "a.db") == canonical_hash(tmp_path / "b.db")
    with Journal.open(target) as j:  # a writer goes on where the import ended
        assert j.append_message("s1", "user", "more").seq == 3


def test_an_exact_import_into_a_log_that_holds_records_writes_nothing(tmp_path: Path) -> None:
    source, target = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _write(source)
    _write(target)
    before = target.read_bytes()
    result = run(target, tmp_path / "b.db", "import-log", "--exact", str(source))
    assert result.exit_code == 2
    assert str(target) in result.stderr and "empty log" in result.stderr
    assert target.read_bytes() == before


def _flip(line: bytes, at: int) -> bytes:
    """``line`` with one bit of byte ``at`` flipped: its checksum no longer matches."""
    return line[:at] + bytes([line[at] ^ 1]) + line[at + 1 :]


def test_an_exact_import_of_less_than_a_whole_log_creates_nothing(tmp_path: Path) -> None:
    source = tmp_path / "a.jsonl"
    _write(source)
    lines = source.read_bytes().splitlines(keepends=True)
    cases = {
        "torn.jsonl": b"".join(lines) + lines[1][:30],  # an incomplete record at the end
        "gap.jsonl": b"".join(lines[:2] + lines[3:]),  # a record missing: positions skip
        "bad.jsonl": b"".join([*lines[:3], _flip(lines[3], 40), *lines[4:]]),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        target = tmp_path / f"into-{name}"
        result = run(target, tmp_path / "x.db", "import-log", "--exact", str(tmp_path / name))
        assert result.exit_code in (1, 2), name
        assert name in result.stderr and "line" in result.stderr, result.stderr
        assert not target.exists(), name


def test_export_log_writes_a_new_file_and_refuses_one_that_exists(tmp_path: Path) -> None:
    source, dest = tmp_path / "a.jsonl", tmp_path / "all.jsonl"
    _write(source)
    result = run(source, tmp_path / "a.db", "export-log", str(dest), "--json")
    assert result.exit_code == 0, result.stderr
    assert dest.read_bytes() == source.read_bytes()
    report = json.loads(result.stdout)
    assert report["records"] == source.read_bytes().count(b"\n")
    assert report["bytes"] == source.stat().st_size
    again = run(source, tmp_path / "a.db", "export-log", str(dest))
    assert again.exit_code == 2 and "already exists" in again.stderr
    assert dest.read_bytes() == source.read_bytes()
    to_stdout = run(source, tmp_path / "a.db", "export-log", "--json")
    assert to_stdout.exit_code == 2 and "DEST" in to_stdout.stderr
    assert not list(tmp_path.glob("*.part"))


def test_an_export_cut_short_by_damage_leaves_no_file(tmp_path: Path) -> None:
    source, dest = tmp_path / "a.jsonl", tmp_path / "all.jsonl"
    _write(source)
    lines = source.read_bytes().splitlines(keepends=True)
    source.write_bytes(b"".join([*lines[:3], _flip(lines[3], 40), *lines[4:]]))
    result = run(source, tmp_path / "a.db", "export-log", str(dest))
    assert result.exit_code == 1 and "line 4" in result.stderr
    assert list(tmp_path.glob("all.jsonl*")) == []  # neither the file nor its .part


def test_an_exact_import_reads_a_file_not_standard_input(tmp_path: Path) -> None:
    target = tmp_path / "b.jsonl"
    result = run(target, tmp_path / "b.db", "import-log", "--exact", "-")
    assert result.exit_code == 2 and "standard input" in result.stderr
    assert not target.exists()
