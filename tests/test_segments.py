"""Sealed segments: rotation, every reader across segments, crashes during rotation, seals.

The log's contract itself runs on a segmented file log too (``test_log_contract``); these
tests cover what only files have: the manifest, the files, the CLI, and kill -9.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from cli_runner import cli_runner
from click.testing import Result

from journal import CorruptLog, Journal, LogError, read_log
from journal.log.segments import load_manifest, manifest_path, segments_dir
from projector.cli import main
from projector.watch import watch

SMALL = 2_000  # bytes: a segment every few records


def run(log: Path, db: Path, *args: str) -> Result:
    return cli_runner().invoke(main, ["--log", str(log), "--db", str(db), *args])


def fill(log: Path, sessions: int = 3, messages: int = 12, segment_bytes: int = SMALL) -> None:
    with Journal.open(log, "none", segment_bytes=segment_bytes) as j:
        for s in range(sessions):
            j.create_session("m", session_id=f"s{s}")
        for n in range(messages):
            for s in range(sessions):
                j.append_message(f"s{s}", "user", f"message {n} of s{s}")


def whole_log(log: Path) -> bytes:
    """The sealed segments' bytes, then the active file's."""
    manifest = load_manifest(str(log))
    parts = [Path(segments_dir(str(log)), s.name).read_bytes() for s in manifest.segments]
    return b"".join(parts) + (log.read_bytes() if log.exists() else b"")


def assert_consistent(log: Path) -> None:
    """Segments follow each other, each position is in exactly one file, one name each."""
    manifest = load_manifest(str(log))
    events = list(read_log(str(log)))
    assert [e.pos for e, _ in events] == list(range(1, len(events) + 1))
    assert events[-1][1] == len(whole_log(log))
    for segment in manifest.segments:
        lines = Path(segments_dir(str(log)), segment.name).read_bytes().splitlines()
        assert [json.loads(line)["pos"] for line in lines] == list(
            range(segment.first_pos, segment.last_pos + 1)
        )
    listed = {s.name for s in manifest.segments}
    assert {n for n in os.listdir(segments_dir(str(log))) if n.endswith(".jsonl")} == listed
    assert log.stat().st_nlink == 1
    assert not Path(f"{log}.next").exists()


def test_a_log_rotates_at_its_size_and_reads_as_one(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    fill(log)
    manifest = load_manifest(str(log))
    assert len(manifest.segments) >= 3
    assert all(s.size >= SMALL for s in manifest.segments)  # sealed at the first append past it
    assert log.stat().st_size < SMALL + 400  # the active file: what came after the last seal
    assert_consistent(log)
    assert oct(os.stat(segments_dir(str(log))).st_mode & 0o777) == "0o700"
    with Journal.open(log, "none", segment_bytes=SMALL) as j:  # state from every segment
        assert j.last_seq("s0") == 12
        assert j.append_message("s0", "user", "after").seq == 13
        event_id = "0b0e2c4a-3c1e-4d5e-8f90-1a2b3c4d5e6f"
        assert j.append_message("s1", "user", "x", event_id=event_id).seq == 13
    with Journal.open(log, "none", segment_bytes=SMALL) as j:  # from the checkpoint on
        assert j.receipt(event_id).seq == 13
        assert j.status("s2") == "active"


def test_every_cli_reader_works_across_segments(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    fill(log)
    one = tmp_path / "one.jsonl"  # the same events in one file, for comparison
    one.write_bytes(whole_log(log))
    os.chmod(one, 0o600)
    assert run(log, db, "replay").exit_code == 0
    assert run(log, db, "verify").exit_code == 0
    shown = run(log, db, "show", "--json", "s2").output
    assert run(one, tmp_path / "one.db", "replay").exit_code == 0
    assert run(one, tmp_path / "one.db", "show", "--json", "s2").output == shown
    assert run(log, db, "rebuild", "--until", "10").exit_code == 0
    assert run(log, db, "verify").exit_code == 0  # a prefix: verify says so, no problem
    assert run(log, db, "rebuild").exit_code == 0
    assert run(log, db, "verify").exit_code == 0
    exported = run(log, db, "export", "s1")
    assert exported.exit_code == 0
    assert exported.output == run(one, tmp_path / "one.db", "export", "s1").output
    assert "**11** of s1" in run(log, db, "search", "message 11").output


def test_a_log_written_as_one_file_is_sealed_in_place_and_goes_on(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    fill(log, segment_bytes=1 << 30)  # never rotates: a log as earlier versions wrote it
    before = log.read_bytes()
    assert not Path(segments_dir(str(log))).exists()
    assert run(log, db, "replay").exit_code == 0
    with Journal.open(log, "none", segment_bytes=SMALL) as j:
        j.append_message("s0", "user", "the first append seals the old file")
        j.append_message("s0", "user", "and the next goes on")
    first = load_manifest(str(log)).segments[0]
    assert Path(segments_dir(str(log)), first.name).read_bytes() == before
    assert (first.first_pos, first.size) == (1, len(before))
    assert_consistent(log)
    replayed = run(log, db, "replay")  # the projection's checkpoint is in the sealed file
    assert replayed.exit_code == 0, replayed.output
    assert run(log, db, "verify").exit_code == 0


def test_writers_of_one_log_rotate_it_between_them_without_a_gap(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    with Journal.open(log, "none", segment_bytes=SMALL) as j:
        for t in range(4):
            j.create_session("m", session_id=f"t{t}")
    receipts: list[list[tuple[int, str]]] = [[] for _ in range(4)]

    def write(t: int) -> None:
        with Journal.open(log, "none", segment_bytes=SMALL) as j:  # a handle each
            for n in range(40):
                r = j.append_message(f"t{t}", "user", f"thread {t} message {n}")
                receipts[t].append((r.pos, r.event_id))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_consistent(log)
    by_pos = {e.pos: e for e, _ in read_log(str(log))}
    for acknowledged in receipts:
        assert len(acknowledged) == 40
        for pos, event_id in acknowledged:
            assert by_pos[pos].id == event_id
    assert len(load_manifest(str(log)).segments) > 5


# -- kill -9 during a rotation ------------------------------------------------------------

_ROTATING_CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    import journal.log.segments as segments
    from journal import Journal
    path, step = sys.argv[1], int(sys.argv[2])
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    link, write_manifest, rename = os.link, segments.write_manifest, os.rename
    if step == 0:  # the next file prepared, nothing linked
        os.link = lambda *a, **k: die()
    elif step == 1:  # linked, not committed
        os.link = lambda *a, **k: (link(*a, **k), die())
    elif step == 2:  # committed, the next file not in place
        segments.write_manifest = lambda *a: (write_manifest(*a), die())
    else:  # the next file in place, the directory not yet synced
        os.rename = lambda *a, **k: (rename(*a, **k), die())
    with Journal.open(path, "none", segment_bytes=1500) as j:
        sid = j.create_session("m", session_id="s")
        while True:
            r = j.append_message(sid, "user", "a message long enough to fill segments")
            print(json.dumps([r.pos, r.event_id]), flush=True)
    """
)


