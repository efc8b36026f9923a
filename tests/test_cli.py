"""The command line: help for every command, success paths, --json shapes, error paths."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from journal import CorruptLog, InvalidValue
from journal.errors import UnknownSession
from projector.cli.group import _exit_code, main


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, str]:
    return str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")


def run(paths: tuple[str, str], *args: str, input: str | bytes | None = None) -> Result:
    log, db = paths
    return cli_runner().invoke(main, ["--log", log, "--db", db, *args], input=input)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files the demo command writes, made once for the module."""
    root = tmp_path_factory.mktemp("template")
    result = run((str(root / "sessions.jsonl"), str(root / "sessions.db")), "demo")
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def demo(paths: tuple[str, str], template: Path) -> tuple[str, str]:
    """The demo's files at ``paths``: a copy of the template, as the demo would write them."""
    shutil.copytree(template, Path(paths[0]).parent, dirs_exist_ok=True)
    return paths


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    cmd = main.commands[command]
    assert cmd.help and len(cmd.help.strip()) > 20, f"{command} has no help text"
    result = cli_runner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_version() -> None:
    result = cli_runner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert "version" in result.output


def test_demo_runs_twice_and_says_so(paths: tuple[str, str]) -> None:
    first = run(paths, "demo")
    assert first.exit_code == 0, first.output
    assert "Wrote" in first.output and "verify: ok" in first.output
    size = os.path.getsize(paths[0])
    second = run(paths, "demo")
    assert second.exit_code == 0, second.output
    assert "already in" in second.output
    assert os.path.getsize(paths[0]) == size


def test_demo_json(paths: tuple[str, str]) -> None:
    result = run(paths, "demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["written"] is True and data["verify_ok"] is True
    assert "demo-paris-trip" in data["sessions"]


def test_sessions_table_and_filters(demo: tuple[str, str]) -> None:
    out = run(demo, "sessions").output
    assert "demo-paris-trip" in out and "demo-deleted-draft" not in out
    archived = run(demo, "sessions", "--status", "archived", "--json")
    rows = json.loads(archived.output)
    assert [r["session_id"] for r in rows] == ["demo-release-notes"]
    assert set(rows[0]) == {
        "session_id",
        "title",
        "model_id",
        "model_name",
        "status",
        "message_count",
        "total_tokens",
        "total_duration_seconds",
        "created_at",
        "last_activity",
    }
    by_model = json.loads(run(demo, "sessions", "--model", "GPT-4o mini", "--json").output)
    assert {r["session_id"] for r in by_model} == {"demo-release-notes", "demo-almost-idle"}
    assert len(json.loads(run(demo, "sessions", "--limit", "2", "--json").stdout)) == 2
    statuses = {
        r["session_id"]: r["status"] for r in json.loads(run(demo, "sessions", "--json").output)
    }
    assert statuses["demo-idle-chat"] == "idle"
    assert statuses["demo-old-support"] == "expired"
    assert statuses["demo-haiku"] == "paused"


def test_sessions_since_rejects_garbage(demo: tuple[str, str]) -> None:
    result = run(demo, "sessions", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "--since 'last tuesday'" in result.stderr


def test_show_transcript_and_json(demo: tuple[str, str]) -> None:
    result = run(demo, "show", "demo-paris-trip")
    assert result.exit_code == 0
    assert "Four days in Paris" in result.output and "#6 assistant" in result.output
    data = json.loads(run(demo, "show", "demo-paris-trip", "--json").output)
    assert data["session"]["message_count"] == 6
    assert [m["seq"] for m in data["messages"]] == [1, 2, 3, 4, 5, 6]
    assert data["metadata"] == {"channel": "web", "locale": "fr-FR"}


def test_show_unknown_session(demo: tuple[str, str]) -> None:
    result = run(demo, "show", "no-such-session")
    assert result.exit_code == 2
    assert "no-such-session" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_search_plain_words_and_json(demo: tuple[str, str]) -> None:
    result = run(demo, "search", "croissants")
    assert result.exit_code == 0, result.output
    assert "demo-paris-trip #3" in result.output
    hits = json.loads(run(demo, "search", "croissants Marais", "--json").output)
    assert hits and hits[0]["session_id"] == "demo-paris-trip"
    assert set(hits[0]) == {"session_id", "title", "seq", "role", "timestamp", "snippet", "rank"}
    assert "**" in hits[0]["snippet"]
    # Characters that are FTS5 syntax are just words here.
    assert run(demo, "search", 'croissants" OR (').exit_code == 0


def test_search_fts_syntax_error_is_clear(demo: tuple[str, str]) -> None:
    result = run(demo, "search", "--fts", '"unbalanced')
    assert result.exit_code == 2
    assert "not valid FTS5 syntax" in result.stderr


def test_stats_by_model_and_day(demo: tuple[str, str]) -> None:
    rows = json.loads(run(demo, "stats", "--json").output)
    by_key = {r["key"]: r for r in rows}
    assert by_key["GPT-4o"]["sessions"] == 2  # paris + idle chat (the deleted one is gone)
    assert set(rows[0]) == {"key", "sessions", "messages", "tokens", "duration_seconds"}
    days = run(demo, "stats", "--by", "day")
    assert days.exit_code == 0 and "TOTAL" in days.output


def test_export_markdown_and_jsonl(demo: tuple[str, str], tmp_path: Path) -> None:
    md = run(demo, "export", "demo-paris-trip")
    assert md.output.startswith("# Four days in Paris")
    target = tmp_path / "out.jsonl"
    assert (
        run(demo, "export", "demo-paris-trip", "--format", "jsonl", "-o", str(target)).exit_code
        == 0
    )
    lines = target.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 7 and json.loads(lines[1])["seq"] == 1


def test_append_then_replay(demo: tuple[str, str]) -> None:
    lines = "\n".join(
        [
            json.dumps({"type": "session_renamed", "session_id": "demo-haiku", "title": "Spring"}),
            json.dumps(
                {
                    "type": "message_appended",
                    "session_id": "demo-paris-trip",
                    "seq": 7,
                    "role": "user",
                    "content": "Et Giverny ?",
                }
            ),
        ]
    )
    result = run(demo, "append", "--json", input=lines)
    assert result.exit_code == 0, result.output
    receipts = json.loads(result.output)
    assert [r["seq"] for r in receipts] == [None, 7]
    assert run(demo, "replay").exit_code == 0
    assert "Giverny" in run(demo, "show", "demo-paris-trip").output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "line 1: not valid JSON"),
        ('{"type":"session_renamed","session_id":"demo-haiku","title":"x"}\n[1]', "line 2"),
        ('{"type":"no_such_type","session_id":"x"}', "line 1"),
        (
            '{"type":"session_renamed","pos":3,"session_id":"demo-haiku","title":"x"}',
            "set by the writer",
        ),
        (
            '{"type":"message_appended","session_id":"nope","seq":1,"role":"user","content":"x"}',
            "unknown session 'nope'",
        ),
        (
            '{"type":"message_appended","session_id":"demo-haiku","seq":1,"role":"user",'
            '"content":"x"}',
            "seq 1 is not the next message of session 'demo-haiku', which is 3",
        ),
        (
            '{"type":"session_renamed","session_id":"demo-haiku","title":"ok"}\n'
            '{"type":"message_appended","session_id":"demo-haiku","seq":3,"role":"bot",'
            '"content":"x"}',
            "line 2",
        ),
    ],
)
def test_append_rejects_bad_input_and_writes_nothing(
    demo: tuple[str, str], text: str, expected: str
) -> None:
    before = Path(demo[0]).read_bytes()
    result = run(demo, "append", input=text)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert Path(demo[0]).read_bytes() == before


