"""The README's examples run as written: the Python example, every console command, and
the Quickstart commands that CI runs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runner import cli_runner

from projector.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_python_examples_run_in_order(tmp_path: Path) -> None:
    examples = blocks("python")
    # the writer, tool messages, then reading and watching what they wrote
    assert len(examples) == 3
    for example in examples:
        done = subprocess.run(
            [sys.executable, "-c", example],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "sessions.jsonl").stat().st_size > 0
    assert "Trip plan" in done.stdout or "Paris in May" in done.stdout


def console_commands() -> list[list[str]]:
    commands = []
    for block in blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ session-journal "):
                commands.append(shlex.split(line[2:], comments=True)[1:])
    return commands


def test_console_examples_run_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    commands = console_commands()
    assert len(commands) >= 10
    for args in commands:
        result = cli_runner().invoke(main, args)
        assert result.exit_code == 0, f"session-journal {shlex.join(args)}: {result.output}"


def test_append_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli_runner().invoke(main, ["demo"]).exit_code == 0
    (line,) = re.findall(r"`echo '(.*)' \| session-journal append`", README)
    result = cli_runner().invoke(main, ["append"], input=line)
    assert result.exit_code == 0, result.output


def test_ci_runs_the_quickstart_commands_verbatim() -> None:
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```sh\n(.*?)```", quickstart, re.DOTALL)]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for command in commands:
        assert command in ci.splitlines(), f"CI does not run: {command}"
