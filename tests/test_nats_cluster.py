"""The JetStream test servers (tools/nats_cluster.py): real nats-server processes on
127.0.0.1 that take streams and publishes, survive the loss of a node, come back, and
leave no process behind, from Python and from the command line; and the tool that
measures what the JetStream backend relies on (tools/jetstream_facts.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from nats_servers import NatsCluster

pytestmark = pytest.mark.nats

TOOL = Path(__file__).resolve().parent.parent / "tools" / "nats_cluster.py"
URL = re.compile(r"^nats://127\.0\.0\.1:\d+(,127\.0\.0\.1:\d+)*$")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def gone(pid: int) -> bool:
    """Whether no process has this id (a reaped child leaves no /proc entry)."""
    return not Path(f"/proc/{pid}").exists()


def children(parent: int) -> list[int]:
    """The ids of the processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name (2nd field) is in parentheses and may hold spaces.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


async def connect(cluster: NatsCluster) -> Any:
    import nats

    return await nats.connect(cluster.urls)


async def make_stream(js: Any, replicas: int) -> None:
    from nats.js.api import StreamConfig

    await js.add_stream(StreamConfig(name="T", subjects=["t.>"], num_replicas=replicas))


# -- starting -------------------------------------------------------------------------------


def test_a_single_server_takes_an_r1_stream_and_acknowledges_a_publish(
    nats_single: NatsCluster,
) -> None:
    assert URL.match(nats_single.url) and nats_single.url.count(",") == 0
    assert nats_single.urls == [nats_single.url]
    assert "cluster {" not in (nats_single.directory / "n0.conf").read_text()

    async def body() -> None:
        nc = await connect(nats_single)
        try:
            js = nc.jetstream()
            await make_stream(js, 1)
            ack = await js.publish("t.a", b"hello")
            assert (ack.stream, ack.seq, ack.duplicate) == ("T", 1, None)
            msg = await js.get_msg("T", 1)
            assert msg.data == b"hello"
        finally:
            await nc.close()

    run(body())


def test_three_nodes_take_an_r3_stream_and_acknowledge_a_publish(
    nats_cluster3: NatsCluster,
) -> None:
    assert URL.match(nats_cluster3.url) and nats_cluster3.url.count(",") == 2
    assert len(set(nats_cluster3.urls)) == 3

    async def body() -> None:
        nc = await connect(nats_cluster3)
        try:
            js = nc.jetstream()
            await make_stream(js, 3)
            ack = await js.publish("t.a", b"hello")
            assert (ack.stream, ack.seq) == ("T", 1)
            info = await js.stream_info("T")
            assert info.cluster is not None
            assert info.cluster.leader in nats_cluster3.names
            assert len(info.cluster.replicas or []) == 2
        finally:
            await nc.close()

    run(body())


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket the process listens on, IPv4 and IPv6."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for row in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                # The kernel prints the address as words in host (little-endian) order.
                packed = bytes.fromhex(address)
                words = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
                family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
                found.add((socket.inet_ntop(family, words), int(port, 16)))
    return found


def test_every_node_listens_on_loopback_only_and_syncs_always(nats_cluster3: NatsCluster) -> None:
    names = set()
    for node in range(3):
        pid = nats_cluster3.pid(node)
        assert pid is not None
        sockets = listening(pid)
        # Clients and routes: two listeners, both on 127.0.0.1 and nowhere else.
        assert {address for address, _ in sockets} == {"127.0.0.1"} and len(sockets) == 2
        client_port = int(nats_cluster3.urls[node].rsplit(":", 1)[1])
        assert ("127.0.0.1", client_port) in sockets
        config = (nats_cluster3.directory / f"n{node}.conf").read_text()
        assert re.search(r"^\s*sync_interval: always$", config, re.M)
        assert len(re.findall(r"nats-route://127\.0\.0\.1:", config)) == 2
        names |= set(re.findall(r"^server_name: (\S+)$", config, re.M))
    assert names == {"n0", "n1", "n2"}


# -- faults ---------------------------------------------------------------------------------


