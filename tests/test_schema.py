"""The projection's schema: exactly these objects, found from an installed wheel, and the
seed's views giving the right figures on a known history."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from projection_helpers import REPO, execute, known_workload, our_conn, rows

from projector import replay
from projector.db import schema_version

TABLES = {
    "models", "sessions", "messages", "session_metadata", "session_timeouts",
    "session_snapshots", "sessions_fts", "projector_checkpoint", "projector_quarantine",
    "projector_scrub",
}  # fmt: skip
VIEWS = {"recent_sessions", "session_statistics", "sessions_at_timeout"}
TRIGGERS = {
    "messages_seq_check", "update_message_count_insert", "update_message_count_delete",
    "session_timeouts_ai", "session_timeouts_au", "session_activity_au",
    "create_snapshot_on_archive", "messages_ad",
}  # fmt: skip
INDEXES = {"idx_sessions_model", "idx_sessions_status_activity", "idx_snapshots_session"}


def test_exact_objects() -> None:
    conn = our_conn()
    try:
        found: dict[str, set[str]] = {}
        for kind, name in conn.execute(
            "SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "AND name NOT LIKE 'sessions_fts_%'"
        ):
            found.setdefault(kind, set()).add(name)
        assert found == {"table": TABLES, "view": VIEWS, "trigger": TRIGGERS, "index": INDEXES}
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version()
    finally:
        conn.close()


def test_views_on_a_known_history(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    stats = rows(
        db,
        "SELECT model_id, session_count, total_messages, total_tokens_used "
        "FROM session_statistics ORDER BY model_id",
    )
    # c (claude) is archived: the seed's view leaves archived sessions out
    assert stats == [("gpt-4o", 2, 6, 51)]
    recent = rows(db, "SELECT session_id, message_count, total_tokens FROM recent_sessions")
    assert recent == [("b", 3, 16), ("a", 3, 35)]  # newest activity first
    assert rows(db, "SELECT total_duration_seconds FROM sessions WHERE session_id = 'a'") == [
        (2.0,)
    ]
    # the writer's clock is in 2026-03: every open deadline (one day) is long past
    timeouts = rows(db, "SELECT session_id, timeout_status FROM sessions_at_timeout ORDER BY 1")
    assert timeouts == [("a", "hard_timeout"), ("b", "hard_timeout")]
    execute(db, "UPDATE sessions SET expires_at = NULL")
    timeouts = rows(db, "SELECT session_id, timeout_status FROM sessions_at_timeout ORDER BY 1")
    assert timeouts == [("a", "idle_timeout"), ("b", "idle_timeout")]


def test_user_version_mismatch_rebuilds(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    known_workload(log)
    replay(log, db)
    execute(db, "PRAGMA user_version = 12345")
    result = replay(log, db)
    assert result.rebuilt and "12345" in (result.rebuild_reason or "")
    assert rows(db, "PRAGMA user_version") == [(schema_version(),)]


@pytest.mark.slow
def test_installed_wheel_finds_its_schema(tmp_path: Path) -> None:
    """A plain ``pip install .`` into a fresh venv, used from another directory."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # Dependencies (msgspec, hatchling for the build) come from this interpreter's
    # site-packages, so the test needs no network; the project itself is installed fresh.
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(REPO)],
        check=True, capture_output=True, cwd=tmp_path,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import projector, projector.db as d, sqlite3\n"
        "print(projector.__file__)\n"
        "print(len(d.schema_files()))\n"
        "projector.replay('log.jsonl', 'p.db')\n"
        "c = sqlite3.connect('p.db')\n"
        "print(c.execute('select count(*) from sqlite_master').fetchone()[0])\n"
        "c.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = subprocess.run(
        [python, "-c", script], check=True, capture_output=True, text=True, cwd=elsewhere,
        env=env,
    ).stdout.split()  # fmt: skip
    assert out[0].startswith(purelib)  # the installed copy, not this checkout
    assert int(out[1]) == len(list((REPO / "schema").glob("*.sql")))
    assert int(out[2]) > 20
    assert sys.prefix != str(env_dir)
