"""verify on the command line: how far the proof reaches, and --strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from projector.cli import main


def run(paths: tuple[str, str], *args: str) -> Result:
    log, db = paths
    return cli_runner().invoke(main, ["--log", log, "--db", db, *args])


@pytest.fixture
def behind(tmp_path: Path) -> tuple[str, str]:
    """The demo, with the database rebuilt as of position 10 only."""
    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    assert run(paths, "rebuild", "--until", "10").exit_code == 0
    return paths


def test_verify_of_a_database_behind_its_log_says_how_far_it_reaches(
    behind: tuple[str, str],
) -> None:
    total = len(Path(behind[0]).read_text(encoding="utf-8").splitlines())
    result = run(behind, "verify")
    assert result.exit_code == 0, result.output
    assert "ok up to position 10" in result.stdout
    assert f"{total - 10} later event(s) of the log are not in the database yet" in result.stdout
    assert "replay" in result.stdout


def test_verify_strict_fails_when_behind_and_passes_when_current(behind: tuple[str, str]) -> None:
    assert run(behind, "verify", "--strict").exit_code == 1
    assert run(behind, "replay").exit_code == 0
    result = run(behind, "verify", "--strict")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("ok: ") and "(all " in result.stdout


def test_verify_json_counts_the_unprojected_events(behind: tuple[str, str]) -> None:
    data = json.loads(run(behind, "verify", "--json").stdout)
    assert data["ok"] is True
    assert data["checkpoint_pos"] == 10
    assert data["unprojected"] == data["log_last_pos"] - 10 > 0
    strict = run(behind, "verify", "--json", "--strict")
    assert strict.exit_code == 1
    assert json.loads(strict.stdout)["unprojected"] == data["unprojected"]


def test_a_flipped_byte_in_a_group_is_one_log_problem(tmp_path: Path) -> None:
    """The group's later members then fail too (out of order): reported with it, once."""
    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    data = bytearray(Path(paths[0]).read_bytes())
    lines = data.split(b"\n")
    number, first, size = next(
        (i + 1, e["grp"][0], e["grp"][1])
        for i, e in enumerate(json.loads(line) for line in lines if line)
        if "grp" in e and e["grp"][0] < e["grp"][1] - 1
    )
    last_line = number + size - first
    data[sum(len(line) + 1 for line in lines[: number - 1]) + 20] ^= 0x01
    Path(paths[0]).write_bytes(bytes(data))
    result = run(paths, "verify", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    log_problems = [p for p in problems if p["kind"] == "log"]
    assert len(log_problems) == 1
    assert log_problems[0]["line"] == number
    assert f"to line {last_line}, fail too" in log_problems[0]["message"]
    others = [p for p in problems if p["kind"] == "log_mismatch"]
    assert others and all("perhaps the unreadable log lines" in p["message"] for p in others)


def test_differences_under_a_checkpoint_off_the_log_point_to_it(tmp_path: Path) -> None:
    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(Path(paths[0]).read_text("utf-8").splitlines(True)[:50]), "utf-8")
    result = run((str(cut), paths[1]), "verify", "--json")
    assert result.exit_code == 1
    problems = json.loads(result.stdout)["problems"]
    assert [p["kind"] for p in problems].count("checkpoint") == 1
    others = [p for p in problems if p["kind"] == "log_mismatch"]
    assert others and all("perhaps the checkpoint problem" in p["message"] for p in others)
