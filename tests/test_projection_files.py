"""Files the projection creates are private (0600) whatever the umask: the database, its
WAL and shared-memory files, a rebuilt database, and the live projector's lock."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from journal import Journal
from projector import connect, rebuild, replay
from projector.watch import lock_path, watch


@pytest.fixture(params=[0o000, 0o022], ids=["umask000", "umask022"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_database_wal_shm_and_rebuild_are_0600(tmp_path: Path, umask: int) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    with Journal.open(log) as j:
        j.create_session("gpt-4o", first_message="private")
    replay(log, db)
    conn = connect(db)  # holds the WAL and shared-memory files open
    try:
        conn.execute("SELECT count(*) FROM messages").fetchone()
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert mode(path) == 0o600, path
    finally:
        conn.close()
    rebuild(log, db)
    assert mode(db) == 0o600
    assert mode(log) == 0o600


def test_watch_lock_is_0600(tmp_path: Path, umask: int) -> None:
    log, db = tmp_path / "s.jsonl", tmp_path / "s.db"
    stop = threading.Event()
    worker = threading.Thread(target=watch, args=(str(log), str(db)), kwargs={"stop": stop})
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while not Path(lock_path(str(db))).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert mode(lock_path(str(db))) == 0o600
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
