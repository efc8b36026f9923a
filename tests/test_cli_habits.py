"""Habits of the command line, over every command: the global options before or after
the command's name, --json in both places, a closed pipe ending quietly, and errors as
one line without a traceback. A new command must be added to INVOCATIONS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from projector.cli import main
from projector.cli.support import PIPE_CLOSED_EXIT
from projector.errors import ForeignFile

RENAME = '{"type":"session_renamed","session_id":"demo-haiku","title":"Spring"}\n'

# A run of each command that succeeds on a copy of the demo and prints data. "{legacy}"
# stands for an old database to import, "{data}" for the copy's directory.
INVOCATIONS: dict[str, list[str]] = {
    "demo": ["demo"],
    "append": ["append", "-"],
    "replay": ["replay"],
    "rebuild": ["rebuild"],
    "verify": ["verify"],
    "watch": ["watch", "--poll-interval", "0.05"],
    "sessions": ["sessions"],
    "show": ["show", "demo-paris-trip"],
    "search": ["search", "paris"],
    "stats": ["stats"],
    "export": ["export", "demo-paris-trip"],
    "datasette-config": ["datasette-config", "--for", "0.65"],
    "snapshot": ["snapshot", "demo-paris-trip"],
    "restore": ["restore", "demo-release-notes"],
    "archive": ["archive", "demo-paris-trip"],
    "truncate": ["truncate", "demo-paris-trip", "--keep-through", "1"],
    "expire": ["expire", "--now", "2100-01-01T00:00:00Z"],
    "import-legacy": ["import-legacy", "{legacy}"],
    "repair-line-endings": ["repair-line-endings"],
    "forget": ["forget", "demo-paris-trip", "--yes"],
    "retain": ["retain", "--closed-before", "0m", "--to", "{data}/ended.jsonl"],
    # the log's own records: all there already, so nothing is appended
    "import-log": ["import-log", "{data}/sessions.jsonl"],
    "export-log": ["export-log", "{data}/all.jsonl"],
}
# The one command that runs until stopped and prints nothing on stdout.
RUNS_UNTIL_STOPPED = {"watch"}
FINITE = sorted(set(INVOCATIONS) - RUNS_UNTIL_STOPPED)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's log and database, and an old database to import, made once."""
    root = tmp_path_factory.mktemp("template")
    log, db = str(root / "sessions.jsonl"), str(root / "sessions.db")
    result = cli_runner().invoke(main, ["--log", log, "--db", db, "demo"])
    assert result.exit_code == 0, result.output
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from legacy_fixture import build_legacy_db

    build_legacy_db(root / "old.db", sessions=3, messages_per_session=3, seed=3)
    return root


@pytest.fixture
def data(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the template; the working directory is an empty one beside it, so a
    command that ignored --log or --db would use (and leave) files there."""
    copy = tmp_path / "data"
    shutil.copytree(template, copy)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return copy


def args_for(command: str, data: Path) -> list[str]:
    return [
        a.replace("{legacy}", str(data / "old.db")).replace("{data}", str(data))
        for a in INVOCATIONS[command]
    ]


def paths(data: Path, command: str) -> list[str]:
    # import-legacy imports into a log and database of its own (the demo's sessions differ)
    stem = "imported" if command == "import-legacy" else "sessions"
    return ["--log", str(data / f"{stem}.jsonl"), "--db", str(data / f"{stem}.db")]


def invoke(command: str, before: list[str], after: list[str], data: Path) -> Result:
    line = [*before, *args_for(command, data), *after]
    return cli_runner().invoke(main, line, input=RENAME if command == "append" else None)


def test_every_command_is_covered() -> None:
    assert set(INVOCATIONS) == set(main.commands)


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", FINITE)
def test_global_options_work_before_or_after_the_command(
    command: str, where: str, data: Path
) -> None:
    options = paths(data, command)
    before, after = (options, []) if where == "before" else ([], options)
    result = invoke(command, before, after, data)
    assert result.exit_code == 0, result.output + result.stderr
    assert os.listdir(".") == []  # nothing at the default ./sessions.jsonl or ./sessions.db


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", FINITE)
def test_json_before_or_after_the_command(command: str, where: str, data: Path) -> None:
    before = [*paths(data, command), "--json"] if where == "before" else paths(data, command)
    result = invoke(command, before, ["--json"] if where == "after" else [], data)
    assert result.exit_code == 0, result.output + result.stderr
    json.loads(result.stdout)  # one JSON document, nothing else on stdout


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", sorted(RUNS_UNTIL_STOPPED))
def test_json_is_refused_by_a_command_that_prints_no_data(
    command: str, where: str, data: Path
) -> None:
    before, after = (["--json"], []) if where == "before" else ([], ["--json"])
    result = invoke(command, [*paths(data, command), *before], after, data)
    assert result.exit_code == 2
    assert result.stderr == f"error: --json: `{command}` prints no data, so it has no JSON form\n"


@pytest.mark.parametrize("command", FINITE)
def test_a_closed_pipe_ends_quietly(command: str, data: Path) -> None:
    """As `cmd | head -1` once head has exited: no error line, no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "projector", *paths(data, command), *args_for(command, data)],
            input=(RENAME if command == "append" else "").encode(),
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.stderr.decode() == ""
    assert proc.returncode == PIPE_CLOSED_EXIT


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("command", FINITE)
def test_output_to_a_full_disk_is_one_line_and_exit_1(command: str, data: Path) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "projector", *paths(data, command), *args_for(command, data)],
            input=(RENAME if command == "append" else "").encode(),
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    (line,) = proc.stderr.decode().splitlines()
    assert line.startswith("error: cannot write the output: ")
    assert proc.returncode == 1


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", sorted(INVOCATIONS))
def test_an_unusable_path_is_one_line_without_a_traceback(
    command: str, where: str, data: Path
) -> None:
    (data / "a-file").write_text("")
    bad = ["--log", str(data / "a-file" / "s.jsonl"), "--db", str(data / "a-file" / "s.db")]
    before, after = (bad, []) if where == "before" else ([], bad)
    result = invoke(command, before, after, data)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "a-file" in lines[0]
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(where: str, data: Path) -> None:
    bad = ["--log", str(data / "s.jsonl"), "--db", str(data / "sessions.jsonl")]
    before, after = (["--debug"], []) if where == "before" else ([], ["--debug"])
    result = cli_runner().invoke(main, [*bad, *before, "show", "demo-haiku", *after])
    assert isinstance(result.exception, ForeignFile)  # a log is not a database: refused


def test_watch_takes_the_global_options_after_its_name(data: Path) -> None:
    """watch runs until stopped: started with --log and --db after its name, it projects
    that log into that database, then SIGTERM stops it cleanly."""
    db = data / "watched.db"
    after = ["--log", str(data / "sessions.jsonl"), "--db", str(db)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "projector", *args_for("watch", data), *after],
        stderr=subprocess.PIPE,
    )
    try:
        last_pos = len((data / "sessions.jsonl").read_bytes().splitlines())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _checkpoint(db) != last_pos:
            time.sleep(0.05)
        assert _checkpoint(db) == last_pos
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    assert os.listdir(".") == []


def _checkpoint(db: Path) -> int | None:
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(db)
        try:
            return int(conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None  # not created whole yet
