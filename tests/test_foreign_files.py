"""Ordinary mistakes with paths never cost a byte: a command replaces or removes only files
that are provably the projection's, and a writer never moves aside a file that is no log.

Each case is tried through the command line, as a person would make the mistake, and the
files involved must be byte for byte what they were (and no quarantine file appears).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from journal import Journal, NotALog
from projector import replay
from projector.cli import main
from projector.db import APPLICATION_ID, check_ours
from projector.errors import ForeignFile
from projector.sync.rebuild import rebuild
from projector.watch import lock_path


def cli(log: Path, db: Path, *args: str) -> Result:
    return cli_runner().invoke(main, ["--log", str(log), "--db", str(db), *args])


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the demo command writes, made once for the module."""
    root = tmp_path_factory.mktemp("template")
    result = cli(root / "sessions.jsonl", root / "sessions.db", "demo")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def demo(template: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The demo's files in ``tmp_path``: a copy of the template, as the demo would write them."""
    shutil.copytree(template, tmp_path, dirs_exist_ok=True)
    return tmp_path / "sessions.jsonl", tmp_path / "sessions.db"


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def no_quarantine(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if ".torn-" in p.name]


SWAPPED_COMMANDS = [
    ("replay",),
    ("rebuild",),
    ("rebuild", "--until", "3"),
    ("verify",),
    ("sessions",),
    ("append", "-"),
    ("expire",),
    ("archive", "demo-haiku"),
    ("snapshot", "demo-haiku"),
    ("demo",),
]


@pytest.mark.parametrize("args", SWAPPED_COMMANDS, ids=" ".join)
def test_swapped_paths_change_nothing(demo: tuple[Path, Path], args: tuple[str, ...]) -> None:
    log, db = demo
    before = snapshot(log, db)
    result = cli_runner().invoke(
        main,
        ["--log", str(db), "--db", str(log), *args],
        input='{"type":"session_paused","session_id":"demo-haiku"}\n',
    )
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output + result.stderr
    assert "Check --log and --db" in result.stderr
    assert snapshot(log, db) == before
    assert no_quarantine(log.parent)
    assert not Path(lock_path(str(log))).exists()  # nothing made beside the wrong file


@pytest.mark.parametrize("args", [("replay",), ("rebuild",), ("verify",)], ids=" ".join)
def test_the_database_path_naming_the_log_is_refused(
    demo: tuple[Path, Path], args: tuple[str, ...]
) -> None:
    log, _db = demo
    before = snapshot(log)
    result = cli(log, log, *args)
    assert result.exit_code == 2, result.output
    assert "is the log itself" in result.stderr
    assert snapshot(log) == before


def test_an_empty_log_named_as_the_database_too_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"
    log.touch()
    with pytest.raises(ForeignFile, match="is the log itself"):
        replay(log, log)
    assert log.read_bytes() == b""


def _fifo(p: Path) -> None:
    os.mkfifo(p)


def _text(p: Path) -> None:
    p.write_text("notes I keep next to my sessions\n")


def _other_program(p: Path) -> None:
    with closing(sqlite3.connect(p)) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO accounts VALUES (1, 'ada')")
        conn.commit()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (_fifo, "is a FIFO"),
        (_text, "is not a SQLite database"),
        (_other_program, "a SQLite database of another program"),
    ],
    ids=["fifo", "text", "other-sqlite"],
)
@pytest.mark.parametrize("command", ["replay", "rebuild", "verify", "show"])
def test_a_foreign_file_at_the_database_path_is_left_alone(
    demo: tuple[Path, Path], make: object, reason: str, command: str
) -> None:
    log, db = demo
    db.unlink()
    assert callable(make)
    make(db)
    mode = db.stat().st_mode
    before = None if stat.S_ISFIFO(mode) else db.read_bytes()
    result = cli(log, db, command, *(["demo-haiku"] if command == "show" else []))
    assert result.exit_code == 2, result.output
    assert reason in result.stderr and "left untouched" in result.stderr
    assert db.stat().st_mode == mode
    if before is not None:
        assert db.read_bytes() == before
    assert not Path(f"{db}-wal").exists()


def test_a_device_at_the_database_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ForeignFile, match="is a character device"):
        check_ours("/dev/null")
    log = tmp_path / "sessions.jsonl"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", session_id="s")
    with pytest.raises(ForeignFile):
        rebuild(log, "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_projection_made_before_the_application_id_is_still_ours(
    demo: tuple[Path, Path],
) -> None:
    log, db = demo
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        conn.execute("PRAGMA application_id = 0")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert cli(log, db, "rebuild").exit_code == 0
    with closing(sqlite3.connect(db)) as conn:  # the new file carries the id
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_damaged_projection_is_still_replaced_by_a_rebuild(demo: tuple[Path, Path]) -> None:
    log, db = demo
    cli(log, db, "verify")
    Path(f"{db}-wal").unlink(missing_ok=True)
    Path(f"{db}-shm").unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # everything past the header destroyed
    db.write_bytes(bytes(data))
    result = cli(log, db, "rebuild")
    assert result.exit_code == 0, result.output
    assert cli(log, db, "verify").exit_code == 0


