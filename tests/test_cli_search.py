"""search and sessions on the command line: message-level hits, session names apart,
and a word when more exists than is shown."""

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


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("demo")  # read only below
    paths = str(root / "sessions.jsonl"), str(root / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    return paths


def test_a_message_hit_is_a_message_that_says_the_word(demo: tuple[str, str]) -> None:
    """ "Four days in Paris" has six messages; two of them say "Paris"."""
    hits = json.loads(run(demo, "search", "paris", "--json").stdout)
    assert [h["seq"] for h in hits] and all("**Paris**" in h["snippet"] for h in hits)
    transcript = json.loads(run(demo, "show", "demo-paris-trip", "--json").stdout)
    saying = {m["seq"] for m in transcript["messages"] if "paris" in m["content"].lower()}
    assert {h["seq"] for h in hits} == saying and len(saying) < len(transcript["messages"])


def test_a_title_or_model_name_is_listed_apart_and_labelled(demo: tuple[str, str]) -> None:
    result = run(demo, "search", "gpt")
    assert result.exit_code == 0
    text, sessions = result.stdout.split("Sessions with these words in their title or model name:")
    assert "No message holds 'gpt'." in text
    assert "demo-paris-trip · Four days in Paris · GPT-4o" in sessions
    assert json.loads(run(demo, "search", "gpt", "--json").stdout) == []


def test_search_sessions_lists_sessions_by_name(demo: tuple[str, str]) -> None:
    rows = json.loads(run(demo, "search", "--sessions", "gpt", "mini", "--json").stdout)
    assert {r["session_id"] for r in rows} == {"demo-release-notes", "demo-almost-idle"}
    assert "demo-paris-trip" in run(demo, "search", "--sessions", "paris").stdout


def test_search_sessions_with_fts_syntax_is_refused(demo: tuple[str, str]) -> None:
    result = run(demo, "search", "--sessions", "--fts", "paris")
    assert result.exit_code == 2
    assert "--sessions and --fts" in result.stderr


def test_search_says_when_more_hits_exist_than_shown(demo: tuple[str, str]) -> None:
    everything = json.loads(run(demo, "search", "sqlite", "--limit", "0", "--json").stdout)
    assert len(everything) > 3
    result = run(demo, "search", "sqlite", "--limit", "3")
    assert result.stdout.count(" #") == 3
    assert f"Showing 3 of {len(everything)} messages" in result.stderr
    whole = run(demo, "search", "sqlite", "--limit", str(len(everything)))
    assert "Showing" not in whole.stderr


def test_sessions_says_when_more_exist_and_limit_0_shows_all(demo: tuple[str, str]) -> None:
    every = json.loads(run(demo, "sessions", "--limit", "0", "--json").stdout)
    assert len(every) > 2
    two = run(demo, "sessions", "--limit", "2", "--json")
    assert len(json.loads(two.stdout)) == 2
    assert "More sessions exist than the 2 shown" in two.stderr
    assert "Showing" not in run(demo, "sessions", "--limit", "0").stderr


def test_a_read_command_notes_a_database_behind_its_log(tmp_path: Path) -> None:
    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    assert run(paths, "rebuild", "--until", "10").exit_code == 0
    for command in (["sessions"], ["show", "demo-paris-trip"], ["search", "paris"], ["stats"]):
        result = run(paths, *command)
        assert "sessions.db is behind" in result.stderr, command
        assert "replay` brings them in" in result.stderr
    assert run(paths, "replay").exit_code == 0
    assert "behind" not in run(paths, "sessions").stderr


def test_a_read_command_notes_a_database_of_another_log(tmp_path: Path) -> None:
    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    other = str(tmp_path / "other.jsonl")
    Path(other).write_bytes(Path(paths[0]).read_bytes()[:100])  # a log cut short
    result = run((other, paths[1]), "sessions")
    assert result.exit_code == 0
    assert "sessions.db was not projected from" in result.stderr


def test_a_read_command_notes_a_database_of_another_version(tmp_path: Path) -> None:
    import sqlite3

    paths = str(tmp_path / "sessions.jsonl"), str(tmp_path / "sessions.db")
    assert run(paths, "demo").exit_code == 0
    conn = sqlite3.connect(paths[1])
    conn.execute("PRAGMA user_version = 1")  # as a database built before the index changed
    conn.close()
    result = run(paths, "search", "paris")
    assert "was built by another version of this tool" in result.stderr
    assert run(paths, "replay").exit_code == 0  # which rebuilds it
    assert run(paths, "search", "paris").stderr == ""
