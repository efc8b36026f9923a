"""Crashes: SIGKILL mid-stream, and power cuts simulated over the recorded write stream."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parent.parent / "tools"


def load_tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    kills = 0
    for seed in (1, 2):
        out = subprocess.run(
            [
                sys.executable,
                str(TOOLS / "crash_writer.py"),
                "--kills",
                "26",
                "--seed",
                str(seed),
                "--dir",
                str(tmp_path / f"run{seed}"),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        stats = json.loads(out.stdout)
        assert stats["lost"] == 0 and stats["duplicated"] == 0 and stats["seq_gapless"] == 1
        assert stats["started_from_checkpoint"] == 1 and stats["checkpoint_agrees"] == 1
        assert stats["segments"] > 0 and stats["segments_consistent"] == 1
        assert stats["acknowledged"] > 26
        # every quarantine file comes from a repair, none was overwritten
        assert stats["quarantine_files"] == stats["repairs"]
        kills += stats["kills"]
    assert kills >= 50


@pytest.mark.slow
def test_sigkill_under_async_load_loses_no_acknowledged_event(tmp_path: Path) -> None:
    """16 tasks append through AsyncJournal (batches written and fsynced together) and the
    process is killed at random moments: every acknowledged message survives, once."""
    out = subprocess.run(
        [
            sys.executable,
            str(TOOLS / "crash_writer.py"),
            *("--kills", "12", "--seed", "4", "--tasks", "16"),
            *("--dir", str(tmp_path), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    stats = json.loads(out.stdout)
    assert stats["lost"] == 0 and stats["duplicated"] == 0 and stats["seq_gapless"] == 1
    assert stats["acknowledged"] > 12
    assert stats["quarantine_files"] == stats["repairs"]


@pytest.mark.slow
def test_power_cut_at_every_point_keeps_acknowledged_events(tmp_path: Path) -> None:
    power = load_tool("power_loss")
    ops, acks = power.record_workload(tmp_path, "always", seed=7)
    assert sum(kind == "fsync" for kind, _ in ops) >= len(acks) // 4
    points = list(range(len(ops) + 1))
    stats = power.check_points(tmp_path, ops, acks, points, "always", seed=7)
    assert stats["points"] == len(points) and stats["acknowledged_checked"] > 1000
    assert (stats["lost"], stats["corrupt"], stats["second_run_changed"]) == (0, 0, 0)
    assert stats["repairs"] > len(points) // 2


@pytest.mark.slow
def test_power_cut_in_batch_mode_never_corrupts(tmp_path: Path) -> None:
    power = load_tool("power_loss")
    ops, acks = power.record_workload(tmp_path, "batch", seed=8)
    stats = power.check_points(tmp_path, ops, acks, list(range(len(ops) + 1)), "batch", seed=8)
    assert (stats["lost"], stats["corrupt"], stats["second_run_changed"]) == (0, 0, 0)


@pytest.mark.slow
def test_the_power_cut_check_can_fail(tmp_path: Path) -> None:
    """Without fsync, acknowledged events are lost at some cut, and the check says so."""
    power = load_tool("power_loss")
    ops, acks = power.record_workload(tmp_path, "none", seed=9)
    assert not any(kind == "fsync" for kind, _ in ops)
    stats = power.check_points(tmp_path, ops, acks, list(range(len(ops) + 1)), "always", seed=9)
    assert stats["lost"] > 0