def test_an_empty_file_at_the_database_path_becomes_the_projection(tmp_path: Path) -> None:
    log, db = tmp_path / "sessions.jsonl", tmp_path / "sessions.db"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", session_id="s")
    db.touch()
    replay(log, db)
    assert cli(log, db, "verify").exit_code == 0


def test_a_foreign_file_where_a_rebuild_is_built_is_left_alone(demo: tuple[Path, Path]) -> None:
    log, db = demo
    tmp = Path(f"{db}.rebuild")
    tmp.write_text("someone's file\n")
    result = cli(log, db, "rebuild")
    assert result.exit_code == 2
    assert f"{tmp}: is not a SQLite database" in result.stderr
    assert tmp.read_text() == "someone's file\n"


def test_a_foreign_file_where_the_watch_lock_goes_is_left_alone(demo: tuple[Path, Path]) -> None:
    log, db = demo
    lock = Path(lock_path(str(db)))
    lock.write_text("my shopping list\n")
    result = cli(log, db, "replay")
    assert result.exit_code == 2
    assert "is not a watch lock" in result.stderr
    assert lock.read_text() == "my shopping list\n"


def test_a_lock_left_by_an_earlier_projector_is_taken_over(demo: tuple[Path, Path]) -> None:
    log, db = demo
    Path(lock_path(str(db))).write_text("12345\n")  # its projector is gone: no flock held
    assert cli(log, db, "replay").exit_code == 0


@pytest.mark.parametrize(
    "content",
    [b"SQLite format 3\x00" + b"\x00" * 200, b"id,name\n1,x\n", b"\xef\xbb\xbf{}"],
    ids=["sqlite", "csv", "bom"],
)
def test_a_writer_never_moves_aside_a_file_that_is_no_log(tmp_path: Path, content: bytes) -> None:
    log = tmp_path / "sessions.jsonl"
    log.write_bytes(content)
    with pytest.raises(NotALog, match="is not a session-journal log"):
        Journal.open(log)
    assert log.read_bytes() == content
    assert no_quarantine(tmp_path)


def test_a_new_log_torn_in_its_first_record_is_still_repaired(tmp_path: Path) -> None:
    log = tmp_path / "sessions.jsonl"
    for torn in (b'{"type":"model_reg', b"\x00" * 512):
        log.write_bytes(torn)
        with Journal.open(log) as j:
            assert j.repairs
        assert log.read_bytes() == b""


def test_a_database_a_first_catch_up_made_before_its_schema_is_still_ours(
    tmp_path: Path,
) -> None:
    """connect() makes a SQLite file (WAL header, no tables) before the schema commits; a
    crash between the two must not make the next run refuse it."""
    log, db = tmp_path / "sessions.jsonl", tmp_path / "sessions.db"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", session_id="s")
    from projector import connect

    connect(db).close()
    assert db.read_bytes().startswith(b"SQLite format 3\x00")
    check_ours(db)
    replay(log, db)
    assert cli(log, db, "verify").exit_code == 0


def _view_only(p: Path) -> None:
    with closing(sqlite3.connect(p)) as conn:
        conn.execute("CREATE VIEW important AS SELECT 'my data' AS x")
        conn.commit()


def _other_application(p: Path) -> None:
    with closing(sqlite3.connect(p)) as conn:
        conn.execute("PRAGMA application_id = 12345")
        conn.execute("PRAGMA user_version = 1")
        conn.commit()


@pytest.mark.parametrize("make", [_view_only, _other_application], ids=["view", "app-id"])
def test_a_foreign_database_without_tables_is_still_foreign(
    demo: tuple[Path, Path], make: object
) -> None:
    log, db = demo
    db.unlink()
    for side in ("-wal", "-shm"):
        Path(f"{db}{side}").unlink(missing_ok=True)
    assert callable(make)
    make(db)
    before = db.read_bytes()
    result = cli(log, db, "replay")
    assert result.exit_code == 2 and "another program" in result.stderr
    assert db.read_bytes() == before


@pytest.mark.parametrize("kind", ["symlink", "directory"])
def test_a_symlink_or_directory_where_the_watch_lock_goes_is_refused(
    demo: tuple[Path, Path], kind: str
) -> None:
    log, db = demo
    lock = Path(lock_path(str(db)))
    lock.unlink()  # the demo's own
    if kind == "symlink":
        lock.symlink_to(log)
    else:
        lock.mkdir()
    before = log.read_bytes()
    result = cli(log, db, "replay")
    assert result.exit_code == 2, result.output
    assert "not a watch lock" in result.stderr
    assert log.read_bytes() == before


def test_a_dangling_symlink_at_the_database_path_is_refused(tmp_path: Path) -> None:
    log, db = tmp_path / "sessions.jsonl", tmp_path / "sessions.db"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", session_id="s")
    db.symlink_to(tmp_path / "elsewhere.db")
    result = cli(log, db, "replay")
    assert result.exit_code == 2 and "symbolic link to a missing file" in result.stderr
    assert not (tmp_path / "elsewhere.db").exists()
