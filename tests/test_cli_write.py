"""The write commands as a new user meets them: append numbering messages, its errors in
this tool's words, the replay hint, refusals that name the command to run, and commands
that must not create a log or leave a lock file."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from projector.cli import main
from projector.watch import lock_path


def run(paths: tuple[str, str], *args: str, input: str | None = None) -> Result:
    log, db = paths
    return cli_runner().invoke(main, ["--log", log, "--db", db, *args], input=input)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template")
    assert run((str(root / "s.jsonl"), str(root / "s.db")), "demo").exit_code == 0
    return root


@pytest.fixture
def demo(template: Path, tmp_path: Path) -> tuple[str, str]:
    copy = tmp_path / "demo"
    shutil.copytree(template, copy)
    return str(copy / "s.jsonl"), str(copy / "s.db")


def message(session: str = "demo-paris-trip", **extra: object) -> str:
    return json.dumps(
        {"type": "message_appended", "session_id": session, "role": "user", "content": "hi"} | extra
    )


def log_lines(demo: tuple[str, str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(demo[0]).read_text("utf-8").splitlines()]


def test_append_numbers_messages_left_without_seq(demo: tuple[str, str]) -> None:
    result = run(demo, "append", "--json", input=f"{message()}\n{message()}\n")
    assert result.exit_code == 0, result.output
    assert [r["seq"] for r in json.loads(result.stdout)] == [7, 8]  # the demo has 6
    assert [e["seq"] for e in log_lines(demo)[-2:]] == [7, 8]


def test_append_takes_a_null_seq_as_left_out(demo: tuple[str, str]) -> None:
    result = run(demo, "append", "--json", input=message(seq=None))
    assert result.exit_code == 0, result.output
    assert [r["seq"] for r in json.loads(result.stdout)] == [7]


def test_append_with_a_seq_still_checks_it(demo: tuple[str, str]) -> None:
    before = Path(demo[0]).read_bytes()
    result = run(demo, "append", input=message(seq=3))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: <stdin>: line 1: seq 3 is not the next message of session 'demo-paris-trip', "
        "which is 7; leave seq out to append after its last; nothing was written"
    )
    assert Path(demo[0]).read_bytes() == before
    assert run(demo, "append", input=message(seq=7)).exit_code == 0


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (message(at="yesterday"), "'at' must be a time such as 2026-11-26T10:15:33.139877Z"),
        (message(tokens=3), "message_appended has no field 'tokens'; its fields: "),
        ('{"type":"nope","session_id":"x"}', "unknown event type 'nope' (known types: "),
        (message(role="bot"), "message_appended: role must be one of 'user', "),
        (message(seq="3"), "message_appended: seq must be a whole number, not '3'"),
        ('{"type":"session_renamed","session_id":"demo-haiku"}', "session_renamed: the field"),
        (
            '{"type":"session_renamed","session_id":"demo-haiku","title":"t",'
            '"at":"2026-12-01T10:00:00Z"}',
            "session_renamed: 'at' (when imported history happened) is taken by session_created,",
        ),
    ],
)
def test_append_names_what_is_wrong_in_its_own_words(
    demo: tuple[str, str], line: str, expected: str
) -> None:
    before = Path(demo[0]).read_bytes()
    result = run(demo, "append", input=line)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: <stdin>: line 1: " + expected), result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert Path(demo[0]).read_bytes() == before


def test_append_takes_any_rfc3339_time_for_at(demo: tuple[str, str]) -> None:
    result = run(demo, "append", input=message(at="2026-12-01T10:00:00+01:00"))
    assert result.exit_code == 0, result.output
    assert log_lines(demo)[-1]["at"] == "2026-12-01T09:00:00.000000Z"


def test_append_of_no_events_says_so_and_writes_nothing(demo: tuple[str, str]) -> None:
    before = Path(demo[0]).read_bytes()
    result = run(demo, "append", input="\n  \n")
    assert result.exit_code == 0
    assert result.stderr == "Nothing appended: <stdin> holds no events.\n"
    assert json.loads(run(demo, "append", "--json", input="").stdout) == []
    assert Path(demo[0]).read_bytes() == before


def test_the_replay_hint_is_left_out_while_a_live_projector_runs(demo: tuple[str, str]) -> None:
    assert "replay" in run(demo, "append", input=message()).stderr
    Path(lock_path(demo[1])).write_text(f"{os.getppid()}\n")  # another live process
    result = run(demo, "append", input=message())
    assert result.exit_code == 0 and result.stderr == ""
    Path(lock_path(demo[1])).write_text("999999999\n")  # a process long gone
    assert "replay" in run(demo, "append", input=message()).stderr


def test_a_refusal_names_the_command_to_run(demo: tuple[str, str]) -> None:
    result = run(demo, "archive", "demo-release-notes")  # archived by the demo
    assert result.exit_code == 2
    # The command repeats the --log and --db in use (not the ones it would find itself).
    assert f"--log {demo[0]} --db {demo[1]} restore demo-release-notes` reopens it" in (
        result.stderr
    )
    assert "restore('" not in result.stderr
    assert run(demo, "append", input='{"type":"session_deleted","session_id":"demo-haiku"}')
    deleted = run(demo, "snapshot", "demo-haiku")
    assert "restore demo-haiku` brings it back" in deleted.stderr
    bad_id = run(demo, "append", input=message(id="zz"))
    assert "uuid.uuid4" not in bad_id.stderr and "malformed event id 'zz'" in bad_id.stderr


@pytest.mark.parametrize(
    "command",
    [["expire"], ["snapshot", "x"], ["archive", "x"], ["restore", "x"]],
)
def test_commands_that_change_a_log_do_not_create_one(tmp_path: Path, command: list[str]) -> None:
    paths = str(tmp_path / "s.jsonl"), str(tmp_path / "s.db")
    result = run(paths, *command)
    assert result.exit_code == 2
    assert "s.jsonl: no such log" in result.stderr
    assert os.listdir(tmp_path) == []


def test_import_legacy_dry_run_leaves_no_file(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from legacy_fixture import build_legacy_db

    old = tmp_path / "old.db"
    build_legacy_db(old, sessions=2, messages_per_session=2, seed=5)
    paths = str(tmp_path / "s.jsonl"), str(tmp_path / "s.db")
    result = run(paths, "import-legacy", str(old), "--dry-run")
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path) == ["old.db"]


def test_suggested_commands_repeat_the_paths_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = "my log.jsonl", "d.db"
    demo = run(paths, "demo")
    assert "--log 'my log.jsonl' --db d.db show demo-paris-trip" in demo.stdout
    monkeypatch.setenv("SESSION_JOURNAL_LOG", "my log.jsonl")  # found by itself: not repeated
    result = cli_runner().invoke(main, ["--db", "d.db", "archive", "demo-release-notes"])
    assert " --db d.db restore demo-release-notes` reopens it" in result.stderr
    assert "--log" not in result.stderr


def test_append_withdraws_messages_and_the_projection_follows(demo: tuple[str, str]) -> None:
    cut = json.dumps(
        {"type": "messages_truncated", "session_id": "demo-paris-trip", "keep_through_seq": 4}
    )
    result = run(demo, "append", "--json", input=f"{cut}\n{message()}\n")
    assert result.exit_code == 0, result.output
    assert [r["seq"] for r in json.loads(result.stdout)] == [None, 5]
    assert run(demo, "replay").exit_code == 0
    verified = run(demo, "verify")
    assert verified.exit_code == 0, verified.output


def test_truncate_withdraws_and_says_what_it_did(demo: tuple[str, str]) -> None:
    result = run(demo, "truncate", "demo-paris-trip", "--keep-through", "2", "--json")
    assert result.exit_code == 0, result.output
    (receipt,) = json.loads(result.stdout)
    assert receipt["session_id"] == "demo-paris-trip"
    assert log_lines(demo)[-1]["type"] == "messages_truncated"
    assert run(demo, "replay").exit_code == 0
    shown = run(demo, "show", "demo-paris-trip", "--json")
    assert shown.exit_code == 0, shown.output
    assert [m["seq"] for m in json.loads(shown.stdout)["messages"]] == [1, 2]
    assert run(demo, "verify").exit_code == 0
    # The state as of before the withdrawal still holds them.
    before = str(receipt["pos"] - 1)
    assert run(demo, "rebuild", "--until", before).exit_code == 0
    shown = run(demo, "show", "demo-paris-trip", "--json")
    assert len(json.loads(shown.stdout)["messages"]) == 6


def test_truncate_refuses_what_it_cannot_do_and_writes_nothing(demo: tuple[str, str]) -> None:
    before = Path(demo[0]).read_bytes()
    result = run(demo, "truncate", "demo-paris-trip", "--keep-through", "99")
    assert result.exit_code != 0
    assert "no messages after seq 99 to withdraw" in result.stderr
    assert run(demo, "truncate", "nobody", "--keep-through", "0").exit_code != 0
    assert Path(demo[0]).read_bytes() == before