def test_r3_publishes_go_on_after_the_stream_leader_is_killed_and_it_comes_back(
    nats_cluster3: NatsCluster,
) -> None:
    from nats.errors import Error as NatsError

    async def publish(js: Any, k: int, deadline: float) -> int:
        # The same Msg-Id on every try: a try that timed out may have been stored, and its
        # retry must then be taken as a duplicate, not stored twice.
        while True:
            try:
                ack = await js.publish(f"t.{k}", b"x", headers={"Nats-Msg-Id": f"m{k}"}, timeout=2)
                return int(ack.seq)
            except (NatsError, TimeoutError):
                # After a leader's loss publishes fail for several seconds (an election).
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def body() -> None:
        nc = await connect(nats_cluster3)
        try:
            js = nc.jetstream()
            await make_stream(js, 3)
            seqs = [await publish(js, k, time.monotonic() + 10) for k in range(10)]
            info = await js.stream_info("T")
            assert info.cluster is not None and info.cluster.leader is not None
            victim = nats_cluster3.node_of(info.cluster.leader)
            pid = nats_cluster3.pid(victim)
            assert pid is not None

            nats_cluster3.kill(victim)
            assert not nats_cluster3.running(victim) and gone(pid)
            deadline = time.monotonic() + 30
            seqs += [await publish(js, k, deadline) for k in range(10, 30)]
            info = await js.stream_info("T")
            assert info.cluster is not None
            assert info.cluster.leader not in (None, nats_cluster3.names[victim])

            nats_cluster3.restart(victim)
            assert nats_cluster3.running(victim)
            seqs += [await publish(js, k, time.monotonic() + 10) for k in range(30, 40)]
            # The node that came back catches up with what was written without it.
            victim_name = nats_cluster3.names[victim]
            deadline = time.monotonic() + 20
            while True:
                info = await js.stream_info("T")
                assert info.cluster is not None
                peer = next((r for r in info.cluster.replicas or [] if r.name == victim_name), None)
                if peer is not None and peer.current and not peer.lag:
                    break
                assert time.monotonic() < deadline, f"{victim_name} did not catch up: {info}"
                await asyncio.sleep(0.2)

            assert seqs == list(range(1, 41))
            assert (info.state.messages, info.state.last_seq) == (40, 40)
        finally:
            await nc.close()

    run(body())


def test_a_running_node_restarts_in_place(nats_single: NatsCluster) -> None:
    async def body(first: bool) -> None:
        nc = await connect(nats_single)
        try:
            js = nc.jetstream()
            if first:
                await make_stream(js, 1)
                await js.publish("t.a", b"kept")
            assert (await js.get_msg("T", 1)).data == b"kept"
        finally:
            await nc.close()

    run(body(first=True))
    before = nats_single.pid(0)
    assert before is not None
    nats_single.restart(0)
    assert nats_single.pid(0) not in (None, before) and gone(before)
    run(body(first=False))  # the same store: the stream and its message are there


def test_each_test_starts_with_no_stream_and_every_node_up(nats_cluster3: NatsCluster) -> None:
    # The tests above left a stream "T" and a killed node behind them.
    async def body() -> None:
        nc = await connect(nats_cluster3)
        try:
            assert await nc.jetstream().streams_info() == []
        finally:
            await nc.close()

    assert all(nats_cluster3.running(node) for node in range(3))
    run(body())


# -- stopping -------------------------------------------------------------------------------


def test_stop_leaves_no_server_process(tmp_path: Path) -> None:
    with NatsCluster(tmp_path, 3) as cluster:
        pids = [cluster.pid(node) for node in range(3)]
        assert all(pid is not None for pid in pids)
        cluster.kill(2)
    assert all(gone(pid) for pid in pids if pid is not None)
    assert not any(cluster.running(node) for node in range(3))
    cluster.stop()  # again: nothing left to do


def test_the_command_line_prints_the_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(TOOL), "--nodes", "3", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    servers: list[int] = []
    try:
        # Read the URL line on a thread, so that a tool that never prints fails the test.
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout=60)
        assert line, "no URL within 60 s"
        url = line[0].rstrip("\n")
        assert URL.match(url) and url.count(",") == 2, line
        servers = children(proc.pid)
        assert len(servers) == 3, servers

        async def answers() -> None:
            import nats

            # nats-py takes a list of URLs, each with its scheme.
            addresses = ["nats://" + a for a in url.removeprefix("nats://").split(",")]
            nc = await nats.connect(addresses)
            try:
                await nc.jetstream().account_info()
            finally:
                await nc.close()

        run(answers())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        # On a failure above, stop the tool as a user would, and then any server it left.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        for pid in servers:
            with contextlib.suppress(ProcessLookupError):
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert out == "" and err == ""  # one line in all, read above
    assert all(gone(pid) for pid in servers)
    assert os.path.exists(tmp_path / "n0.log")


# -- the facts tool -------------------------------------------------------------------------


def test_the_facts_tool_reports_what_the_backend_relies_on() -> None:
    done = subprocess.run(
        [sys.executable, str(TOOL.parent / "jetstream_facts.py"), "--messages", "300", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    stale = "nats.js.errors.BadRequestError err_code=10071 'wrong last sequence: 2'"
    for replicas in ("R1", "R3"):
        assert report[replicas]["Nats-Expected-Last-Sequence: stale"] == stale
        assert report[replicas]["Nats-Expected-Last-Subject-Sequence: stale"] == stale
        assert "repeat PubAck(seq=1, duplicate=True)" in report[replicas]["Nats-Msg-Id repeated"]
        # Why a writer keeps one append in flight: an append chained on one that another
        # writer's append beat lands after that other append, on a state it never saw.
        chained = report[f"{replicas} chained"]
        assert chained["chained on a refused append, checking the sequence"] == (
            f"first {stale}; second PubAck(seq=3, duplicate=None)"
        )
    assert report["payload"] == {
        "2 MiB with max_payload 1048576": "nats.errors.MaxPayloadError",
        "2 MiB with max_payload 8388608": "PubAck(seq=1, duplicate=None)",
    }
    assert len(report["read 300 x 500 B, R1"]) == 4