def test_write_commands(demo: tuple[str, str]) -> None:
    assert run(demo, "snapshot", "demo-paris-trip", "--note", "x").exit_code == 0
    assert run(demo, "archive", "demo-haiku").exit_code == 0
    again = run(demo, "archive", "demo-haiku")
    assert again.exit_code == 2 and "is archived: cannot archive" in again.stderr
    assert run(demo, "restore", "demo-haiku").exit_code == 0
    assert run(demo, "restore", "demo-deleted-draft").exit_code == 0
    assert run(demo, "replay").exit_code == 0
    rows = {r["session_id"]: r for r in json.loads(run(demo, "sessions", "--json").output)}
    assert rows["demo-haiku"]["status"] == "active"
    assert rows["demo-deleted-draft"]["message_count"] == 2
    expire = run(demo, "expire", "--now", "2100-01-01T00:00:00Z", "--json")
    assert expire.exit_code == 0
    assert len(json.loads(expire.output)) >= 3
    assert run(demo, "verify").exit_code == 0


def test_expire_rejects_bad_time(demo: tuple[str, str]) -> None:
    result = run(demo, "expire", "--now", "tomorrow")
    assert result.exit_code == 2 and "--now" in result.output + result.stderr


def test_rebuild_until_and_back(demo: tuple[str, str]) -> None:
    result = run(demo, "rebuild", "--until", "10", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["last_pos"] == 10
    assert run(demo, "rebuild").exit_code == 0
    assert run(demo, "verify").exit_code == 0


def test_rebuild_until_a_time(demo: tuple[str, str]) -> None:
    result = run(demo, "rebuild", "--until", "2000-01-01T00:00:00Z", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["events_applied"] == 0
    assert run(demo, "rebuild").exit_code == 0


def test_times_without_an_offset_are_utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """--until, --now and --since read a time without an offset as UTC, as the log is."""
    from projector.cli.group import _parse_until
    from projector.queries import parse_since, parse_time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert _parse_until("2026-11-26T10:00:00") == "2026-11-26T10:00:00.000000Z"
        assert parse_time("2026-11-26T10:00:00") == datetime(2026, 11, 26, 10, tzinfo=UTC)
        assert parse_since("2026-11-26T10:00:00") == "2026-11-26T10:00:00.000000Z"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_rebuild_until_rejects_garbage(demo: tuple[str, str]) -> None:
    before = Path(demo[1]).read_bytes()
    result = run(demo, "rebuild", "--until", "yesterday")
    assert result.exit_code == 2
    assert "--until" in result.stderr and "use a position" in result.stderr
    assert Path(demo[1]).read_bytes() == before


def test_verify_reports_damage_with_exit_1(demo: tuple[str, str]) -> None:
    import sqlite3

    conn = sqlite3.connect(demo[1])
    with conn:
        conn.execute("UPDATE sessions SET message_count = 99 WHERE session_id = 'demo-paris-trip'")
    conn.close()
    result = run(demo, "verify")
    assert result.exit_code == 1
    assert "demo-paris-trip" in result.output
    assert json.loads(run(demo, "verify", "--json").output)["ok"] is False


def test_read_commands_without_database(paths: tuple[str, str]) -> None:
    result = run(paths, "sessions")
    assert result.exit_code == 2
    assert "no database yet" in result.stderr


def test_unwritable_log_path(tmp_path: Path) -> None:
    result = cli_runner().invoke(
        main,
        [
            "--log",
            str(tmp_path / "missing-dir" / "s.jsonl"),
            "--db",
            str(tmp_path / "s.db"),
            "archive",
            "x",
        ],
    )
    assert result.exit_code == 2
    assert "missing-dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.jsonl"
    real.write_bytes(b"")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    result = cli_runner().invoke(
        main, ["--log", str(link), "--db", str(tmp_path / "s.db"), "expire"]
    )
    assert result.exit_code == 2
    assert "symlink" in result.stderr


def test_debug_shows_traceback(paths: tuple[str, str]) -> None:
    Path(paths[0]).write_text("")  # an empty log: `archive x` meets an unknown session
    result = cli_runner().invoke(
        main, ["--log", paths[0], "--db", paths[1], "--debug", "archive", "x"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, UnknownSession)  # raised, not turned into a line


def legacy_db(tmp_path: Path) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from legacy_fixture import build_legacy_db

    old = tmp_path / "old.db"
    build_legacy_db(old, sessions=5, messages_per_session=4, seed=7)
    return old


def test_import_legacy_dry_run_then_import_then_again(
    paths: tuple[str, str], tmp_path: Path
) -> None:
    old = legacy_db(tmp_path)
    dry = run(paths, "import-legacy", str(old), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert not os.path.exists(paths[0]) or os.path.getsize(paths[0]) == 0
    first = run(paths, "import-legacy", str(old), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["ok"] is True
    size = os.path.getsize(paths[0])
    assert run(paths, "import-legacy", str(old)).exit_code == 0
    assert os.path.getsize(paths[0]) == size
    assert len(json.loads(run(paths, "sessions", "--json").output)) >= 5


def test_import_legacy_missing_file(paths: tuple[str, str], tmp_path: Path) -> None:
    result = run(paths, "import-legacy", str(tmp_path / "nope.db"))
    assert result.exit_code == 2
    assert "nope.db" in result.stderr and "Traceback" not in result.stderr


def test_append_creates_a_session_and_names_every_event(paths: tuple[str, str]) -> None:
    line = json.dumps(
        {
            "type": "session_created",
            "session_id": "s-1",
            "model_id": "gpt-4o",
            "id": "0b0e3c2a-4bde-4a3c-9a0e-6b8f1d2c3e4f",
        }
    )
    first = json.loads(run(paths, "append", "--json", input=line).output)
    assert [(r["pos"], r["event_id"], r["duplicate"]) for r in first] == [
        (2, "0b0e3c2a-4bde-4a3c-9a0e-6b8f1d2c3e4f", False)  # the model is registered first
    ]
    again = json.loads(run(paths, "append", "--json", input=line).output)
    assert [(r["pos"], r["duplicate"]) for r in again] == [(2, True)]
    message = json.dumps(
        {"type": "message_appended", "session_id": "s-1", "seq": 1, "role": "user", "content": "hi"}
    )
    (receipt,) = json.loads(run(paths, "append", "--json", input=message).output)
    assert len(receipt["event_id"]) == 36 and receipt["seq"] == 1


@pytest.mark.parametrize("command", [["replay"], ["rebuild"], ["demo"]])
def test_projecting_commands_refuse_while_a_live_projector_runs(
    demo: tuple[str, str], command: list[str]
) -> None:
    from projector.watch import projection_lock

    before = Path(demo[1]).read_bytes()
    with projection_lock(*demo):  # what a running `session-journal watch` holds
        result = run(demo, *command)
    assert result.exit_code == 2, result.output
    assert "already watched by another live projector" in result.stderr
    assert Path(demo[1]).read_bytes() == before
    assert run(demo, *command).exit_code == 0  # and works again once it has stopped


@pytest.mark.parametrize("command", ["replay", "rebuild", "verify"])
def test_a_missing_log_is_an_error_and_the_database_is_kept(
    demo: tuple[str, str], tmp_path: Path, command: str
) -> None:
    before = Path(demo[1]).read_bytes()
    result = cli_runner().invoke(
        main, ["--log", str(tmp_path / "typo.jsonl"), "--db", demo[1], command]
    )
    assert result.exit_code == 2
    assert "typo.jsonl: no such log" in result.stderr
    assert Path(demo[1]).read_bytes() == before


def test_json_keys_are_the_documented_ones(demo: tuple[str, str]) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")

    def documented(command: str) -> set[str]:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{command}` |"))
        return set(row.split("`{", 1)[1].split("}`", 1)[0].replace(" ", "").split(","))

    assert set(json.loads(run(demo, "replay", "--json").output)) == documented("replay")
    assert set(json.loads(run(demo, "rebuild", "--json").output)) == documented("rebuild")
    verify_keys = set(json.loads(run(demo, "verify", "--json").output))
    assert verify_keys == {
        "ok",
        "problems",
        "sessions_checked",
        "log_last_pos",
        "checkpoint_pos",
        "unprojected",
    }
    assert set(json.loads(run(demo, "demo", "--json").output)) == documented("demo")


@pytest.mark.parametrize(
    ("command", "option"),
    [("expire", "--now"), ("rebuild", "--until"), ("sessions", "--since")],
)
def test_a_time_outside_the_calendar_in_utc_is_a_usage_error(
    demo: tuple[str, str], command: str, option: str
) -> None:
    """The year 1 at +01:00 is the year 0 in UTC: a clear error, nothing changed."""
    before = Path(demo[0]).read_bytes(), Path(demo[1]).read_bytes()
    result = run(demo, command, option, "0001-01-01T00:00:00+01:00")
    assert result.exit_code == 2, result.output + result.stderr
    assert option in result.stderr
    assert (Path(demo[0]).read_bytes(), Path(demo[1]).read_bytes()) == before


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (OSError(errno.EIO, "Input/output error"), 1),
        (OSError(errno.ENOSPC, "No space left on device"), 1),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), 2),
        (PermissionError(errno.EACCES, "Permission denied"), 2),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), 2),
        (InvalidValue("bad"), 2),
        (CorruptLog("bad line", path="x", line=1, offset=0), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_exit_codes_tell_bad_input_from_trouble_with_the_data_or_disk(
    exc: BaseException, code: int
) -> None:
    """README: exit 2 means bad input, 1 an integrity or I/O problem."""
    assert _exit_code(exc) == code


def test_an_io_error_of_the_disk_exits_1(
    paths: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run(paths, "demo").exit_code == 0

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    result = run(paths, "snapshot", "demo-haiku")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output + result.stderr


@pytest.mark.parametrize(
    ("command", "where"),
    [
        ("retain", "before"),
        ("retain", "after"),
        ("repair-line-endings", "after"),
        ("demo", "before"),
        ("import-legacy", "after"),
    ],
)
def test_a_command_that_rewrites_a_log_file_refuses_a_stream_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "nats://127.0.0.1:4222/SESSIONS"
    arguments = {
        "retain": ["--closed-before", "2026-01-01", "--to", "old.jsonl"],
        "import-legacy": ["old.db"],
    }.get(command, [])
    where_log = ["--log", url]
    args = (
        [*where_log, command, *arguments]
        if where == "before"
        else [command, *arguments, *where_log]
    )
    result = cli_runner().invoke(main, args)
    assert result.exit_code == 2
    assert url in result.stderr and f"`{command}` works on a log file only" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_stream_without_the_nats_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "nats", None)  # as if nats-py were not installed
    for module in ("journal.log.jetstream", "journal.log.stream_copy"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    result = cli_runner().invoke(main, ["--log", "nats://127.0.0.1:4222/S", "replay"])
    assert result.exit_code == 2
    assert "session-journal[nats]" in result.stderr
    assert list(tmp_path.iterdir()) == []