@pytest.mark.parametrize("step", range(4))
def test_a_kill_during_rotation_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, step: int
) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    child = subprocess.run(
        [sys.executable, "-c", _ROTATING_CHILD, str(log), str(step)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    acknowledged = [json.loads(line) for line in child.stdout.splitlines()]
    assert acknowledged
    readable_before = list(read_log(str(log)))  # a reader settles nothing, and is right
    assert [e.pos for e, _ in readable_before] == list(range(1, len(readable_before) + 1))
    with Journal.open(log, "none", segment_bytes=1500) as j:  # the next writer settles it
        for pos, event_id in acknowledged:
            assert j.receipt(event_id).pos == pos
        after = j.append_message("s", "user", "after the crash")
    assert after.pos == len(readable_before) + 1
    assert_consistent(log)
    # Committed or undone, the crashed rotation makes one segment: the next append seals
    # the full active file of an undone one, and writes into the fresh one of the other.
    assert len(load_manifest(str(log)).segments) == 1
    assert run(log, db, "replay").exit_code == 0
    assert run(log, db, "verify").exit_code == 0


# -- seals and the manifest ---------------------------------------------------------------


def test_verify_reports_a_sealed_segment_changed_since(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    fill(log)
    assert run(log, db, "replay").exit_code == 0
    second = Path(segments_dir(str(log)), load_manifest(str(log)).segments[1].name)
    data = bytearray(second.read_bytes())
    data[40] ^= 0x01
    second.write_bytes(bytes(data))
    result = run(log, db, "verify")
    assert result.exit_code == 1
    assert "sealed segment 000002.jsonl" in result.output
    with pytest.raises(CorruptLog) as caught:
        list(read_log(str(log)))
    assert str(second) in str(caught.value)  # the file to look at, and the byte in it


def test_a_sealed_segment_of_another_size_is_named(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    fill(log)
    first = Path(segments_dir(str(log)), load_manifest(str(log)).segments[0].name)
    with open(first, "ab") as f:
        f.write(b"\n")
    with pytest.raises(CorruptLog, match=r"000001\.jsonl is \d+ bytes, its manifest says"):
        list(read_log(str(log)))


@pytest.mark.parametrize(
    ("manifest", "says"),
    [
        (b'{"format":1,"segments":[{"name"', "manifest is damaged"),
        (b'{"format":9,"segments":[]}', "manifest format 9"),
        (
            b'{"format":1,"segments":[{"name":"000001.jsonl","start":5,"size":9,'
            b'"first_pos":1,"last_pos":2,"sha256":""}]}',
            "does not follow the one before it",
        ),
    ],
)
def test_a_manifest_that_cannot_be_trusted_stops_readers_and_writers(
    tmp_path: Path, manifest: bytes, says: str
) -> None:
    log = tmp_path / "log.jsonl"
    fill(log)
    active = log.read_bytes()
    Path(manifest_path(str(log))).write_bytes(manifest)
    with pytest.raises(LogError, match=says):
        list(read_log(str(log)))
    with pytest.raises(LogError, match=says):
        Journal.open(log, "none", segment_bytes=SMALL)
    assert log.read_bytes() == active  # nothing written


def test_a_second_name_no_rotation_explains_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    fill(log)
    os.link(log, tmp_path / "elsewhere.jsonl")
    with pytest.raises(LogError, match="hard links"):
        Journal.open(log, "none", segment_bytes=SMALL)


def test_forgetting_redacts_in_sealed_segments_and_seals_them_again(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    fill(log)
    assert run(log, db, "replay").exit_code == 0
    with Journal.open(log, "none", segment_bytes=SMALL) as j:
        j.forget("s1")
    for segment in load_manifest(str(log)).segments:
        assert b"of s1" not in Path(segments_dir(str(log)), segment.name).read_bytes()
    assert b"of s1" not in log.read_bytes()
    assert b"of s0" in whole_log(log)
    assert_consistent(log)
    assert run(log, db, "replay").exit_code == 0
    result = run(log, db, "verify")
    assert result.exit_code == 0, result.output  # every seal matches its segment again


# -- watch follows rotations --------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from journal import Journal
    with Journal.open(sys.argv[1], "none", segment_bytes=3000) as j:
        sid = j.create_session("m", session_id="w")
        for n in range(int(sys.argv[2])):
            j.append_message(sid, "user", f"watched message {n}")
    """
)


def test_watch_follows_rotations_without_missing_or_repeating_an_event(tmp_path: Path) -> None:
    log, db = tmp_path / "log.jsonl", tmp_path / "p.db"
    stop = threading.Event()
    errors: list[BaseException] = []

    def watching() -> None:
        try:
            watch(str(log), str(db), stop=stop, poll_interval=0.05)
        except BaseException as exc:
            errors.append(exc)

    watcher = threading.Thread(target=watching)
    watcher.start()
    try:
        writer = subprocess.run([sys.executable, "-c", _WRITER, str(log), "400"], check=False)
        assert writer.returncode == 0
        assert len(load_manifest(str(log)).segments) > 10
        last = list(read_log(str(log)))[-1][0].pos
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not errors:
            with closing(sqlite3.connect(db)) as conn:
                (pos,) = conn.execute("SELECT log_pos FROM projector_checkpoint").fetchone()
            if pos == last:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        watcher.join(60)
    assert not errors, errors
    assert pos == last
    result = run(log, db, "verify")
    assert result.exit_code == 0, result.output
    with closing(sqlite3.connect(db)) as conn:
        seqs = [s for (s,) in conn.execute("SELECT sequence_number FROM messages ORDER BY 1")]
    assert seqs == list(range(1, 401))
