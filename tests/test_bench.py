"""tools/bench.py runs end to end at a tiny size and reports every field of every figure.

Only the shape of the report is checked, never a speed: timings belong to the benchmark.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Each runs a section of the benchmarks in a child process: long, and the same on every
# dependency version (see pyproject.toml's "slow" marker).
pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench.py"
FIELDS = {
    "name",
    "value",
    "unit",
    "baseline",
    "baseline_value",
    "ratio",
    "op",
    "target",
    "note",
    "judged",
    "met",
}


def _run(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--size", "tiny", "--json", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _check_figures(section: dict[str, Any], at_least: int) -> None:
    assert section["status"] == "ok", section["message"]
    assert len(section["figures"]) >= at_least
    for fig in section["figures"]:
        assert set(fig) == FIELDS
        for key in ("value", "baseline_value", "ratio", "target"):
            assert isinstance(fig[key], float | int) and math.isfinite(fig[key]), (fig, key)
            # A figure may be zero (an idle process's CPU time, in clock ticks); never less.
            assert fig[key] >= 0, (fig, key)
        assert fig["baseline_value"] > 0 and fig["target"] > 0, fig
        assert fig["op"] in (">=", "<=")
        assert fig["judged"] in ("ratio", "value")
        assert isinstance(fig["met"], bool)
        assert fig["name"] and fig["unit"] and fig["baseline"]


def test_header() -> None:
    doc = _run("--only", "import")
    for key in ("date", "cpu", "cores", "python", "size", "command", "seconds"):
        assert doc[key] not in (None, ""), key
    assert doc["size"] == "tiny"
    assert [s["name"] for s in doc["sections"]] == ["import"]


def test_live_section() -> None:
    doc = _run("--only", "live")
    (section,) = doc["sections"]
    _check_figures(section, 4)
    figures = section["figures"]
    names = [f["name"] for f in figures]
    assert any("p50" in n for n in names) and any("p99" in n for n in names)
    assert any("burst" in n and "lag back to zero" in n for n in names)
    assert any("idle" in n for n in names)
    # Latency and idle CPU have absolute targets; the burst is a ratio to its write time.
    judged = {f["name"]: f["judged"] for f in figures}
    assert [j for n, j in judged.items() if "burst" in n] == ["ratio"]
    assert sorted(j for n, j in judged.items() if "burst" not in n) == ["value"] * 3


def test_import_section() -> None:
    doc = _run("--only", "import")
    (section,) = doc["sections"]
    _check_figures(section, 1)
    (fig,) = section["figures"]
    assert "legacy import" in fig["name"] and fig["op"] == "<=" and fig["target"] == 3


def test_append_section() -> None:
    doc = _run("--only", "append")
    (section,) = doc["sections"]
    _check_figures(section, 5)
    names = " ".join(f["name"] for f in section["figures"])
    for part in ("1 thread", "8 threads", "`none`", "open", "peak RSS"):
        assert part in names


def test_peer_section() -> None:
    pytest.importorskip("eventsourcing")
    doc = _run("--only", "peer")
    (section,) = doc["sections"]
    _check_figures(section, 2)


def test_projection_section() -> None:
    doc = _run("--only", "projection")
    (section,) = doc["sections"]
    _check_figures(section, 5)


def test_history_section() -> None:
    doc = _run("--only", "history")
    (section,) = doc["sections"]
    _check_figures(section, 4)
    names = [f["name"] for f in section["figures"]]
    assert [n.split(" peak RSS")[0] for n in names[:2]] == ["rebuild", "verify"]
    assert "second Journal.open" in names[2] and "RSS added" in names[3]


def test_text_report() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--size", "tiny", "--only", "live,import"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "== live" in out.stdout and "== import" in out.stdout
    assert "(absolute)" in out.stdout  # the latency targets bound the figure itself
    assert "of 5 targets met" in out.stdout


def test_unknown_section_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--only", "nope"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert "unknown section nope" in out.stderr


def test_jetstream_section() -> None:
    """Real servers where the nats extra is installed; said to be skipped, and why, where
    it is not."""
    doc = _run("--only", "jetstream")
    (section,) = doc["sections"]
    if importlib.util.find_spec("nats") is None:
        assert section["status"] == "skipped" and "nats" in section["message"]
        return
    _check_figures(section, 7)
    names = [f["name"] for f in section["figures"]]
    assert "R3 stream" in names[0] and "R3 servers alone" in names[1]
    assert "R3 stream" in names[2] and "R1 stream" in names[3]
    assert "folds the R3 stream" in names[4] and "projects the R3 stream" in names[5]
    assert "server RSS" in names[6]
