"""The command line on a log in a JetStream stream: every node projects the stream into
its own database (through its own copy, ``journal.log.stream_copy``), and nodes that
have caught up hold identical tables; ``verify`` proves each against the stream.

Every server is a real ``nats-server`` on 127.0.0.1 (``tests/nats_servers.py``).
"""

from __future__ import annotations

import functools
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_runner

from journal import Journal
from projector import canonical_hash
from projector.db import readonly_uri

pytestmark = pytest.mark.nats
CLI = str(Path(sys.executable).parent / "session-journal")
DEADLINE = 60.0  # generous: only a failing test waits this long


def _stream_url(server: Any) -> str:
    return f"{server.url}/N{uuid.uuid4().hex[:10]}"


def _write(url: str, sessions: range) -> None:
    with Journal.open(url) as j:
        for k in sessions:
            sid = j.create_session("openai/gpt-4o", session_id=f"s{k}", title=f"chat {k}")
            j.append_message(sid, "user", f"question {k}")
            j.append_message(sid, "assistant", f"answer {k}", tokens_used=7)


def _cli(url: str, db: Path, *args: str) -> Any:
    from projector.cli import main

    return cli_runner().invoke(main, ["--log", url, "--db", str(db), *args])


def test_two_nodes_project_the_stream_into_identical_databases(
    nats_single: Any, tmp_path: Path
) -> None:
    url = _stream_url(nats_single)
    node_a, node_b = tmp_path / "a" / "node.db", tmp_path / "b" / "node.db"
    node_a.parent.mkdir()
    node_b.parent.mkdir()
    _write(url, range(3))
    assert _cli(url, node_a, "replay").exit_code == 0
    archived = _cli(url, node_a, "archive", "s1")  # a write command opens the stream
    assert archived.exit_code == 0, archived.output + archived.stderr
    _write(url, range(3, 5))
    for node in (node_a, node_b):
        result = _cli(url, node, "replay")
        assert result.exit_code == 0, result.stderr
        verified = _cli(url, node, "verify")
        assert verified.exit_code == 0, verified.output + verified.stderr
        assert f"matches {url}" in verified.output
    assert canonical_hash(node_a) == canonical_hash(node_b)
    listed = _cli(url, node_b, "sessions", "--json")
    assert sorted(s["session_id"] for s in json.loads(listed.output)) == [f"s{k}" for k in range(5)]
    rebuilt = _cli(url, node_b, "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.stderr
    assert canonical_hash(node_a) == canonical_hash(node_b)


def test_verify_names_a_node_copy_that_differs_from_the_stream(
    nats_single: Any, tmp_path: Path
) -> None:
    url, db = _stream_url(nats_single), tmp_path / "node.db"
    _write(url, range(2))
    assert _cli(url, db, "replay").exit_code == 0
    copy = tmp_path / "node.db.stream.jsonl"
    data = copy.read_bytes()
    at = data.index(b"question 0")
    copy.write_bytes(data[:at] + b"QUESTION 0" + data[at + 10 :])
    result = _cli(url, db, "verify")
    assert result.exit_code == 1
    assert str(copy) in result.stderr and "line" in result.stderr


def _watch(url: str, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CLI, "--log", url, "--db", str(db), "watch", "--poll-interval", "0.5", "-v"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _sessions_in(db: Path) -> int:
    if not db.exists():
        return -1
    try:
        with closing(sqlite3.connect(readonly_uri(db), uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])
    except sqlite3.Error:
        return -1  # not made yet


def test_two_watchers_follow_the_stream_and_converge(nats_single: Any, tmp_path: Path) -> None:
    url = _stream_url(nats_single)
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    _write(url, range(2))
    procs = [_watch(url, db) for db in dbs]
    try:
        for batch in range(3):  # written while they watch
            _write(url, range(2 + 10 * batch, 12 + 10 * batch))
        deadline = time.monotonic() + DEADLINE
        while any(_sessions_in(db) < 32 for db in dbs):
            assert time.monotonic() < deadline, [_sessions_in(db) for db in dbs]
            assert all(p.poll() is None for p in procs), [p.stderr for p in procs]
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        errors = [proc.communicate(timeout=DEADLINE)[1].decode() for proc in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert all(e.splitlines()[-1] == "stopped" for e in errors)
    assert canonical_hash(dbs[0]) == canonical_hash(dbs[1])
    for db in dbs:
        assert _cli(url, db, "verify").exit_code == 0


def test_a_journal_moves_from_a_file_to_a_stream_and_back_byte_for_byte(
    nats_single: Any, tmp_path: Path
) -> None:
    from projector.cli import main

    log, url = tmp_path / "start.jsonl", _stream_url(nats_single)
    with Journal.open(log) as j:
        for k in range(4):
            sid = j.create_session("openai/gpt-4o", session_id=f"s{k}", first_message=f"hi {k}")
            with j.batch():
                j.append_message(sid, "assistant", f"answer {k}")
                j.set_metadata(sid, "k", str(k))
    file_db, node_db = tmp_path / "file.db", tmp_path / "node.db"
    runner = cli_runner()
    imported = runner.invoke(main, ["--log", url, "import-log", "--exact", str(log)])
    assert imported.exit_code == 0, imported.stderr
    exported = runner.invoke(main, ["--log", url, "export-log"])
    assert exported.exit_code == 0 and exported.stdout_bytes == log.read_bytes()
    for where, db in ((str(log), file_db), (url, node_db)):
        assert runner.invoke(main, ["--log", where, "--db", str(db), "replay"]).exit_code == 0
        assert runner.invoke(main, ["--log", where, "--db", str(db), "verify"]).exit_code == 0
    assert canonical_hash(file_db) == canonical_hash(node_db)
    again = runner.invoke(main, ["--log", url, "import-log", "--exact", str(log)])
    assert again.exit_code == 2 and "empty log" in again.stderr
    with Journal.open(url) as j:  # writers go on from where the file left off
        assert j.append_message("s2", "user", "on the stream").seq == 3


def test_a_session_forgotten_on_the_stream_is_forgotten_by_every_node(
    nats_single: Any, tmp_path: Path
) -> None:
    url, secret = _stream_url(nats_single), f"secret-{uuid.uuid4().hex}"
    node = tmp_path / "node"
    node.mkdir()
    db = node / "node.db"
    with Journal.open(url) as j:
        j.create_session("m", session_id=secret, first_message=f"{secret} words")
        j.create_session("m", session_id="kept", first_message="kept words")
    assert _cli(url, db, "replay").exit_code == 0
    assert any(secret.encode() in p.read_bytes() for p in node.iterdir() if p.is_file())
    forgotten = _cli(url, db, "forget", secret, "--yes")  # the stream, then this node
    assert forgotten.exit_code == 0, forgotten.output + forgotten.stderr
    for command in ("replay", "verify"):
        result = _cli(url, db, command)
        assert result.exit_code == 0, result.output + result.stderr
    assert [
        p.name for p in node.iterdir() if p.is_file() and secret.encode() in p.read_bytes()
    ] == []
    listed = json.loads(_cli(url, db, "sessions", "--json").output)
    assert [s["session_id"] for s in listed] == ["kept"]


def test_a_session_forgotten_from_one_node_is_forgotten_by_another(
    nats_single: Any, tmp_path: Path
) -> None:
    url, secret = _stream_url(nats_single), f"secret-{uuid.uuid4().hex}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    here, there = tmp_path / "a" / "node.db", tmp_path / "b" / "node.db"
    with Journal.open(url) as j:
        j.create_session("m", session_id=secret, first_message=f"{secret} words")
        j.create_session("m", session_id="kept", first_message="kept words")
    for node in (here, there):
        assert _cli(url, node, "replay").exit_code == 0
    with Journal.open(url) as j:  # from a host that projects nothing
        j.forget(secret)
    for node in (here, there):
        assert _cli(url, node, "replay").exit_code == 0  # its copy redacted on the way
        assert _cli(url, node, "verify").exit_code == 0
        left = [
            p for p in node.parent.iterdir() if p.is_file() and secret.encode() in p.read_bytes()
        ]
        assert left == []
    assert canonical_hash(here) == canonical_hash(there)


@pytest.mark.slow
def test_a_node_killed_while_it_copies_and_projects_resumes_and_converges(
    nats_single: Any, tmp_path: Path
) -> None:
    """SIGKILL a watching node again and again while it copies and projects a backlog:
    each restart resumes from what the killed one left (a copy ahead of its anchor, a torn
    write, a database behind its copy) and the node ends where a fresh one does, its copy
    the stream's bytes."""
    import random

    from projector.cli import main

    url, db, fresh = _stream_url(nats_single), tmp_path / "node.db", tmp_path / "fresh.db"
    copy = Path(f"{db}.stream.jsonl")
    pace = random.Random(20)
    written, busy_kills = 0, 0

    def copy_size() -> int:
        return copy.stat().st_size if copy.exists() else 0

    for round_ in range(6):
        _write(url, range(written, written + 400))  # a backlog for the next start
        written += 400
        # Even rounds kill the node once its copy grows, odd ones once its database does.
        progress = copy_size if round_ % 2 == 0 else functools.partial(_sessions_in, db)
        before = progress()
        proc = _watch(url, db)
        deadline = time.monotonic() + DEADLINE
        while progress() == before:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.002)
        time.sleep(pace.uniform(0, 0.02))
        proc.kill()
        proc.communicate(timeout=DEADLINE)
        assert proc.returncode == -signal.SIGKILL
        busy_kills += _sessions_in(db) < written
    assert busy_kills >= 3  # most kills landed before the node had caught up
    proc = _watch(url, db)
    try:
        deadline = time.monotonic() + DEADLINE
        while _sessions_in(db) < written:
            assert time.monotonic() < deadline, (_sessions_in(db), written)
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, err.decode()
    assert _cli(url, fresh, "replay").exit_code == 0
    assert canonical_hash(db) == canonical_hash(fresh)
    verified = _cli(url, db, "verify")
    assert verified.exit_code == 0, verified.output + verified.stderr
    exported = cli_runner().invoke(main, ["--log", url, "export-log"])
    assert exported.exit_code == 0
    assert copy.read_bytes() == exported.stdout_bytes
